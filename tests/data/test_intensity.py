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
"""Tests of the foreground intensity percentiles and their command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

import logging

from dast_components.data import DataError, as_window, foreground_percentiles, warn_uncovered_classes
from dast_components.data.intensity import load_datalist_items, main
from tests.data.utils import save_nifti

__all__: list[str] = []


@pytest.fixture
def known_cases(tmp_path):
    """Two cases whose foreground intensities are 0..999 and 1000..1999 (background is -1000)."""
    items = []
    for index in range(2):
        image = np.full((10, 10, 20), -1000.0, np.float32)
        label = np.zeros((10, 10, 20), np.uint8)
        label[:, :, :10] = 1
        label[:5, :, :10] = 2
        image[:, :, :10] = (np.arange(1000) + 1000 * index).reshape(10, 10, 10)
        items.append(
            {
                "image": str(save_nifti(tmp_path / f"img{index}.nii.gz", image)),
                "label": str(save_nifti(tmp_path / f"lbl{index}.nii.gz", label)),
            }
        )
    return items


def test_percentiles_of_known_volume(known_cases):
    stats = foreground_percentiles(known_cases)
    low, high = np.percentile(np.arange(2000.0), [5, 95])
    expected = {"lower": pytest.approx(low), "upper": pytest.approx(high), "percentiles": [5.0, 95.0], "num_cases": 2}
    assert {k: v for k, v in stats.items() if k != "classes"} == expected
    assert stats["lower"] == pytest.approx(99.95) and stats["upper"] == pytest.approx(1899.05)
    one = foreground_percentiles(known_cases[:1], lower=10, upper=50)
    assert (one["lower"], one["upper"]) == (pytest.approx(99.9), pytest.approx(499.5))


def test_subsampling_is_bounded_and_seeded(known_cases):
    a = foreground_percentiles(known_cases, max_voxels_per_case=200, seed=0)
    b = foreground_percentiles(known_cases, max_voxels_per_case=200, seed=0)
    c = foreground_percentiles(known_cases, max_voxels_per_case=200, seed=1)
    assert a == b and a != c
    assert a["lower"] == pytest.approx(100, abs=60) and a["upper"] == pytest.approx(1900, abs=60)


def test_label_values_checked(known_cases, tmp_path):
    label = np.zeros((10, 10, 20), np.int16)
    label[0, 0, 0], label[1, 1, 1], label[2, 2, 2] = 1, 4, -2
    save_nifti(tmp_path / "lbl1.nii.gz", label)
    assert foreground_percentiles(known_cases)["num_cases"] == 2  # no check without num_classes
    with pytest.raises(DataError, match=r"lbl1\.nii\.gz' has values \[-2, 4\] outside range\(3\)"):
        foreground_percentiles(known_cases, num_classes=3)


def test_shape_mismatch(known_cases, tmp_path):
    save_nifti(tmp_path / "lbl0.nii.gz", np.ones((10, 10, 19), np.uint8))
    with pytest.raises(DataError, match=r"lbl0\.nii\.gz' has shape \(10, 10, 19\)"):
        foreground_percentiles(known_cases)


def test_empty_foreground(known_cases, tmp_path, caplog):
    save_nifti(tmp_path / "lbl0.nii.gz", np.zeros((10, 10, 20), np.uint8))
    stats = foreground_percentiles(known_cases)
    assert stats["lower"] == pytest.approx(np.percentile(np.arange(1000, 2000.0), 5))
    assert "lbl0.nii.gz" in caplog.text
    with pytest.raises(DataError, match="no(ne of the| cases)"):
        foreground_percentiles(known_cases[:1])
    with pytest.raises(DataError, match="no cases"):
        foreground_percentiles([])


@pytest.mark.parametrize("lower, upper", [(95, 5), (-1, 50), (5, 101), (50, 50)])
def test_bad_percentiles(known_cases, lower, upper):
    with pytest.raises(ValueError, match="lower < upper"):
        foreground_percentiles(known_cases, lower=lower, upper=upper)


def test_load_datalist_items(known_cases, tmp_path, msd_dir):
    datalist = tmp_path / "lists" / "datalist.json"
    datalist.parent.mkdir()
    relative = [{"image": "../img0.nii.gz", "label": "../lbl0.nii.gz"}]
    datalist.write_text(json.dumps({"training": relative, "validation": known_cases[1:]}))
    assert load_datalist_items(datalist) == known_cases[:1]
    assert load_datalist_items(datalist, keys=["training", "validation"]) == known_cases
    datalist.write_text(json.dumps(known_cases))
    assert load_datalist_items(datalist) == known_cases
    assert len(load_datalist_items(msd_dir)) == 6
    datalist.write_text(json.dumps({"train": []}))
    with pytest.raises(DataError, match=r"datalist\.json' has no list under key\(s\) \['train_weights', 'train_arch'"):
        load_datalist_items(datalist)


def test_cli(msd_dir, tmp_path, capsys):
    out = tmp_path / "intensity.json"
    stats = main([str(msd_dir), "--out", str(out), "--num_classes", "3"])
    written = json.loads(out.read_text())
    assert set(written) == {"lower", "upper", "percentiles", "num_cases", "classes"}
    assert set(written["classes"]) == {"1", "2"}  # kidney and tumour both mostly inside on the phantoms
    assert min(c["inside_window"] for c in written["classes"].values()) >= 0.5
    assert written == stats and written["num_cases"] == 6 and written["percentiles"] == [5.0, 95.0]
    assert 80 < written["lower"] < written["upper"] < 250  # kidney ~150 HU, tumor 80-120 HU
    assert str(out) in capsys.readouterr().out


def test_class_statistics_record_share_inside_window(known_cases):
    stats = foreground_percentiles(known_cases)
    # class 2 is x < 5 of each case: the values v with (v % 1000) < 500
    values = np.arange(2000.0)
    for c, mask in (("1", values % 1000 >= 500), ("2", values % 1000 < 500)):
        got = stats["classes"][c]
        assert got["num_voxels"] == mask.sum()
        inside = np.mean((values[mask] >= stats["lower"]) & (values[mask] <= stats["upper"]))
        assert got["inside_window"] == pytest.approx(inside)
        assert got["percentiles"]["50.0"] == pytest.approx(np.percentile(values[mask], 50))
    assert set(stats["classes"]) == {"1", "2"}


def test_warns_once_when_a_class_is_mostly_clipped(tmp_path, caplog):
    """Lung-like data: class 1 (lung, -900 HU) dominates, so the window misses class 2 (tumour, about 40 HU)."""
    image = np.full((20, 20, 20), -1000.0, np.float32)
    label = np.zeros((20, 20, 20), np.uint8)
    label[:, :, :10] = 1
    label[:2, :2, :10] = 2
    rng = np.random.default_rng(0)
    image[label == 1] = rng.normal(-900, 30, (label == 1).sum())
    image[label == 2] = rng.normal(40, 10, (label == 2).sum())
    items = [{"image": str(save_nifti(tmp_path / "ct.nii.gz", image)),
              "label": str(save_nifti(tmp_path / "seg.nii.gz", label))}]
    stats = foreground_percentiles(items)
    assert stats["classes"]["2"]["inside_window"] < 0.5 <= stats["classes"]["1"]["inside_window"]
    with caplog.at_level(logging.WARNING, logger="dast_components.data.intensity"):
        assert warn_uncovered_classes(stats, source="lung list") == ["2"]
        assert warn_uncovered_classes(stats, source="lung list") == ["2"]  # same window: no second warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0]
    assert "class 2" in text and "lung list" in text and '--intensity "[' in text
    p50 = stats["classes"]["2"]["percentiles"]["50.0"]
    assert f"{p50:.0f}" in text
    suggested = json.loads(text.split("--intensity ")[1].split('"')[1])
    assert suggested[0] <= stats["classes"]["1"]["percentiles"]["5.0"] and suggested[1] >= 40
    assert warn_uncovered_classes({"lower": 0.0, "upper": 1.0}, source="old cache") == []  # no class statistics


def test_as_window():
    assert as_window([-100, 300]) == {"lower": -100.0, "upper": 300.0}
    assert as_window({"lower": -1, "upper": 2.5}) == {"lower": -1.0, "upper": 2.5}
    assert as_window(None) is None
    with pytest.raises(ValueError, match="must be \\[lower, upper\\]"):
        as_window([1, 2, 3])
    for bad in ([5, 5], [float("nan"), 1.0]):
        with pytest.raises(ValueError, match="finite with upper greater than lower"):
            as_window(bad)
