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
training set (paper, implementation details). Here foreground means ``label > 0`` and voxels are used as stored, without
resampling to 1 mm: the percentiles then weight each case by its stored voxel count rather than by its physical
foreground volume, which for CT with similar slice spacing barely moves them. To bound memory for hundreds of
volumes, at most ``max_voxels_per_case`` foreground voxels per case are drawn (seeded, without replacement) before
taking the percentiles.

One window for all labelled voxels suits targets of similar density (kidney and kidney tumour in contrast CT), but
not others: on lung CT the labelled voxels are mostly air-filled lung, the window comes out near -940..-600 HU and
a soft-tissue tumour is clipped to one value. So the statistics also record, per label class, its percentiles and
the share of its voxels inside the window, and :func:`warn_uncovered_classes` warns (once per window) when a class
has less than half of its voxels inside, saying how to set the window explicitly (``--intensity "[lower, upper]"``,
read by :func:`as_window`).

Command line::

    python -m dast_components.data.intensity DATALIST_OR_DATASET_DIR --out intensity.json
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dast_components.data.checks import (
    DataError,
    check_finite,
    check_intensity_window,
    check_label_values,
    load_image,
    load_label,
    write_json_atomic,
)
from dast_components.data.items import load_datalist_items
from dast_components.errors import InputError

__all__ = [
    "CLASS_PERCENTILES",
    "MIN_INSIDE_SHARE",
    "as_window",
    "foreground_percentiles",
    "load_datalist_items",  # from dast_components.data.items
    "warn_uncovered_classes",
]

logger = logging.getLogger(__name__)

CLASS_PERCENTILES = (5.0, 50.0, 95.0)
"""Percentiles recorded per label class (``stats["classes"][c]["percentiles"]``)."""

MIN_INSIDE_SHARE = 0.5
"""A class with a smaller share of its voxels inside the window triggers :func:`warn_uncovered_classes`."""

_WARNED: set[tuple] = set()


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
        ``{"lower": float, "upper": float, "percentiles": [lower, upper], "num_cases": int, "classes": {...}}``;
        ``classes`` maps each label value > 0 (as a string) to ``{"num_voxels": drawn voxels, "percentiles":
        {"5.0": HU, "50.0": HU, "95.0": HU}, "inside_window": share of its drawn voxels in [lower, upper]}``.

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
    samples, sample_labels = [], []
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
        sample_labels.append(label.reshape(-1)[foreground])
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
    labels = np.concatenate(sample_labels)
    classes = {}
    for value in np.unique(labels):
        voxels = values[labels == value]
        inside = float(np.mean((voxels >= low) & (voxels <= high)))
        class_values = np.percentile(voxels, CLASS_PERCENTILES)
        classes[str(int(value))] = {
            "num_voxels": int(voxels.size),
            "percentiles": {str(q): float(v) for q, v in zip(CLASS_PERCENTILES, class_values)},
            "inside_window": inside,
        }
        logger.info("class %d: %.0f%% of its voxels inside the window", int(value), 100 * inside)
    return {
        "lower": float(low),
        "upper": float(high),
        "percentiles": [lower, upper],
        "num_cases": len(items),
        "classes": classes,
    }


def warn_uncovered_classes(
    stats: Mapping[str, Any], source: str, min_inside: float = MIN_INSIDE_SHARE
) -> list[str]:
    """Warn (once per ``source`` and window in this process) about label classes the window mostly clips.

    Args:
        stats: output of :func:`foreground_percentiles` (or a cache holding it); without ``"classes"`` (statistics
            of an older version) nothing is checked.
        source: where the statistics come from (a cache file or the list they were computed from), for the message.
        min_inside: smallest accepted share of a class's voxels inside ``[lower, upper]``. Defaults to 0.5.

    Returns:
        the classes (as strings) below ``min_inside``, also when the warning was already given.
    """
    classes = stats.get("classes")
    if not isinstance(classes, Mapping):
        return []
    low, high = float(stats["lower"]), float(stats["upper"])
    bad = [c for c, v in sorted(classes.items()) if float(v["inside_window"]) < min_inside]
    key = (str(source), low, high)
    if not bad or key in _WARNED:
        return bad
    _WARNED.add(key)
    details = []
    for c in bad:
        q = classes[c]["percentiles"]
        details.append(
            f"class {c}: {100 * float(classes[c]['inside_window']):.0f}% inside (its "
            + "/".join(f"{float(k):g}" for k in q) + "th percentiles: " + " / ".join(f"{v:.0f}" for v in q.values())
            + " HU)"
        )
    covering = [min(min(map(float, v["percentiles"].values())) for v in classes.values()),
                max(max(map(float, v["percentiles"].values())) for v in classes.values())]
    logger.warning(
        "the intensity window [%.0f, %.0f] HU (percentiles of all labelled voxels, %s) clips most of %s: %s. Such "
        "voxels all get the same input value, so the network cannot tell them apart by density. Set the window "
        "explicitly, the same for training, evaluation and inference: --intensity \"[%.0f, %.0f]\" covers the "
        "recorded percentiles of every class.",
        low, high, source, ", ".join(f"class {c}" for c in bad), "; ".join(details), *covering,
    )
    return bad


def as_window(value: Any, name: str = "intensity") -> dict[str, float] | None:
    """An intensity window given as ``[lower, upper]`` or ``{"lower": .., "upper": ..}`` as a dict; ``None`` stays.

    This is how ``--intensity "[lower, upper]"`` reaches training (``train.json``), evaluation and inference alike.

    Args:
        value: ``None``, a pair of numbers, or a mapping with ``lower`` and ``upper``.
        name: config id named in the error message. Defaults to ``"intensity"``.

    Raises:
        InputError: anything else, a value that is not finite, or ``upper <= lower``.

    Returns:
        ``{"lower": float, "upper": float}`` or ``None``.
    """
    if value is None:
        return None
    try:
        if isinstance(value, Mapping):
            lower, upper = float(value["lower"]), float(value["upper"])
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            lower, upper = float(value[0]), float(value[1])
        else:
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"{name} must be [lower, upper] in HU (e.g. --{name} \"[-100, 300]\") or "
            f"{{'lower': ..., 'upper': ...}}, got {value!r}."
        ) from None
    if not (np.isfinite(lower) and np.isfinite(upper) and upper > lower):
        raise InputError(f"{name} [{lower}, {upper}] must be finite with upper greater than lower (HU).")
    return {"lower": lower, "upper": upper}


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
    warn_uncovered_classes(stats, source=str(args.source))
    print(f"wrote {out}: lower={stats['lower']:.2f} upper={stats['upper']:.2f} from {stats['num_cases']} cases")
    return stats


def cli(argv: Sequence[str] | None = None) -> int:
    """Console script ``dast-intensity``: :func:`main`, exit status 0 (an input error exits 1 with its message)."""
    main(argv)
    return 0


if __name__ == "__main__":
    main()  # an input error ends the process with its message (dast_components.errors)
