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
"""Helpers of the ``dast_kits19_seg`` bundle tests: paths, a tiny architecture, synthetic KiTS19 cases, CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from dast_components.data.synthetic import write_dataset
from dast_components.networks import random_arch, save_arch

__all__ = [
    "BUNDLE",
    "REPO",
    "TINY_GRID",
    "config_list",
    "config_path",
    "error_chain",
    "run_cli",
    "save_kits_case",
    "write_kits19",
    "write_tiny_arch",
]

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "dast_kits19_seg"
TINY_GRID = 2


def config_path(name: str) -> str:
    """Absolute path of ``configs/<name>`` of the bundle (``.json`` added when missing)."""
    return str(BUNDLE / "configs" / (name if "." in name else f"{name}.json"))


def config_list(*names: str) -> str:
    """The ``--config_file`` value of a config combination, e.g. ``"['.../train.json','.../quick.json']"``."""
    return "[" + ",".join(f"'{config_path(n)}'" for n in names) + "]"


def write_tiny_arch(path: Path, ops: str = "dast", grid: int = TINY_GRID, seed: int = 1) -> Path:
    """A 3-block, 3-depth architecture file (stride 16) with tiny transformers, for CPU tests."""
    arch = random_arch(num_blocks=3, num_depths=3, ops=ops, seed=seed, channel_mul=0.25, grid=grid, num_heads=2)
    return save_arch(path, arch, source="tests/bundles (random tiny architecture)")


def write_kits19(path: Path, num_cases: int = 6, seed: int = 3) -> Path:
    """Synthetic KiTS19-layout cases (permuted affines, axis codes I, P, L) at the generator's default size."""
    return write_dataset(path, layout="kits19", num_cases=num_cases, seed=seed)


def save_kits_case(case_dir: Path, image: np.ndarray, label: np.ndarray | None, affine: np.ndarray) -> Path:
    """Write ``imaging.nii.gz`` (and ``segmentation.nii.gz`` when ``label`` is given) into ``case_dir``."""
    case_dir.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), str(case_dir / "imaging.nii.gz"))
    if label is not None:
        nib.save(nib.Nifti1Image(label, affine), str(case_dir / "segmentation.nii.gz"))
    return case_dir


def run_cli(args: Sequence[str], timeout: float, launcher: Sequence[str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle ARGS`` (or ``LAUNCHER ARGS``) from the repository root; fail with its output."""
    cmd = list(launcher) if launcher else [sys.executable, "-m", "monai.bundle"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        cmd + list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd + list(args))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def error_chain(err: BaseException) -> str:
    """All messages of an exception and its causes (config parsing wraps the original error)."""
    messages = []
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        messages.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n".join(messages)
