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
"""Geometry round trip of ``inference.json``: masks come back in the input's array order, shape and affine.

The network is replaced by an oracle that reads the class from the (scaled) intensity, so the written mask must
reproduce the label voxel for voxel wherever resampling is exact, whatever the KiTS-style axis permutation.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.bundle import ConfigWorkflow

from dast_components.data.synthetic import kits19_affine, make_phantom, to_kits19_array
from dast_components.metrics import kits19_case_dice
from dast_components.networks import DASTNet
from tests.bundles.kits19_utils import config_path, error_chain, save_kits_case, write_tiny_arch

__all__: list[str] = []

HU_PER_CLASS = 100.0


class Oracle(nn.Module):
    """Logits of class ``round(x * 2)``: with the window [0, 200] HU, an image of ``label * 100`` HU is segmented
    perfectly, so any geometric mistake of pre- or postprocessing shows up as a wrong voxel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = torch.round(x[:, 0] * 2).long().clamp(0, 2)
        return F.one_hot(cls, 3).permute(0, 4, 1, 2, 3).float() * 10.0


def _case(root: Path, name: str, spacing: tuple[float, float, float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    _, label = make_phantom((40, 36, 24), spacing, seed=seed)
    label_k = to_kits19_array(label.astype(np.uint8))
    affine = kits19_affine(label.shape, spacing)
    save_kits_case(root / name, (label_k * HU_PER_CLASS).astype(np.int16), label_k, affine)
    return label_k, nib.load(str(root / name / "imaging.nii.gz")).affine


def _infer(tmp_path: Path, data: Path, pixdim: list[float], **extra) -> Path:
    arch = write_tiny_arch(tmp_path / "arch.json")
    out = tmp_path / "predictions"
    workflow = ConfigWorkflow(
        config_file=[config_path("inference"), config_path("quick")],
        meta_file=config_path("metadata"),
        logging_file=config_path("logging.conf"),
        workflow_type="infer",
        bundle_root=str(tmp_path),
        dataset_dir=str(data),
        arch_file=str(arch),
        output_dir=str(out),
        device="cpu",
        num_workers=0,
        pixdim=pixdim,
        intensity={"lower": 0.0, "upper": 2 * HU_PER_CLASS},
        network=Oracle(),
        **extra,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return out


def test_kits_geometry_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # 1 mm voxels: resampling to 1 mm is exact, so the mask must equal the label
    exact_label, exact_affine = _case(data, "case_00000", (1.0, 1.0, 1.0), seed=5)
    # KiTS-like anisotropic voxels: shape and affine exact, labels up to interpolation at the borders
    aniso_label, aniso_affine = _case(data, "case_00001", (0.8, 0.8, 2.5), seed=6)
    out = _infer(tmp_path, data, pixdim=[1.0, 1.0, 1.0])

    assert sorted(p.name for p in out.iterdir()) == ["prediction_00000.nii.gz", "prediction_00001.nii.gz"]
    for name, label, affine in (("00000", exact_label, exact_affine), ("00001", aniso_label, aniso_affine)):
        pred = nib.load(str(out / f"prediction_{name}.nii.gz"))
        assert pred.shape == label.shape
        np.testing.assert_array_equal(pred.affine, affine)
        assert nib.aff2axcodes(pred.affine) == ("I", "P", "L")
        assert pred.get_data_dtype() == np.uint8
        mask = np.asarray(pred.dataobj)
        if name == "00000":
            np.testing.assert_array_equal(mask, label)
        else:
            scores = kits19_case_dice(mask, label)
            assert scores["kidney"] > 0.9 and scores["tumor"] > 0.7, scores


def test_monai_label_image_path_key(tmp_path: Path) -> None:
    """MONAI Label adds a string ``image_path``; the preprocessing must pass it through untouched."""
    arch = write_tiny_arch(tmp_path / "arch.json")
    data = tmp_path / "data"
    _case(data, "case_00000", (1.0, 1.0, 2.0), seed=7)
    workflow = ConfigWorkflow(
        config_file=config_path("inference"),
        meta_file=config_path("metadata"),
        workflow_type="infer",
        bundle_root=str(tmp_path),
        arch_file=str(arch),
        grid=2,
        intensity={"lower": 0.0, "upper": 200.0},
    )
    workflow.initialize()
    pre = workflow.parser.get_parsed_content("preprocessing")
    path = str(data / "case_00000" / "imaging.nii.gz")
    out = pre({"image": path, "image_path": path})
    assert out["image_path"] == path
    assert out["image"].shape[0] == 1 and float(out["image"].max()) <= 1.0


@pytest.mark.parametrize("missing", ["model.pt", "model_fold3.pt"])
def test_missing_weights_say_how_to_get_them(tmp_path: Path, missing: str) -> None:
    arch = write_tiny_arch(tmp_path / "arch.json")
    data = tmp_path / "data"
    _case(data, "case_00000", (1.0, 1.0, 2.0), seed=8)
    extra = {"ensemble": True} if missing != "model.pt" else {}
    if extra:
        (tmp_path / "models").mkdir()
        state = DASTNet(str(arch)).state_dict()
        for k in (0, 1, 2, 4):
            torch.save(state, tmp_path / "models" / f"model_fold{k}.pt")
            (tmp_path / "models" / f"model_fold{k}.json").write_text('{"intensity": {"lower": 0.0, "upper": 1.0}}')
    workflow = ConfigWorkflow(
        config_file=[config_path("inference"), config_path("quick")],
        meta_file=config_path("metadata"),
        workflow_type="infer",
        bundle_root=str(tmp_path),
        dataset_dir=str(data),
        arch_file=str(arch),
        device="cpu",
        **extra,
    )
    workflow.initialize()
    with pytest.raises(Exception) as info:
        workflow.run()
    text = error_chain(info.value)
    assert f"no trained weights at {tmp_path / 'models' / missing}" in text
    assert "python -m monai.bundle run training" in text


def test_fold_picks_its_weights_and_model_pt_names_the_trained_fold(tmp_path: Path) -> None:
    """After training fold 1 only, ``--fold 1`` runs; without it the message says to pass it."""
    arch = write_tiny_arch(tmp_path / "arch.json")
    data = tmp_path / "data"
    _case(data, "case_00000", (1.0, 1.0, 2.0), seed=8)
    (tmp_path / "models").mkdir()
    state = {"model": DASTNet(str(arch)).state_dict(), "bundle": {"intensity": {"lower": 0.0, "upper": 200.0}}}
    torch.save(state, tmp_path / "models" / "model_fold1.pt")
    common = {"config_file": [config_path("inference"), config_path("quick")], "meta_file": config_path("metadata"),
              "workflow_type": "infer", "bundle_root": str(tmp_path), "dataset_dir": str(data),
              "arch_file": str(arch), "device": "cpu", "num_workers": 0, "output_dir": str(tmp_path / "out")}
    workflow = ConfigWorkflow(**common, fold=1)
    workflow.initialize()
    assert workflow.parser.get_parsed_content("ckpt_path") == f"{tmp_path}/models/model_fold1.pt"
    workflow.run()
    workflow.finalize()
    assert (tmp_path / "out" / "prediction_00000.nii.gz").is_file()
    default = ConfigWorkflow(**common)
    default.initialize()
    with pytest.raises(Exception) as info:
        default.run()
    text = error_chain(info.value)
    assert "pass --fold 1 to use model_fold1.pt" in text
    config = text.split("--config_file ")[1].split()[0]
    assert Path(config).is_file(), config  # bundle_root (tmp_path) has no configs/: the bundle's own is named
