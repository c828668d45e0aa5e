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

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, Spacingd

from dast_components.data.intensity import as_window
from dast_components.inference import read_intensity, record_path

__all__ = ["PathSafeSpacingd", "ScaleIntensityFromCheckpointd"]


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


class ScaleIntensityFromCheckpointd(MapTransform):
    """``ScaleIntensityRanged`` whose window ``[a_min, a_max]`` is the one the weights were trained with.

    The window is read from the training record next to the weight file (``models/model.json`` for
    ``models/model.pt``, :func:`dast_components.inference.read_intensity`) on first use and read again whenever the
    weight file or its record changes (modification time or size), so a long-lived pipeline (a MONAI Label server
    that retrains ``models/model.pt``) always scales like the weights it runs. A fixed ``window`` overrides the file.

    Args:
        keys: keys of the images to scale.
        checkpoint: weight file written by ``train.json``.
        window: ``[lower, upper]`` or ``{"lower", "upper"}`` in HU to use instead of the file's record (the bundle's
            ``--intensity "[lower, upper]"``). Defaults to ``None`` (read the file).
        b_min: output value of ``lower``. Defaults to 0.0.
        b_max: output value of ``upper``. Defaults to 1.0.
        clip: clip the output to ``[b_min, b_max]``. Defaults to True.
        allow_missing_keys: do not fail on missing keys.

    Example::

        ScaleIntensityFromCheckpointd("image", checkpoint="bundles/dast_kits19_seg/models/model.pt")
    """

    def __init__(
        self,
        keys: KeysCollection,
        checkpoint: str | os.PathLike,
        window: Mapping[str, float] | Sequence[float] | None = None,
        b_min: float = 0.0,
        b_max: float = 1.0,
        clip: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.checkpoint = Path(checkpoint)
        self.fixed = as_window(window)
        self.b_min, self.b_max, self.clip = float(b_min), float(b_max), bool(clip)
        self._stamp: tuple[int, ...] | None = None
        self._window: dict[str, float] | None = None

    def window(self) -> dict[str, float]:
        """The current window ``{"lower", "upper"}`` (re-read when the weight file changed)."""
        if self.fixed is not None:
            return self.fixed
        stamp: tuple[int, ...] = ()
        for path in (self.checkpoint, record_path(self.checkpoint)):
            try:
                stat = path.stat()
                stamp += (stat.st_mtime_ns, stat.st_size)
            except OSError:
                stamp += (-1, -1)
        if self._window is None or stamp != self._stamp:
            self._window = read_intensity(self.checkpoint)  # raises with how-to when the file is missing
            self._stamp = stamp
        return self._window

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        w = self.window()
        scaler = ScaleIntensityRange(
            a_min=w["lower"], a_max=w["upper"], b_min=self.b_min, b_max=self.b_max, clip=self.clip
        )
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = scaler(d[key])
        return d
