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
"""Tests of benchmarks/cpu_runtimes.py and benchmarks/whole_volume.py: window counts and a tiny runtime comparison."""

from __future__ import annotations

import json

import pytest

from benchmarks.inference import num_windows
from benchmarks.whole_volume import resampled_size

pytest.importorskip("onnxruntime")


def test_kits_sized_volume_windows():
    size = resampled_size([512, 512, 200], [0.78, 0.78, 2.5], [1.0, 1.0, 1.0])
    assert size == [399, 399, 500]
    assert num_windows(size, [160] * 3, 0.25) == 36 and num_windows(size, [160] * 3, 0.5) == 96


@pytest.mark.slow
def test_tiny_runtime_comparison_writes_results(tmp_path):
    from benchmarks.cpu_runtimes import main

    payload = main(["--sizes", "64", "--models", "dynunet", "--repeats", "1", "--warmup", "1", "--threads", "1",
                    "--out_dir", str(tmp_path)])
    run = payload["runs"]["dynunet_64"]
    assert run["times"]["eager"]["wall_median_s"] > 0 and run["max_abs_diff"]["onnxruntime"] < 1e-3
    assert run["argmax_agreement"]["onnxruntime"] > 0.99
    saved = json.loads((tmp_path / "cpu_runtimes_cpu.json").read_text())
    assert saved["runs"]["dynunet_64"]["window"] == [64, 64, 64]
    assert "speed-up vs eager" in (tmp_path / "cpu_runtimes_cpu.md").read_text()
