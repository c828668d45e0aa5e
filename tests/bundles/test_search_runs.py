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
"""End-to-end runs of the ``dast_search`` bundle CLI on 8 synthetic cases (quick overlay)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from dast_components.data import write_dataset
from dast_components.networks import DASTNet, estimate_memory, load_arch

__all__: list[str] = []

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "dast_search" / "configs"
KITS19 = REPO / "bundles" / "dast_kits19_seg" / "configs"
QUICK_LIMIT_S = 180.0


def _config_list(*names: str) -> str:
    return "[" + ",".join(f"'{CONFIGS / (n + '.json')}'" for n in names) + "]"


def _run(bundle_root: Path, dataset: Path, *args: str, names=("search", "quick"), launcher=None, timeout=600):
    cmd = [*(launcher or [sys.executable, "-m"]), "monai.bundle", "run", "search", "--config_file",
           _config_list(*names), "--bundle_root", str(bundle_root), "--dataset_dir", str(dataset), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=bundle_root.parent,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    elapsed = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{output[-4000:]}"
    return output, elapsed


def _rows(bundle_root: Path) -> list[dict[str, str]]:
    with open(bundle_root / "eval" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("msd8"), layout="msd", num_cases=8)


def test_quick_search_end_to_end(tmp_path, dataset) -> None:
    output, elapsed = _run(tmp_path / "bundle", dataset)
    root = tmp_path / "bundle"
    arch_file = root / "models" / "arch_code.json"
    arch = load_arch(arch_file, ops="dast", grid=2)
    assert arch.num_blocks == 3 and arch.num_depths == 3 and arch.provenance["iteration"] == 20
    assert (root / "models" / "arch_code_iter000010.json").is_file()
    # one console line per iteration, with losses, memory ratio and ETA
    lines = [ln for ln in output.splitlines() if "] iter " in ln]
    assert len(lines) == 20 and all("memory ratio" in ln and "ETA" in ln for ln in lines)
    assert "arch " in lines[-1] and "20/20" in lines[-1] and "val dice" in lines[-1]
    rows = _rows(root)
    assert len(rows) == 20 and rows[9]["val_dice"] and rows[19]["est_memory_gib"]
    state = torch.load(root / "eval" / "search_checkpoint.pt", weights_only=True)
    assert state["search"]["trainer"]["iteration"] == 20
    # the KiTS19 bundle builds its network from this file
    parser = ConfigParser()
    parser.read_config([str(KITS19 / "train.json"), str(KITS19 / "quick.json")])
    parser["arch_file"] = str(arch_file)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, DASTNet) and net(torch.rand(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    print(f"quick search wall time: {elapsed:.1f} s")
    assert elapsed < QUICK_LIMIT_S, f"the quick search took {elapsed:.0f} s (limit {QUICK_LIMIT_S:.0f} s)"


def test_dints_baseline_is_one_override(tmp_path, dataset) -> None:
    root = tmp_path / "bundle"
    output, _ = _run(root, dataset, "--ops", "dints", "--device", "cpu", "--num_iterations", "4",
                     "--warmup_iterations", "2", "--val_interval", "4")
    assert "device cpu x 1" in output
    arch = load_arch(root / "models" / "arch_code.json", ops="dints")
    assert arch.ops == ("skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3", "conv_1x3x3")
    assert DASTNet(root / "models" / "arch_code.json", ops="dints")(torch.rand(1, 1, 32, 32, 32)).shape[1] == 3


def test_resume_continues_instead_of_starting_over(tmp_path, dataset) -> None:
    root = tmp_path / "bundle"
    common = ("--warmup_iterations", "2", "--val_interval", "2")
    _run(root, dataset, "--num_iterations", "4", *common)
    first = _rows(root)
    output, _ = _run(root, dataset, "--num_iterations", "6", "--resume", "true", *common)
    assert "resumed at iteration 4" in output and "Restored all variables from" in output
    iters = [ln.split("] iter ")[1].split()[0] for ln in output.splitlines() if "] iter " in ln]
    assert iters == ["5/6", "6/6"]
    rows = _rows(root)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows[:4]] == [r["loss"] for r in first]
    assert load_arch(root / "models" / "arch_code.json").provenance["iteration"] == 6


def test_memory_budget_in_gib(tmp_path, dataset) -> None:
    root = tmp_path / "bundle"
    budget, patch = 3.0, [160, 160, 160]
    output, _ = _run(root, dataset, "--memory_budget_gib", str(budget), "--train_patch_size", json.dumps(patch),
                     "--num_iterations", "8", "--warmup_iterations", "2", "--val_interval", "4")
    assert "memory budget 3.00 GiB" in output
    arch = load_arch(root / "models" / "arch_code.json")
    assert arch.provenance["memory_budget_gib"] == budget and arch.provenance["train_patch_size"] == patch
    assert estimate_memory(arch, patch, 2) <= budget * 1024**3
    assert arch.memory_lambda < 0.8  # the budget, not the default lambda, set the target


def test_torchrun_two_processes_gloo(tmp_path, dataset) -> None:
    root = tmp_path / "bundle"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                str(29500 + os.getpid() % 1000), "-m"]
    output, _ = _run(root, dataset, "--num_iterations", "4", "--warmup_iterations", "2", "--val_interval", "2",
                     names=("search", "multi_gpu_search", "quick"), launcher=launcher)
    assert "device cpu x 2" in output
    assert "all 2 ranks decoded the same architecture" in output
    assert len([ln for ln in output.splitlines() if "] iter " in ln]) == 4  # rank 0 alone reports progress
    assert load_arch(root / "models" / "arch_code.json").provenance["world_size"] == 2
    assert not list((root / "models").glob(".*.tmp")) and len(_rows(root)) == 4


def test_cli_reports_bad_dataset_at_start(tmp_path) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "search", "--config_file", _config_list("search", "quick"),
           "--bundle_root", str(tmp_path / "bundle"), "--dataset_dir", str(tmp_path / "missing")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert f"dataset_dir '{tmp_path / 'missing'}' does not exist" in out
    assert "] iter " not in out and not (tmp_path / "bundle" / "models").exists()


def test_datalist_instead_of_dataset_dir(tmp_path, dataset) -> None:
    entries = json.loads((dataset / "dataset.json").read_text())["training"]
    entries = [{k: str((dataset / e[k]).resolve()) for k in ("image", "label")} for e in entries]
    datalist = tmp_path / "lists.json"
    datalist.write_text(json.dumps({"training": entries[:6], "validation": entries[6:]}))
    root = tmp_path / "bundle"
    output, _ = _run(root, tmp_path / "no_such_dataset", "--datalist", str(datalist), "--num_iterations", "2",
                     "--warmup_iterations", "1", "--val_interval", "2")
    assert "search split train_weights 3 / train_arch 3 / validation 2" in output
    assert (root / "eval" / "dast_intensity_search.json").is_file()
    assert load_arch(root / "models" / "arch_code.json").provenance["iteration"] == 2
