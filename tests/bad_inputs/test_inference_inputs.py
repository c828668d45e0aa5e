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
"""``inference`` of ``dast_kits19_seg`` on bad inputs: every input image is checked before the first prediction, so
one bad file in a folder stops the run with its name and no prediction is written."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from tests.bad_inputs.helpers import assert_input_error, config_path, write_tiny_arch, write_weights, written

__all__: list[str] = []

_AFFINE = np.diag([1.5, 1.5, 1.5, 1.0])


def _image(path: Path, shape: tuple[int, ...] = (40, 40, 40), value: float = 50.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).normal(value, 20.0, size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, _AFFINE), str(path))
    return path


def _infer(tmp_path: Path, inputs: Path, **override) -> None:
    arch = write_tiny_arch(tmp_path / "arch.json")
    override.setdefault("ckpt_path", str(write_weights(tmp_path / "weights" / "model.pt", arch)))
    override.setdefault("output_dir", str(tmp_path / "out"))
    override.setdefault("device", "cpu")
    started: list[int] = []
    workflow = ConfigWorkflow(
        config_file=[config_path("inference"), config_path("quick")], meta_file=config_path("metadata"),
        workflow_type="infer", bundle_root=str(tmp_path / "bundle"), dataset_dir=str(inputs), arch_file=str(arch),
        num_workers=0, intensity={"lower": -100.0, "upper": 200.0}, **override,
    )
    try:
        workflow.initialize()
        workflow.parser.get_parsed_content("evaluator").add_event_handler(
            Events.ITERATION_STARTED, lambda e: started.append(e.state.iteration) or e.terminate())
        workflow.run()
    finally:
        assert not started, "the run failed only after its first prediction"
        assert written(tmp_path / "out") == [] and written(tmp_path / "bundle") == []


def test_good_folder_runs(tmp_path: Path) -> None:
    """The reference the bad cases differ from: the same folder without the bad file predicts every image."""
    inputs = tmp_path / "in"
    _image(inputs / "a.nii.gz")
    with pytest.raises(AssertionError, match="failed only after"):  # no error: the first prediction starts
        _infer(tmp_path, inputs)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300)), ["cannot read input image"]),
        (lambda p: _image(p, (40, 40)), ["(40, 40)", "3D volume"]),
        (lambda p: _image(p, (40, 40, 40, 2)), ["2 channels"]),
        (lambda p: _image(p).write_bytes(p.read_bytes()[:200]), ["cannot read input image"]),
    ],
    ids=["png_renamed", "2d", "two_channels", "truncated"],
)
def test_one_bad_file_in_a_folder_stops_before_any_prediction(tmp_path: Path, make, words: list[str]) -> None:
    inputs = tmp_path / "in"
    _image(inputs / "a_good.nii.gz")
    make(inputs / "b_bad.nii.gz")
    assert_input_error(lambda: _infer(tmp_path, inputs), "b_bad.nii.gz", *words)


def test_half_nan_image(tmp_path: Path) -> None:
    path = _image(tmp_path / "in" / "ct.nii.gz")
    image = nib.load(str(path))
    data = image.get_fdata(dtype=np.float32)
    data[:20] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), str(path))
    assert_input_error(lambda: _infer(tmp_path, tmp_path / "in"), "ct.nii.gz", "32000 NaN or infinite voxels")


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    assert_input_error(lambda: _infer(tmp_path, tmp_path / "in"), "no images matching")


def test_missing_weights(tmp_path: Path) -> None:
    _image(tmp_path / "in" / "ct.nii.gz")
    assert_input_error(lambda: _infer(tmp_path, tmp_path / "in", ckpt_path=str(tmp_path / "none" / "model.pt")),
                       "no trained weights", "model.pt")


def test_weights_of_another_architecture_in_a_short_message(tmp_path: Path) -> None:
    _image(tmp_path / "in" / "ct.nii.gz")
    other = write_weights(tmp_path / "other" / "model.pt", write_tiny_arch(tmp_path / "other.json", seed=7))
    message = assert_input_error(lambda: _infer(tmp_path, tmp_path / "in", ckpt_path=str(other)), "do not fit",
                                 "parameter(s)")
    assert len(message) < 1500, f"{len(message)} characters"


def test_output_folder_not_writable(tmp_path: Path) -> None:
    _image(tmp_path / "in" / "ct.nii.gz")
    (tmp_path / "a_file").write_text("")
    assert_input_error(lambda: _infer(tmp_path, tmp_path / "in", output_dir=str(tmp_path / "a_file" / "pred")),
                       "output_dir", "a_file")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path: Path) -> None:
    _image(tmp_path / "in" / "ct.nii.gz")
    assert_input_error(lambda: _infer(tmp_path, tmp_path / "in", device="cuda"), "CUDA is not available")
