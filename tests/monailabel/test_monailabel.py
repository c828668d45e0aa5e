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
"""``dast_kits19_seg`` in MONAI Label 0.8.5's ``monaibundle`` app, driven headless in its own environment.

The environment (``.venv-monailabel``, or ``$DAST_MONAILABEL_VENV``) is made by ``tests/monailabel/make_env.sh``
(minutes the first time, a stamp check afterwards). The bundle is a copy of ``bundles/dast_kits19_seg`` with small
random weights whose ``inference.json``/``train.json`` have ``quick.json`` merged in (MONAI Label reads only those
two files, so overlays must be merged to use them), plus ``val_interval: 1`` so that one epoch validates and saves
``models/model.pt`` as a full-size training would. Studies are three synthetic KiTS19-like CTs with final labels.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dast_components.data.synthetic import write_dataset
from tests.release.bundle_utils import INTENSITY, REPO, make_tiny_kits19_bundle

__all__: list[str] = []

pytestmark = pytest.mark.slow

MAKE_ENV = REPO / "tests" / "monailabel" / "make_env.sh"
DRIVER = REPO / "tests" / "monailabel" / "monailabel_driver.py"


@pytest.fixture(scope="module")
def monailabel_python() -> Path:
    venv = Path(os.environ.get("DAST_MONAILABEL_VENV", REPO / ".venv-monailabel"))
    proc = subprocess.run(["bash", str(MAKE_ENV), str(venv)], capture_output=True, text=True, timeout=3000)
    if proc.returncode != 0:
        raise AssertionError(f"{MAKE_ENV} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return venv / "bin" / "python"


def _app_bundle(parent: Path) -> Path:
    """The bundle as it would sit in ``<app>/model/dast_kits19_seg``, with the quick settings merged in."""
    from monai.bundle import ConfigParser

    bundle, tiny = make_tiny_kits19_bundle(parent)
    extra = parent / "monailabel.json"
    extra.write_text(json.dumps({"val_interval": 1}))
    for name in ("inference.json", "train.json"):
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / f) for f in (name, "quick.json")] + [str(tiny), str(extra)])
        ConfigParser.export_config_file(parser.config, str(bundle / "configs" / name), indent=4)
    return bundle


def _studies(parent: Path) -> Path:
    """A ``LocalDatastore`` folder: ``case_XXXXX.nii.gz`` images and ``labels/final/`` labels (KiTS19 geometry)."""
    data = write_dataset(parent / "kits19", layout="kits19", num_cases=3, shape=(48, 48, 32))
    studies = parent / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    for case in sorted(data.glob("case_*")):
        shutil.copy(case / "imaging.nii.gz", studies / f"{case.name}.nii.gz")
        shutil.copy(case / "segmentation.nii.gz", studies / "labels" / "final" / f"{case.name}.nii.gz")
    return studies


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, monailabel_python: Path) -> dict:
    root = tmp_path_factory.mktemp("monailabel")
    bundle = _app_bundle(root / "app" / "model")
    studies = _studies(root)
    result = root / "result.json"
    cmd = [str(monailabel_python), str(DRIVER), "--bundle", str(bundle), "--studies", str(studies), "--out",
           str(result), "--max_epochs", "1"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise AssertionError(f"MONAI Label driver failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return json.loads(result.read_text())


def test_separate_environment(observed: dict) -> None:
    import numpy

    versions = observed["versions"]
    assert versions["monailabel"] == "0.8.5" and versions["monai"] == "1.6.1"
    assert versions["torch"].startswith("2.13.0") and int(versions["numpy"].split(".")[0]) < 2
    assert int(numpy.__version__.split(".")[0]) >= 2  # the main environment keeps its own numpy


def test_infer_task_segments_with_bundle_labels(observed: dict) -> None:
    assert observed["datastore"] == {"images": 3, "labeled": 3}
    assert observed["infer_valid"] is True
    info = observed["infer_info"]
    assert info["labels"] == {"kidney": 1, "tumor": 2}
    assert info["type"].lower().endswith("segmentation") and info["dimension"] == 3 and info["version"] == "0.1.0"
    assert info["model_filename"][0] == "model.pt"  # MONAI Label's default weights: shortest models/*.pt name
    label = observed["infer_before"]
    assert label["shape"] == label["image_shape"] == [32, 48, 48]  # written back in the KiTS19 array order
    assert label["affine_max_diff"] < 1e-4
    assert set(label["values"]) <= {0, 1, 2}
    assert label["result_json"]["label_names"] == {"kidney": 1, "tumor": 2}
    assert observed["window_before"] == [INTENSITY["lower"], INTENSITY["upper"]]


def test_train_task_runs_one_epoch(observed: dict) -> None:
    assert observed["train_valid"] is True
    assert observed["train_options"]["model_filename"] == ["model.pt"]
    header, *rows = observed["training_log"]
    assert header.startswith("epoch,iteration,train_loss")
    assert len(rows) == 1 and rows[0].split(",")[0] == "1"
    assert math.isfinite(float(rows[0].split(",")[2]))
    # validation ran after the epoch and the checkpoint handler replaced models/model.pt
    assert observed["weights_after"] != observed["weights_before"]
    assert observed["checkpoint_keys"] == ["bundle", "model"]
    window = observed["checkpoint_intensity"]
    assert window["upper"] > window["lower"]  # percentiles of the datastore's training images
    # the next request of the same (long-lived) infer task uses the new weights
    assert observed["network_matches_checkpoint_after"] is True
    after = observed["infer_after"]
    assert after["shape"] == after["image_shape"] and set(after["values"]) <= {0, 1, 2}


@pytest.mark.xfail(
    strict=True,
    reason="inference.json reads the intensity window from models/model.pt once, when MONAI Label first parses the "
    "preprocessing; after training in the server the new weights are used with the old window until a restart "
    "(see /work/notes/requests_kits19.md)",
)
def test_intensity_window_follows_retrained_weights(observed: dict) -> None:
    window = observed["checkpoint_intensity"]
    assert observed["window_after"] == [window["lower"], window["upper"]]
