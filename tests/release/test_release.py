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
"""Release zips on a small hand-made bundle: reproducible bytes, contents, large_files.yml, model_info.json."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from dast_components.release import (
    build_release,
    bundle_files,
    bundle_version,
    file_hash,
    main,
    read_large_files,
    update_model_info,
)

__all__: list[str] = []


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "src" / "toy_bundle"
    _write(root / "LICENSE", "Apache-2.0\n")
    _write(root / "configs" / "metadata.json", json.dumps({"version": "0.2.1", "changelog": {"0.2.1": "x"}}))
    _write(root / "configs" / "inference.json", '{"network_def": {}}\n')
    _write(root / "docs" / "README.md", "# toy\n")
    _write(root / "models" / "arch_code.json", '{"ops": []}\n')
    _write(root / "models" / "model.pt", b"weights-v1" * 100)
    _write(root / "models" / "model_fold1.pt", b"fold1")  # a weight not listed: excluded, warned
    _write(root / "models" / "model.ts", b"torchscript")
    _write(root / "scripts" / "__pycache__" / "x.cpython-311.pyc", b"cache")
    _write(root / "scripts" / "helper.py", "X = 1\n")
    _write(root / "eval" / "predictions" / "p.nii.gz", b"output")
    _write(root / "configs" / "monailabel_train.json", "{}")
    _write(root / "train.log", "log")
    _write(
        root / "large_files.yml",
        "large_files:\n  - path: models/model.pt\n    url: ''\n    hash_val: ''\n    hash_type: md5\n",
    )
    return root


def test_reproducible_bytes(bundle: Path, tmp_path: Path) -> None:
    first = build_release(bundle, tmp_path / "a", weights_url="https://example.org/r")
    # change what a zip would normally record: file times and permissions
    for p in bundle.rglob("*"):
        os.utime(p, (1_700_000_000, 1_700_000_000))
    os.chmod(bundle / "docs" / "README.md", 0o600)
    second = build_release(bundle, tmp_path / "b", weights_url="https://example.org/r")
    assert first.zip_path.name == second.zip_path.name == "toy_bundle_v0.2.1.zip"
    assert first.zip_path.read_bytes() == second.zip_path.read_bytes()
    assert first.checksum == second.checksum == hashlib.md5(first.zip_path.read_bytes()).hexdigest()
    # a content change changes the zip
    _write(bundle / "docs" / "README.md", "# toy, edited\n")
    third = build_release(bundle, tmp_path / "c", weights_url="https://example.org/r")
    assert third.checksum != first.checksum


def test_zip_contents(bundle: Path, tmp_path: Path) -> None:
    result = build_release(bundle, tmp_path / "out", weights_url="https://example.org/r/")
    with zipfile.ZipFile(result.zip_path) as zf:
        names = zf.namelist()
        infos = zf.infolist()
        large = yaml.safe_load(zf.read("toy_bundle/large_files.yml"))
    assert names == sorted(names)
    assert all(n.startswith("toy_bundle/") for n in names)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos if not i.is_dir()} == {0o100644}
    assert set(names) == {
        "toy_bundle/",
        "toy_bundle/LICENSE",
        "toy_bundle/configs/",
        "toy_bundle/configs/inference.json",
        "toy_bundle/configs/metadata.json",
        "toy_bundle/docs/",
        "toy_bundle/docs/README.md",
        "toy_bundle/large_files.yml",
        "toy_bundle/models/",
        "toy_bundle/models/arch_code.json",
        "toy_bundle/scripts/",
        "toy_bundle/scripts/helper.py",
    }
    weight_md5 = hashlib.md5((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    assert large == {
        "large_files": [
            {
                "path": "models/model.pt",
                "url": "https://example.org/r/toy_bundle_v0.2.1_model.pt",
                "hash_val": weight_md5,
                "hash_type": "md5",
            }
        ]
    }
    assert [w.name for w in result.weight_files] == ["toy_bundle_v0.2.1_model.pt"]
    assert file_hash(result.weight_files[0]) == weight_md5
    assert result.source == "https://example.org/r/toy_bundle_v0.2.1.zip"
    # the bundle folder itself is untouched
    assert read_large_files(bundle)[0]["url"] == ""


def test_model_info(bundle: Path, tmp_path: Path) -> None:
    info = tmp_path / "model_info.json"
    info.write_text(json.dumps({"other_v1.0.0": {"checksum": "abc", "source": "https://x/other_v1.0.0.zip"}}))
    result = build_release(
        bundle, tmp_path / "out", weights_url="file:///w", source_url="https://zips", model_info=info,
        hash_type="sha256",
    )
    content = json.loads(info.read_text())
    assert list(content) == ["other_v1.0.0", "toy_bundle_v0.2.1"]
    assert content["toy_bundle_v0.2.1"] == {
        "checksum": hashlib.sha256(result.zip_path.read_bytes()).hexdigest(),
        "source": "https://zips/toy_bundle_v0.2.1.zip",
    }
    # without any url the source is the zip's own file address, and the default model_info sits next to it
    (bundle / "models" / "model.pt").unlink()
    _write(bundle / "large_files.yml", "large_files:\n  - path: models/model.pt\n    url: https://w/m.pt\n")
    local = build_release(bundle, tmp_path / "out2")
    assert local.source == local.zip_path.as_uri()
    assert json.loads((tmp_path / "out2" / "model_info.json").read_text())["toy_bundle_v0.2.1"]["source"] == (
        local.source
    )
    assert local.large_files == [{"path": "models/model.pt", "url": "https://w/m.pt"}]
    updated = update_model_info(info, "toy_bundle_v0.2.1", "new", "s")
    assert updated["toy_bundle_v0.2.1"] == {"checksum": "new", "source": "s"}


def test_missing_weights(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without a url: pass --weights_url"):
        build_release(bundle, tmp_path / "out")
    (bundle / "models" / "model.pt").unlink()
    with pytest.raises(ValueError, match="neither present in the bundle nor published"):
        build_release(bundle, tmp_path / "out", weights_url="https://x")
    result = build_release(bundle, tmp_path / "out", weights_url="https://x", allow_missing=True)
    assert result.large_files == [] and "large_files.yml" not in result.files


def test_bad_inputs(bundle: Path, tmp_path: Path) -> None:
    _write(bundle / "configs" / "metadata.json", json.dumps({"version": "1.0"}))
    with pytest.raises(ValueError, match="MAJOR.MINOR.PATCH"):
        bundle_version(bundle)
    _write(bundle / "large_files.yml", "large_files:\n  - path: ../outside.pt\n")
    with pytest.raises(ValueError, match="relative inside the bundle"):
        read_large_files(bundle)
    with pytest.raises(ValueError, match="must lie outside"):
        build_release(bundle, bundle / "dist")
    with pytest.raises(ValueError, match="does not exist"):
        bundle_files(tmp_path / "nope")


def test_cli(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(bundle), "--out", str(tmp_path / "cli"), "--weights_url", "file:///w"]) == 0
    out = capsys.readouterr().out
    assert "toy_bundle_v0.2.1.zip" in out and "upload" in out
    assert main([str(bundle), "--out", str(tmp_path / "cli2")]) == 1
    assert "release failed" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_git_ignored_outputs_are_left_out(bundle: Path) -> None:
    repo = bundle.parent
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    _write(bundle / ".gitignore", "models/arch_code*.json\n")
    _write(bundle / "models" / "arch_code_iter000010.json", "{}")  # a search run's output
    subprocess.run(["git", "-C", str(repo), "add", "-f", "toy_bundle/models/arch_code.json"], check=True)
    folders, files = bundle_files(bundle)
    assert "models/arch_code_iter000010.json" not in files
    assert "models/arch_code.json" in files  # tracked: kept although the pattern matches
    assert ".gitignore" in files and "models" in folders
