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
"""The search loop on in-memory tensors: exports, checkpoints, resume, budgets and input checks."""

from __future__ import annotations

import csv
import json
import logging

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceCELoss
from monai.networks.nets import DiNTS
from torch.utils.data import DataLoader

from dast_components.losses import MemoryBudgetLoss
from dast_components.networks import DASTNet, DASTSearchSpace, estimate_memory, load_arch
from dast_components.search import (
    SearchWorkflow,
    arch_parameters,
    check_search_settings,
    decode_within_budget,
    prepare_data,
    weight_parameters,
)

__all__: list[str] = []

PATCH = [16, 16, 16]


def _items(n: int, size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = torch.zeros(1, size, size, size)
        label[:, 4:12, 4:12, 4:12] = 1
        label[:, 6:9, 6:9, 6:9] = 2
        out.append({"image": label / 2 + 0.1 * torch.rand(1, size, size, size, generator=g), "label": label})
    return out


def _workflow(tmp_path, num_iterations=4, warmup=2, val_interval=2, resume=False, num_blocks=2, patch=PATCH, **kwargs):
    torch.manual_seed(0)
    space = DASTSearchSpace(channel_mul=0.125, num_blocks=num_blocks, num_depths=2, grid=2)
    net = DiNTS(dints_space=space, in_channels=1, num_classes=3)
    memory = MemoryBudgetLoss(space, PATCH, memory_lambda=0.5)
    return SearchWorkflow(
        network=net,
        train_loader=DataLoader(_items(2, 16, 0), batch_size=2),
        arch_loader=DataLoader(_items(2, 16, 1), batch_size=2),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        optimizer=torch.optim.SGD(weight_parameters(net), lr=0.05, momentum=0.9),
        arch_optimizer=torch.optim.Adam(arch_parameters(net), lr=0.05),
        num_iterations=num_iterations,
        warmup_iterations=warmup,
        val_loader=DataLoader(_items(1, 24, 2), batch_size=1),
        inferer=SlidingWindowInferer(PATCH, sw_batch_size=2, overlap=0.25),
        val_interval=val_interval,
        memory_loss=memory,
        patch_size=patch,
        train_patch_size=PATCH,
        ckpt_dir=tmp_path / "models",
        output_dir=tmp_path / "eval",
        resume=resume,
        tensorboard=False,
        **kwargs,
    )


def _metrics(tmp_path) -> list[dict[str, str]]:
    with open(tmp_path / "eval" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_exports_architecture_checkpoint_and_metrics(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dast_components.search.workflow")
    summary = _workflow(tmp_path).run()
    arch_file = tmp_path / "models" / "arch_code.json"
    assert summary["arch_file"] == str(arch_file) and summary["iteration"] == 4
    for it in (2, 4):
        assert (tmp_path / "models" / f"arch_code_iter{it:06d}.json").is_file()
    assert (tmp_path / "models" / "arch_code.png").stat().st_size > 0  # the diagram of the final architecture
    arch = load_arch(arch_file, ops="dast", grid=2)
    assert arch.provenance["iteration"] == 4 and arch.memory_lambda == pytest.approx(0.5)
    assert arch.provenance["estimated_memory_gib"] == pytest.approx(estimate_memory(arch, PATCH, 2) / 1024**3, abs=1e-4)
    net = DASTNet(arch_file, in_channels=1, num_classes=3)
    assert net(torch.rand(1, 1, *PATCH)).shape == (1, 3, *PATCH)
    state = torch.load(tmp_path / "eval" / "search_checkpoint.pt", weights_only=True)
    assert state["iteration"] == 4 and "dints_space.log_alpha_c" in state["network"]
    rows = _metrics(tmp_path)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert [r["phase"] for r in rows] == ["warmup", "warmup", "search", "search"]
    assert rows[0]["val_dice"] == "" and rows[1]["val_dice"] != "" and rows[3]["est_memory_gib"] != ""
    assert rows[2]["arch_loss"] != "" and rows[0]["memory_ratio"] != ""
    lines = [r.getMessage() for r in caplog.records if "iter" in r.getMessage() and "ETA" in r.getMessage()]
    assert len(lines) == 4 and "memory ratio" in lines[-1] and "4/4" in lines[-1]


def test_resume_continues_from_checkpoint(tmp_path, caplog):
    _workflow(tmp_path, num_iterations=3, warmup=1, val_interval=3).run()
    first = _metrics(tmp_path)
    saved = torch.load(tmp_path / "eval" / "search_checkpoint.pt", weights_only=True)
    caplog.set_level(logging.INFO, logger="dast_components.search.workflow")
    wf = _workflow(tmp_path, num_iterations=5, warmup=1, val_interval=3, resume=True)
    loaded = {}
    original = wf._load_checkpoint

    def spy() -> int:
        start = original()
        loaded.update({k: v.clone() for k, v in wf.network.state_dict().items()})
        return start

    wf._load_checkpoint = spy
    summary = wf.run()
    assert summary["iteration"] == 5
    assert any("resumed from" in r.getMessage() and "iteration 3" in r.getMessage() for r in caplog.records)
    for key, value in saved["network"].items():
        assert torch.equal(loaded[key], value), key
    rows = _metrics(tmp_path)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in rows[:3]] == [r["loss"] for r in first]
    assert torch.load(tmp_path / "eval" / "search_checkpoint.pt", weights_only=True)["iteration"] == 5


def test_resume_rejects_another_search_space(tmp_path):
    _workflow(tmp_path, num_iterations=2, warmup=1, val_interval=2).run()
    with pytest.raises(ValueError, match="num_blocks: checkpoint 2 vs config 3"):
        _workflow(tmp_path, num_iterations=4, warmup=1, val_interval=2, resume=True, num_blocks=3).run()


def test_budget_keeps_every_export_within(tmp_path):
    probe = _workflow(tmp_path / "probe")
    plain = decode_within_budget(probe.space, None, PATCH, 2)
    budget = plain.estimate / 1024**3 * 0.97
    wf = _workflow(tmp_path, memory_budget_gib=budget)
    wf.run()
    for it in (2, 4):
        arch = json.loads((tmp_path / "models" / f"arch_code_iter{it:06d}.json").read_text())
        assert arch["provenance"]["estimated_memory_gib"] * 1024**3 <= budget * 1024**3 + 1
        assert arch["provenance"]["memory_budget_gib"] == pytest.approx(budget)
    assert wf.memory_loss.memory_lambda < 1.0


def test_impossible_budget_fails_at_start(tmp_path):
    with pytest.raises(ValueError, match="alone need"):
        _workflow(tmp_path, memory_budget_gib=1e-6).run()


def test_bad_settings_fail_early(tmp_path):
    with pytest.raises(ValueError, match=r"patch_size \[20, 20, 20\] must be 3 positive multiples of 8"):
        _workflow(tmp_path, patch=[20, 20, 20])
    with pytest.raises(ValueError, match="warmup_iterations"):
        _workflow(tmp_path, num_iterations=2, warmup=2)
    with pytest.raises(ValueError, match="unknown op name"):
        check_search_settings([32] * 3, [32] * 3, 3, ["skip_connect", "conv_5x5x5"])
    with pytest.raises(ValueError, match="train_patch_size"):
        check_search_settings([32] * 3, [48] * 3, 4, "dast")
    check_search_settings([96] * 3, [160] * 3, 4, "dints", 10, 5)


def test_prepare_data_single_process(tmp_path):
    from dast_components.data import DataError, write_dataset

    write_dataset(tmp_path / "data", num_cases=4, shape=(16, 16, 16))
    data = prepare_data(tmp_path / "data", output_dir=tmp_path / "out")
    assert sum(len(data[k]) for k in ("train_weights", "train_arch", "validation")) == 4
    assert data["intensity"]["lower"] < data["intensity"]["upper"]
    with pytest.raises(DataError):
        prepare_data(tmp_path / "missing")
