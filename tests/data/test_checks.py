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
"""Each bad dataset input raises DataError naming the file or key, before any training starts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dast_components.data import DataError, msd_items, prepare_kits19_data, prepare_search_data, search_split
from dast_components.data.checks import check_image_label_shapes, check_label_values, read_json, write_json_atomic
from dast_components.utils import atomic_path
from tests.data.utils import save_nifti

__all__: list[str] = []


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


def test_missing_dataset_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere.*does not exist.*dast_components.data.synthetic"):
        prepare_search_data(missing)
    with pytest.raises(DataError, match="nowhere"):
        prepare_kits19_data(missing)


def test_dataset_dir_is_a_file(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="file.txt.*expected a folder"):
        prepare_search_data(path)


def test_missing_dataset_json(tmp_path):
    with pytest.raises(DataError, match=r"dataset\.json.*does not exist.*--layout msd"):
        prepare_search_data(tmp_path)


def test_invalid_dataset_json(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match=r"dataset\.json.*not valid JSON"):
        prepare_search_data(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {}}))
    with pytest.raises(DataError, match="key 'training'"):
        prepare_search_data(tmp_path)
    (tmp_path / "dataset.json").write_text(json.dumps({"training": [{"image": "./a.nii.gz"}]}))
    with pytest.raises(DataError, match="entry 0.*'label'"):
        prepare_search_data(tmp_path)


def test_listed_file_missing(msd_dir):
    (msd_dir / "labelsTr" / "case_004.nii.gz").unlink()
    with pytest.raises(DataError, match=r"label file '.*labelsTr/case_004\.nii\.gz'.*does not exist"):
        prepare_search_data(msd_dir)


def test_num_classes_differs_from_dataset_json(msd_dir):
    with pytest.raises(DataError, match=r"dataset\.json.*'labels'.*3 classes.*num_classes=2"):
        prepare_search_data(msd_dir, num_classes=2)


@pytest.mark.parametrize("name", ["segmentation.nii.gz", "imaging.nii.gz"])
def test_kits19_case_without_file(kits_dir, name):
    (kits_dir / "case_00003" / name).unlink()
    with pytest.raises(DataError, match=f"case_00003.*'{name}'"):
        prepare_kits19_data(kits_dir)


def test_kits19_without_cases(tmp_path):
    with pytest.raises(DataError, match="no case_XXXXX folders.*--layout kits19"):
        prepare_kits19_data(tmp_path)


def test_shape_mismatch(msd_dir):
    save_nifti(msd_dir / "labelsTr" / "case_002.nii.gz", np.zeros((20, 24, 15), np.uint8))
    with pytest.raises(DataError, match=r"label '.*case_002\.nii\.gz' has shape \(20, 24, 15\).*\(20, 24, 16\)"):
        prepare_search_data(msd_dir)


def test_non_3d_image(kits_dir):
    save_nifti(kits_dir / "case_00001" / "imaging.nii.gz", np.zeros((16, 24, 20, 2), np.int16))
    with pytest.raises(DataError, match=r"image '.*case_00001/imaging\.nii\.gz' has shape \(16, 24, 20, 2\).*3D"):
        prepare_kits19_data(kits_dir)


def test_unreadable_file(msd_dir):
    (msd_dir / "imagesTr" / "case_000.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(DataError, match=r"case_000\.nii\.gz"):
        prepare_search_data(msd_dir)


@pytest.mark.parametrize("part", ["train_weights", "validation"])  # validation labels are not read for percentiles
def test_label_values_out_of_range(msd_dir, part):
    path = Path(search_split(msd_items(msd_dir), seed=0)[part][0]["label"])
    label = np.zeros((20, 24, 16), np.uint8)
    label[2:5, 2:5, 2:5], label[6, 6, 6], label[7, 7, 7] = 1, 3, 7
    save_nifti(path, label)
    with pytest.raises(DataError, match=rf"{path.name}' has values \[3, 7\] outside range\(3\)"):
        prepare_search_data(msd_dir, seed=0)


def test_check_label_values_float_labels():
    check_label_values(np.array([0.0, 1.0, 2.0]), 3, "ok.nii.gz")
    with pytest.raises(DataError, match=r"f\.nii\.gz' has values \[-1, 0\.5\]"):
        check_label_values(np.array([0.0, 0.5, -1.0, 2.0]), 3, "f.nii.gz")
    with pytest.raises(ValueError, match="num_classes"):
        check_label_values(np.zeros(3), 0, "f.nii.gz")


def test_shape_check_reads_headers_only(msd_dir, monkeypatch):
    import nibabel

    def no_voxel_reads(*args, **kwargs):
        raise AssertionError("voxel data was read")

    monkeypatch.setattr(nibabel.arrayproxy.ArrayProxy, "__array__", no_voxel_reads)
    monkeypatch.setattr(nibabel.arrayproxy.ArrayProxy, "__getitem__", no_voxel_reads)
    items = [{"image": str(msd_dir / "imagesTr/case_000.nii.gz"), "label": str(msd_dir / "labelsTr/case_000.nii.gz")}]
    check_image_label_shapes(items)


def test_write_json_atomic(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "a.json", {"x": [1, 2]})
    assert read_json(path) == {"x": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("writer failed")
    assert read_json(path) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with atomic_path(tmp_path / "x.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"data")
    assert (tmp_path / "x.nii.gz").read_bytes() == b"data"


def test_read_json_missing(tmp_path):
    with pytest.raises(DataError, match="missing.json"):
        read_json(tmp_path / "missing.json")
