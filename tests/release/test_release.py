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
from pathlib import Path, PurePosixPath

import pytest
import yaml

from dast_components.release import (
    absolute_doc_links,
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
    _write(root / "models" / "model.json", '{"intensity": {"lower": 0, "upper": 1}}')  # its training record: zipped
    _write(root / "models" / "model.ts", b"torchscript")  # exported, not a trained weight: excluded, warned
    _write(root / "scripts" / "__pycache__" / "x.cpython-311.pyc", b"cache")
    _write(root / "scripts" / "helper.py", "X = 1\n")
    _write(root / "eval" / "predictions" / "p.nii.gz", b"output")
    _write(root / "configs" / "monailabel_train.json", "{}")
    _write(root / "train.log", "log")
    _write(root / "large_files.yml", "# nothing published yet\nlarge_files: []\n")
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
    _write(bundle / "models" / "model_fold1.pt", b"fold1")
    result = build_release(bundle, tmp_path / "out", weights_url="https://example.org/r/", include_code=False)
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
        "toy_bundle/models/model.json",
        "toy_bundle/scripts/",
        "toy_bundle/scripts/helper.py",
    }
    weight_md5 = hashlib.md5((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    assert large["large_files"][0] == {
        "path": "models/model.pt",
        "url": "https://example.org/r/toy_bundle_v0.2.1_model.pt",
        "hash_val": weight_md5,
        "hash_type": "md5",
    }
    assert [e["path"] for e in large["large_files"]] == ["models/model.pt", "models/model_fold1.pt"]
    assert [w.name for w in result.weight_files] == ["toy_bundle_v0.2.1_model.pt", "toy_bundle_v0.2.1_model_fold1.pt"]
    assert file_hash(result.weight_files[0]) == weight_md5
    assert result.source == "https://example.org/r/toy_bundle_v0.2.1.zip"
    # the bundle folder itself is untouched
    assert read_large_files(bundle) == []


def test_code_travels_in_the_zip(bundle: Path, tmp_path: Path) -> None:
    """The dast_components package is written into the zip, so the downloaded bundle imports it from its root."""
    import dast_components

    _write(bundle / "dast_components" / "stale.py", "X = 0\n")  # a downloaded bundle's own copy is replaced
    result = build_release(bundle, tmp_path / "out", weights_url="https://example.org/r")
    package = Path(dast_components.__file__).parent
    expected = {f"toy_bundle/dast_components/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py")
                if "__pycache__" not in p.parts}
    with zipfile.ZipFile(result.zip_path) as zf:
        code = {n for n in zf.namelist() if n.startswith("toy_bundle/dast_components/") and not n.endswith("/")}
        assert code == expected
        assert zf.read("toy_bundle/dast_components/networks/nets.py") == (package / "networks" / "nets.py").read_bytes()
        assert "toy_bundle/dast_components/networks/" in zf.namelist()
    assert "dast_components/release.py" in result.files


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


def test_no_weights_published(bundle: Path, tmp_path: Path) -> None:
    # without --weights_url nothing is published: the zip's large_files.yml says so, with an empty list, not an
    # entry with an empty url (which stops `monai.bundle download_large_files` with "unknown url type")
    result = build_release(bundle, tmp_path / "out")
    assert result.large_files == [] and result.weight_files == [] and "large_files.yml" in result.files
    with zipfile.ZipFile(result.zip_path) as zf:
        text = zf.read("toy_bundle/large_files.yml").decode()
    assert yaml.safe_load(text) == {"large_files": []}
    assert "No trained weights are published" in text and "run training" in text
    _write(bundle / "large_files.yml", "large_files:\n  - path: models/model.pt\n    url: ''\n")
    with pytest.raises(ValueError, match="empty url"):
        build_release(bundle, tmp_path / "out", weights_url="https://x")
    (bundle / "large_files.yml").unlink()  # a bundle without large_files.yml (the search) gets none
    assert "large_files.yml" not in build_release(bundle, tmp_path / "out2").files


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
    _write(bundle / "configs" / "metadata.json", "{")
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


def test_doc_links_become_absolute(bundle: Path, tmp_path: Path) -> None:
    _write(bundle / "docs" / "README.md", "[top](../../../README.md#use-in-monai-label), [pic](arch.png), "
           "[cfg](../configs/train.json), [web](https://docs.monai.io/x) [code](../../../dast_components/verify.py)\n")
    text, outside = absolute_doc_links((bundle / "docs" / "README.md").read_text(), PurePosixPath("docs/README.md"),
                                       "https://github.com/o/r", "v0.2.1")
    assert outside == ["README.md", "dast_components/verify.py"]
    assert text == ("[top](https://github.com/o/r/blob/v0.2.1/README.md#use-in-monai-label), [pic](arch.png), "
                    "[cfg](../configs/train.json), [web](https://docs.monai.io/x) "
                    "[code](https://github.com/o/r/blob/v0.2.1/dast_components/verify.py)\n")
    result = build_release(bundle, tmp_path / "out", repo_url="https://github.com/o/r", include_code=False)
    with zipfile.ZipFile(result.zip_path) as zf:
        assert zf.read("toy_bundle/docs/README.md").decode() == text
    assert (bundle / "docs" / "README.md").read_text().startswith("[top](../../../README.md")  # source untouched
