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
"""A first run on CT of real size with the documented small-machine overlay (``configs/small_machine.json``).

Two synthetic CTs of 512 x 512 x 50 voxels at 0.6 x 0.6 x 5 mm (the size and spacing of a clinical chest or abdomen
CT, KiTS19 array order), one for training and one for validation, as a new user would start: training, evaluation
in the original geometry and inference through the bundle CLI, with a small architecture (3 blocks x 3 depths, like
the search bundle's quick output). Checks: masks keep each input's shape, affine and voxel sizes; validation ran
once (``val_interval`` counts iterations); the whole run stays within the time the bundle's docs state.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dast_components.data.synthetic import write_dataset
from tests.bundles.kits19_utils import BUNDLE, config_list, run_cli, write_tiny_arch

__all__: list[str] = []

pytestmark = pytest.mark.slow

SHAPE = (512, 512, 50)
SPACING = (0.6, 0.6, 5.0)
DOCUMENTED = re.compile(r"small-machine run of one real-size CT.{0,300}?under \*\*(\d+) minutes\*\*")


def documented_minutes() -> int:
    """The bound the bundle's docs state for this run (``docs/README.md``, section on small machines)."""
    match = DOCUMENTED.search((BUNDLE / "docs" / "README.md").read_text().replace("\n", " "))
    assert match, "docs/README.md must state the small-machine run time ('... under **N minutes**')"
    return int(match.group(1))


def _assert_same_geometry(pred_path: Path, ref_path: Path) -> None:
    pred, ref = nib.load(str(pred_path)), nib.load(str(ref_path))
    assert pred.shape == ref.shape, (pred_path, pred.shape, ref.shape)
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-5)
    np.testing.assert_allclose(pred.header.get_zooms()[:3], ref.header.get_zooms()[:3], atol=1e-5)
    values = np.unique(np.asarray(pred.dataobj))
    assert set(values.tolist()) <= {0, 1, 2}, values


def test_small_machine_overlay_on_real_size_ct(tmp_path: Path) -> None:
    limit_s = 60 * documented_minutes()
    start = time.monotonic()
    data = write_dataset(tmp_path / "data", layout="kits19", num_cases=2, seed=11, shape=SHAPE, spacing=SPACING)
    cases = sorted(p.name for p in data.glob("case_*"))
    image = nib.load(str(data / cases[0] / "imaging.nii.gz"))
    assert sorted(image.shape) == sorted(SHAPE) and sorted(image.header.get_zooms()) == sorted(SPACING)
    arch = write_tiny_arch(tmp_path / "arch_code.json")
    bundle = tmp_path / "bundle"
    common = ["--bundle_root", str(bundle), "--arch_file", str(arch), "--device", "cpu"]
    timings = {}

    t = time.monotonic()
    run_cli(["run", "training", "--config_file", config_list("train", "small_machine"), "--dataset_dir", str(data),
             "--num_folds", "2", *common], timeout=limit_s)
    timings["training"] = time.monotonic() - t
    rows = list(csv.DictReader(open(bundle / "eval" / "training_log_fold0.csv")))
    assert int(rows[-1]["iteration"]) == 20
    assert sum(1 for r in rows if r.get("val_composite_dice")) == 1, "val_interval 20 of 20 iterations: one validation"

    t = time.monotonic()
    run_cli(["run", "evaluating", "--config_file", config_list("train", "evaluate", "small_machine"),
             "--dataset_dir", str(data), "--num_folds", "2", "--save_predictions", "true", *common], timeout=limit_s)
    timings["evaluation"] = time.monotonic() - t
    predictions = sorted((bundle / "eval" / "predictions_fold0").glob("prediction_*.nii.gz"))
    assert len(predictions) == 1
    case = f"case_{predictions[0].name[len('prediction_'):-len('.nii.gz')]}"
    _assert_same_geometry(predictions[0], data / case / "segmentation.nii.gz")

    t = time.monotonic()
    out = tmp_path / "predictions"
    run_cli(["run", "inference", "--config_file", config_list("inference", "small_machine"),
             "--dataset_dir", str(data), "--output_dir", str(out), "--fold", "0", *common], timeout=limit_s)
    timings["inference (2 cases)"] = time.monotonic() - t
    for case in cases:
        _assert_same_geometry(out / f"prediction_{case[-5:]}.nii.gz", data / case / "imaging.nii.gz")

    total = time.monotonic() - start
    print("real-size small-machine run:", {k: round(v) for k, v in timings.items()}, f"total {total:.0f} s")
    assert total < limit_s, f"took {total:.0f} s, the docs promise under {limit_s // 60} minutes"
