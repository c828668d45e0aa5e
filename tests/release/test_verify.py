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
"""Bundle checks on small hand-made bundles: each check passes on a good bundle and fails on a broken one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dast_components.verify import (
    check_changelog,
    check_configs,
    check_large_files,
    check_metadata,
    check_monailabel,
    check_required_files,
    check_torchscript,
    find_network_config,
    main,
    verify_bundle,
)

__all__ = ["Unscriptable"]

REPO = Path(__file__).resolve().parents[2]
PROJECT_SCHEMA = REPO / "bundles" / "schemas" / "bundle_meta_schema.json"


class Unscriptable(torch.nn.Module):
    """A 1x1x1 convolution whose forward TorchScript cannot compile (``*args``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 1)

    def forward(self, *xs):  # noqa: ANN002  varargs are the point
        return self.conv(xs[0])


def _metadata(version: str = "0.1.0", changelog: dict | None = None) -> dict:
    tensor = {"type": "image", "format": "hounsfield", "num_channels": 1, "spatial_shape": ["16*n", 16, "16**p"],
              "dtype": "float32", "value_range": [0, 1]}
    pred = dict(tensor, format="segmentation", num_channels=3,
                channel_def={"0": "background", "1": "kidney", "2": "tumor"})
    return {
        "schema": "https://example.org/meta_schema_20240725.json",
        "version": version,
        "changelog": changelog if changelog is not None else {version: "first"},
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4.6",
        "required_packages_version": {"dast_components": "0.1.0"},
        "task": "toy",
        "description": "toy bundle",
        "authors": "tests",
        "copyright": "tests",
        "network_data_format": {"inputs": {"image": tensor}, "outputs": {"pred": pred}},
    }


def _inference(network_def: dict) -> dict:
    return {
        "bundle_root": ".",
        "network_def": network_def,
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image"},
            {"_target_": "dast_components.transforms.PathSafeSpacingd", "keys": "image", "pixdim": [1, 1, 1]},
        ]},
        "postprocessing": {"_target_": "Compose", "transforms": [{"_target_": "AsDiscreted", "keys": "pred"}]},
        "inferer": {"_target_": "SimpleInferer"},
    }


CONV = {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 3, "kernel_size": 1}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundles" / "toy"
    (root / "configs").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "models").mkdir()
    (root / "LICENSE").write_text("Apache-2.0\n")
    (root / "docs" / "README.md").write_text("# toy\n")
    (root / "configs" / "metadata.json").write_text(json.dumps(_metadata()))
    (root / "configs" / "inference.json").write_text(json.dumps(_inference(CONV)))
    return root


def _schema_arg() -> Path:
    return PROJECT_SCHEMA


def test_good_bundle_passes(bundle: Path, capsys: pytest.CaptureFixture) -> None:
    results = verify_bundle(bundle, schema=_schema_arg())
    assert [(r.name, r.status) for r in results] == [
        ("files", "PASS"), ("configs", "PASS"), ("metadata", "PASS"), ("changelog", "PASS"),
        ("large_files", "SKIP"), ("monailabel", "PASS"), ("net_in_out", "PASS"), ("torchscript", "PASS"),
    ]
    assert "kidney=1, tumor=2" in results[5].detail
    assert "(1, 1, 16, 16, 16)" in results[6].detail
    capsys.readouterr()
    assert main([str(bundle), "--schema", str(_schema_arg())]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("PASS files:") and lines[-1].startswith("toy: 8 of 8 checks did not fail")


def test_torchscript_with_checkpoint(bundle: Path) -> None:
    net = torch.nn.Conv3d(1, 3, 1)
    torch.save(net.state_dict(), bundle / "models" / "model.pt")  # plain state dict: ckpt_export without key_in_ckpt
    result = check_torchscript(bundle, [bundle / "configs" / "inference.json"])
    assert result.status == "PASS" and "ckpt_export (no key_in_ckpt) with model.pt" in result.detail
    torch.save({"weight": torch.zeros(1)}, bundle / "models" / "model.pt")  # does not fit the network
    assert check_torchscript(bundle, [bundle / "configs" / "inference.json"]).status == "FAIL"
    torch.save({"model": net.state_dict()}, bundle / "models" / "model.pt")  # nested: the Zoo's export cannot load it
    result = check_torchscript(bundle, [bundle / "configs" / "inference.json"])
    assert result.failed and "not a plain state dict" in result.detail


def test_missing_files_and_bad_configs(bundle: Path) -> None:
    (bundle / "LICENSE").unlink()
    (bundle / "docs" / "README.md").write_text("")
    result = check_required_files(bundle)
    assert result.failed and "LICENSE" in result.detail and "docs/README.md" in result.detail
    (bundle / "configs" / "quick.json").write_text("{not json")
    assert check_configs(bundle).failed
    assert main([str(bundle), "--schema", str(_schema_arg())]) == 1


def test_metadata_and_changelog(bundle: Path, tmp_path: Path) -> None:
    meta = _metadata(version="0.2.0", changelog={"0.1.0": "first"})
    del meta["authors"]
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    result = check_metadata(bundle, _schema_arg())
    assert result.failed and "authors" in result.detail
    assert check_changelog(bundle).failed
    meta = _metadata(version="0.1.0", changelog={"0.2.0": "newer", "0.1.0": "first"})
    (bundle / "configs" / "metadata.json").write_text(json.dumps(meta))
    assert "bump 'version'" in check_changelog(bundle).detail
    # without --schema: a copy of the official schema in bundles/schemas/, else the project's schema; no download
    result = check_metadata(bundle)
    assert result.status == "PASS" and str(PROJECT_SCHEMA) in result.detail
    schemas = tmp_path / "bundles" / "schemas"
    schemas.mkdir()
    (schemas / "meta_schema_20240725.json").write_text(json.dumps({"type": "object", "required": ["version"]}))
    result = check_metadata(bundle)
    assert result.status == "PASS" and str(schemas / "meta_schema_20240725.json") in result.detail
    (schemas / "meta_schema_20240725.json").write_text(json.dumps({"type": "object", "required": ["nonexistent"]}))
    assert check_metadata(bundle).failed


def test_monailabel_rules(bundle: Path) -> None:
    infer = _inference(CONV)
    infer["preprocessing"]["transforms"][1]["_target_"] = "Spacingd"
    infer["num_classes"] = "$len(@_meta_#network_data_format#outputs#pred#channel_def)"
    del infer["inferer"]
    (bundle / "configs" / "inference.json").write_text(json.dumps(infer))
    (bundle / "models" / "arch.pt").write_bytes(b"")
    result = check_monailabel(bundle)
    assert result.failed
    for needle in ("'inferer'", "Spacingd", "_meta_", "models/arch.pt"):
        assert needle in result.detail, needle
    (bundle / "configs" / "inference.json").write_text(json.dumps(_inference(CONV)))
    (bundle / "models" / "arch.pt").unlink()
    (bundle / "models" / "model_fold0.pt").write_bytes(b"")  # longer than model.pt: fine
    (bundle / "configs" / "train.json").write_text(json.dumps({"network": "$@network_def", "train": {"handlers": {}}}))
    result = check_monailabel(bundle)
    assert result.failed and "train#trainer#max_epochs" in result.detail and "multi_gpu_train.json" in result.detail
    assert "must be a list" in result.detail


def test_large_files(bundle: Path) -> None:
    assert check_large_files(bundle).status == "SKIP"
    (bundle / "large_files.yml").write_text("large_files:\n  - url: x\n")
    assert check_large_files(bundle).failed
    (bundle / "large_files.yml").write_text("large_files:\n  - path: models/model.pt\n    url: ''\n")
    result = check_large_files(bundle)  # an empty url stops `monai.bundle download_large_files`
    assert result.failed and "empty url" in result.detail
    (bundle / "large_files.yml").write_text("large_files: []\n")
    assert "no weights published" in check_large_files(bundle).detail
    (bundle / "large_files.yml").write_text("large_files:\n  - path: models/model.pt\n    url: https://x/m.pt\n")
    assert check_large_files(bundle).status == "PASS"


def test_network_failures(bundle: Path) -> None:
    infer = _inference({"_target_": "tests.release.test_verify.Unscriptable"})
    (bundle / "configs" / "inference.json").write_text(json.dumps(infer))
    results = {r.name: r for r in verify_bundle(bundle, schema=_schema_arg())}
    assert results["net_in_out"].status == "PASS"
    assert results["torchscript"].failed and "export failed" in results["torchscript"].detail
    wrong = dict(CONV, out_channels=2)  # metadata says 3 output channels
    (bundle / "configs" / "inference.json").write_text(json.dumps(_inference(wrong)))
    results = {r.name: r for r in verify_bundle(bundle, schema=_schema_arg())}
    assert results["net_in_out"].failed and "output channel" in results["net_in_out"].detail


@pytest.mark.slow
def test_search_supernet_is_skipped(bundle: Path) -> None:
    (bundle / "configs" / "inference.json").unlink()
    supernet = {
        "_target_": "monai.networks.nets.DiNTS",
        "dints_space": {"_target_": "monai.networks.nets.TopologySearch", "channel_mul": 0.125, "num_blocks": 2,
                        "num_depths": 2, "use_downsample": True, "spatial_dims": 3},
        "in_channels": 1,
        "num_classes": 3,
    }
    (bundle / "configs" / "search.json").write_text(json.dumps({"bundle_root": ".", "network_def": supernet}))
    (bundle / "configs" / "quick.json").write_text(json.dumps({"network_def": CONV}))  # overlays are never chosen
    assert find_network_config(bundle) == bundle / "configs" / "search.json"
    results = {r.name: r for r in verify_bundle(bundle, schema=_schema_arg())}
    assert results["monailabel"].status == "SKIP"
    assert results["net_in_out"].status == "PASS"
    assert results["torchscript"].status == "SKIP" and "no decode_arch()" in results["torchscript"].detail
    # DAST's search space decodes its current architecture: that network is exported instead
    supernet["dints_space"] = {"_target_": "dast_components.networks.DASTSearchSpace", "channel_mul": 0.125,
                               "num_blocks": 2, "num_depths": 2, "grid": 2, "num_heads": 2}
    (bundle / "configs" / "search.json").write_text(json.dumps({"bundle_root": ".", "network_def": supernet}))
    result = check_torchscript(bundle, [bundle / "configs" / "search.json"])
    assert result.status == "PASS" and "decoded architecture as DASTNet" in result.detail
