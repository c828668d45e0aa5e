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
"""Static checks of the ``dast_search`` bundle and its early failures on bad input (no search is run)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow, verify_metadata

from dast_components.data import write_dataset

__all__: list[str] = []

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "dast_search"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "bundles" / "schemas" / "bundle_meta_schema.json"
COMBINATIONS = (
    ("search",), ("search", "quick"), ("search", "multi_gpu_search", "quick"), ("search", "multi_gpu_search"),
)


def _files(names) -> list[str]:
    return [str(CONFIGS / f"{n}.json") for n in names]


def _workflow(names, tmp_path, **override) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=_files(names), meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        workflow_type=None, bundle_root=str(tmp_path), **override,
    )


def _cause(err: BaseException) -> str:
    """Messages of the exception chain (the bundle parser wraps errors in RuntimeError)."""
    parts = []
    while err is not None:
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


def test_layout() -> None:
    for rel in ("LICENSE", "configs/metadata.json", "configs/search.json", "configs/multi_gpu_search.json",
                "configs/quick.json", "configs/logging.conf", "docs/README.md", "docs/data_license.txt", "models"):
        assert (BUNDLE / rel).exists(), rel
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()
    assert "CC BY-SA 4.0" in (BUNDLE / "docs" / "data_license.txt").read_text()
    assert not list((BUNDLE / "models").glob("*.pt"))


def test_metadata_verifies(tmp_path) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"no local copy of the bundle metadata schema at {SCHEMA}")
    schema = tmp_path / "schema.json"
    schema.write_bytes(SCHEMA.read_bytes())
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    # the code travels in the release zip (dast_components is not on the package index); what `monai.bundle`
    # itself needs is listed (fire for its command line, pyyaml for large_files.yml)
    assert "dast_components" not in meta["required_packages_version"]
    assert {"fire", "pyyaml"} <= set(meta["required_packages_version"])


def test_full_size_defaults_follow_the_paper() -> None:
    cfg = json.loads((CONFIGS / "search.json").read_text())
    assert (cfg["num_depths"], cfg["num_blocks"], cfg["ops"], cfg["grid"]) == (4, 12, "dast", 8)
    assert cfg["pixdim"] == [1.0, 1.0, 1.0] and cfg["patch_size"] == [96, 96, 96]
    assert cfg["train_patch_size"] == [160, 160, 160] and cfg["memory_lambda"] == 0.8
    assert cfg["loss"]["_target_"] == "DiceCELoss"
    assert cfg["run"] == "$@search#run" and cfg["search"]["run"] == "$@search#trainer.run()"
    names = [t["_target_"] for t in cfg["search"]["deterministic_transforms"]]
    assert names[2:5] == ["Orientationd", "Spacingd", "ScaleIntensityRanged"]
    assert "RandCropByLabelClassesd" in [t["_target_"] for t in cfg["search"]["random_transforms"]]


@pytest.mark.parametrize("names", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
def test_config_combinations_load(names, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "0")
    wf = _workflow(names, tmp_path, dataset_dir=str(tmp_path / "data"))
    parser = wf.parser
    for id_ in ("search#dataset", "search#dataloader", "search#arch_dataloader", "search#optimizer",
                "search#arch_optimizer", "search#memory_loss", "search#trainer", "search#handlers", "search#export",
                "search#run", "validate#evaluator", "validate#inferer",
                "initialize", "run", "network_def", "search_space"):
        assert id_ in parser, id_
    assert parser.get_parsed_content("device").type in ("cpu", "cuda")
    if "quick" in names:  # building the paper-size supernet takes seconds; the quick one is tiny
        net = parser.get_parsed_content("network_def")
        assert net.dints_space.stride == 16 and net.dints_space.num_blocks == 3
    if "multi_gpu_search" in names:
        assert parser["search#dataloader#sampler"].replace("::", "#") == "@search#sampler"
        assert any("init_process_group" in str(e) for e in parser["initialize"])


def test_quick_overlay_only_overrides_existing_ids() -> None:
    base = json.loads((CONFIGS / "search.json").read_text())
    for name in ("quick", "multi_gpu_search"):
        overlay = json.loads((CONFIGS / f"{name}.json").read_text())
        for key in overlay:
            head = key.split("#")[0]
            assert head in base or head == "finalize", f"{name}.json sets {key}, which search.json lacks"


# ------------------------------------------------------------------------------------------- bad input fails early
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("msd"), num_cases=4, shape=(16, 16, 16))


def _fails(tmp_path, dataset_dir, match: str, **override) -> None:
    wf = _workflow(("search", "quick"), tmp_path, dataset_dir=str(dataset_dir), **override)
    with pytest.raises(Exception) as info:
        wf.initialize()
    assert match in _cause(info.value), _cause(info.value)


def test_missing_dataset_dir(tmp_path) -> None:
    _fails(tmp_path, tmp_path / "nowhere", "does not exist")


def test_missing_dataset_json(tmp_path, dataset) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    _fails(tmp_path, bare, "dataset.json")


def test_listed_file_missing(tmp_path, dataset) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for sub in ("imagesTr", "labelsTr"):
        (broken / sub).symlink_to(dataset / sub)
    meta = json.loads((dataset / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/case_999.nii.gz", "label": "./labelsTr/case_999.nii.gz"})
    (broken / "dataset.json").write_text(json.dumps(meta))
    _fails(tmp_path, broken, "case_999")


def test_label_values_outside_classes(tmp_path, dataset) -> None:
    bad = tmp_path / "bad_labels"
    write_dataset(bad, num_cases=4, shape=(16, 16, 16))
    path = bad / "labelsTr" / "case_001.nii.gz"
    img = nib.load(path)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, img.affine), path)
    _fails(tmp_path, bad, "7")


def test_patch_size_not_divisible(tmp_path, dataset) -> None:
    _fails(tmp_path, dataset, "must be 3 positive multiples of 16", patch_size=[40, 40, 40])


def test_train_patch_size_not_divisible(tmp_path, dataset) -> None:
    _fails(tmp_path, dataset, "train_patch_size", train_patch_size=[100, 100, 100])


def test_unknown_op_name(tmp_path, dataset) -> None:
    _fails(tmp_path, dataset, "unknown op name", ops=["skip_connect", "conv_5x5x5"])
    _fails(tmp_path, dataset, "unknown op pool", ops="nas")
