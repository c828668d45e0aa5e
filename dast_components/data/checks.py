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
"""Early checks of dataset inputs, and the atomic JSON helpers the data package writes its caches with.

Every check raises :class:`DataError` (a ``ValueError``) whose message names the file or key at fault and what was
expected, so a bundle run stops before training instead of failing deep inside a data loader worker.

Shape checks read NIfTI headers only. Label values need the full label volume, so they are checked where the
volumes are read anyway (the intensity statistics, see :mod:`dast_components.data.intensity`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from dast_components.errors import InputError
from dast_components.utils import atomic_path

__all__ = [
    "DataError",
    "KITS19_IMAGE",
    "KITS19_LABEL",
    "atomic_path",  # from dast_components.utils (kept for old imports; import it from there)
    "check_dataset_dir",
    "check_dataset_json",
    "check_device",
    "check_finite",
    "check_image_file",
    "check_intensity_window",
    "check_image_label_shapes",
    "check_items_exist",
    "check_kits19_case",
    "check_label_files",
    "check_label_values",
    "check_writable_dir",
    "load_image",
    "load_label",
    "read_json",
    "write_json_atomic",
]

KITS19_IMAGE = "imaging.nii.gz"
KITS19_LABEL = "segmentation.nii.gz"

_SYNTHETIC_HINT = "python -m dast_components.data.synthetic --layout {layout} --num_cases 8 --out {path}"


class DataError(InputError):
    """A dataset input is missing or inconsistent; the message names the file or key and what was expected.

    An :class:`dast_components.errors.InputError` (so a ``ValueError``): a bundle run that stops on it prints just
    the message.
    """


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        path: destination file; its parent folder is created if missing.
        obj: JSON-serialisable object.

    Returns:
        the destination as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising :class:`DataError` naming the file if it is missing or not valid JSON.

    Args:
        path: JSON file to read.

    Returns:
        the decoded object.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"JSON file '{path}' does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"'{path}' is not valid JSON: {err}.") from err


def check_dataset_dir(dataset_dir: str | os.PathLike) -> Path:
    """Check that ``dataset_dir`` is an existing folder.

    Args:
        dataset_dir: the dataset root (MSD task folder or KiTS19 ``data`` folder).

    Returns:
        the folder as an absolute ``Path``.
    """
    if dataset_dir is None or str(dataset_dir) == "":
        raise DataError("dataset_dir is not set: pass the dataset root, e.g. --dataset_dir /data/Task07_Pancreas.")
    path = Path(dataset_dir).expanduser().absolute()
    if not path.exists():
        raise DataError(
            f"dataset_dir '{path}' does not exist. Point dataset_dir at the dataset root, or create small synthetic "
            f"data there with `{_SYNTHETIC_HINT.format(layout='msd', path=path)}` "
            f"(or --layout kits19 for the KiTS19 layout)."
        )
    if not path.is_dir():
        raise DataError(f"dataset_dir '{path}' is a file, expected a folder.")
    return path


def check_dataset_json(dataset_dir: str | os.PathLike) -> Path:
    """Check that an MSD-style ``dataset.json`` exists in ``dataset_dir``.

    Args:
        dataset_dir: the MSD task folder (holding ``dataset.json``, ``imagesTr/``, ``labelsTr/``).

    Returns:
        the path of ``dataset.json``.
    """
    path = check_dataset_dir(dataset_dir) / "dataset.json"
    if not path.is_file():
        raise DataError(
            f"'{path}' does not exist. The search bundle reads the MSD datalist from dataset.json (as shipped with "
            f"MSD Task07_Pancreas: keys 'training' -> [{{'image', 'label'}}], 'labels', 'modality'). Create a "
            f"synthetic dataset with one with `{_SYNTHETIC_HINT.format(layout='msd', path=path.parent)}`."
        )
    return path


def check_items_exist(
    items: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("image", "label"), source: str | None = None
) -> None:
    """Check that every item has ``keys`` and that each named file exists.

    Args:
        items: datalist entries such as ``{"image": path, "label": path}`` with absolute paths.
        keys: the keys that must name existing files. Defaults to ``("image", "label")``.
        source: where the items came from (e.g. the dataset.json path), quoted in the message.
    """
    where = f" (listed in '{source}')" if source else ""
    for index, item in enumerate(items):
        for key in keys:
            if key not in item:
                raise DataError(f"datalist entry {index}{where} has no '{key}' key: {dict(item)}.")
            if not Path(item[key]).is_file():
                raise DataError(f"{key} file '{item[key]}'{where} does not exist.")


def check_kits19_case(case_dir: str | os.PathLike) -> None:
    """Check that a KiTS19 case folder holds both ``imaging.nii.gz`` and ``segmentation.nii.gz``.

    Args:
        case_dir: a ``case_XXXXX`` folder.
    """
    case_dir = Path(case_dir)
    for name in (KITS19_IMAGE, KITS19_LABEL):
        if not (case_dir / name).is_file():
            hint = (
                " KiTS19 test cases (case_00210-case_00299) have no labels: keep them outside dataset_dir."
                if name == KITS19_LABEL
                else ""
            )
            raise DataError(f"KiTS19 case folder '{case_dir}' has no '{name}'.{hint}")


def check_image_label_shapes(items: Sequence[Mapping[str, Any]]) -> None:
    """Check from the NIfTI headers (no voxel data is read) that images are 3D and labels have the image's shape.

    Args:
        items: datalist entries ``{"image": path, "label": path}`` whose files exist.
    """
    for item in items:
        image_shape = _header_shape(item["image"])
        if len(image_shape) != 3:
            raise DataError(
                f"image '{item['image']}' has shape {image_shape}; expected a 3D volume (H, W, D) with one channel."
            )
        label_shape = _header_shape(item["label"])
        if label_shape != image_shape:
            raise DataError(
                f"label '{item['label']}' has shape {label_shape} but its image '{item['image']}' has shape "
                f"{image_shape}; they must match voxel for voxel."
            )


def check_label_values(label: np.ndarray, num_classes: int, path: str | os.PathLike) -> None:
    """Check that every voxel of ``label`` is an integer in ``range(num_classes)``.

    Args:
        label: the label volume.
        num_classes: number of classes including background; valid values are ``0 .. num_classes - 1``.
        path: the label file, quoted in the message.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    bad = (label < 0) | (label >= num_classes)
    if not np.issubdtype(label.dtype, np.integer):
        bad |= label != np.round(label)
    if bad.any():
        values = np.unique(label[bad])
        shown = ", ".join(f"{v:g}" for v in values[:10]) + (", ..." if values.size > 10 else "")
        raise DataError(
            f"label '{path}' has values [{shown}] outside range({num_classes}) "
            f"({int(bad.sum())} voxels); expected integer labels 0..{num_classes - 1}."
        )


def check_label_files(items: Sequence[Mapping[str, Any]], num_classes: int) -> None:
    """Read each item's label volume and check its values with :func:`check_label_values`.

    Args:
        items: datalist entries with a ``"label"`` path.
        num_classes: number of classes including background.
    """
    for item in items:
        check_label_values(load_label(item["label"]), num_classes, item["label"])


def check_finite(image: np.ndarray, path: str | os.PathLike) -> None:
    """Raise :class:`DataError` naming ``path`` when ``image`` has NaN or infinite voxels.

    A single NaN makes the intensity percentiles, the loss and every prediction NaN (an all-background mask), so
    such images are refused rather than trained on or segmented.
    """
    finite = np.isfinite(image)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise DataError(
            f"image '{path}' has {bad} NaN or infinite voxels of {finite.size}; replace them (e.g. by the air value "
            "-1024 HU) or leave the case out."
        )


def check_image_file(path: str | os.PathLike, role: str = "image") -> tuple[int, ...]:
    """Read a whole image and check that it is a one-channel 3D volume of finite values.

    Args:
        path: NIfTI file.
        role: how the file is named in the message (``"image"``, ``"validation image"``, ``"input image"``).

    Returns:
        its spatial shape ``(H, W, D)``.
    """
    image = load_image(path, role)
    shape = tuple(int(s) for s in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        what = f"{shape[3]} channels" if len(shape) == 4 else f"{len(shape)} dimensions"
        raise DataError(f"{role} '{path}' has shape {tuple(image.shape)} ({what}); expected a 3D volume (H, W, D) "
                        "with one channel.")
    check_finite(image, path)
    return shape


def check_intensity_window(window: Mapping[str, Any], source: str | os.PathLike = "the training set") -> dict:
    """Check that an intensity window ``{"lower", "upper"}`` is finite and not empty.

    Args:
        window: the window in HU.
        source: where it comes from (a cache file, a checkpoint), quoted in the message.

    Returns:
        ``{"lower": float, "upper": float}``.
    """
    try:
        lower, upper = float(window["lower"]), float(window["upper"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"the intensity window of {source} must be {{'lower': number, 'upper': number}}, got "
                        f"{window!r}.") from None
    if not (np.isfinite(lower) and np.isfinite(upper)):
        raise DataError(f"the intensity window of {source} is not finite (lower={lower}, upper={upper}); an image "
                        "has NaN voxels. Fix the images and delete the cached dast_intensity_*.json.")
    if not upper > lower:
        raise DataError(f"the intensity window of {source} is empty (lower={lower}, upper={upper}): the foreground "
                        "voxels of the training images all have one value. Check the images (constant volumes?) or "
                        "pass --intensity \"[-50, 250]\" (lower, upper in HU).")
    return {"lower": lower, "upper": upper}


def check_writable_dir(path: str | os.PathLike, key: str = "output_dir") -> Path:
    """Check, before any work, that files can be created in folder ``path`` (created later if missing).

    A temporary file is created and removed in ``path``, or, when ``path`` does not exist yet, in its nearest
    existing parent (so a check that fails leaves no folder behind). Permission bits are not trusted: ``root``
    ignores them, while read-only mounts and immutable folders still refuse writes.

    Args:
        path: the output folder.
        key: the config id that sets it, named in the message.

    Returns:
        the folder as an absolute ``Path``.
    """
    folder = Path(path).expanduser().absolute()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise DataError(f"{key} '{folder}' cannot be created: '{probe}' is a file, not a folder; pass --{key} with "
                        "a folder you can write to.")
    try:
        fd, name = tempfile.mkstemp(prefix=".dast_write_check_", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise DataError(f"{key} '{folder}' is not writable ({err.strerror}: '{probe}'); pass --{key} with a folder "
                        "you can write to.") from None
    return folder


def check_device(device: Any) -> Any:
    """Check that ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``) exists on this machine.

    Returns:
        ``device`` unchanged.
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device {device!r} is not a device name ({err}); pass --device cpu or --device cuda."
                         ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device '{device}' was asked for, but CUDA is not available here (PyTorch "
                             f"{torch.__version__}, CUDA build {torch.version.cuda}); pass --device cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device '{device}' was asked for, but only {torch.cuda.device_count()} CUDA device(s) "
                             "are visible; pass --device cuda:0.")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise InputError(f"device '{device}' is not supported; pass --device cpu or --device cuda.")
    return device


def load_label(path: str | os.PathLike) -> np.ndarray:
    """Load a label volume as stored (no scaling to float), raising :class:`DataError` if it cannot be read."""
    try:
        return np.asanyarray(nib.load(os.fspath(path)).dataobj)
    except Exception as err:  # nibabel raises several unrelated types for unreadable files
        raise DataError(f"cannot read label '{path}': {_short(err)}") from err


def load_image(path: str | os.PathLike, role: str = "image") -> np.ndarray:
    """Load an image volume as float32 (NIfTI scaling applied), raising :class:`DataError` if it cannot be read."""
    try:
        return nib.load(os.fspath(path)).get_fdata(dtype=np.float32)
    except Exception as err:  # nibabel raises several unrelated types for unreadable files
        raise DataError(f"cannot read {role} '{path}': {_short(err)}") from err


def _header_shape(path: str | os.PathLike) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in nib.load(os.fspath(path)).shape)
    except Exception as err:  # nibabel raises several unrelated types for unreadable files
        raise DataError(f"cannot read the header of '{path}': {_short(err)}") from err


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:300] + " ..."
