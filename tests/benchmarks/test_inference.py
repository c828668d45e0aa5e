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
"""Tests of benchmarks/inference.py: window counts, the DAST architecture choice, components, and a tiny run."""

from __future__ import annotations

import json

import pytest
import torch
from monai.inferers import sliding_window_inference

from benchmarks.inference import SHIPPED_ARCH, build_model, component_times, dast_arch, main, num_windows
from dast_components.networks import load_arch, random_arch, save_arch


@pytest.mark.parametrize(
    "volume,roi,overlap",
    [((32, 32, 48), (16, 16, 16), 0.5), ((40, 16, 20), (16, 16, 16), 0.25), ((8, 8, 8), (16,) * 3, 0.5)],
)
def test_num_windows_matches_monai(volume, roi, overlap):
    calls = []

    def predictor(x):
        calls.append(x.shape[0])
        return x

    sliding_window_inference(torch.zeros(1, 1, *volume), roi, 1, predictor, overlap=overlap)
    assert num_windows(volume, roi, overlap) == sum(calls)


def test_dast_arch_prefers_the_given_or_shipped_file(tmp_path):
    arch, info = dast_arch(None, channel_mul=0.25)
    if SHIPPED_ARCH.is_file():
        assert info["shipped"] is True
    else:
        assert info["shipped"] is False and "placeholder" in info["source"]
        assert (arch.num_blocks, arch.num_depths, arch.channel_mul, arch.grid) == (12, 4, 0.25, 8)
    path = save_arch(tmp_path / "arch.json", random_arch(2, 2, "dast", seed=3, channel_mul=0.125, grid=2))
    arch, info = dast_arch(path)
    assert info == {"shipped": False, "source": str(path), "op_counts": arch.op_counts()} and arch.num_blocks == 2
    with pytest.raises(ValueError, match="does not exist"):
        dast_arch(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("unet", 32, arch)


def test_component_times_cover_the_dast_network():
    arch = random_arch(2, 2, "dast", seed=9, channel_mul=0.125, grid=2)
    net = build_model("dast", 16, arch).eval()
    times = component_times(net, torch.rand(1, 1, 16, 16, 16), torch.device("cpu"))
    assert {"input stems", "output stems", "head", "total"} <= set(times)
    ops = {k: v for k, v in times.items() if k.startswith("op:")}
    assert any(k.startswith("op:transformer depth") for k in ops)
    counts = {k[len("count:"):]: v for k, v in times.items() if k.startswith("count:")}
    assert set(counts) == {k[3:] for k in ops} and sum(counts.values()) == len(arch.paths)
    timed = [v for k, v in times.items() if k != "total" and not k.startswith("count:")]
    assert sum(timed) <= times["total"] * 1.05 + 1e-3


@pytest.mark.slow
def test_tiny_run_writes_results(tmp_path, monkeypatch):
    import benchmarks.inference as inference

    def build_or_fail(name, size, arch, num_classes=3, dints=None):
        if name == "unetr":
            raise ImportError("from einops.layers.torch import Rearrange (No module named 'einops').")
        return build_model(name, size, arch, num_classes, dints=dints)

    monkeypatch.setattr(inference, "build_model", build_or_fail)
    path = save_arch(tmp_path / "arch.json", random_arch(2, 2, "dast", seed=9, channel_mul=0.125, grid=2))
    main(["--models", "dast", "dints", "unetr", "--sizes", "32", "--arch_file", str(path), "--sw_roi", "32", "--volume",
          "32", "32", "48", "--repeats", "1", "--profile", "--out_dir", str(tmp_path)])
    data = json.loads((tmp_path / "inference_cpu.json").read_text())
    res = data["results"]
    for name in ("dast", "dints"):
        r = res["latency"]["32"][name]
        assert r["time"]["wall_median_s"] > 0 and r["memory"]["peak_bytes"] > r["memory"]["baseline_bytes"] > 0
        sw = res["sliding_window"]["models"][name]
        assert sw["kits_measured"] is False and sw["kits_s"] == pytest.approx(
            sw["per_window_s"] * res["sliding_window"]["kits_windows"], rel=0.01
        )
    assert "einops" in res["latency"]["32"]["unetr"]["skipped"]
    assert "einops" in res["sliding_window"]["models"]["unetr"]["skipped"]
    assert res["sliding_window"]["windows"] == 2 and res["dast_arch"]["shipped"] is False
    assert any(k.startswith("op:transformer") for k in res["profile"]["components"]["dast"])
    assert "target" not in res  # no 96^3 SwinUNETR figure in this run
    assert "NOT the shipped one" in (tmp_path / "inference_cpu.md").read_text()


def test_dints_row_uses_the_searched_architecture_beside_the_shipped_one():
    from benchmarks.inference import SEARCHED_DINTS_ARCH, dast_arch, dints_arch

    shipped, info = dast_arch()
    dints, dints_info = dints_arch(shipped, info)
    assert dints is not None and dints_info["searched"] and set(dints.ops) >= {"conv_3x3x1", "conv_1x3x3"}
    same_search = ("memory_budget_gib", "train_patch_size", "train_batch_size", "search_channel_mul",
                   "search_patch_size", "num_iterations")
    ours, theirs = load_arch(SEARCHED_DINTS_ARCH).provenance, shipped.provenance
    assert {k: ours[k] for k in same_search} == {k: theirs[k] for k in same_search}
    other = random_arch(2, 2, "dast", seed=9, channel_mul=0.125, grid=2)
    assert dints_arch(other, {"shipped": False}) == (None, {"searched": False, "source": "random_arch(2, 2, 'dints', "
                                                            "seed=0, channel_mul=0.125)"})
