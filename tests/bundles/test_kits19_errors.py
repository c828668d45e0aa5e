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
"""Bad input makes ``train.json`` fail before the first iteration, with a message naming the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from tests.bundles.kits19_utils import config_path, error_chain, save_kits_case, write_kits19, write_tiny_arch

__all__: list[str] = []


@pytest.fixture(scope="module")
def good_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kits19(tmp_path_factory.mktemp("kits") / "data", num_cases=5)


def _train_error(tmp_path: Path, data: Path, arch: Path | None = None, **override) -> str:
    """Start quick training and return the error chain it fails with."""
    started = []
    workflow = ConfigWorkflow(
        config_file=[config_path("train"), config_path("quick")],
        meta_file=config_path("metadata"),
        workflow_type="train",
        bundle_root=str(tmp_path / "bundle"),
        dataset_dir=str(data),
        arch_file=str(arch or write_tiny_arch(tmp_path / "arch.json")),
        device="cpu",
        num_workers=0,
        **override,
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
        trainer = workflow.parser.get_parsed_content("train#trainer")
        trainer.add_event_handler("iteration_started", lambda engine: started.append(engine.state.iteration))
        workflow.run()
    assert not started, "the workflow failed only after training had started"
    return error_chain(info.value)


def _copy(data: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(data, tmp_path / "data"))


def test_missing_segmentation(tmp_path: Path, good_data: Path) -> None:
    data = _copy(good_data, tmp_path)
    (data / "case_00002" / "segmentation.nii.gz").unlink()
    text = _train_error(tmp_path, data)
    assert "case_00002" in text and "segmentation.nii.gz" in text


def test_image_label_shape_mismatch(tmp_path: Path, good_data: Path) -> None:
    data = _copy(good_data, tmp_path)
    seg = nib.load(str(data / "case_00001" / "segmentation.nii.gz"))
    small = np.asarray(seg.dataobj)[:-2]
    nib.save(nib.Nifti1Image(small, seg.affine), str(data / "case_00001" / "segmentation.nii.gz"))
    text = _train_error(tmp_path, data)
    assert "case_00001" in text and "shape" in text


def test_2d_image(tmp_path: Path, good_data: Path) -> None:
    data = _copy(good_data, tmp_path)
    flat = np.zeros((64, 64), dtype=np.int16)
    save_kits_case(data / "case_00003", flat, flat.astype(np.uint8), np.eye(4))
    text = _train_error(tmp_path, data)
    assert "case_00003" in text and ("2D" in text or "3D" in text or "dimension" in text), text


@pytest.mark.parametrize("kind", ["ops", "grid"])
def test_architecture_for_another_pool_or_grid(tmp_path: Path, good_data: Path, kind: str) -> None:
    if kind == "ops":
        arch = write_tiny_arch(tmp_path / "dints_arch.json", ops="dints")
        text = _train_error(tmp_path, good_data, arch=arch)
        assert "dints_arch.json" in text and "op pool" in text
    else:
        arch = write_tiny_arch(tmp_path / "grid2_arch.json", grid=2)
        text = _train_error(tmp_path, good_data, arch=arch, grid=8)
        assert "grid2_arch.json" in text and "grid" in text


def test_patch_size_not_a_multiple_of_the_stride(tmp_path: Path, good_data: Path) -> None:
    text = _train_error(tmp_path, good_data, patch_size=[40, 40, 40])
    assert "patch_size [40, 40, 40]" in text and "multiples of 16" in text
