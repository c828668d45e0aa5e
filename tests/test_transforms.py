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
"""PathSafeSpacingd keeps MONAI Label's string ``image_path``; ScaleIntensityFromCheckpointd follows the weights."""

from __future__ import annotations

import monai
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Spacingd
from monai.utils import version_leq

from dast_components.transforms import PathSafeSpacingd, ScaleIntensityFromCheckpointd

__all__: list[str] = []

# MONAI 1.6's Spacingd updates every entry named f"{key}_*" as a metadata dictionary; earlier versions (1.4, 1.5,
# which setup.cfg allows) leave those entries alone, so PathSafeSpacingd has nothing to protect there
UPDATES_PREFIXED_ENTRIES = version_leq("1.6", monai.__version__)


def _data() -> dict:
    image = MetaTensor(torch.rand(1, 6, 7, 8, generator=torch.Generator().manual_seed(0)), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])),
                       meta={"filename_or_obj": "/d/case_00000/imaging.nii.gz"})
    return {"image": image, "image_path": "/d/case_00000/imaging.nii.gz", "image_meta_dict": {"note": 1}}


def test_plain_spacingd_fails_on_image_path() -> None:
    # the MONAI behaviour this transform exists for; if MONAI fixes it, PathSafeSpacingd can go
    if not UPDATES_PREFIXED_ENTRIES:
        assert Spacingd("image", pixdim=(1.0, 1.0, 1.0))(_data())["image_path"] == "/d/case_00000/imaging.nii.gz"
        return
    with pytest.raises(AttributeError):
        Spacingd("image", pixdim=(1.0, 1.0, 1.0))(_data())


def test_keeps_strings_and_updates_meta_dicts() -> None:
    data = _data()
    out = PathSafeSpacingd("image", pixdim=(1.0, 1.0, 1.0))(data)
    assert out["image_path"] == "/d/case_00000/imaging.nii.gz"
    assert out["image"].shape == (1, 11, 13, 22)
    assert out["image_meta_dict"]["note"] == 1
    assert ("affine" in out["image_meta_dict"]) == UPDATES_PREFIXED_ENTRIES  # as the plain transform does
    reference = Spacingd("image", pixdim=(1.0, 1.0, 1.0))({"image": _data()["image"]})
    torch.testing.assert_close(out["image"].as_tensor(), reference["image"].as_tensor())


def test_invertible() -> None:
    t = PathSafeSpacingd("image", pixdim=(1.0, 1.0, 1.0))
    out = t(_data())
    back = t.inverse(out)
    assert back["image"].shape == (1, 6, 7, 8)
    assert back["image_path"] == "/d/case_00000/imaging.nii.gz"


def test_scale_from_checkpoint_follows_the_weight_file(tmp_path) -> None:
    path = tmp_path / "model.pt"
    scale = ScaleIntensityFromCheckpointd("image", checkpoint=path)
    with pytest.raises(FileNotFoundError, match="no trained weights"):
        scale({"image": torch.zeros(1, 2, 2, 2)})
    torch.save({"model": {}, "bundle": {"intensity": {"lower": 0.0, "upper": 100.0}}}, path)
    image = torch.tensor([-10.0, 25.0, 100.0, 150.0]).view(1, 4, 1, 1)
    torch.testing.assert_close(scale({"image": image})["image"].flatten(), torch.tensor([0.0, 0.25, 1.0, 1.0]))
    # retrained weights with another window (a different size, so the change is seen whatever the clock)
    torch.save({"model": {"w": torch.zeros(3)}, "bundle": {"intensity": {"lower": -50.0, "upper": 50.0}}}, path)
    torch.testing.assert_close(scale({"image": image})["image"].flatten(), torch.tensor([0.4, 0.75, 1.0, 1.0]))
    # current format: plain state dict + models/model.json; a rewritten record alone is seen too
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(3)}, plain)
    (tmp_path / "plain.json").write_text('{"intensity": {"lower": 0.0, "upper": 100.0}}')
    side = ScaleIntensityFromCheckpointd("image", checkpoint=plain)
    torch.testing.assert_close(side({"image": image})["image"].flatten(), torch.tensor([0.0, 0.25, 1.0, 1.0]))
    (tmp_path / "plain.json").write_text('{"intensity": {"lower": -50.0, "upper": 50.0}} ')
    torch.testing.assert_close(side({"image": image})["image"].flatten(), torch.tensor([0.4, 0.75, 1.0, 1.0]))
    fixed = ScaleIntensityFromCheckpointd("image", checkpoint=tmp_path / "none.pt", window={"lower": 0, "upper": 200})
    torch.testing.assert_close(fixed({"image": image})["image"].flatten(), torch.tensor([0.0, 0.125, 0.5, 0.75]))
    with pytest.raises(ValueError, match="lower"):
        ScaleIntensityFromCheckpointd("image", checkpoint=path, window={"upper": 1.0})
