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
"""Static checks of the ``dast_kits19_seg`` bundle: layout, workflow properties, MONAI Label and Model Zoo rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata

from dast_components.networks import DASTNet
from tests.bundles.kits19_utils import BUNDLE, REPO, config_path, write_kits19, write_tiny_arch

__all__: list[str] = []

SCHEMA = REPO / "bundles" / "schemas" / "bundle_meta_schema.json"


def _load(name: str) -> dict:
    return json.loads((BUNDLE / "configs" / f"{name}.json").read_text())


def test_layout() -> None:
    for rel in (
        "LICENSE",
        "configs/metadata.json",
        "configs/train.json",
        "configs/multi_gpu_train.json",
        "configs/evaluate.json",
        "configs/inference.json",
        "configs/quick.json",
        "configs/small_machine.json",
        "configs/logging.conf",
        "docs/README.md",
        "docs/data_license.txt",
    ):
        assert (BUNDLE / rel).is_file(), rel
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()
    assert "CC BY-NC-SA 4.0" in (BUNDLE / "docs" / "data_license.txt").read_text()
    # MONAI Label offers every models/*.pt as weights, shortest name first: no architecture or other .pt there
    assert all(p.name.startswith("model") for p in (BUNDLE / "models").glob("*.pt"))


def test_searched_architecture_loads_with_default_config() -> None:
    arch = BUNDLE / "models" / "arch_code.json"
    if not arch.is_file():
        pytest.skip("models/arch_code.json (the searched architecture) is not committed yet")
    from dast_components.networks import load_arch

    train = _load("train")
    code = load_arch(arch, ops=train["ops"], grid=train["grid"])
    assert code.num_depths >= 2 and code.provenance, "the architecture file must say where it comes from"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A bundle root with weights, a tiny architecture (paper grid 8) and synthetic KiTS19 cases."""
    root = tmp_path_factory.mktemp("kits19_bundle")
    arch = write_tiny_arch(root / "arch.json", grid=8)
    data = write_kits19(root / "data", num_cases=5)
    net = DASTNet(str(arch))
    record = {"intensity": {"lower": -50.0, "upper": 250.0}}
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")  # what train.json writes: a plain state dict
    (root / "models" / "model.json").write_text(json.dumps(record))  # and its training record
    return {"bundle_root": str(root), "arch_file": str(arch), "dataset_dir": str(data)}


@pytest.mark.parametrize(
    "workflow_type, configs",
    [("train", ["train"]), ("train", ["train", "quick"]), ("infer", ["inference"]), ("infer", ["inference", "quick"])],
)
def test_check_properties(workspace: dict[str, str], workflow_type: str, configs: list[str]) -> None:
    # MONAI 1.6 instantiates each required property (trainer, dataset, evaluator, ...) to check it
    workflow = ConfigWorkflow(
        config_file=[config_path(c) for c in configs],
        meta_file=config_path("metadata"),
        logging_file=config_path("logging.conf"),
        workflow_type=workflow_type,
        device="cpu",
        num_workers=0,
        cache_rate=0.0,
        **workspace,
    )
    workflow.initialize()
    assert workflow.check_properties() == []


def test_network_def_is_the_same_everywhere() -> None:
    train, infer = _load("train"), _load("inference")
    assert train["network_def"] == infer["network_def"]
    for key in ("num_classes", "pixdim", "patch_size", "channel_mul", "grid", "ops", "arch_file"):
        assert train[key] == infer[key], key


def test_overlays_only_override() -> None:
    train, infer = _load("train"), _load("inference")
    for name in ("quick", "small_machine"):
        small = _load(name)
        assert all("#" not in key for key in small), f"{name}.json is merged into every config: top-level ids only"
        assert set(small) <= set(train) | set(infer), set(small) - set(train) - set(infer)
        for combo in (["train", "evaluate", name], ["train", "multi_gpu_train", name], ["inference", name]):
            parser = ConfigParser()
            parser.read_config([config_path(c) for c in combo])
            assert parser["patch_size"] == small["patch_size"]
    for overlay in ("evaluate", "multi_gpu_train"):
        for key in _load(overlay):
            base = key.split("#")[0]
            assert base in train or "#" not in key, f"{overlay}.json sets {key} but train.json has no {base}"


def test_monai_label_requirements() -> None:
    train, infer = _load("train"), _load("inference")
    for key in ("network_def", "preprocessing", "postprocessing", "inferer", "bundle_root", "device"):
        assert key in infer, key
    parser = ConfigParser(train)
    for key in ("network", "train#trainer#max_epochs", "train#dataset#data", "validate#dataset#data"):
        assert key in parser, key
    assert isinstance(train["train"]["handlers"], list)
    assert "training" in train and "run" in train and "inference" in infer and "run" in infer
    for name in ("train", "inference", "evaluate", "multi_gpu_train", "quick"):
        assert "@_meta_" not in (BUNDLE / "configs" / f"{name}.json").read_text(), name
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    assert next(iter(fmt["inputs"])) == "image" and next(iter(fmt["outputs"])) == "pred"
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "kidney", "2": "tumor"}
    assert fmt["outputs"]["pred"]["num_channels"] == train["num_classes"]


def test_paper_defaults() -> None:
    train = _load("train")
    assert train["patch_size"] == [160, 160, 160]
    assert train["batch_size"] == 2 and train["num_iterations"] == 40000 and train["learning_rate"] == 1e-3
    assert train["pixdim"] == [1.0, 1.0, 1.0] and train["num_folds"] == 5 and train["grid"] == 8
    assert "lr_scheduler" not in train, "the paper keeps the learning rate constant"


def test_metadata_against_project_schema() -> None:
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(meta, schema)
    assert meta["version"] in meta["changelog"]
    # the code travels in the release zip (dast_components is not on the package index); what `monai.bundle`
    # itself needs is listed (fire for its command line, pyyaml for large_files.yml)
    assert "dast_components" not in meta["required_packages_version"]
    assert {"fire", "pyyaml"} <= set(meta["required_packages_version"])
    # MONAI 1.6 renames a deprecated optional_packages_version to required_packages_version, replacing the latter
    assert "optional_packages_version" not in meta
    assert meta["schema"].endswith("meta_schema_20240725.json")
    # offline: the schema file already sits at --filepath, so nothing is downloaded
    verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(SCHEMA))
    broken = {**meta, "network_data_format": {"inputs": {}, "outputs": {}}}
    broken.pop("required_packages_version")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize("configs", [["train"], ["train", "evaluate"], ["inference"]])
def test_intensity_override_is_one_pair_everywhere(workspace: dict[str, str], configs: list[str]) -> None:
    """``--intensity "[lower, upper]"`` sets the window of training, evaluation and inference alike."""
    parser = ConfigParser()
    parser.read_config([config_path(c) for c in configs])
    parser.update({**workspace, "device": "cpu", "intensity": [-100, 300]})
    if configs == ["train"]:
        scale = parser.get_parsed_content("train#deterministic_transforms")[4]
        assert (scale.scaler.a_min, scale.scaler.a_max) == (-100.0, 300.0)
        record = [h for h in parser.get_parsed_content("validate#handlers") if type(h).__name__ == "WeightRecord"]
        assert record[0].values["intensity"] == {"lower": -100.0, "upper": 300.0}  # written next to the weights
    else:
        key = "validate#preprocessing" if "evaluate" in configs else "preprocessing"
        scale = parser.get_parsed_content(key).transforms[4]
        assert scale.window() == {"lower": -100.0, "upper": 300.0}


@pytest.mark.parametrize("configs", [["train"], ["train", "evaluate"]])
def test_datalist_file_replaces_the_folds(workspace: dict[str, str], configs: list[str], tmp_path: Path) -> None:
    """``--datalist FILE`` (MONAI's training/validation lists, paths relative to the file) feeds training and
    validation instead of the fold split."""
    cases = sorted(Path(workspace["dataset_dir"]).glob("case_*"))
    rel = [{"image": os.path.relpath(c / "imaging.nii.gz", tmp_path),
            "label": os.path.relpath(c / "segmentation.nii.gz", tmp_path)} for c in cases]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": rel[:3], "validation": rel[3:]}))
    parser = ConfigParser()
    parser.read_config([config_path(c) for c in configs])
    parser.update({**workspace, "device": "cpu", "datalist": str(datalist)})
    split = parser.get_parsed_content("split")
    assert [Path(i["image"]).parent for i in split["training"]] == cases[:3]
    assert [Path(i["label"]).parent for i in split["validation"]] == cases[3:]
    assert parser.get_parsed_content("validate#dataset#data") == split["validation"]
    if configs == ["train"]:
        assert parser.get_parsed_content("train#dataset#data") == split["training"]


def test_onnx_overlay_keeps_every_import_of_inference() -> None:
    """A later config's list replaces the earlier one when MONAI merges files: the overlay must repeat them all."""
    base, overlay = _load("inference"), _load("inference_onnx")
    assert set(base["imports"]) <= set(overlay["imports"]), set(base["imports"]) - set(overlay["imports"])
