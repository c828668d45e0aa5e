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
"""``training`` and ``evaluating`` of ``dast_kits19_seg`` on bad inputs: an InputError before the first iteration,
naming the problem, and nothing written (the same workflow as ``python -m monai.bundle run``, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from tests.bad_inputs.helpers import (
    assert_input_error,
    config_path,
    copy_dataset,
    edit_image,
    write_kits19,
    write_tiny_arch,
    write_weights,
    written,
)

__all__: list[str] = []


@pytest.fixture(scope="module")
def kits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kits19(tmp_path_factory.mktemp("kits") / "data", num_cases=5)


def _run(tmp_path: Path, data: Path, configs: tuple[str, ...] = ("train", "quick"), **override) -> None:
    if "arch_file" not in override:
        override["arch_file"] = str(write_tiny_arch(tmp_path / "arch.json"))
    override.setdefault("device", "cpu")
    started: list[int] = []
    workflow = ConfigWorkflow(
        config_file=[config_path(c) for c in configs], meta_file=config_path("metadata"),
        workflow_type="train", bundle_root=str(tmp_path / "bundle"), dataset_dir=str(data), num_workers=0,
        **override,
    )
    try:
        workflow.initialize()
        engine = workflow.parser.get_parsed_content("validate#evaluator" if "evaluate" in configs else "train#trainer")
        engine.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(e.state.iteration) or e.terminate())
        workflow.run()
    finally:
        assert not started, "the run failed only after its first iteration"
        assert written(tmp_path / "bundle") == [], written(tmp_path / "bundle")


def _case(data: Path, k: int, name: str = "imaging.nii.gz") -> Path:
    return data / f"case_{k:05d}" / name


def _validation_case(data: Path) -> int:
    folds = json.loads((data / "dast_kits19_folds.json").read_text())["folds"]
    return int(next(e for e in folds if e["fold"] == 0)["image"].split("/")[0][5:])


def _folds(tmp_path: Path, kits: Path) -> Path:
    """A copy of the dataset with its fold split made (to know which cases validate fold 0)."""
    from dast_components.data.datalist import _cached_folds, kits19_items

    data = copy_dataset(kits, tmp_path / "data")
    _cached_folds(data, kits19_items(data), data, 5, 0)
    return data


def test_nan_in_a_training_image(tmp_path: Path, kits: Path) -> None:
    data = _folds(tmp_path, kits)
    k = next(i for i in range(5) if i != _validation_case(data))
    edit_image(_case(data, k), lambda a: np.where(np.arange(a.shape[0])[:, None, None] < 3, np.nan, a))
    assert_input_error(lambda: _run(tmp_path, data), f"case_{k:05d}", "NaN")


def test_nan_in_a_validation_image(tmp_path: Path, kits: Path) -> None:
    data = _folds(tmp_path, kits)
    k = _validation_case(data)
    edit_image(_case(data, k), lambda a: np.where(a > 0, np.inf, a))
    assert_input_error(lambda: _run(tmp_path, data), f"case_{k:05d}", "NaN or infinite")


@pytest.mark.parametrize("kind", ["truncated", "png"])
def test_unreadable_validation_image(tmp_path: Path, kits: Path, kind: str) -> None:
    data = _folds(tmp_path, kits)
    k = _validation_case(data)
    path = _case(data, k)
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    assert_input_error(lambda: _run(tmp_path, data), f"case_{k:05d}")


def test_constant_images_give_an_empty_window(tmp_path: Path, kits: Path) -> None:
    data = copy_dataset(kits, tmp_path / "data")
    for k in range(5):
        edit_image(_case(data, k), lambda a: np.full_like(a, 40.0))
    assert_input_error(lambda: _run(tmp_path, data), "intensity window", "empty", "lower=40.0, upper=40.0")


def test_inconsistent_architecture(tmp_path: Path, kits: Path) -> None:
    arch = write_tiny_arch(tmp_path / "arch.json")
    content = json.loads(arch.read_text())
    content["node_a"][0] = [0] * len(content["node_a"][0])  # the paths of block 0 now read inactive nodes
    arch.write_text(json.dumps(content))
    assert_input_error(lambda: _run(tmp_path, kits, arch_file=str(arch)), str(arch), "inconsistent", "inactive")


@pytest.mark.parametrize("key", ["ckpt_dir", "output_dir"])
def test_output_folder_not_writable(tmp_path: Path, kits: Path, key: str) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert_input_error(lambda: _run(tmp_path, kits, **{key: str(blocker / "out")}), key, str(blocker))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path: Path, kits: Path) -> None:
    assert_input_error(lambda: _run(tmp_path, kits, device="cuda"), "device 'cuda'", "--device cpu")


def test_fewer_training_cases_than_batch_before_reading_volumes(tmp_path: Path, kits: Path) -> None:
    data = write_kits19(tmp_path / "two", num_cases=2)
    assert_input_error(lambda: _run(tmp_path, data, num_folds=2, batch_size=2), "1 training case", "batch_size=2",
                       "--batch_size 1")
    assert not list(data.glob("dast_intensity_*")), "the volumes were read before the batch check"


def test_label_value_outside_classes(tmp_path: Path, kits: Path) -> None:
    data = copy_dataset(kits, tmp_path / "data")
    label = _case(data, 2, "segmentation.nii.gz")
    seg = nib.load(str(label))
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj).astype(np.uint8) * 3, seg.affine), str(label))
    assert_input_error(lambda: _run(tmp_path, data), "case_00002", "outside range(3)")


def test_missing_segmentation(tmp_path: Path, kits: Path) -> None:
    data = copy_dataset(kits, tmp_path / "data")
    _case(data, 2, "segmentation.nii.gz").unlink()
    assert_input_error(lambda: _run(tmp_path, data), "case_00002", "segmentation.nii.gz")


def test_missing_dataset_dir(tmp_path: Path) -> None:
    assert_input_error(lambda: _run(tmp_path, tmp_path / "nowhere"), "nowhere", "does not exist")


def test_patch_size_not_a_multiple_of_the_stride(tmp_path: Path, kits: Path) -> None:
    assert_input_error(lambda: _run(tmp_path, kits, patch_size=[40, 40, 40]), "patch_size", "[32, 32, 32]")


def test_architecture_for_another_grid(tmp_path: Path, kits: Path) -> None:
    assert_input_error(lambda: _run(tmp_path, kits, grid=4), "grid")


def test_evaluating_weights_of_another_architecture(tmp_path: Path, kits: Path) -> None:
    other = write_tiny_arch(tmp_path / "other.json", seed=7)
    weights = write_weights(tmp_path / "bundle_w" / "model_fold0.pt", other)
    message = assert_input_error(
        lambda: _run(tmp_path, kits, configs=("train", "evaluate", "quick"), ckpt_dir=str(weights.parent),
                     intensity={"lower": -100.0, "upper": 200.0}),
        str(weights), "do not fit",
    )
    assert len(message) < 1500, f"{len(message)} characters"


def test_evaluating_missing_weights(tmp_path: Path, kits: Path) -> None:
    assert_input_error(
        lambda: _run(tmp_path, kits, configs=("train", "evaluate", "quick"), ckpt_dir=str(tmp_path / "none")),
        "no trained weights", "model_fold0.pt",
    )


def test_image_label_shape_mismatch(tmp_path: Path, kits: Path) -> None:
    data = copy_dataset(kits, tmp_path / "data")
    label = _case(data, 1, "segmentation.nii.gz")
    seg = nib.load(str(label))
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj)[:-2], seg.affine), str(label))
    assert_input_error(lambda: _run(tmp_path, data), "case_00001", "shape")


def test_2d_training_image(tmp_path: Path, kits: Path) -> None:
    data = copy_dataset(kits, tmp_path / "data")
    flat = np.zeros((64, 64), dtype=np.int16)
    for name, array in (("imaging.nii.gz", flat), ("segmentation.nii.gz", flat.astype(np.uint8))):
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(_case(data, 3, name)))
    assert_input_error(lambda: _run(tmp_path, data), "case_00003", "3D")


def test_dataset_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert_input_error(lambda: _run(tmp_path, tmp_path / "file"), "is a file")


def test_architecture_for_another_op_pool(tmp_path: Path, kits: Path) -> None:
    arch = write_tiny_arch(tmp_path / "dints.json", ops="dints")
    assert_input_error(lambda: _run(tmp_path, kits, arch_file=str(arch)), "op pool")


def test_missing_architecture_file(tmp_path: Path, kits: Path) -> None:
    assert_input_error(lambda: _run(tmp_path, kits, arch_file=str(tmp_path / "none.json")), "none.json",
                       "does not exist")


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """An existing folder nobody can write to: ``chmod 555`` for a user, ``chattr +i`` for root (who ignores
    permission bits); skipped where neither applies."""
    import os
    import shutil
    import subprocess

    folder = tmp_path / "read_only"
    folder.mkdir()
    root = os.geteuid() == 0
    if root:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
            pytest.skip("root without chattr +i: no way to make a folder read-only here")
    else:
        folder.chmod(0o555)
    yield folder
    if root:
        subprocess.run(["chattr", "-i", str(folder)], check=False)
    else:
        folder.chmod(0o755)


def test_existing_output_folder_without_write_permission(tmp_path: Path, kits: Path, read_only_folder: Path) -> None:
    assert_input_error(lambda: _run(tmp_path, kits, output_dir=str(read_only_folder)), "output_dir",
                       "is not writable", str(read_only_folder))
