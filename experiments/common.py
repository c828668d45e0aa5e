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
"""
Shared pieces of the experiments: bundle CLI calls, resumable per-run records, statistics, environment.

Every experiment drives the bundles only through ``python -m monai.bundle run`` and the files they write
(``models/arch_code.json``, ``models/arch_code_iterNNNNNN.json``, ``eval/metrics.csv``). The config ids the
experiments override are listed once, in :data:`SEARCH_OVERRIDE_IDS`; adapt them here if a bundle renames one.

Resume: each (setting, seed) run writes one record ``records/<name>.json`` atomically when it completes; a record
present is a run done (skipped on the next call). A run stopped midway is resumed from its bundle checkpoint
(``--resume True`` when ``eval/search_checkpoint.pt`` exists in its bundle root).
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dast_components.utils import atomic_write_text

__all__ = [
    "SEARCH_OVERRIDE_IDS",
    "environment",
    "load_record",
    "mean_sd",
    "read_csv_rows",
    "bundle_command",
    "search_command",
    "search_finished",
    "write_json",
]

#: every search bundle config id an experiment overrides (one place to adapt after a config change)
SEARCH_OVERRIDE_IDS: tuple[str, ...] = (
    "dataset_dir", "cache_dir", "num_blocks", "num_depths", "grid", "channel_mul", "arch_channel_mul", "patch_size",
    "train_patch_size", "num_iterations", "warmup_iterations", "ramp_iterations", "arch_lr_anneal_iterations",
    "val_interval", "device", "amp", "tensorboard", "memory_lambda", "memory_budget_gib", "seed", "ops", "resume",
)

SEARCH_CONFIGS = ("bundles/dast_search/configs/search.json", "bundles/dast_search/configs/quick.json")


def bundle_command(workflow: str, bundle_root: Path, settings: dict[str, Any], configs: Sequence[str],
                   allowed: Sequence[str]) -> list[str]:
    """``python -m monai.bundle run <workflow>`` over ``configs`` with ``--<id> <value>`` for each of ``settings``
    (``None`` values left out, lists as JSON, booleans as Python literals: the bundle CLI keeps "false" as a truthy
    string).

    Raises:
        ValueError: a key of ``settings`` is not in ``allowed``.
    """
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"{workflow} override ids {unknown} are not among the ids this experiment sets "
                         f"{tuple(allowed)}.")
    files = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", files,
           "--bundle_root", str(bundle_root)]
    for key, value in settings.items():
        if value is not None:
            cmd += [f"--{key}", json.dumps(value) if isinstance(value, (list, tuple)) else str(value)]
    return cmd


def search_command(bundle_root: Path, settings: dict[str, Any], configs: Sequence[str] = SEARCH_CONFIGS) -> list[str]:
    """The search bundle's ``search`` workflow with ``settings`` (keys from :data:`SEARCH_OVERRIDE_IDS`)."""
    return bundle_command("search", bundle_root, settings, configs, SEARCH_OVERRIDE_IDS)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts (empty list when the file is missing)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def search_finished(bundle_root: Path, num_iterations: int) -> bool:
    """True when the search in ``bundle_root`` wrote ``models/arch_code.json`` after its last iteration."""
    rows = read_csv_rows(Path(bundle_root) / "eval" / "metrics.csv")
    if not rows or not (Path(bundle_root) / "models" / "arch_code.json").is_file():
        return False
    return int(rows[-1]["iteration"]) >= int(num_iterations)


def mean_sd(values: Iterable[float | None]) -> dict[str, Any]:
    """``{"mean", "sd", "n"}`` of the non-missing values (sample sd, ``n - 1``; ``None`` where undefined)."""
    xs = [float(v) for v in values if v is not None]
    n = len(xs)
    if n == 0:
        return {"mean": None, "sd": None, "n": 0}
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return {"mean": mean, "sd": sd, "n": n}


def environment() -> dict[str, Any]:
    """Versions, CPU count, threads and load average of this machine (stored in every results JSON)."""
    import monai
    import torch

    try:
        load = list(os.getloadavg())
    except OSError:  # not on every platform
        load = None
    return {
        "python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "omp_num_threads":
        os.environ.get("OMP_NUM_THREADS"), "loadavg_1_5_15": load,
    }


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (parents created)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps(data, indent=2, sort_keys=False) + "\n")


def load_record(path: Path) -> dict[str, Any] | None:
    """A completed run's record, or ``None`` if it is missing or unreadable (then the run is redone)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
