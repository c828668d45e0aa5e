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
"""Tests of benchmarks/data_pipeline.py: the bundle's transforms are used, and a tiny full run."""

from __future__ import annotations

import json

import pytest

from benchmarks.data_pipeline import BUNDLE_TRAIN_CONFIG, bundle_pipeline, main
from dast_components.networks import random_arch, save_arch


def test_bundle_pipeline_is_the_bundles_training_chain(tmp_path):
    transform = bundle_pipeline(BUNDLE_TRAIN_CONFIG, (32, 32, 32))
    names = [type(t).__name__ for t in transform.transforms]
    for expected in ("LoadImaged", "EnsureChannelFirstd", "Orientationd", "ScaleIntensityRanged",
                     "RandCropByLabelClassesd"):
        assert expected in names
    assert any("Spacingd" in n for n in names)
    crop = transform.transforms[names.index("RandCropByLabelClassesd")]
    assert tuple(crop.cropper.spatial_size) == (32, 32, 32)
    with pytest.raises(ValueError, match="does not exist"):
        bundle_pipeline(tmp_path / "missing.json", (32, 32, 32))


@pytest.mark.slow
def test_tiny_run_writes_results(tmp_path):
    arch = save_arch(tmp_path / "arch.json", random_arch(2, 2, "dast", seed=9, channel_mul=0.125, grid=2))
    main(["--num_cases", "2", "--shape", "32", "32", "24", "--patch", "16", "--epochs", "1", "--warmup", "0",
          "--repeats", "1", "--arch_file", str(arch), "--out_dir", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "data_pipeline_cpu.json").read_text())
    res = data["results"]
    assert res["num_items"] == 2
    assert res["uncached"]["samples_per_epoch"] == 2 and res["uncached"]["samples_per_s_median"] > 0
    assert res["cached"]["cache_mib"] > 0 and res["cached"]["samples_per_s_median"] > 0
    assert res["train_step"]["samples_per_s"] == pytest.approx(2 / res["train_step"]["time"]["wall_median_s"], rel=0.01)
    assert res["train_step"]["arch"]["source"] == str(arch)
