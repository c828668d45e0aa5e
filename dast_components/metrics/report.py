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
"""KiTS19 evaluation report: a per-case CSV, a summary JSON and a printable table, plus the ignite handler
that fills them from a MONAI evaluator."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch.distributed as dist

from dast_components.metrics.kits19 import KITS19_CLASSES, kits19_case_dice_tensor, summarize_kits19
from dast_components.utils import atomic_write_text

__all__ = ["KiTS19ReportHandler", "case_name", "format_kits19_table", "write_kits19_report"]

logger = logging.getLogger(__name__)

_KITS_FILE_STEMS = ("imaging", "segmentation", "prediction")


def case_name(path: str | os.PathLike) -> str:
    """Case identifier of an image, label or prediction path.

    KiTS19 names every file the same inside its case folder, so ``.../case_00042/imaging.nii.gz`` gives
    ``case_00042``; any other file gives its name without the ``.nii``/``.nii.gz`` extension.

    Args:
        path: file path.

    Returns:
        the case identifier.
    """
    p = Path(str(path))
    stem = p.name
    for ext in (".nii.gz", ".nii", ".gz"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    if stem in _KITS_FILE_STEMS and p.parent.name:
        return p.parent.name
    return stem


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_kits19_report(
    cases: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike, prefix: str = "kits19", empty_score: float = 1.0
) -> tuple[Path, Path]:
    """Write ``{prefix}_per_case.csv`` and ``{prefix}_summary.json`` atomically.

    Args:
        cases: one mapping per case with keys ``"case"``, ``"kidney"`` and ``"tumor"``.
        output_dir: folder to write into (created when missing).
        prefix: file name prefix. Defaults to ``"kits19"``.
        empty_score: the empty-vs-empty convention used for the scores, recorded in the summary. Defaults to 1.0.

    Returns:
        paths of the CSV and the JSON file.
    """
    for i, case in enumerate(cases):
        missing = {"case", *KITS19_CLASSES} - set(case)
        if missing:
            raise ValueError(f"case entry {i} lacks keys {sorted(missing)}; got {sorted(case)}.")
    out = Path(output_dir)
    rows = sorted(cases, key=lambda c: str(c["case"]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "kidney_dice", "tumor_dice"])
    for c in rows:
        writer.writerow([c["case"], f"{float(c['kidney']):.6f}", f"{float(c['tumor']):.6f}"])
    csv_path, json_path = out / f"{prefix}_per_case.csv", out / f"{prefix}_summary.json"
    _atomic_write_text(csv_path, buf.getvalue())

    summary = summarize_kits19(rows)
    doc = {
        "metric": "KiTS19 per-case Dice: kidney on label > 0, tumor on label == 2; means over cases; "
        "composite = (kidney + tumor) / 2",
        "empty_vs_empty": "excluded from the mean (NaN)" if math.isnan(empty_score) else f"scored {empty_score}",
        **{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()},
        "per_case_file": csv_path.name,
    }
    _atomic_write_text(json_path, json.dumps(doc, indent=2) + "\n")
    return csv_path, json_path


def format_kits19_table(cases: Sequence[Mapping[str, Any]]) -> str:
    """A plain-text table of per-case scores followed by the means and the composite score.

    Args:
        cases: one mapping per case with keys ``"case"``, ``"kidney"`` and ``"tumor"``.

    Returns:
        the table as a multi-line string.
    """
    rows = sorted(cases, key=lambda c: str(c["case"]))
    summary = summarize_kits19(rows)
    width = max([len("composite")] + [len(str(c["case"])) for c in rows])
    lines = [f"{'case':<{width}}  kidney   tumor", "-" * (width + 17)]
    lines += [f"{str(c['case']):<{width}}  {float(c['kidney']):.4f}  {float(c['tumor']):.4f}" for c in rows]
    lines.append("-" * (width + 17))
    lines.append(f"{'mean':<{width}}  {summary['kidney']:.4f}  {summary['tumor']:.4f}")
    lines.append(f"{'composite':<{width}}  {summary['composite']:.4f}  ({summary['num_cases']} cases)")
    return "\n".join(lines)


class KiTS19ReportHandler:
    """Ignite handler that scores every case an evaluator sees with the KiTS19 metric and writes the report.

    Attach it to a MONAI ``SupervisedEvaluator`` whose postprocessing leaves, per case, a label map ``pred`` in
    the same geometry as ``label`` (for the challenge score: the original geometry, i.e. after ``Invertd``). At the
    end of each evaluation epoch it gathers the cases of all ranks, and rank 0 writes
    ``{prefix}_per_case.csv`` and ``{prefix}_summary.json`` (see :func:`write_kits19_report`) and logs the table.

    Args:
        output_dir: folder for the report files.
        prefix: file name prefix. Defaults to ``"kits19"``.
        pred_key: key of the prediction in each decollated output item. Defaults to ``"pred"``.
        label_key: key of the reference label. Defaults to ``"label"``.
        empty_score: Dice when both masks are empty for a class. Defaults to 1.0.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        prefix: str = "kits19",
        pred_key: str = "pred",
        label_key: str = "label",
        empty_score: float = 1.0,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.prefix = prefix
        self.pred_key = pred_key
        self.label_key = label_key
        self.empty_score = float(empty_score)
        self.cases: list[dict[str, Any]] = []
        self.summary: dict[str, float] = {}

    def attach(self, engine: Any) -> None:
        """Register the reset, per-iteration scoring and report writing on ``engine``."""
        from ignite.engine import Events  # ignite only when attached to an engine: the metric itself runs without it

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._score)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.cases = []

    def _score(self, engine: Any) -> None:
        output = engine.state.output
        items = output if isinstance(output, (list, tuple)) else [output]
        for item in items:
            for key in (self.pred_key, self.label_key):
                if key not in item:
                    raise ValueError(
                        f"evaluator output has no '{key}' (keys: {sorted(item)}); check pred_key/label_key."
                    )
            pred, label = item[self.pred_key], item[self.label_key]
            scores = kits19_case_dice_tensor(pred[None], label[None], self.empty_score)[0].tolist()
            meta = getattr(label, "meta", {}) or getattr(pred, "meta", {})
            source = meta.get("filename_or_obj", f"case_{len(self.cases):05d}")
            self.cases.append({"case": case_name(source), **dict(zip(KITS19_CLASSES, scores))})

    def _write(self, engine: Any) -> None:
        cases = self.cases
        world = idist.get_world_size()
        if world > 1:
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, cases)
            cases = [c for part in gathered for c in part]
            if idist.get_rank() != 0:
                return
        if not cases:
            logger.warning("KiTS19 report: the evaluator produced no cases; nothing written.")
            return
        self.summary = summarize_kits19(cases)
        csv_path, json_path = write_kits19_report(cases, self.output_dir, self.prefix, self.empty_score)
        logger.info("KiTS19 metric (%d cases)\n%s", len(cases), format_kits19_table(cases))
        logger.info("KiTS19 report written: %s, %s", csv_path, json_path)
