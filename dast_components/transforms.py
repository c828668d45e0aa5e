# Copyright (c) DAST bundles contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Dictionary transforms the bundles need beyond MONAI's."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import Spacingd

__all__ = ["PathSafeSpacingd"]


class PathSafeSpacingd(Spacingd):
    """``monai.transforms.Spacingd`` that leaves non-dictionary values next to its keys untouched.

    After resampling ``key``, MONAI 1.6's ``Spacingd`` updates every entry whose name starts with ``f"{key}_"`` as
    if it were a metadata dictionary. MONAI Label puts the input file name under ``image_path`` (a string), so the
    plain transform fails with ``AttributeError: 'str' object has no attribute 'update'``. This subclass takes such
    non-mapping entries out for the call and puts them back unchanged; dictionaries (``image_meta_dict``) are still
    updated as before. It is a drop-in replacement, invertible like its parent (``Invertd`` works).

    Args: see ``monai.transforms.Spacingd``.

    Example::

        PathSafeSpacingd(keys="image", pixdim=(1.0, 1.0, 1.0), mode="bilinear")(
            {"image": image, "image_path": "/data/case_00000/imaging.nii.gz"}
        )
    """

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        prefixes = tuple(f"{key}_" for key in self.keys)
        stashed = {
            k: v
            for k, v in data.items()
            if isinstance(k, str) and k.startswith(prefixes) and not isinstance(v, Mapping)
        }
        d = dict(data)
        for k in stashed:
            del d[k]
        d = super().__call__(d, lazy=lazy)
        d.update(stashed)
        return d
