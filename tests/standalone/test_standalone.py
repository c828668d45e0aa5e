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
"""Each release zip as a Model Zoo user gets it: no clone of this repository, no ``dast_components`` installed.

For each bundle: a fresh virtual environment with only what its ``configs/metadata.json`` lists
(``tests/standalone/make_env.sh``, installed as the Model Zoo's CI does), ``python -m monai.bundle download`` of the
release zip into an empty folder, then, from the downloaded folder and with that environment's python only:
``download_large_files``, the bundle's workflows on synthetic data (search; training, evaluation, inference), the
Model Zoo CI's checks (``zoo_checks.py``), and TorchScript and ONNX exports compared with the eager network.

The environments are ``.venv-bundle-<bundle>`` at the repository root (``$DAST_BUNDLE_VENV_DIR`` to place them
elsewhere); ``make test-standalone`` builds them and runs this file.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dast_components.data.synthetic import write_dataset
from dast_components.networks import random_arch, save_arch
from dast_components.release import build_release

__all__: list[str] = []

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TIMEOUT = 1500
REPO_URL = "https://example.org/dast-bundles"  # stands in for the repository's address given to the release


def _env(bundle: str) -> Path:
    folder = Path(os.environ.get("DAST_BUNDLE_VENV_DIR", REPO))
    venv = folder / f".venv-bundle-{bundle.removeprefix('dast_')}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    proc = subprocess.run(["bash", str(HERE / "make_env.sh"), str(REPO / "bundles" / bundle), str(venv)],
                          capture_output=True, text=True, timeout=3000, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"make_env.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return venv


def _run(venv: Path, args: list[str], cwd: Path, extras: bool = False) -> str:
    """Run the environment's python with a clean environment: nothing of this repository on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    if extras:
        env["PYTHONPATH"] = str(venv / "extras")
    proc = subprocess.run([str(venv / "bin" / "python"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    if proc.returncode != 0:
        tail = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}) in {cwd}:\n{tail}")
    return proc.stdout + proc.stderr


def _download(venv: Path, bundle: str, tmp: Path, folder: str = "downloads") -> Path:
    """Release zip of the repository's bundle, downloaded with the environment's MONAI into an empty folder."""
    result = build_release(REPO / "bundles" / bundle, tmp / "dist", repo_url=REPO_URL)
    downloads = tmp / folder
    downloads.mkdir()
    _run(venv, ["-m", "monai.bundle", "download", "--name", bundle, "--url", result.zip_path.as_uri(),
                "--bundle_dir", str(downloads)], cwd=tmp)
    root = downloads / bundle
    assert (root / "dast_components" / "networks" / "nets.py").is_file()  # the code came with the zip
    docs = (root / "docs" / "README.md").read_text()
    assert f"]({REPO_URL}/blob/" in docs and "](../" not in docs  # its links into the repository are absolute
    return root


def test_environment_holds_only_the_metadata() -> None:
    venv = _env("dast_kits19_seg")
    installed = {line.split("==")[0].lower() for line in (venv / "installed.txt").read_text().splitlines()}
    assert "dast-components" not in installed and "dast_components" not in installed
    meta = json.loads((REPO / "bundles" / "dast_kits19_seg" / "configs" / "metadata.json").read_text())
    assert set(meta["required_packages_version"]) <= installed | {"pyyaml"}
    assert "onnx" not in installed and "jsonschema" not in installed  # only in extras/, for the checks


def test_kits19_zoo_checks_unmodified(tmp_path: Path) -> None:
    """The Zoo CI's checks exactly as it runs them on configs/inference.json (full-size network), with the untrained
    weights its CI produces when a bundle has none (no weights are published yet)."""
    venv = _env("dast_kits19_seg")
    root = _download(venv, "dast_kits19_seg", tmp_path)
    out = _run(venv, [str(HERE / "zoo_checks.py"), str(root.parent), root.name, "--schema",
                      str(REPO / "bundles" / "schemas" / "bundle_meta_schema.json"), "--fake_weights"], cwd=tmp_path,
               extras=True)
    for step in ("directory", "version and changelog", "metadata format", "data shape", "torchscript"):
        assert f"{step}: verified" in out, out


def test_kits19_bundle_from_the_zip(tmp_path: Path) -> None:
    venv = _env("dast_kits19_seg")
    root = _download(venv, "dast_kits19_seg", tmp_path)
    # no weights are published yet: download_large_files runs and fetches nothing, and the file says so
    _run(venv, ["-m", "monai.bundle", "download_large_files", "--bundle_path", str(root)], cwd=tmp_path)
    assert "No trained weights are published" in (root / "large_files.yml").read_text()
    assert not (root / "models" / "model.pt").exists()

    data = write_dataset(tmp_path / "kits19", layout="kits19", num_cases=6, shape=(48, 48, 32))
    arch = save_arch(tmp_path / "arch_code.json",
                     random_arch(num_blocks=2, num_depths=2, ops="dast", seed=1, grid=2, num_heads=2))
    quick = ["--arch_file", str(arch), "--channel_mul", "0.125", "--device", "cpu", "--dataset_dir", str(data)]
    # the commands of the bundle's docs, from the bundle folder (bundle_root "."), as a downloaded bundle is used
    _run(venv, ["-m", "monai.bundle", "run", "training", "--config_file",
                "['configs/train.json','configs/quick.json']", "--num_iterations", "6", "--val_interval", "1",
                *quick], cwd=root)
    assert (root / "models" / "model.pt").is_file() and (root / "models" / "model.json").is_file()
    _run(venv, ["-m", "monai.bundle", "run", "evaluating", "--config_file",
                "['configs/train.json','configs/evaluate.json','configs/quick.json']", *quick], cwd=root)
    assert (root / "eval" / "kits19_fold0_summary.json").is_file() or list((root / "eval").glob("kits19_fold0*"))
    preds = tmp_path / "predictions"
    _run(venv, ["-m", "monai.bundle", "run", "inference", "--config_file",
                "['configs/inference.json','configs/quick.json']", "--output_dir", str(preds), *quick], cwd=root)
    pred = nib.load(preds / "prediction_00000.nii.gz")
    image = nib.load(data / "case_00000" / "imaging.nii.gz")
    assert pred.shape == image.shape and np.allclose(pred.affine, image.affine)

    # the Model Zoo CI's checks, with MONAI's functions, on the downloaded bundle (weights trained above)
    overrides = ["--config", "configs/inference.json", "--config", "configs/quick.json",  # quick: grid null
                 "--override", f"arch_file={str(arch)!r}", "--override", "channel_mul=0.125"]
    out = _run(venv, [str(HERE / "zoo_checks.py"), str(root.parent), root.name, "--schema",
                      str(REPO / "bundles" / "schemas" / "bundle_meta_schema.json"), *overrides], cwd=tmp_path,
               extras=True)
    assert "torchscript: verified" in out, out

    # exports, as the bundle's docs show them, compared with the eager network
    configs = "['configs/inference.json','configs/quick.json']"
    export = ["--ckpt_file", "models/model.pt", "--meta_file", "configs/metadata.json", "--config_file", configs,
              "--arch_file", str(arch), "--channel_mul", "0.125"]
    _run(venv, ["-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", "models/model.ts", *export],
         cwd=root)
    _run(venv, ["-m", "monai.bundle", "onnx_export", "network_def", "--filepath", "models/model.onnx", *export,
                "--use_trace", "True", "--input_shape", "[1, 1, 32, 32, 32]",
                "--converter_kwargs", "{'dynamo': False}"], cwd=root, extras=True)
    out = _run(venv, [str(HERE / "compare_exports.py"), "--config_file", configs, "--shape", "1,1,32,32,32",
                      "--override", f"arch_file={str(arch)!r}", "--override", "channel_mul=0.125"], cwd=root,
               extras=True)
    diffs = json.loads(out.strip().splitlines()[-1])
    assert diffs["torchscript_max_abs_diff"] < 1e-4 and diffs["onnx_max_abs_diff"] < 1e-3, diffs
    print(f"exports vs eager: {diffs}")


def test_search_bundle_from_the_zip(tmp_path: Path) -> None:
    venv = _env("dast_search")
    root = _download(venv, "dast_search", tmp_path)
    data = write_dataset(tmp_path / "Task07", layout="msd", num_cases=6, shape=(48, 48, 32))
    _run(venv, ["-m", "monai.bundle", "run", "search", "--config_file",
                "['configs/search.json','configs/quick.json']", "--dataset_dir", str(data), "--device", "cpu",
                "--num_iterations", "4", "--warmup_iterations", "2", "--val_interval", "2"], cwd=root)
    searched = json.loads((root / "models" / "arch_code.json").read_text())
    assert searched["ops"]
    # the Zoo's checks that apply to a bundle without weights or inference config (its exclusion lists)
    out = _run(venv, [str(HERE / "zoo_checks.py"), str(root.parent), root.name, "--schema",
                      str(REPO / "bundles" / "schemas" / "bundle_meta_schema.json"), "--exclude_preferred",
                      "--exclude_network"], cwd=tmp_path, extras=True)
    assert "metadata format: verified" in out
