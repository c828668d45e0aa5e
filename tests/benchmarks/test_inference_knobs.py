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
"""Tests of benchmarks/inference_knobs.py: window counts and a tiny run of every setting."""

from __future__ import annotations

import json

import pytest

from benchmarks.inference_knobs import SETTINGS, main, window_counts


def test_window_counts_of_a_kits_sized_volume():
    rows = window_counts([399, 399, 500], [96, 160], [0.25, 0.5])
    assert [(r["window"], r["overlap"], r["windows"]) for r in rows] == [
        (96, 0.25, 6 * 6 * 7), (96, 0.5, 8 * 8 * 10), (160, 0.25, 36), (160, 0.5, 96)]


@pytest.mark.slow
def test_tiny_run_measures_every_setting(tmp_path):
    payload = main(["--size", "32", "--repeats", "1", "--warmup", "1", "--threads", "1", "--out_dir", str(tmp_path)])
    assert set(payload["times"]) == set(SETTINGS) and payload["windows_per_call"]["sw_batch_size 2"] == 2
    assert payload["max_abs_diff"]["channels_last_3d"] < 1e-3 and payload["max_abs_diff"]["sw_batch_size 2"] < 1e-3
    assert payload["argmax_agreement"]["bfloat16"] > 0.5
    saved = json.loads((tmp_path / "inference_knobs_cpu.json").read_text())
    assert saved["times"]["float32"]["per_window_s"] > 0
    assert "speed-up vs float32" in (tmp_path / "inference_knobs_cpu.md").read_text()
    with pytest.raises(SystemExit):
        main(["--size", "40", "--out_dir", str(tmp_path)])
