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
"""Tests of the synthetic CT phantoms and the MSD / KiTS19 dataset writers."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dast_components.data.synthetic import kits19_affine, main, make_phantom, msd_affine, to_kits19_array, write_dataset
from tests.data.utils import SMALL_SHAPE

__all__: list[str] = []


def test_phantom_content():
    image, label = make_phantom(shape=(64, 64, 48), spacing=(0.8, 0.8, 2.5), seed=0)
    assert image.shape == label.shape == (64, 64, 48)
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1, 2}
    # air in the corners, soft tissue around the kidneys, contrast-enhanced kidney, darker tumor, bone
    assert abs(float(np.median(image[:4, :4, :])) + 1000) < 30
    assert 130 < image[label == 1].mean() < 180
    assert 70 < image[label == 2].mean() < 130
    bone = image > 350
    assert bone.sum() > 100 and image.max() > 700
    assert not (bone & (label > 0)).any()
    # kidneys left and right of the spine, spine posterior (lower y) of the kidneys
    x_bone, y_bone, _ = np.nonzero(bone)
    x_kid, y_kid, _ = np.nonzero(label > 0)
    assert (x_kid < x_bone.mean()).sum() > 100 and (x_kid > x_bone.mean()).sum() > 100
    assert y_bone.mean() < y_kid.mean()
    # subcutaneous fat and soft tissue inside the body
    body = (image > -500) & (label == 0) & ~bone
    assert np.median(image[body]) == pytest.approx(40, abs=25)
    assert (np.abs(image + 100) < 40).sum() > 1000


@pytest.mark.parametrize("seed", range(8))
def test_small_phantom_has_all_labels(seed):
    _, label = make_phantom(shape=(16, 16, 16), spacing=(1.0, 1.0, 3.0), seed=seed)
    assert set(np.unique(label)) == {0, 1, 2}


def test_phantom_seeded():
    a_image, a_label = make_phantom(SMALL_SHAPE, seed=3)
    b_image, b_label = make_phantom(SMALL_SHAPE, seed=3)
    c_image, c_label = make_phantom(SMALL_SHAPE, seed=4)
    np.testing.assert_array_equal(a_image, b_image)
    np.testing.assert_array_equal(a_label, b_label)
    assert not np.array_equal(a_label, c_label)
    assert not np.array_equal(a_image, c_image)


@pytest.mark.parametrize("shape, spacing", [((8, 32, 32), (1, 1, 1)), ((32, 32), (1, 1, 1)), ((32, 32, 32), (1, 0, 1))])
def test_phantom_bad_arguments(shape, spacing):
    with pytest.raises(ValueError, match="shape|spacing"):
        make_phantom(shape, spacing)


def test_msd_layout(tmp_path):
    out = write_dataset(tmp_path / "msd", layout="msd", num_cases=3, seed=0, shape=SMALL_SHAPE)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "kidney", "2": "tumor"}
    assert meta["numTraining"] == len(meta["training"]) == 3
    assert meta["name"]
    for entry in meta["training"]:
        assert entry["image"].startswith("./imagesTr/") and entry["label"].startswith("./labelsTr/")
        image = nib.load(str(out / entry["image"]))
        label = nib.load(str(out / entry["label"]))
        assert image.shape == label.shape == SMALL_SHAPE
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        np.testing.assert_allclose(image.affine, label.affine)
        zooms = image.header.get_zooms()
        assert 0.7 <= zooms[0] == zooms[1] <= 1.0 and 1.5 <= zooms[2] <= 3.0
        assert set(np.unique(np.asanyarray(label.dataobj))) == {0, 1, 2}


def test_kits19_layout_matches_msd(tmp_path):
    msd = write_dataset(tmp_path / "msd", layout="msd", num_cases=2, seed=5, shape=SMALL_SHAPE)
    kits = write_dataset(tmp_path / "kits", layout="kits19", num_cases=2, seed=5, shape=SMALL_SHAPE)
    for index in range(2):
        case = kits / f"case_{index:05d}"
        image = nib.load(str(case / "imaging.nii.gz"))
        label = nib.load(str(case / "segmentation.nii.gz"))
        # stored like the real KiTS19 volumes: slices first, axis codes (I, P, L), permuted negative diagonal
        assert image.shape == label.shape == (SMALL_SHAPE[2], SMALL_SHAPE[1], SMALL_SHAPE[0])
        assert nib.aff2axcodes(image.affine) == nib.aff2axcodes(label.affine) == ("I", "P", "L")
        assert image.affine[2, 0] < 0 and image.affine[1, 1] < 0 and image.affine[0, 2] < 0
        # reoriented to RAS it is the same phantom, at the same world position, as the MSD copy
        canonical = nib.as_closest_canonical(image)
        ras = nib.load(str(msd / "imagesTr" / f"case_{index:03d}.nii.gz"))
        np.testing.assert_allclose(canonical.affine, ras.affine, atol=1e-5)
        np.testing.assert_array_equal(np.asanyarray(canonical.dataobj), np.asanyarray(ras.dataobj))
    assert not (kits / "dataset.json").exists()


def test_kits19_affine_maps_same_voxels():
    shape, spacing = (5, 6, 7), (0.8, 0.9, 2.5)
    array = np.arange(np.prod(shape)).reshape(shape)
    kits = to_kits19_array(array)
    ras_affine, kits_affine = msd_affine(shape, spacing), kits19_affine(shape, spacing)
    for ras_index in [(0, 0, 0), (4, 5, 6), (1, 2, 3)]:
        world = ras_affine @ np.array([*ras_index, 1.0])
        kits_index = np.round(np.linalg.inv(kits_affine) @ world)[:3].astype(int)
        assert kits[tuple(kits_index)] == array[ras_index]


def test_cases_do_not_depend_on_num_cases(tmp_path):
    few = write_dataset(tmp_path / "few", num_cases=2, shape=SMALL_SHAPE)
    more = write_dataset(tmp_path / "more", num_cases=3, shape=SMALL_SHAPE)
    for name in ("imagesTr/case_000.nii.gz", "labelsTr/case_001.nii.gz"):
        a, b = nib.load(str(few / name)), nib.load(str(more / name))
        np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))


def test_default_dataset_is_small(tmp_path):
    out = write_dataset(tmp_path / "default", layout="msd", num_cases=8)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) == 17
    assert sum(p.stat().st_size for p in files) < 5 * 2**20
    assert not [p for p in files if p.name.startswith(".")]  # no temporary files left behind


def test_write_dataset_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="layout"):
        write_dataset(tmp_path, layout="nnunet")
    with pytest.raises(ValueError, match="num_cases"):
        write_dataset(tmp_path, num_cases=0)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    main(["--layout", "kits19", "--num_cases", "2", "--out", str(out), "--seed", "1", "--shape", "[16,20,18]"])
    assert "wrote 2 kits19 cases" in capsys.readouterr().out
    assert nib.load(str(out / "case_00001" / "segmentation.nii.gz")).shape == (18, 20, 16)
    main(["--out", str(tmp_path / "msd"), "--num_cases", "1", "--shape", "16,16,16"])
    assert Path(tmp_path / "msd" / "dataset.json").is_file()
