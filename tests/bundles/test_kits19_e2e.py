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
"""End to end runs of ``dast_kits19_seg`` through the MONAI bundle CLI on synthetic KiTS19 cases (quick overlay).

One quick training (module fixture) feeds the evaluation, inference, ensemble and export tests.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from dast_components.networks import DASTNet
from tests.bundles.kits19_utils import config_list, config_path, run_cli, write_kits19, write_tiny_arch

__all__: list[str] = []

pytestmark = pytest.mark.slow

TIMEOUT = 1200


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Quick training of fold 0 on 8 synthetic cases; returns the paths and the run's output."""
    root = tmp_path_factory.mktemp("kits19_e2e")
    data = write_kits19(root / "data", num_cases=8)
    arch = write_tiny_arch(root / "arch_code.json")
    bundle = root / "bundle"
    start = time.monotonic()
    proc = run_cli(
        ["run", "training", "--config_file", config_list("train", "quick"), "--bundle_root", str(bundle),
         "--dataset_dir", str(data), "--arch_file", str(arch), "--device", "cpu"],
        timeout=TIMEOUT,
    )
    return {"root": root, "data": data, "arch": arch, "bundle": bundle, "stdout": proc.stdout,
            "seconds": time.monotonic() - start}


def _common(trained: dict) -> list[str]:
    return ["--bundle_root", str(trained["bundle"]), "--arch_file", str(trained["arch"]), "--device", "cpu"]


def test_quick_training_writes_weights_and_log(trained: dict) -> None:
    models = trained["bundle"] / "models"
    assert sorted(p.name for p in models.glob("*.pt")) == ["model.pt", "model_fold0.pt"]
    assert not [p.name for p in models.iterdir() if ".tmp" in p.name], "temporary files left beside the weights"
    ckpt = torch.load(models / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in ckpt.values())  # a plain state dict (Model Zoo convention)
    DASTNet(str(trained["arch"])).load_state_dict(ckpt, strict=True)
    for name in ("model", "model_fold0"):  # the training record next to each weight file
        record = json.loads((models / f"{name}.json").read_text())
        assert record["weights"] == f"{name}.pt"
        window = record["intensity"]
        assert window["upper"] > window["lower"]
        assert record["fold"] == 0 and record["patch_size"] == [32, 32, 32]
    rows = list(csv.DictReader(open(trained["bundle"] / "eval" / "training_log_fold0.csv")))
    validated = [r for r in rows if r.get("val_composite_dice")]
    assert rows and validated, "validation Dice must be logged during training"
    assert int(rows[-1]["iteration"]) >= 30
    print(f"quick training: {trained['seconds']:.0f} s")


def test_quick_evaluation_in_original_geometry(trained: dict) -> None:
    start = time.monotonic()
    proc = run_cli(
        ["run", "evaluating", "--config_file", config_list("train", "evaluate", "quick"),
         "--dataset_dir", str(trained["data"]), "--save_predictions", "true", *_common(trained)],
        timeout=TIMEOUT,
    )
    print(f"quick evaluation: {time.monotonic() - start:.0f} s")
    folds = json.loads((trained["data"] / "dast_kits19_folds.json").read_text())["folds"]
    expected = sorted(Path(f["label"]).parent.name for f in folds if f["fold"] == 0)
    out = trained["bundle"] / "eval"
    rows = list(csv.DictReader(open(out / "kits19_fold0_per_case.csv")))
    assert [r["case"] for r in rows] == expected
    summary = json.loads((out / "kits19_fold0_summary.json").read_text())
    assert summary["num_cases"] == len(expected)
    means = [np.mean([float(r[f"{c}_dice"]) for r in rows]) for c in ("kidney", "tumor")]
    # the CSV holds 6 decimals: compare to that precision (a relative tolerance fails on a small Dice)
    assert summary["kidney"] == pytest.approx(means[0], abs=1e-6)
    assert summary["tumor"] == pytest.approx(means[1], abs=1e-6)
    assert summary["composite"] == pytest.approx(sum(means) / 2, abs=1e-6)
    assert "composite" in proc.stdout  # the table is printed
    for case in expected:
        label = nib.load(str(trained["data"] / case / "segmentation.nii.gz"))
        pred = nib.load(str(out / "predictions_fold0" / f"prediction_{case[-5:]}.nii.gz"))
        assert pred.shape == label.shape
        np.testing.assert_array_equal(pred.affine, label.affine)


def test_quick_inference_and_ensemble(trained: dict, tmp_path: Path) -> None:
    subset = tmp_path / "to_segment"
    for case in ("case_00000", "case_00005"):
        shutil.copytree(trained["data"] / case, subset / case)
    models = trained["bundle"] / "models"
    for k in range(1, 5):
        shutil.copy(models / "model_fold0.pt", models / f"model_fold{k}.pt")
        shutil.copy(models / "model_fold0.json", models / f"model_fold{k}.json")
    try:
        start = time.monotonic()
        common = ["--dataset_dir", str(subset), "--sw_overlap", "0.0", *_common(trained)]
        run_cli(["run", "inference", "--config_file", config_list("inference", "quick"),
                 "--output_dir", str(tmp_path / "single"), *common], timeout=TIMEOUT)
        print(f"quick inference of 2 cases: {time.monotonic() - start:.0f} s")
        run_cli(["run", "inference", "--config_file", config_list("inference", "quick"), "--ensemble", "true",
                 "--output_dir", str(tmp_path / "ensemble"), *common], timeout=TIMEOUT)
    finally:
        for k in range(1, 5):
            (models / f"model_fold{k}.pt").unlink()
            (models / f"model_fold{k}.json").unlink()
    for case in ("00000", "00005"):
        image = nib.load(str(subset / f"case_{case}" / "imaging.nii.gz"))
        single = nib.load(str(tmp_path / "single" / f"prediction_{case}.nii.gz"))
        ensemble = nib.load(str(tmp_path / "ensemble" / f"prediction_{case}.nii.gz"))
        for pred in (single, ensemble):
            assert pred.shape == image.shape
            np.testing.assert_array_equal(pred.affine, image.affine)
        # five copies of one model average to that model's probabilities
        agree = np.mean(np.asarray(single.dataobj) == np.asarray(ensemble.dataobj))
        assert agree > 0.999, agree


def test_torchscript_export_matches_eager(trained: dict, tmp_path: Path) -> None:
    ts = tmp_path / "model.ts"
    run_cli(
        ["ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file",
         str(trained["bundle"] / "models" / "model.pt"),  # no --key_in_ckpt: a plain state dict, as the Zoo's CI
         "--meta_file", config_path("metadata"), "--config_file", config_list("inference", "quick"),
         "--bundle_root", str(trained["bundle"]), "--arch_file", str(trained["arch"])],
        timeout=TIMEOUT,
    )
    scripted = torch.jit.load(str(ts), map_location="cpu").eval()
    eager = DASTNet(str(trained["arch"]))
    eager.load_state_dict(torch.load(trained["bundle"] / "models" / "model.pt", weights_only=True))
    eager.eval()
    x = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), atol=1e-4, rtol=1e-4)


def test_verify_net_in_out(trained: dict) -> None:
    run_cli(
        ["verify_net_in_out", "network_def", "--meta_file", config_path("metadata"),
         "--config_file", config_list("inference", "quick"), "--n", "1", *_common(trained)],
        timeout=TIMEOUT,
    )


def test_torchrun_gloo(trained: dict, tmp_path: Path) -> None:
    bundle = tmp_path / "ddp_bundle"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "monai.bundle"]
    start = time.monotonic()
    proc = run_cli(
        ["run", "training", "--config_file", config_list("train", "multi_gpu_train", "quick"),
         "--bundle_root", str(bundle), "--dataset_dir", str(trained["data"]), "--arch_file", str(trained["arch"]),
         "--num_iterations", "6", "--val_interval", "2"],
        timeout=TIMEOUT,
        launcher=launcher,
    )
    print(f"torchrun 2 x gloo, 6 iterations: {time.monotonic() - start:.0f} s")
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "model_fold0.pt").is_file()
    rows = list(csv.DictReader(open(bundle / "eval" / "training_log_fold0.csv")))
    # each rank runs 6 iterations on its half of the data; rank 0 alone writes the log
    assert int(rows[-1]["iteration"]) >= 6
    assert len(rows) == int(rows[-1]["epoch"])
    output = proc.stdout + proc.stderr
    assert output.count("Epoch[2] Metrics") == 1, "only rank 0 may log"
