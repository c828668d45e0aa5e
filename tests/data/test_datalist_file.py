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
"""``read_datalist_file``: MONAI's training/validation datalist JSON as an alternative to the bundle's folds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dast_components.data import DataError, read_datalist_file


def _entries(kits_dir: Path) -> list[dict]:
    return [{"image": str(c / "imaging.nii.gz"), "label": str(c / "segmentation.nii.gz")}
            for c in sorted(kits_dir.glob("case_*"))]


def test_relative_paths_resolve_against_the_file(kits_dir, tmp_path):
    entries = _entries(kits_dir)
    lists = tmp_path / "lists"
    lists.mkdir()
    rel = [{k: str(Path("..") / Path(v).relative_to(tmp_path)) for k, v in e.items()} for e in entries]
    path = lists / "datalist.json"
    path.write_text(json.dumps({"training": rel[:3], "validation": rel[3:], "testing": []}))
    out = read_datalist_file(path, batch_size=2)
    assert out["training"] == entries[:3] and out["validation"] == entries[3:]
    assert set(out) == {"training", "validation"}


@pytest.mark.parametrize(
    "content, message",
    [
        ([], "JSON object"),
        ({"training": []}, "non-empty list under 'training'"),
        ({"training": "x", "validation": []}, "non-empty list under 'training'"),
        ({"training": [{"image": "a.nii.gz"}], "validation": [{"image": "a", "label": "b"}]}, "training entry 0"),
    ],
)
def test_bad_content_names_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message) as err:
        read_datalist_file(path)
    assert str(path) in str(err.value)


def test_missing_file_and_missing_volume_are_named(kits_dir, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_datalist_file(tmp_path / "nope.json")
    entries = _entries(kits_dir)
    entries[1]["label"] = str(tmp_path / "gone.nii.gz")
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": entries[:3], "validation": entries[3:]}))
    with pytest.raises(DataError, match="gone.nii.gz"):
        read_datalist_file(path)


def test_batch_size_is_checked_before_any_volume_is_opened(kits_dir, tmp_path, monkeypatch):
    entries = _entries(kits_dir)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": entries[:1], "validation": entries[1:]}))
    from dast_components.data import datalist as module

    def no_reading(*args, **kwargs):
        raise AssertionError("a volume header was read before the batch check")

    monkeypatch.setattr(module, "check_image_label_shapes", no_reading)
    with pytest.raises(DataError, match="fewer than batch_size=2"):
        read_datalist_file(path, batch_size=2)


def test_fold_split_checks_the_batch_before_reading_headers(kits_dir, tmp_path, monkeypatch):
    from dast_components.data import datalist as module

    def no_reading(*args, **kwargs):
        raise AssertionError("a volume header was read before the batch check")

    monkeypatch.setattr(module, "check_image_label_shapes", no_reading)
    with pytest.raises(DataError, match="fewer than batch_size=5"):
        module.prepare_kits19_data(kits_dir, fold=0, num_folds=5, cache_dir=tmp_path, batch_size=5)


def test_search_datalist_halves_training_and_caches_the_window(kits_dir, tmp_path):
    from dast_components.data import prepare_search_datalist

    entries = _entries(kits_dir)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": entries[:-1], "validation": entries[-1:]}))
    out = prepare_search_datalist(path, tmp_path / "eval", seed=0)
    weights, arch = out["train_weights"], out["train_arch"]
    assert len(weights) == (len(entries[:-1]) + 1) // 2 and len(weights) + len(arch) == len(entries) - 1
    assert sorted(e["image"] for e in weights + arch) == sorted(e["image"] for e in entries[:-1])
    assert out["validation"] == entries[-1:] and out["intensity"]["lower"] < out["intensity"]["upper"]
    assert (tmp_path / "eval" / "dast_intensity_search.json").is_file()
    assert prepare_search_datalist(path, tmp_path / "eval", seed=0) == out  # same split, cached window
    path.write_text(json.dumps({"training": entries[:1], "validation": entries[-1:]}))
    with pytest.raises(DataError, match="at least 2 training cases"):
        prepare_search_datalist(path, tmp_path / "eval")
