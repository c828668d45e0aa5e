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
"""Tests of benchmarks/memory_estimate.py: the saved-tensor census, the architecture pick, and a tiny full run."""

from __future__ import annotations

import json

import pytest
import torch
from monai.losses import DiceCELoss

from benchmarks.memory_estimate import (
    SavedTensorCensus,
    estimate_components,
    main,
    pick_archs,
)
from dast_components.networks import DASTNet, random_arch
from dast_components.search.sweep import depth_counts

PATCH = (16, 16, 16)


def _census(arch, batch=2):
    torch.manual_seed(0)
    net = DASTNet(arch)
    x = torch.rand(batch, 1, *PATCH)
    y = torch.randint(0, 3, (batch, 1, *PATCH))
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, squared_pred=True, batch=True)
    with SavedTensorCensus(net, exclude=[x, y, *net.parameters()]) as census:
        loss = loss_fn(net(x), y)
        counted = census.count()
    loss.backward()
    return counted


def test_census_matches_the_model():
    arch = random_arch(2, 2, "dast", seed=31, channel_mul=0.25, grid=2)
    assert arch.node_a[0] == [0, 1] and arch.node_a[-1] == [1, 1]  # DASTNet prunes the full-resolution input stem
    counted = _census(arch)
    est = estimate_components(arch, PATCH, 2, 3)
    for key in [k for k in est if k.startswith("cells:") and est[k] > 0] + ["head"]:
        assert abs(counted.get(key, 0) - est[key]) <= 0.05 * est[key] + 4096, key
    stems = sum(v for k, v in counted.items() if k.startswith("stem"))
    assert abs(stems - est["stems"]) <= 0.05 * est["stems"] + 4096
    assert abs(counted["loss"] - est["loss"]) <= 0.2 * est["loss"]  # 3K - 1 measured, 3K charged


def test_census_counts_only_tensors_alive_at_count_time():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU())
    x = torch.rand(2, 1, 8, 8, 8)
    with SavedTensorCensus(net, exclude=[x, *net.parameters()]) as census:
        kept = net(x).sum()
        dropped = net(x + 1).sum()  # graph freed at once
        del dropped
        counted = census.count()
    assert sum(counted.values()) == 2 * 4 * 8**3 * 4  # one relu output: the first conv saves only x and weights
    kept.backward()


def test_pick_archs_cycles_settings_and_keeps_transformers():
    archs = pick_archs(4, 2, [2, 3], [0.25, 0.5], grid=2, seed=0)
    assert [(a.num_depths, a.channel_mul) for a in archs] == [(2, 0.25), (3, 0.5), (2, 0.25), (3, 0.5)]
    assert all(a.op_counts()["transformer"] > 0 for a in archs)
    # a transformer on an active path at every depth
    assert all(min(depth_counts(a)) > 0 for a in archs)
    assert len({a.provenance["seed"] for a in archs}) == 4


@pytest.mark.slow
def test_tiny_run_writes_results(tmp_path):
    payload = main([
        "--num_archs", "3", "--num_blocks", "2", "--depths", "2", "--patch", "16", "--channel_muls", "0.125", "0.25",
        "--grid", "2", "--out_dir", str(tmp_path),
    ])
    data = json.loads((tmp_path / "memory_estimate_cpu.json").read_text())
    assert data["summary"] == json.loads(json.dumps(payload["summary"]))
    assert len(data["architectures"]) == 3
    for rec in data["architectures"]:
        assert rec["measured_peak_bytes"] > rec["measured"]["baseline_bytes"] > 0
        assert abs(rec["relative_error"]) < 0.5
    s = data["summary"]
    assert -1.0 <= s["spearman_rho"] <= 1.0 and 0 <= s["median_relative_error"] < 0.5
    assert "Spearman rho" in (tmp_path / "memory_estimate_cpu.md").read_text()
