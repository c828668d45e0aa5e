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
"""Unit tests of the benchmark helpers: timing summary, tensor bytes, CPU peak memory, tables and result files."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.common import (
    MemoryTracker,
    cubic,
    environment,
    markdown_table,
    resolve_device,
    summarise_times,
    tensor_bytes,
    write_results,
)

MIB = 2**20


def test_summarise_times_median_and_errors():
    out = summarise_times([(3.0, 1.0), (1.0, 0.5), (2.0, 4.0)])
    assert out["wall_median_s"] == 2.0 and out["wall_min_s"] == 1.0 and out["cpu_median_s"] == 1.0
    assert out["wall_s"] == [3.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="no timed runs"):
        summarise_times([])


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(1000)
    assert tensor_bytes([a, a[10:], a.view(10, 100), None]) == 4000
    assert tensor_bytes([a, torch.zeros(10, dtype=torch.float64)]) == 4080


def test_cpu_peak_memory_of_known_allocations():
    tracker = MemoryTracker(torch.device("cpu"))
    live = torch.zeros(MIB // 4)  # 1 MiB already allocated

    def fn():
        with tracker.phase("first"):
            a = torch.ones(4 * MIB // 4)  # +4 MiB
            b = torch.ones(2 * MIB // 4)  # +2 MiB -> rise 6 MiB
            del a, b
        with tracker.phase("second"):
            c = torch.ones(3 * MIB // 4)
            del c

    out = tracker.measure(fn, [live])
    assert out["baseline_bytes"] == MIB
    assert 6 * MIB <= out["rise_bytes"] < 6 * MIB + 64 * 1024
    assert out["peak_bytes"] == out["baseline_bytes"] + out["rise_bytes"]
    first, second = out["phases"]["first"], out["phases"]["second"]
    assert first["peak_bytes"] == out["peak_bytes"]
    assert second["start_bytes"] == MIB  # a and b were freed in the first phase
    assert 3 * MIB <= second["peak_bytes"] - second["start_bytes"] < 3 * MIB + 64 * 1024


def test_markdown_table_and_cubic():
    text = markdown_table(["a", "b"], [[1234567, 0.123456], ["x", float("nan")]])
    assert text.splitlines() == ["| a | b |", "| --- | --- |", "| 1,234,567 | 0.123 |", "| x | n/a |"]
    assert cubic([4]) == (4, 4, 4) and cubic([1, 2, 3]) == (1, 2, 3)
    with pytest.raises(ValueError, match="1 or 3 positive values"):
        cubic([1, 2])


def test_resolve_device_rejects_unknown_and_missing_cuda():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="cpu or cuda"):
        resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            resolve_device("cuda")


def test_write_results_writes_json_and_markdown(tmp_path):
    device = torch.device("cpu")
    payload = {"environment": environment(device), "value": 1}
    json_path, md_path = write_results(tmp_path / "out", "demo", device, payload, "| a |\n")
    assert json_path.name == "demo_cpu.json" and md_path.name == "demo_cpu.md"
    data = json.loads(json_path.read_text())
    assert data["value"] == 1 and data["environment"]["device_type"] == "cpu"
    assert isinstance(data["environment"]["loadavg_end"], list) and data["environment"]["torch"] == torch.__version__
    assert md_path.read_text().endswith("| a |\n")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["demo_cpu.json", "demo_cpu.md"]  # no temp files
