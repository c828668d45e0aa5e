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
"""Training curves: loss and validation Dice against iteration, for one or more runs, in one PNG.

A run is a metrics CSV file (an ``iteration`` column plus any columns; e.g. the ``training_log.csv`` of the KiTS19
bundle or the search bundle's metrics file) or a TensorBoard event folder. Every numeric column whose name contains
``loss`` goes to the left panel and every one containing ``dice`` to the right panel (case-insensitive); empty or
non-numeric cells are skipped, so a validation column filled every few rows draws as a line through its points.

Command line::

    python -m dast_components.visualize curves --runs DAST=runs/dast/metrics.csv DiNTS=runs/dints/metrics.csv \\
        --out curves.png
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from dast_components.visualize._common import new_figure, save_figure

__all__ = ["PANELS", "draw_curves", "parse_run_spec", "read_metrics"]

logger = logging.getLogger(__name__)

#: Panel name -> substring a column name must contain (case-insensitive) to be drawn in it.
PANELS: dict[str, str] = {"loss": "loss", "dice": "dice"}
_ITERATION = "iteration"

Series = dict[str, tuple[list[float], list[float]]]


def _number(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read_csv(path: Path) -> Series:
    try:
        return _parse_csv(path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"metrics file {path} is not a readable CSV text file: {err}") from None


def _parse_csv(path: Path) -> Series:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c for c in (reader.fieldnames or []) if c is not None]
        if _ITERATION not in columns:
            raise ValueError(
                f"metrics file {path} has no '{_ITERATION}' column (columns: {columns}); the curves are drawn against "
                f"iteration, so the file needs a header with an '{_ITERATION}' column."
            )
        wanted = [c for c in columns if any(key in c.lower() for key in PANELS.values())]
        series: Series = {c: ([], []) for c in wanted}
        for row in reader:
            it = _number(row.get(_ITERATION))
            if it is None:
                continue
            for c in wanted:
                value = _number(row.get(c))
                if value is not None:
                    series[c][0].append(it)
                    series[c][1].append(value)
    return {c: xy for c, xy in series.items() if xy[0]}


def _read_tensorboard(folder: Path) -> Series:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        raise ImportError(
            f"{folder} is a TensorBoard event folder; reading it needs tensorboard "
            "(`pip install 'dast_components[tensorboard]'`), or pass a metrics CSV file instead."
        ) from None
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    series: Series = {}
    for tag in acc.Tags().get("scalars", []):
        if any(key in tag.lower() for key in PANELS.values()):
            events = [e for e in acc.Scalars(tag) if math.isfinite(e.value)]
            if events:
                series[tag] = ([float(e.step) for e in events], [float(e.value) for e in events])
    return series


def read_metrics(path: str | os.PathLike) -> dict[str, tuple[list[float], list[float]]]:
    """Loss and Dice series of one run.

    Args:
        path: a CSV file with an ``iteration`` column, or a TensorBoard event folder (steps are iterations).

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: a CSV without an ``iteration`` column, or a folder without event files.

    Returns:
        ``{column: (iterations, values)}`` for each column/tag whose name contains ``loss`` or ``dice`` and that has
        at least one finite value.
    """
    path = Path(path)
    if path.is_dir():
        if not any(path.rglob("events.out.tfevents*")):
            raise ValueError(f"{path} is a folder without TensorBoard event files (events.out.tfevents*); pass the "
                             "metrics CSV file of the run or its TensorBoard log folder.")
        return _read_tensorboard(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist.")
    return _read_csv(path)


def parse_run_spec(spec: str) -> tuple[str, Path]:
    """``"NAME=PATH"`` -> ``(NAME, PATH)``; a bare ``PATH`` is named after its folder (or file stem at top level).

    Raises:
        ValueError: empty name or path.
    """
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        p = Path(spec)
        name = p.parent.name if p.suffix and p.parent.name else p.stem if p.suffix else p.name
    if not name.strip() or not path.strip():
        raise ValueError(f"run {spec!r} must be NAME=PATH (e.g. DAST=runs/dast/metrics.csv) or a PATH.")
    return name.strip(), Path(path.strip())


def draw_curves(
    runs: Mapping[str, str | os.PathLike] | Sequence[str],
    out_path: str | os.PathLike,
    title: str | None = None,
    dpi: int = 120,
) -> dict[str, list[str]]:
    """Draw the loss curves (left) and the validation Dice curves (right) of several runs into one PNG.

    Args:
        runs: ``{run name: metrics file or TensorBoard folder}`` in legend order, or a list of ``"NAME=PATH"``
            strings.
        out_path: PNG file to write (atomically; the folder is created).
        title: figure title. Defaults to the run names.
        dpi: resolution of the PNG. Defaults to 120.

    Raises:
        ValueError: no runs, a run file without ``iteration`` column, or no loss/Dice column in any run.

    Returns:
        ``{run name: [columns drawn]}``.

    Example::

        draw_curves({"DAST": "runs/dast/training_log.csv", "DiNTS": "runs/dints/training_log.csv"}, "curves.png")
    """
    if not isinstance(runs, Mapping):
        runs = dict(parse_run_spec(s) for s in runs)
    if not runs:
        raise ValueError("draw_curves needs at least one run.")
    data = {name: read_metrics(path) for name, path in runs.items()}
    if not any(data.values()):
        raise ValueError(f"none of the runs {dict(runs)} has a numeric column whose name contains "
                         f"{' or '.join(repr(k) for k in PANELS.values())}.")

    fig = new_figure(12.0, 4.4, dpi=dpi)
    from matplotlib.ticker import MaxNLocator

    axes = {panel: fig.add_subplot(1, len(PANELS), i + 1) for i, panel in enumerate(PANELS)}
    styles = ("-", "--", ":", "-.")
    colors = [f"C{i}" for i in range(10)]
    drawn: dict[str, list[str]] = {name: [] for name in data}
    for r, (name, series) in enumerate(data.items()):
        for panel, key in PANELS.items():
            columns = [c for c in series if key in c.lower()]
            for k, column in enumerate(columns):
                xs, ys = series[column]
                marker = "o" if len(xs) <= 30 else None
                axes[panel].plot(xs, ys, color=colors[r % len(colors)], linestyle=styles[k % len(styles)],
                                 marker=marker, markersize=3, linewidth=1.5, label=f"{name}: {column}")
                drawn[name].append(column)
    for panel, ax in axes.items():
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss" if panel == "loss" else "Dice")
        ax.set_title("training loss" if panel == "loss" else "validation Dice", fontsize=10)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no '{PANELS[panel]}' column in any run", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    if "dice" in axes and axes["dice"].lines:
        low = min(min(line.get_ydata()) for line in axes["dice"].lines)
        if low >= 0:  # Dice in [0, 1]; the margin keeps lines at exactly 0 or 1 visible off the frame
            axes["dice"].set_ylim(-0.02, 1.02)
    fig.suptitle(title or "runs: " + ", ".join(data), fontsize=11)
    path = save_figure(fig, out_path)
    logger.info("wrote curves %s (%s)", path, "; ".join(f"{n}: {', '.join(c) or 'nothing'}" for n, c in drawn.items()))
    return drawn
