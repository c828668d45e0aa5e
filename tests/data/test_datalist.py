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
"""Tests of the search split, the k-fold split and the cached one-call preparers."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from dast_components.data import (
    DataError,
    fold_split,
    foreground_percentiles,
    kfold_split,
    kits19_items,
    msd_items,
    prepare_kits19_data,
    prepare_search_data,
    search_split,
)
from dast_components.data import datalist as datalist_module
from dast_components.data.synthetic import write_dataset
from tests.data.utils import SMALL_SHAPE

__all__: list[str] = []

PARTS = ("train_weights", "train_arch", "validation")


def fake_items(n: int) -> list[dict]:
    return [{"image": f"/d/img_{i:03d}.nii.gz", "label": f"/d/lbl_{i:03d}.nii.gz"} for i in range(n)]


def images(items: list[dict]) -> list[str]:
    return [item["image"] for item in items]


def test_search_split_paper_sizes():
    items = fake_items(282)
    split = search_split(items, seed=0)
    assert {k: len(v) for k, v in split.items()} == {"train_weights": 114, "train_arch": 114, "validation": 54}
    all_images = [image for part in PARTS for image in images(split[part])]
    assert len(set(all_images)) == len(all_images) == 282  # disjoint
    assert set(all_images) == set(images(items))  # covers all


@pytest.mark.parametrize("n", [3, 4, 5, 8, 10, 57, 210])
def test_search_split_scaled_sizes(n):
    split = search_split(fake_items(n))
    sizes = [len(split[part]) for part in PARTS]
    assert sum(sizes) == n and min(sizes) >= 1
    assert abs(sizes[0] - sizes[1]) <= 1
    assert abs(sizes[2] - n * 54 / 282) <= 1


def test_search_split_deterministic():
    items = fake_items(8)
    first, again = search_split(items, seed=0), search_split(list(reversed(items)), seed=0)
    assert first == again  # same seed, same split, whatever the listing order
    others = [search_split(items, seed=s) for s in range(1, 6)]
    assert any(other != first for other in others)
    assert sum(len(part) for part in first.values()) == 8


def test_search_split_too_few():
    with pytest.raises(DataError, match="at least 3 cases.*got 2"):
        search_split(fake_items(2))


def test_kfold_split_and_fold_split():
    items = fake_items(23)
    with_fold = kfold_split(items, num_folds=5, seed=0)
    assert sorted(images(with_fold)) == sorted(images(items))
    sizes = [sum(item["fold"] == f for item in with_fold) for f in range(5)]
    assert sorted(sizes) == [4, 4, 5, 5, 5]
    validation_images = []
    for fold in range(5):
        train, val = fold_split(with_fold, fold)
        assert len(train) + len(val) == 23 and len(val) == sizes[fold]
        assert not set(images(train)) & set(images(val))
        assert all(set(entry) == {"image", "label"} for entry in train + val)
        validation_images += images(val)
    assert sorted(validation_images) == sorted(images(items))  # every case validated exactly once
    assert kfold_split(items, 5, seed=0) == with_fold
    assert kfold_split(items, 5, seed=1) != with_fold


@pytest.mark.parametrize("fold", [-1, 5, 9])
def test_fold_out_of_range(fold):
    with pytest.raises(ValueError, match=f"fold {fold} is out of range.*0..4"):
        fold_split(kfold_split(fake_items(10), num_folds=5), fold)


def test_kfold_bad_arguments():
    with pytest.raises(ValueError, match="num_folds"):
        kfold_split(fake_items(10), num_folds=1)
    with pytest.raises(DataError, match="at least 5 cases"):
        kfold_split(fake_items(4), num_folds=5)
    with pytest.raises(DataError, match="'fold' key"):
        fold_split(fake_items(3), 0)


def test_kits19_items(kits_dir):
    (kits_dir / "kits.json").write_text("{}")
    (kits_dir / "notes").mkdir()
    items = kits19_items(kits_dir)
    assert [Path(item["image"]).parent.name for item in items] == [f"case_{i:05d}" for i in range(5)]
    labels = [Path(item["label"]) for item in items]
    assert all(label.name == "segmentation.nii.gz" and label.is_absolute() for label in labels)


def test_msd_items(msd_dir):
    items = msd_items(msd_dir)
    assert len(items) == 6
    assert items[0] == {
        "image": str(msd_dir / "imagesTr" / "case_000.nii.gz"),
        "label": str(msd_dir / "labelsTr" / "case_000.nii.gz"),
    }


def test_prepare_search_data(msd_dir):
    data = prepare_search_data(msd_dir, seed=0)
    assert set(data) == {*PARTS, "intensity"}
    assert [len(data[part]) for part in PARTS] == [3, 2, 1]
    listed = [image for part in PARTS for image in images(data[part])]
    assert sorted(listed) == sorted(images(msd_items(msd_dir)))
    for part in PARTS:
        for entry in data[part]:
            assert set(entry) == {"image", "label"}
            assert Path(entry["image"]).is_absolute() and Path(entry["image"]).is_file()
    expected = foreground_percentiles(data["train_weights"] + data["train_arch"])
    assert data["intensity"] == {"lower": expected["lower"], "upper": expected["upper"]}
    assert 80 < data["intensity"]["lower"] < data["intensity"]["upper"] < 250
    for name in ("dast_search_split.json", "dast_intensity_search.json"):
        assert (msd_dir / name).is_file()


def test_prepare_search_data_reuses_cache(msd_dir, monkeypatch, caplog):
    first = prepare_search_data(msd_dir)
    split_file = msd_dir / "dast_search_split.json"
    mtime = split_file.stat().st_mtime_ns

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed although the cache is valid")

    monkeypatch.setattr(datalist_module, "foreground_percentiles", must_not_run)
    monkeypatch.setattr(datalist_module, "search_split", must_not_run)
    monkeypatch.setattr(datalist_module, "check_label_files", must_not_run)
    with caplog.at_level(logging.INFO, logger="dast_components.data.datalist"):
        second = prepare_search_data(msd_dir)
    assert second == first
    assert split_file.stat().st_mtime_ns == mtime
    assert "reusing search split" in caplog.text and "reusing foreground intensity" in caplog.text


def test_prepare_search_data_recomputes_when_case_added(msd_dir, tmp_path):
    first = prepare_search_data(msd_dir)
    # add a seventh case to the dataset and to dataset.json
    extra = write_dataset(tmp_path / "extra", layout="msd", num_cases=1, seed=9, shape=SMALL_SHAPE)
    for folder in ("imagesTr", "labelsTr"):
        shutil.copy(extra / folder / "case_000.nii.gz", msd_dir / folder / "case_new.nii.gz")
    meta = json.loads((msd_dir / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/case_new.nii.gz", "label": "./labelsTr/case_new.nii.gz"})
    meta["numTraining"] = len(meta["training"])
    (msd_dir / "dataset.json").write_text(json.dumps(meta))

    second = prepare_search_data(msd_dir)
    listed = [image for part in PARTS for image in images(second[part])]
    assert len(listed) == 7 and str(msd_dir / "imagesTr" / "case_new.nii.gz") in listed
    cached = json.loads((msd_dir / "dast_search_split.json").read_text())
    assert len(cached["cases"]) == 7
    training = second["train_weights"] + second["train_arch"]
    intensity_cache = json.loads((msd_dir / "dast_intensity_search.json").read_text())
    assert sorted(msd_dir / case["image"] for case in intensity_cache["cases"]) == sorted(map(Path, images(training)))
    assert intensity_cache["num_cases"] == len(training) == 6
    assert len(intensity_cache["label_checked"]) == 7
    assert len(first["train_weights"] + first["train_arch"]) == 5 and first["intensity"] != second["intensity"]


def test_prepare_search_data_new_seed_recomputes(msd_dir):
    prepare_search_data(msd_dir, seed=0)
    prepare_search_data(msd_dir, seed=3)
    assert json.loads((msd_dir / "dast_search_split.json").read_text())["seed"] == 3


def test_cache_dir(msd_dir, tmp_path):
    cache = tmp_path / "out" / "cache"
    prepare_search_data(msd_dir, cache_dir=cache)
    assert (cache / "dast_search_split.json").is_file() and (cache / "dast_intensity_search.json").is_file()
    assert not (msd_dir / "dast_search_split.json").exists()


def test_read_only_dataset_falls_back_to_output_dir(msd_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(datalist_module, "_is_writable", lambda folder: Path(folder) != msd_dir)
    with pytest.raises(DataError, match="not writable.*cache_dir"):
        prepare_search_data(msd_dir)
    prepare_search_data(msd_dir, output_dir=tmp_path / "output")
    assert (tmp_path / "output" / "dast_search_split.json").is_file()


def test_unreadable_cache_is_recomputed(msd_dir):
    (msd_dir / "dast_search_split.json").write_text("{broken")
    data = prepare_search_data(msd_dir)
    assert sum(len(data[part]) for part in PARTS) == 6
    assert json.loads((msd_dir / "dast_search_split.json").read_text())["cases"]
    (msd_dir / "dast_intensity_search.json").write_text("[]")  # valid JSON, wrong content
    assert prepare_search_data(msd_dir) == data
    assert json.loads((msd_dir / "dast_intensity_search.json").read_text())["lower"] == data["intensity"]["lower"]


def test_prepare_kits19_data(kits_dir):
    all_images = sorted(images(kits19_items(kits_dir)))
    validated = []
    for fold in range(5):
        data = prepare_kits19_data(kits_dir, fold=fold, num_folds=5)
        assert set(data) == {"training", "validation", "intensity"}
        assert len(data["training"]) == 4 and len(data["validation"]) == 1
        assert sorted(images(data["training"] + data["validation"])) == all_images
        expected = foreground_percentiles(data["training"])
        assert data["intensity"] == {"lower": expected["lower"], "upper": expected["upper"]}
        assert (kits_dir / f"dast_intensity_kits19_fold{fold}.json").is_file()
        validated += images(data["validation"])
    assert sorted(validated) == all_images
    folds = json.loads((kits_dir / "dast_kits19_folds.json").read_text())
    assert folds["num_folds"] == 5 and len(folds["folds"]) == 5
    assert not Path(folds["folds"][0]["image"]).is_absolute()  # cache stays valid if the dataset folder moves


def test_prepare_kits19_data_fold_out_of_range(kits_dir):
    with pytest.raises(ValueError, match="fold 5 is out of range.*0..4"):
        prepare_kits19_data(kits_dir, fold=5)
    with pytest.raises(ValueError, match="fold -1 is out of range"):
        prepare_kits19_data(kits_dir, fold=-1)


def test_prepare_kits19_data_cache(kits_dir, tmp_path, monkeypatch):
    first = prepare_kits19_data(kits_dir, fold=1, num_folds=2)
    with monkeypatch.context() as patch:
        patch.setattr(datalist_module, "kfold_split", lambda *a, **k: pytest.fail("folds recomputed"))
        patch.setattr(datalist_module, "foreground_percentiles", lambda *a, **k: pytest.fail("intensity recomputed"))
        assert prepare_kits19_data(kits_dir, fold=1, num_folds=2) == first
    extra = write_dataset(tmp_path / "extra", layout="kits19", num_cases=1, seed=7, shape=SMALL_SHAPE)
    shutil.copytree(extra / "case_00000", kits_dir / "case_00005")
    second = prepare_kits19_data(kits_dir, fold=1, num_folds=2)
    assert len(second["training"]) + len(second["validation"]) == 6
    assert len(json.loads((kits_dir / "dast_kits19_folds.json").read_text())["cases"]) == 6


def test_cli_search(msd_dir, tmp_path, capsys):
    out = tmp_path / "search_datalist.json"
    datalist_module.main(["search", str(msd_dir), "--out", str(out), "--seed", "2"])
    written = json.loads(out.read_text())
    assert written == prepare_search_data(msd_dir, seed=2)
    assert "train_weights 3 / train_arch 2 / validation 1" in capsys.readouterr().out


def test_cli_kits19(kits_dir, tmp_path):
    out = tmp_path / "kits.json"
    datalist_module.main(["kits19", str(kits_dir), "--num_folds", "5", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["num_folds"] == 5 and sorted(e["fold"] for e in written["training"]) == [0, 1, 2, 3, 4]
    datalist_module.main(["kits19", str(kits_dir), "--fold", "2"])
    fold_file = kits_dir / "dast_kits19_datalist_fold2.json"
    assert json.loads(fold_file.read_text()) == prepare_kits19_data(kits_dir, fold=2)
