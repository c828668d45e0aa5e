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
"""Small helpers shared by the package: atomic file writes and the patch-size check."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dast_components.errors import InputError

__all__ = ["as_bool", "atomic_path", "atomic_write_text", "check_patch_size"]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path`` with ``os.replace``.

    Readers never see a half-written file, and concurrent writers (e.g. several DDP ranks preparing the same cache)
    leave one complete file. The temporary name keeps the suffix of ``path`` so that writers choosing the format
    from the extension (``nibabel.save``) still work. On error the temporary file is removed. The parent folder is
    created if missing.

    Args:
        path: final destination.

    Returns:
        a context manager yielding the temporary ``Path`` to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the destination as a ``Path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return Path(path)


def check_patch_size(patch_size: Sequence[int], stride: int, name: str = "patch_size") -> list[int]:
    """
    Check that ``patch_size`` has three positive multiples of the network's ``stride``.

    The stride is ``2 ** (num_depths + 1)``: the DiNTS stem halves the input once and each depth once more
    (``DASTNet(...).stride``, ``DASTSearchSpace(...).stride``).

    Args:
        patch_size: training patch, search patch or sliding-window size ``(H, W, D)``.
        stride: required divisor.
        name: config id named in the error message. Defaults to ``"patch_size"``.

    Returns:
        the patch size as a list of ints.

    Raises:
        InputError: naming ``name``, the value and a valid neighbour.
    """
    try:
        sizes = [int(s) for s in patch_size]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a list of 3 integers, got {patch_size!r}.") from None
    stride = int(stride)
    if len(sizes) != 3 or any(s < stride or s % stride for s in sizes):
        near = [max(stride, round(s / stride) * stride) for s in sizes] if len(sizes) == 3 else [stride] * 3
        raise InputError(
            f"{name} {list(patch_size)} must be 3 positive multiples of {stride} (2 ** (num_depths + 1): the network "
            f"halves the input num_depths + 1 times), e.g. {near}."
        )
    return sizes


def as_bool(value: object, name: str = "value") -> bool:
    """
    A boolean setting as the bundle CLI passes it: a bool, or a string such as ``true``/``false`` in any case.

    MONAI's CLI (python-fire) turns ``--x False`` into ``False`` but keeps ``--x false`` as the string ``"false"``,
    which Python reads as true.

    Raises:
        InputError: naming ``name`` for any other value.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off", ""):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise InputError(f"{name} must be true or false, got {value!r}.")
