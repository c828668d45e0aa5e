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
"""Datalists, splits and cached dataset preparation for the search (MSD) and the KiTS19 bundles.

The bundles call one preparer from their configs, e.g.
``"$dast_components.data.prepare_search_data(@dataset_dir, cache_dir=@output_dir)"``; it validates the dataset,
makes the split and the foreground intensity percentiles when they are missing, caches them as JSON and returns
datalists with absolute paths. Cache files (``dast_search_split.json``, ``dast_kits19_folds.json``,
``dast_intensity_*.json``) store the cases they were made from, with paths relative to the dataset folder, and are
recomputed when the cases listed in the dataset change. Making an intensity cache reads every image and label of
the split in full (readable, finite image values, label values in range), so the checks of a later run are free;
it also records each file's size and modification time, and a changed file is read and checked again. Delete the
caches to force a recomputation.

Command line::

    python -m dast_components.data.datalist search DATASET_DIR [--out FILE] [--seed S]
    python -m dast_components.data.datalist kits19 DATASET_DIR [--num_folds 5] [--fold F] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dast_components.data.checks import (
    DataError,
    check_dataset_dir,
    check_image_file,
    check_image_label_shapes,
    check_items_exist,
    check_label_files,
    read_json,
    write_json_atomic,
)
from dast_components.data.intensity import foreground_percentiles, warn_uncovered_classes
from dast_components.data.items import kits19_items, load_dataset_items, msd_items
from dast_components.errors import InputError

__all__ = [
    "SEARCH_SPLIT_SIZES",
    "check_batch_size",
    "fold_split",
    "kfold_split",
    "kits19_items",  # from dast_components.data.items
    "load_dataset_items",  # from dast_components.data.items
    "msd_items",  # from dast_components.data.items
    "prepare_kits19_data",
    "prepare_search_data",
    "prepare_search_datalist",
    "read_datalist_file",
    "search_split",
]

logger = logging.getLogger(__name__)

#: paper (and DiNTS) split of the 282 MSD Task07 cases: weight training / architecture training / validation
SEARCH_SPLIT_SIZES = {"train_weights": 114, "train_arch": 114, "validation": 54}
_CACHE_VERSION = 1
_INTENSITY_CACHE_VERSION = 2  # 2: per-class percentiles and share inside the window ("classes")


def search_split(items: Sequence[Mapping[str, Any]], seed: int = 0) -> dict:
    """Split cases for the bi-level search in the paper's proportions 114 / 114 / 54 (of 282).

    Sizes scale with ``len(items)`` (validation rounded, the rest halved, weight training taking the odd case);
    each part gets at least one case. Items are ordered by image path before the seeded shuffle, so the split does
    not depend on the listing order. The paper reuses DiNTS' split, which is not published; this one is random.

    Args:
        items: datalist entries with an ``"image"`` key; at least 3.
        seed: shuffle seed. Defaults to 0.

    Returns:
        ``{"train_weights": [...], "train_arch": [...], "validation": [...]}``: disjoint lists covering ``items``.
    """
    n = len(items)
    if n < 3:
        raise DataError(f"the search split needs at least 3 cases (weights / architecture / validation), got {n}.")
    total = sum(SEARCH_SPLIT_SIZES.values())
    n_val = min(max(1, math.floor(n * SEARCH_SPLIT_SIZES["validation"] / total + 0.5)), n - 2)
    n_weights = (n - n_val + 1) // 2
    ordered = _sorted_items(items)
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [dict(ordered[i]) for i in order]
    return {
        "train_weights": shuffled[:n_weights],
        "train_arch": shuffled[n_weights : n - n_val],
        "validation": shuffled[n - n_val :],
    }


def kfold_split(items: Sequence[Mapping[str, Any]], num_folds: int = 5, seed: int = 0) -> list[dict]:
    """Assign each case to one of ``num_folds`` folds of (nearly) equal size.

    Args:
        items: datalist entries with an ``"image"`` key; at least ``num_folds``.
        num_folds: number of folds, >= 2. Defaults to 5 (the paper's 5-fold cross-validation, 4:1 per fold).
        seed: shuffle seed. Defaults to 0.

    Returns:
        copies of ``items`` ordered by image path, each with an added integer ``"fold"``.
    """
    if int(num_folds) < 2:
        raise InputError(f"num_folds must be >= 2, got {num_folds}.")
    if len(items) < num_folds:
        raise DataError(f"{num_folds}-fold cross-validation needs at least {num_folds} cases, got {len(items)}; pass "
                        f"--num_folds {max(2, len(items))} or add cases.")
    ordered = [dict(item) for item in _sorted_items(items)]
    for position, index in enumerate(np.random.default_rng(seed).permutation(len(ordered))):
        ordered[index]["fold"] = position % int(num_folds)
    return ordered


def fold_split(items_with_fold: Sequence[Mapping[str, Any]], fold: int) -> tuple[list[dict], list[dict]]:
    """Training and validation lists of one fold of a :func:`kfold_split` datalist.

    Args:
        items_with_fold: entries carrying an integer ``"fold"``.
        fold: the validation fold.

    Returns:
        ``(train, val)``: entries of the other folds and of ``fold``, without the ``"fold"`` key.
    """
    if not items_with_fold:
        raise DataError("the datalist is empty; expected entries with 'image', 'label' and 'fold' keys.")
    missing = [index for index, item in enumerate(items_with_fold) if "fold" not in item]
    if missing:
        raise DataError(f"every datalist entry needs a 'fold' key (see kfold_split()); entries without: {missing}.")
    folds = sorted({int(item["fold"]) for item in items_with_fold})
    if int(fold) not in folds:
        raise InputError(f"fold {fold} is out of range: the datalist has folds {folds[0]}..{folds[-1]}.")
    train, val = [], []
    for item in items_with_fold:
        entry = {k: v for k, v in item.items() if k != "fold"}
        (val if int(item["fold"]) == int(fold) else train).append(entry)
    return train, val


def check_batch_size(num_cases: int, batch_size: int, source: str = "the training list") -> None:
    """Raise :class:`DataError` when ``num_cases`` training cases cannot fill one batch of ``batch_size``."""
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}.")
    if int(num_cases) < int(batch_size):
        raise DataError(f"{source} has {num_cases} training case(s), fewer than batch_size={batch_size} (training "
                        f"drops incomplete batches, so no iteration would run); pass --batch_size {max(1, num_cases)} "
                        "or add cases.")


def prepare_search_data(
    dataset_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    num_classes: int = 3,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
) -> dict:
    """Validate an MSD dataset and return the search datalists and intensity percentiles, cached as JSON.

    Checks ``dataset.json``, that every listed file exists, and (from headers) that images are 3D with labels of the
    same shape; makes or reuses ``dast_search_split.json`` (:func:`search_split`) and ``dast_intensity_search.json``
    (5th/95th foreground percentiles of ``train_weights`` + ``train_arch``). Label values of all cases are checked
    in the same pass as the percentiles, so later runs that reuse the cache do not read any volume.

    Args:
        dataset_dir: MSD task folder (e.g. ``Task07_Pancreas``) with ``dataset.json``.
        cache_dir: folder for the cache files. Defaults to ``dataset_dir`` if writable, else ``output_dir``.
        num_classes: number of label classes including background. Defaults to 3.
        seed: split seed. Defaults to 0.
        output_dir: fallback cache folder when ``cache_dir`` is ``None`` and ``dataset_dir`` is read-only.

    Returns:
        ``{"train_weights": [...], "train_arch": [...], "validation": [...], "intensity": {"lower", "upper"}}`` with
        entries ``{"image": absolute path, "label": absolute path}``.
    """
    root = check_dataset_dir(dataset_dir)
    items = msd_items(root, num_classes=num_classes)
    check_image_label_shapes(items)
    cache = _cache_dir(root, cache_dir, output_dir)

    cases = _relative_cases(root, items)
    split_path = cache / "dast_search_split.json"
    split = _reuse(split_path, {"version": _CACHE_VERSION, "seed": seed, "cases": cases}, SEARCH_SPLIT_SIZES)
    if split is None:
        split = {
            "version": _CACHE_VERSION,
            "seed": seed,
            "cases": cases,
            **{part: _relative_cases(root, entries) for part, entries in search_split(items, seed).items()},
        }
        write_json_atomic(split_path, split)
        logger.info("wrote search split %s (%s)", split_path, _sizes(split, SEARCH_SPLIT_SIZES))
    else:
        logger.info("reusing search split %s (%s)", split_path, _sizes(split, SEARCH_SPLIT_SIZES))
    parts = {part: [_absolute_case(root, entry) for entry in split[part]] for part in SEARCH_SPLIT_SIZES}
    intensity = _intensity(
        cache / "dast_intensity_search.json",
        root,
        parts["train_weights"] + parts["train_arch"],
        parts["validation"],
        num_classes,
    )
    return {**parts, "intensity": intensity}


def prepare_kits19_data(
    dataset_dir: str | os.PathLike,
    fold: int = 0,
    num_folds: int = 5,
    cache_dir: str | os.PathLike | None = None,
    num_classes: int = 3,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    batch_size: int | None = None,
) -> dict:
    """Validate a KiTS19 dataset and return one fold's datalists and intensity percentiles, cached as JSON.

    Checks the ``case_XXXXX`` folders and (from headers) image/label shapes; makes or reuses
    ``dast_kits19_folds.json`` (:func:`kfold_split`) and ``dast_intensity_kits19_fold{fold}.json`` (5th/95th
    foreground percentiles of the training folds only). Label values of all cases of the fold are checked in the
    same pass.

    Args:
        dataset_dir: KiTS19 ``data`` folder with ``case_XXXXX`` sub-folders.
        fold: validation fold, in ``range(num_folds)``. Defaults to 0.
        num_folds: number of cross-validation folds. Defaults to 5.
        cache_dir: folder for the cache files. Defaults to ``dataset_dir`` if writable, else ``output_dir``.
        num_classes: number of label classes including background. Defaults to 3.
        seed: fold assignment seed. Defaults to 0.
        output_dir: fallback cache folder when ``cache_dir`` is ``None`` and ``dataset_dir`` is read-only.
        batch_size: if given, the fold must have at least this many training cases (checked before any volume is
            read; training drops incomplete batches).

    Returns:
        ``{"training": [...], "validation": [...], "intensity": {"lower", "upper"}}`` with entries
        ``{"image": absolute path, "label": absolute path}``.
    """
    if int(num_folds) < 2:
        raise InputError(f"num_folds must be >= 2, got {num_folds}.")
    if not 0 <= int(fold) < int(num_folds):
        raise InputError(f"fold {fold} is out of range: expected 0..{int(num_folds) - 1} for num_folds={num_folds}.")
    root = check_dataset_dir(dataset_dir)
    items = kits19_items(root)
    cache = _cache_dir(root, cache_dir, output_dir)

    with_fold = _cached_folds(root, items, cache, int(num_folds), seed)
    training, validation = fold_split(with_fold, fold)
    if batch_size is not None:  # before any file is opened
        check_batch_size(len(training), batch_size, f"fold {fold} of '{root}'")
    check_image_label_shapes(items)
    intensity_path = cache / f"dast_intensity_kits19_fold{int(fold)}.json"
    intensity = _intensity(intensity_path, root, training, validation, num_classes)
    return {"training": training, "validation": validation, "intensity": intensity}


def read_datalist_file(datalist: str | os.PathLike, batch_size: int | None = None) -> dict:
    """Training and validation lists from a MONAI datalist JSON, as an alternative to the bundle's folds.

    The file holds ``{"training": [{"image": ..., "label": ...}, ...], "validation": [...]}`` (MONAI's
    ``load_decathlon_datalist`` form; other keys are ignored); relative paths are resolved against the folder of the
    file. Checked before any voxel is read: both lists present and non-empty, every entry with ``image`` and
    ``label``, every file present, enough training cases for one batch, then 3D images with same-shaped labels (from
    the NIfTI headers). The volumes themselves are read and checked when the intensity window is computed.

    Args:
        datalist: the datalist JSON file.
        batch_size: if given, the training list must hold at least this many cases.

    Returns:
        ``{"training": [...], "validation": [...]}`` with absolute ``image``/``label`` paths.
    """
    path = Path(datalist).expanduser()
    if not path.is_file():
        raise DataError(f"datalist file '{path}' does not exist (--datalist expects a JSON file with 'training' and "
                        "'validation' lists).")
    content = read_json(path)
    if not isinstance(content, dict):
        raise DataError(f"datalist '{path}' must hold a JSON object with 'training' and 'validation' lists, got "
                        f"{type(content).__name__}.")
    out = {}
    for key in ("training", "validation"):
        entries = content.get(key)
        if not isinstance(entries, list) or not entries:
            raise DataError(f"datalist '{path}' needs a non-empty list under '{key}'; its keys are {sorted(content)}.")
        items = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
                raise DataError(f"datalist '{path}' {key} entry {index} must have 'image' and 'label' keys, got "
                                f"{entry!r}.")
            items.append({k: str((path.parent / str(entry[k])).expanduser().resolve()) for k in ("image", "label")})
        check_items_exist(items, source=f"{path}, {key}")
        out[key] = items
    if batch_size is not None:
        check_batch_size(len(out["training"]), batch_size, f"the training list of '{path}'")
    check_image_label_shapes(out["training"] + out["validation"])
    logger.info("datalist %s: %d training and %d validation cases", path, len(out["training"]), len(out["validation"]))
    return out


def prepare_search_datalist(
    datalist: str | os.PathLike,
    output_dir: str | os.PathLike,
    num_classes: int = 3,
    seed: int = 0,
) -> dict:
    """The search bundle's data from a MONAI datalist JSON instead of an MSD folder (``--datalist``).

    The file is read and checked by :func:`read_datalist_file`. Its ``validation`` list is the search's validation;
    its ``training`` list is shuffled (seeded, ordered by image path first) and halved into the weight and the
    architecture split (the weight split takes the odd case), as :func:`search_split` halves the non-validation
    cases. The intensity window is computed from the training list and cached in ``output_dir``
    (``dast_intensity_search.json``), with every volume checked once.

    Args:
        datalist: JSON file with ``training`` and ``validation`` lists of ``{"image", "label"}``.
        output_dir: folder of the intensity cache (the bundle's ``output_dir``).
        num_classes: number of label classes including background.
        seed: shuffle seed of the halving.

    Returns:
        ``{"train_weights", "train_arch", "validation", "intensity"}`` as :func:`prepare_search_data` returns them.
    """
    lists = read_datalist_file(datalist)
    training = lists["training"]
    if len(training) < 2:
        raise DataError(f"datalist '{datalist}': the search needs at least 2 training cases (one for the weights, one "
                        f"for the architecture), got {len(training)}.")
    ordered = _sorted_items(training)
    order = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [dict(ordered[i]) for i in order]
    n_weights = (len(shuffled) + 1) // 2
    parts = {"train_weights": shuffled[:n_weights], "train_arch": shuffled[n_weights:],
             "validation": lists["validation"]}
    cache = Path(output_dir).expanduser().absolute()
    cache.mkdir(parents=True, exist_ok=True)
    root = Path(datalist).expanduser().resolve().parent
    logger.info("datalist %s: search split %s", datalist, _sizes(parts, SEARCH_SPLIT_SIZES))
    intensity = _intensity(cache / "dast_intensity_search.json", root, training, parts["validation"], num_classes)
    return {**parts, "intensity": intensity}


def _cached_folds(root: Path, items: list[dict], cache: Path, num_folds: int, seed: int) -> list[dict]:
    """:func:`kfold_split` of ``items``, reused from ``dast_kits19_folds.json`` in ``cache`` when still valid."""
    path = cache / "dast_kits19_folds.json"
    expected = {"version": _CACHE_VERSION, "seed": seed, "num_folds": num_folds, "cases": _relative_cases(root, items)}
    folds = _reuse(path, expected, ["folds"])
    if folds is None:
        assigned = kfold_split(items, num_folds, seed)
        folds = {**expected, "folds": [{**_relative_case(root, item), "fold": item["fold"]} for item in assigned]}
        write_json_atomic(path, folds)
        logger.info("wrote %d-fold split of %d cases to %s", num_folds, len(items), path)
    else:
        logger.info("reusing %d-fold split of %d cases from %s", num_folds, len(items), path)
    return [{**_absolute_case(root, entry), "fold": entry["fold"]} for entry in folds["folds"]]


def _intensity(path: Path, root: Path, training: list[dict], others: list[dict], num_classes: int) -> dict:
    """Cached foreground percentiles of ``training``; every volume of ``training`` and ``others`` checked once.

    Each image and label is read in full (readable, finite image values, label values in ``range(num_classes)``);
    the cache records the size and modification time of every file, so a changed file is read and checked again.
    Warns (:func:`warn_uncovered_classes`) when the window clips most voxels of a label class.
    """
    everything = _sorted_items(training + others)
    expected = {
        "version": _INTENSITY_CACHE_VERSION,
        "num_classes": int(num_classes),
        "cases": _relative_cases(root, training),
        "label_checked": _relative_cases(root, everything),
        "files": _stamps(everything),
    }
    cached = _reuse(path, expected, ["lower", "upper"])
    if cached is not None:
        logger.info("reusing foreground intensity %s: lower=%.2f upper=%.2f", path, cached["lower"], cached["upper"])
    else:
        logger.info("computing foreground intensity percentiles of %d training cases", len(training))
        stats = foreground_percentiles(training, num_classes=num_classes)
        check_label_files(others, num_classes)
        for item in others:
            check_image_file(item["image"], "validation image")
        cached = {**expected, **stats}
        write_json_atomic(path, cached)
        logger.info("wrote foreground intensity %s: lower=%.2f upper=%.2f", path, cached["lower"], cached["upper"])
    warn_uncovered_classes(cached, source=str(path))
    return {"lower": float(cached["lower"]), "upper": float(cached["upper"])}


def _stamps(items: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """``[size, modification time in ns]`` of each image and label file, in order."""
    stamps = []
    for item in items:
        for key in ("image", "label"):
            stat = os.stat(item[key])
            stamps.append([int(stat.st_size), int(stat.st_mtime_ns)])
    return stamps


def _reuse(path: Path, expected: Mapping[str, Any], required: Sequence[str]) -> dict | None:
    """The cached dict at ``path`` if it matches ``expected`` on every key and has ``required``, else ``None``."""
    if not path.is_file():
        return None
    try:
        cached = read_json(path)
    except DataError as err:
        logger.warning("ignoring unreadable cache: %s", err)
        return None
    if not isinstance(cached, dict) or not set(required) <= set(cached):
        logger.warning("ignoring cache %s: expected a JSON object with keys %s", path, sorted(required))
        return None
    stale = [key for key, value in expected.items() if cached.get(key) != value]
    if stale:
        logger.info("cache %s is out of date (%s changed); recomputing", path, ", ".join(stale))
        return None
    return cached


def _cache_dir(root: Path, cache_dir: str | os.PathLike | None, output_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        folder = Path(cache_dir).expanduser().absolute()
    elif _is_writable(root):
        return root
    elif output_dir is not None:
        folder = Path(output_dir).expanduser().absolute()
    else:
        raise DataError(f"dataset_dir '{root}' is not writable; pass cache_dir (e.g. the bundle's output_dir).")
    folder.mkdir(parents=True, exist_ok=True)
    if not _is_writable(folder):
        raise DataError(f"cache folder '{folder}' is not writable; pass another cache_dir.")
    return folder


def _is_writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def _sorted_items(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(items, key=lambda item: str(item["image"]))


def _relative_case(root: Path, item: Mapping[str, Any]) -> dict:
    """``{"image", "label"}`` of ``item`` as POSIX paths relative to ``root`` (how the caches store cases)."""
    return {k: Path(os.path.relpath(item[k], root)).as_posix() for k in ("image", "label")}


def _relative_cases(root: Path, items: Sequence[Mapping[str, Any]]) -> list[dict]:
    return [_relative_case(root, item) for item in items]


def _absolute_case(root: Path, entry: Mapping[str, Any]) -> dict:
    return {k: os.path.normpath(root / entry[k]) for k in ("image", "label")}


def _sizes(split: Mapping[str, Any], parts: Sequence[str]) -> str:
    return " / ".join(f"{part} {len(split[part])}" for part in parts)


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``search DATASET_DIR`` or ``kits19 DATASET_DIR``; writes the datalist JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m dast_components.data.datalist",
        description="Check a dataset and write the datalist the DAST bundles use (split and intensity are cached "
        "next to the data, or in --cache_dir).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="MSD dataset.json -> train_weights / train_arch / validation")
    kits = commands.add_parser("kits19", help="KiTS19 case folders -> k-fold datalist")
    for sub in (search, kits):
        sub.add_argument("dataset_dir", help="[REQUIRED] dataset folder")
        sub.add_argument("--out", default=None, help="[OPTIONAL] datalist JSON to write (default: DATASET_DIR/...)")
        sub.add_argument("--seed", type=int, default=0, help="[OPTIONAL] split seed (0); another seed, another split")
        sub.add_argument("--cache_dir", default=None, help="[OPTIONAL] cache folder (default: DATASET_DIR)")
        sub.add_argument("--num_classes", type=int, default=3, help="[OPTIONAL] label classes incl. background (3)")
    kits.add_argument("--num_folds", type=int, default=5, help="[OPTIONAL] cross-validation folds (5)")
    kits.add_argument(
        "--fold", type=int, default=None, help="[OPTIONAL] write training/validation/intensity of this fold only"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    root = check_dataset_dir(args.dataset_dir)
    common = {"cache_dir": args.cache_dir, "num_classes": args.num_classes, "seed": args.seed}
    if args.command == "search":
        result = prepare_search_data(root, **common)
        summary = _sizes(result, SEARCH_SPLIT_SIZES)
        default_out = root / "dast_search_datalist.json"
    elif args.fold is not None:
        result = prepare_kits19_data(root, fold=args.fold, num_folds=args.num_folds, **common)
        summary = f"fold {args.fold}: training {len(result['training'])} / validation {len(result['validation'])}"
        default_out = root / f"dast_kits19_datalist_fold{args.fold}.json"
    else:
        items = kits19_items(root)
        check_image_label_shapes(items)
        cache = _cache_dir(root, args.cache_dir, None)
        result = {"num_folds": args.num_folds, "training": _cached_folds(root, items, cache, args.num_folds, args.seed)}
        summary = f"{len(items)} cases in {args.num_folds} folds"
        default_out = root / "dast_kits19_datalist.json"
    out = write_json_atomic(args.out or default_out, result)
    print(f"wrote {out} ({summary})")
    return result


def cli(argv: Sequence[str] | None = None) -> int:
    """Console script ``dast-datalist``: :func:`main`, exit status 0 (an input error exits 1 with its message)."""
    main(argv)
    return 0


if __name__ == "__main__":
    main()  # an input error ends the process with its message (dast_components.errors)
