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
"""Image/label pairs of a dataset folder (MSD ``dataset.json`` or KiTS19 case folders) or of a datalist JSON file.

These loaders sit below both users: :mod:`.datalist` (splits and cached preparation) and :mod:`.intensity`
(foreground percentiles of a datalist or a dataset folder) import them from here. Layouts: docs/design.md, "Data and
metric".
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from dast_components.data.checks import (
    KITS19_IMAGE,
    KITS19_LABEL,
    DataError,
    check_dataset_dir,
    check_dataset_json,
    check_items_exist,
    check_kits19_case,
    read_json,
)

__all__ = ["kits19_items", "load_datalist_items", "load_dataset_items", "msd_items"]

_KITS19_CASE = re.compile(r"case_\d{5}")


def msd_items(dataset_dir: str | os.PathLike, key: str = "training", num_classes: int | None = None) -> list[dict]:
    """Image/label pairs listed under ``key`` in an MSD ``dataset.json``, with absolute paths.

    Args:
        dataset_dir: MSD task folder holding ``dataset.json``.
        key: the list to read. Defaults to ``"training"``.
        num_classes: if given, the ``labels`` of ``dataset.json`` (when present) must name this many classes.
            Defaults to ``None`` (no check).

    Returns:
        entries ``{"image": path, "label": path}`` in the order of ``dataset.json``; every file exists.
    """
    json_path = check_dataset_json(dataset_dir)
    content = read_json(json_path)
    entries = content.get(key) if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"'{json_path}' has no non-empty list under key '{key}'; expected [{{'image', 'label'}}, ...].")
    labels = content.get("labels")
    if num_classes is not None and isinstance(labels, dict) and len(labels) != int(num_classes):
        raise DataError(
            f"'{json_path}' key 'labels' names {len(labels)} classes {labels} but num_classes={num_classes}."
        )
    items = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("image", "label")):
            raise DataError(f"'{json_path}' entry {index} of '{key}' needs string 'image' and 'label' keys: {entry!r}.")
        items.append({k: _absolute(json_path.parent, entry[k]) for k in ("image", "label")})
    check_items_exist(items, source=str(json_path))
    return items


def kits19_items(dataset_dir: str | os.PathLike) -> list[dict]:
    """Image/label pairs of the ``case_XXXXX`` folders of a KiTS19 ``data`` folder, sorted by case.

    Args:
        dataset_dir: folder holding ``case_00000/imaging.nii.gz`` and ``segmentation.nii.gz``, ...; other entries
            are ignored. Every case folder must hold both files (keep the unlabelled test cases elsewhere).

    Returns:
        entries ``{"image": path, "label": path}`` with absolute paths.
    """
    root = check_dataset_dir(dataset_dir)
    cases = sorted(p for p in root.iterdir() if p.is_dir() and _KITS19_CASE.fullmatch(p.name))
    if not cases:
        raise DataError(
            f"dataset_dir '{root}' has no case_XXXXX folders; expected the KiTS19 layout "
            f"case_00000/{KITS19_IMAGE} + {KITS19_LABEL}. Create a synthetic one with "
            f"`python -m dast_components.data.synthetic --layout kits19 --out {root}`."
        )
    for case in cases:
        check_kits19_case(case)
    return [{"image": str(case / KITS19_IMAGE), "label": str(case / KITS19_LABEL)} for case in cases]


def load_dataset_items(dataset_dir: str | os.PathLike) -> list[dict]:
    """Items of a dataset folder in either layout: MSD if it has ``dataset.json``, else KiTS19 case folders.

    Args:
        dataset_dir: dataset root.

    Returns:
        entries ``{"image": path, "label": path}`` with absolute paths.
    """
    root = check_dataset_dir(dataset_dir)
    return msd_items(root) if (root / "dataset.json").is_file() else kits19_items(root)


def load_datalist_items(source: str | os.PathLike, keys: Sequence[str] | None = None) -> list[dict]:
    """Image/label pairs from a dataset folder (MSD ``dataset.json`` or KiTS19 cases) or a datalist JSON file.

    A datalist JSON is either a list of ``{"image", "label"}`` entries or a dict of such lists; relative paths are
    resolved against the folder of the JSON file.

    Args:
        source: dataset folder or datalist JSON file.
        keys: for a datalist dict, the lists to join. Defaults to ``["training"]`` if present, else the training
            lists of a search split (``["train_weights", "train_arch"]``).

    Returns:
        entries ``{"image": absolute path, "label": absolute path}``.
    """
    source = Path(source).expanduser().absolute()
    if source.is_dir():
        return load_dataset_items(source)
    content = read_json(source)
    if isinstance(content, dict):
        if keys is None:
            keys = ["training"] if "training" in content else ["train_weights", "train_arch"]
        missing = [k for k in keys if not isinstance(content.get(k), list)]
        if missing:
            raise DataError(f"datalist '{source}' has no list under key(s) {missing}; its keys are {sorted(content)}.")
        entries = [entry for k in keys for entry in content[k]]
    elif isinstance(content, list):
        entries = content
    else:
        raise DataError(f"datalist '{source}' must hold a list or a dict of lists, got {type(content).__name__}.")
    items = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
            raise DataError(f"datalist '{source}' entry {index} must have 'image' and 'label' keys, got {entry!r}.")
        items.append({k: str((source.parent / entry[k]).resolve()) for k in ("image", "label")})
    return items


def _absolute(root: Path, path: str) -> str:
    return os.path.normpath(root / path)
