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
"""Tests of benchmarks/search_step.py: one bi-level step of each supernet, and a tiny full run."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.search_step import SearchBench, main, op_costs, per_pass_costs

TINY = {"num_blocks": 2, "num_depths": 2, "channel_mul": 0.125, "grid": 2, "patch_size": (16, 16, 16),
        "batch_size": 2, "device": torch.device("cpu")}


@pytest.mark.slow
@pytest.mark.parametrize("ops", ["dast", "dints"])
def test_step_moves_weights_and_logits_and_measures_memory(ops):
    bench = SearchBench(ops, **TINY)
    weights = [p.detach().clone() for p in bench.engine.weight_params]
    logits = [p.detach().clone() for p in bench.engine.arch_params]
    memory = bench.measure_memory()
    assert any(not torch.equal(a, p) for a, p in zip(weights, bench.engine.weight_params))
    assert all(not torch.equal(a, p) for a, p in zip(logits, bench.engine.arch_params))
    assert set(memory["phases"]) == {"weight_step", "arch_step"}
    assert memory["peak_bytes"] > memory["baseline_bytes"] > sum(p.numel() * 4 for p in bench.net.parameters())
    assert bench.space.op_names == (("skip_connect", "conv_3x3x3", "transformer") if ops == "dast" else
                                    ("skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3", "conv_1x3x3"))


def test_op_costs_cover_every_op_and_connection_of_each_depth():
    records = op_costs("dast", 2, 0.125, 2, (16, 16, 16), 2, torch.device("cpu"), repeats=1)
    items = {(r["item"], r["depth"]) for r in records}
    for d in range(2):
        assert {("skip_connect", d), ("conv_3x3x3", d), ("transformer", d)} <= items
    assert ("connect(+1)", 0) in items and ("connect(-1)", 1) in items
    # every path of a 2-depth grid is counted once per op: 4 paths
    assert sum(r["paths"] for r in records if r["item"] == "conv_3x3x3") == 4
    assert all(r["seconds"] >= 0 and r["size"] == [8 // 2 ** r["depth"]] * 3 for r in records)


@pytest.mark.slow
def test_tiny_run_writes_results(tmp_path):
    main(["--num_blocks", "2", "--num_depths", "2", "--channel_mul", "0.125", "--patch", "16", "--grid", "2",
          "--warmup", "0", "--repeats", "1", "--no_secondary", "--cost_patch", "32", "--out_dir", str(tmp_path)])
    data = json.loads((tmp_path / "search_step_cpu.json").read_text())
    res = data["results"]
    for pool in ("dast", "dints"):
        assert res[pool]["time"]["wall_median_s"] > 0 and res[pool]["memory"]["peak_bytes"] > 0
    ratio = res["ratio_dast_over_dints"]
    assert ratio["step_wall"] == pytest.approx(
        res["dast"]["time"]["wall_median_s"] / res["dints"]["time"]["wall_median_s"], rel=1e-2
    )
    assert data["environment"]["device_type"] == "cpu" and data["settings"]["patch_size"] == [16, 16, 16]
    assert "DAST / DiNTS" in (tmp_path / "search_step_cpu.md").read_text()
    per_pass = data["per_pass"]
    assert per_pass["patch_size"] == [32, 32, 32]
    assert per_pass["ratio_dast_over_dints"]["seconds"] == pytest.approx(
        per_pass["dast"]["seconds"] / per_pass["dints"]["seconds"], rel=1e-2)
    assert 0 < per_pass["ratio_dast_over_dints"]["saved_memory"]
    assert "Per-pass comparison at 32x32x32" in (tmp_path / "search_step_cpu.md").read_text()


def test_per_pass_costs_cover_every_op_of_both_pools():
    out = per_pass_costs(2, 0.125, 2, 8, 2, torch.device("cpu"), repeats=1)
    assert set(out["dast"]["seconds_by_item"]) == {"skip_connect", "conv_3x3x3", "transformer", "connect"}
    assert {"conv_3x3x1", "conv_3x1x3", "conv_1x3x3"} <= set(out["dints"]["seconds_by_item"])
    # the memory model: DAST keeps less than DiNTS' five ops at this size? not assumed; only positive and consistent
    assert out["ratio_dast_over_dints"]["saved_memory"] == pytest.approx(
        out["dast"]["saved_mib_per_item"] / out["dints"]["saved_mib_per_item"], rel=1e-2)
