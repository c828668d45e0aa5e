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
"""``search`` of ``dast_search`` on bad inputs (every volume, output folders and device checked before the first
iteration), and a resume whose settings differ from the checkpoint's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from dast_components.data import write_dataset
from tests.bad_inputs.helpers import assert_input_error, copy_dataset, edit_image, search_config_path, written
from tests.search.test_trainer import _parser as _small_search
from tests.search.test_trainer import _run as _run_search

__all__: list[str] = []


@pytest.fixture(scope="module")
def msd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("msd") / "task", num_cases=4, shape=(32, 32, 32))


def _search(tmp_path: Path, data: Path, **override) -> None:
    override.setdefault("device", "cpu")
    workflow = ConfigWorkflow(
        config_file=[search_config_path("search"), search_config_path("quick")],
        meta_file=search_config_path("metadata"), logging_file=False, workflow_type=None,
        bundle_root=str(tmp_path / "bundle"), dataset_dir=str(data), **override,
    )
    try:
        workflow.initialize()  # the checks run here; the search (workflow.run) would start iterating
    finally:
        assert written(tmp_path / "bundle") == [], written(tmp_path / "bundle")


def _split_part(data: Path, part: str) -> Path:
    from dast_components.data.datalist import msd_items, search_split

    return Path(search_split(msd_items(data))[part][0]["image"])


def test_nan_in_a_search_image(tmp_path: Path, msd: Path) -> None:
    data = copy_dataset(msd, tmp_path / "data")
    image = _split_part(data, "train_weights")
    edit_image(image, lambda a: np.where(a > 100, np.nan, a))
    assert_input_error(lambda: _search(tmp_path, data), image.name, "NaN")


def test_unreadable_validation_image(tmp_path: Path, msd: Path) -> None:
    data = copy_dataset(msd, tmp_path / "data")
    image = _split_part(data, "validation")
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])  # the header reads, the voxels do not
    assert_input_error(lambda: _search(tmp_path, data), "validation image", image.name)


@pytest.mark.parametrize("key", ["ckpt_dir", "output_dir"])
def test_output_folder_not_writable(tmp_path: Path, msd: Path, key: str) -> None:
    (tmp_path / "a_file").write_text("")
    assert_input_error(lambda: _search(tmp_path, msd, **{key: str(tmp_path / "a_file" / "x")}), key, "a_file")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path: Path, msd: Path) -> None:
    assert_input_error(lambda: _search(tmp_path, msd, device="cuda"), "CUDA is not available")


def test_too_few_cases(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "two", num_cases=2, shape=(16, 16, 16))
    assert_input_error(lambda: _search(tmp_path, data), "at least 3 cases")


def test_resume_with_other_settings_stops_listing_them(tmp_path: Path) -> None:
    _run_search(_small_search(tmp_path, num_iterations=2, warmup=1, val_interval=2))
    checkpoint = tmp_path / "eval" / "search_checkpoint.pt"
    before = checkpoint.read_bytes()
    resumed = _small_search(tmp_path, num_iterations=4, warmup=1, val_interval=2, resume=True)
    resumed.update({"memory_lambda": 0.2, "learning_rate": 0.001})
    message = assert_input_error(lambda: _run_search(resumed), "cannot resume", "memory_lambda 0.5 -> 0.2",
                                 "optimizer[0].lr 0.05 -> 0.001", "--resume false")
    assert "num_iterations" not in message  # a search may be extended
    assert checkpoint.read_bytes() == before


def test_missing_dataset_json(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    assert_input_error(lambda: _search(tmp_path, tmp_path / "bare"), "dataset.json", "does not exist")


def test_listed_file_missing(tmp_path: Path, msd: Path) -> None:
    data = copy_dataset(msd, tmp_path / "data")
    (data / "labelsTr" / "case_002.nii.gz").unlink()
    assert_input_error(lambda: _search(tmp_path, data), "case_002.nii.gz", "does not exist")


@pytest.mark.parametrize("override, words", [
    ({"patch_size": [40, 40, 40]}, ["patch_size", "multiples of 16"]),
    ({"train_patch_size": [100, 100, 100]}, ["train_patch_size"]),
    ({"ops": ["skip_connect", "conv_5x5x5"]}, ["unknown op name"]),
    ({"ops": "nas"}, ["unknown op pool"]),
    ({"warmup_iterations": 20}, ["warmup_iterations"]),
])
def test_bad_setting(tmp_path: Path, msd: Path, override: dict, words: list[str]) -> None:
    assert_input_error(lambda: _search(tmp_path, msd, **override), *words)
