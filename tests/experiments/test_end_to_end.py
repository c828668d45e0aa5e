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
"""Slow end-to-end runs of both experiment commands at the smallest settings (bundle CLIs on synthetic phantoms)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_lambda_placement_tiny(tmp_path):
    pytest.importorskip("matplotlib")
    args = ["experiments.lambda_placement", "--out", str(tmp_path), "--lambdas", "0.5", "--seeds", "0",
            "--num_iterations", "4", "--warmup_iterations", "1", "--ramp_iterations", "1",
            "--arch_lr_anneal_iterations", "2", "--val_interval", "2"]
    _run(args)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["summary"][0]["full_weight_from"] == [3] and data["summary"][0]["arch_lr_anneal_from"] == [3]
    assert data["runs"][0]["iterations"] == 4 and len(data["runs"][0]["transformers_by_depth"]) == 4
    assert (tmp_path / "architectures.png").is_file()
    _run(args)  # resume: the record is there, nothing is searched again
    assert len(list((tmp_path / "records").glob("*.json"))) == 1


def test_dast_vs_dints_tiny(tmp_path):
    pytest.importorskip("matplotlib")
    _run(["experiments.dast_vs_dints", "--out", str(tmp_path), "--seeds", "0", "--search_iterations", "2",
          "--search_warmup", "1", "--num_iterations", "4", "--val_interval", "2", "--num_cases", "6"])
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["summary"]["per_ops"]) == {"dast", "dints"}
    assert (tmp_path / "curves.png").is_file()
