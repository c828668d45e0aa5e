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

Two ways in: the task classes driven headless (``monailabel_driver.py``), and the README's commands
(``monailabel apps --download``, ``monailabel start_server``) with a server on 127.0.0.1 asked for ``/info/`` and
one ``/infer/``; the server is stopped at the end of the test, whatever happens.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dast_components.data.synthetic import write_dataset
from tests.release.bundle_utils import INTENSITY, REPO, make_tiny_kits19_bundle

__all__: list[str] = []

pytestmark = pytest.mark.slow

MAKE_ENV = REPO / "tests" / "monailabel" / "make_env.sh"
DRIVER = REPO / "tests" / "monailabel" / "monailabel_driver.py"
PLACEHOLDER = REPO / "tests" / "monailabel" / "torchvision_placeholder"
SERVER_START_S = 240


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


def _version() -> str:
    return json.loads((REPO / "bundles" / "dast_kits19_seg" / "configs" / "metadata.json").read_text())["version"]


def test_infer_task_segments_with_bundle_labels(observed: dict) -> None:
    assert observed["datastore"] == {"images": 3, "labeled": 3}
    assert observed["infer_valid"] is True
    info = observed["infer_info"]
    assert info["labels"] == {"kidney": 1, "tumor": 2}
    assert info["type"].lower().endswith("segmentation") and info["dimension"] == 3 and info["version"] == _version()
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
    assert observed["checkpoint_plain"] is True  # a plain state dict; the window is in models/model.json
    window = observed["checkpoint_intensity"]
    assert window["upper"] > window["lower"]  # percentiles of the datastore's training images
    # the next request of the same (long-lived) infer task uses the new weights
    assert observed["network_matches_checkpoint_after"] is True
    after = observed["infer_after"]
    assert after["shape"] == after["image_shape"] and set(after["values"]) <= {0, 1, 2}


def test_intensity_window_follows_retrained_weights(observed: dict) -> None:
    # MONAI Label parses the preprocessing once per server; retrained weights carry their own window (the
    # datastore's percentiles), and the next request must scale with it, not with the window of the old weights
    window = observed["checkpoint_intensity"]
    assert observed["window_after"] == [window["lower"], window["upper"]] != observed["window_before"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  loopback only
        return response.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, monailabel_python: Path) -> dict:
    """The README's commands: copy the app, put the bundle in its model folder, start the server, ask it."""
    root = tmp_path_factory.mktemp("monailabel_server")
    env = dict(os.environ)
    env["PATH"] = f"{monailabel_python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["MONAILABEL_PYEXE"] = str(monailabel_python)
    env["PYTHONPATH"] = str(PLACEHOLDER)  # CPU test env only: see monailabel_driver.ensure_torchvision
    cli = str(monailabel_python.parent / "monailabel")
    copied = subprocess.run([cli, "apps", "--download", "--name", "monaibundle", "--output", str(root / "apps")],
                            cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    app = root / "apps" / "monaibundle"
    _app_bundle(app / "model")
    studies = _studies(root)
    port = _free_port()
    log = (root / "server.log").open("w")
    cmd = [cli, "start_server", "--app", str(app), "--studies", str(studies), "--conf", "models", "dast_kits19_seg",
           "--conf", "zoo_source", "github", "--conf", "sam2", "false", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    out: dict = {}
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                out["info"] = json.loads(_get(f"{base}/info/"))
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not answer: {(root / 'server.log').read_text()[-5000:]}")
                time.sleep(2)
        request = urllib.request.Request(f"{base}/infer/dast_kits19_seg?image=case_00000&output=image", method="POST")
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310  loopback only
            (root / "label.nii.gz").write_bytes(response.read())
        out["label"] = root / "label.nii.gz"
        out["image"] = studies / "case_00000.nii.gz"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
    return out


def test_server_from_readme_commands(server: dict) -> None:
    import nibabel as nib
    import numpy as np

    info = server["info"]
    assert info["labels"] == ["kidney", "tumor"]
    assert info["models"]["dast_kits19_seg"]["labels"] == {"kidney": 1, "tumor": 2}
    assert "dast_kits19_seg" in info["trainers"]
    label, image = nib.load(server["label"]), nib.load(server["image"])
    assert label.shape == image.shape and np.allclose(label.affine, image.affine, atol=1e-4)
    assert set(np.unique(np.asarray(label.dataobj)).astype(int).tolist()) <= {0, 1, 2}
