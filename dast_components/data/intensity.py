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
"""Foreground intensity percentiles of a training set, for intensity scaling.

The paper scales CT intensities to [0, 1] from the 5th and 95th percentile of all foreground voxels of the
training set (DESIGN.md section 2). Here foreground means ``label > 0`` and voxels are used as stored, without
resampling to 1 mm: the percentiles then weight each case by its stored voxel count rather than by its physical
foreground volume, which for CT with similar slice spacing barely moves them. To bound memory for hundreds of
volumes, at most ``max_voxels_per_case`` foreground voxels per case are drawn (seeded, without replacement) before
taking the percentiles.

Command line::

    python -m dast_components.data.intensity DATALIST_OR_DATASET_DIR --out intensity.json
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dast_components.data.checks import (
    DataError,
    check_finite,
    check_intensity_window,
    check_label_values,
    load_image,
    load_label,
    read_json,
    write_json_atomic,
)

__all__ = ["foreground_percentiles", "load_datalist_items"]

logger = logging.getLogger(__name__)


def foreground_percentiles(
    items: Sequence[Mapping[str, Any]],
    lower: float = 5.0,
    upper: float = 95.0,
    num_classes: int | None = None,
    max_voxels_per_case: int = 100_000,
    seed: int = 0,
) -> dict:
    """Percentiles of the image intensities over the foreground (``label > 0``) voxels of all given cases.

    Every volume is read in full, so this is also where label values are checked (when ``num_classes`` is given),
    images are checked for NaN or infinite voxels, and an empty window (constant foreground) is refused.

    Args:
        items: datalist entries ``{"image": path, "label": path}``; image and label of a case must have one shape.
        lower: lower percentile in [0, 100]. Defaults to 5.0.
        upper: upper percentile in [0, 100], greater than ``lower``. Defaults to 95.0.
        num_classes: if given, raise :class:`DataError` naming the file when a label value is outside
            ``range(num_classes)``. Defaults to ``None`` (no check).
        max_voxels_per_case: at most this many foreground voxels are drawn per case. Defaults to 100,000.
        seed: seed of the per-case voxel draw. Defaults to 0.

    Returns:
        ``{"lower": float, "upper": float, "percentiles": [lower, upper], "num_cases": int}``.

    Example::

        stats = foreground_percentiles([{"image": "ct.nii.gz", "label": "seg.nii.gz"}], num_classes=3)
        # ScaleIntensityRanged(a_min=stats["lower"], a_max=stats["upper"], b_min=0.0, b_max=1.0, clip=True)
    """
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}.")
    if max_voxels_per_case < 1:
        raise ValueError(f"max_voxels_per_case must be >= 1, got {max_voxels_per_case}.")
    if len(items) == 0:
        raise DataError("no cases given: the foreground percentiles need at least one image/label pair.")
    samples = []
    for index, item in enumerate(items):
        label = load_label(item["label"])
        if num_classes is not None:
            check_label_values(label, num_classes, item["label"])
        image = load_image(item["image"])
        check_finite(image, item["image"])
        if image.shape != label.shape:
            raise DataError(
                f"label '{item['label']}' has shape {label.shape} but its image '{item['image']}' has shape "
                f"{image.shape}."
            )
        foreground = np.flatnonzero(label.reshape(-1) > 0)
        if foreground.size == 0:
            logger.warning("label '%s' has no foreground voxels; it adds nothing to the percentiles", item["label"])
            continue
        if foreground.size > max_voxels_per_case:
            rng = np.random.default_rng([seed, index])
            foreground = rng.choice(foreground, size=max_voxels_per_case, replace=False)
        samples.append(image.reshape(-1)[foreground])
    if not samples:
        raise DataError(f"none of the {len(items)} labels (first: '{items[0]['label']}') has foreground voxels (> 0).")
    values = np.concatenate(samples)
    low, high = np.percentile(values, [lower, upper])
    check_intensity_window({"lower": low, "upper": high},
                           f"the {len(items)} training case(s) (first: '{items[0]['image']}')")
    logger.info(
        "foreground intensity p%g=%.2f p%g=%.2f from %d voxels of %d cases",
        lower,
        low,
        upper,
        high,
        values.size,
        len(items),
    )
    return {"lower": float(low), "upper": float(high), "percentiles": [lower, upper], "num_cases": len(items)}


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
    from dast_components.data import datalist  # deferred: datalist imports this module

    source = Path(source).expanduser().absolute()
    if source.is_dir():
        return datalist.load_dataset_items(source)
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


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: ``python -m dast_components.data.intensity DATALIST_OR_DATASET_DIR --out intensity.json``."""
    parser = argparse.ArgumentParser(
        prog="python -m dast_components.data.intensity",
        description="Foreground intensity percentiles (default 5th/95th) of a dataset, written as JSON.",
    )
    parser.add_argument("source", help="[REQUIRED] dataset folder (MSD dataset.json or KiTS19 cases) or datalist JSON")
    parser.add_argument("--out", required=True, help="[REQUIRED] output JSON; replaced if it exists")
    parser.add_argument("--key", action="append", help="[OPTIONAL] datalist list(s) to use (default: training)")
    parser.add_argument("--lower", type=float, default=5.0, help="[OPTIONAL] lower percentile (5)")
    parser.add_argument("--upper", type=float, default=95.0, help="[OPTIONAL] upper percentile (95)")
    parser.add_argument("--num_classes", type=int, default=None, help="[OPTIONAL] also check labels are < this")
    parser.add_argument("--max_voxels_per_case", type=int, default=100_000, help="[OPTIONAL] voxel draw cap (100000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    items = load_datalist_items(args.source, keys=args.key)
    stats = foreground_percentiles(
        items, args.lower, args.upper, num_classes=args.num_classes, max_voxels_per_case=args.max_voxels_per_case
    )
    out = write_json_atomic(args.out, stats)
    print(f"wrote {out}: lower={stats['lower']:.2f} upper={stats['upper']:.2f} from {stats['num_cases']} cases")
    return stats


if __name__ == "__main__":
    main()  # an input error ends the process with its message (dast_components.errors)
