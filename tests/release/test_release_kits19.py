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
"""The released ``dast_kits19_seg`` zip as a user gets it: ``monai.bundle download``, ``download_large_files``,
then inference from the downloaded folder on a synthetic KiTS19 case."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dast_components.data.synthetic import write_dataset
from dast_components.release import build_release, bundle_version
from tests.release.bundle_utils import BUNDLE, make_tiny_kits19_bundle

__all__: list[str] = []


def _run(args: list[str], cwd: Path) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{tail}")
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_download_and_infer(tmp_path: Path) -> None:
    src, tiny = make_tiny_kits19_bundle(tmp_path / "src")
    version = bundle_version(BUNDLE)
    out = tmp_path / "dist"
    result = build_release(src, out, weights_url=out.as_uri())
    zip_name = f"dast_kits19_seg_v{version}.zip"
    assert result.zip_path == out / zip_name
    assert result.weight_files == [out / f"dast_kits19_seg_v{version}_model.pt"]
    info = json.loads((out / "model_info.json").read_text())
    assert info[f"dast_kits19_seg_v{version}"]["checksum"] == hashlib.md5(result.zip_path.read_bytes()).hexdigest()
    with zipfile.ZipFile(result.zip_path) as zf:
        names = set(zf.namelist())
    assert "dast_kits19_seg/models/model.pt" not in names
    assert {"dast_kits19_seg/configs/inference.json", "dast_kits19_seg/large_files.yml"} <= names
    # a second build of the same folder gives the same bytes
    again = build_release(src, tmp_path / "dist2", weights_url=out.as_uri())
    assert again.zip_path.read_bytes() == result.zip_path.read_bytes()

    downloads = tmp_path / "downloads"
    _run(["-m", "monai.bundle", "download", "--name", "dast_kits19_seg", "--url", result.zip_path.as_uri(),
          "--bundle_dir", str(downloads)], cwd=tmp_path)
    bundle = downloads / "dast_kits19_seg"
    assert (bundle / "configs" / "metadata.json").is_file() and not (bundle / "models" / "model.pt").exists()
    log = _run(["-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)], cwd=tmp_path)
    assert "Verified 'model.pt'" in log  # the md5 of large_files.yml was checked
    assert (bundle / "models" / "model.pt").read_bytes() == (src / "models" / "model.pt").read_bytes()

    data = write_dataset(tmp_path / "kits19", layout="kits19", num_cases=1, shape=(48, 48, 32))
    preds = tmp_path / "predictions"
    configs = [bundle / "configs" / "inference.json", bundle / "configs" / "quick.json", tiny]
    _run(["-m", "monai.bundle", "run", "inference", "--config_file", str([str(c) for c in configs]),
          "--bundle_root", str(bundle), "--dataset_dir", str(data), "--output_dir", str(preds)], cwd=tmp_path)
    pred = nib.load(preds / "prediction_00000.nii.gz")
    image = nib.load(data / "case_00000" / "imaging.nii.gz")
    assert pred.shape == image.shape and np.allclose(pred.affine, image.affine)
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2}
