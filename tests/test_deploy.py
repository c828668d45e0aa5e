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
"""ONNX export and ONNX Runtime predictor of ``dast_components.deploy`` on a tiny DAST network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dast_components.errors import InputError
from dast_components.networks import DASTNet
from tests.bundles.kits19_utils import write_tiny_arch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dast_components.deploy import DEFAULT_TOLERANCE, OnnxPredictor, onnx_network  # noqa: E402

__all__: list[str] = []

WINDOW = (32, 32, 32)


def _net(tmp_path: Path) -> DASTNet:
    torch.manual_seed(0)
    return DASTNet(str(write_tiny_arch(tmp_path / "arch.json"))).eval()


def test_onnx_matches_eager_and_is_cached(tmp_path: Path) -> None:
    net = _net(tmp_path)
    pred = onnx_network(net, WINDOW, tmp_path / "cache", threads=1)
    files = sorted((tmp_path / "cache").glob("*.onnx"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob("*.tmp"))
    x = torch.rand(2, 1, *WINDOW)  # batch 2: the batch axis is dynamic
    with torch.no_grad():
        assert float((pred(x) - net(x)).abs().max()) <= DEFAULT_TOLERANCE
    mtime = files[0].stat().st_mtime_ns
    record = json.loads(files[0].with_suffix(".json").read_text())
    assert record["onnxruntime"]["max_abs_diff"] <= DEFAULT_TOLERANCE
    calls = []
    hook = net.register_forward_hook(lambda *args: calls.append(1))
    onnx_network(net, WINDOW, tmp_path / "cache", threads=1)  # same weights: reused, not re-exported
    hook.remove()
    assert files[0].stat().st_mtime_ns == mtime and not calls  # checked when cached: no eager pass again


def test_openvino_runtime_matches_eager(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    net = _net(tmp_path)
    onnx_network(net, WINDOW, tmp_path / "cache", threads=1)
    # same file, own check; OpenVINO's float32 kernels differ from eager by ~1e-3 of the logits' scale
    pred = onnx_network(net, WINDOW, tmp_path / "cache", threads=1, runtime="openvino", tolerance=5e-3)
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1
    record = json.loads(next((tmp_path / "cache").glob("*.json")).read_text())
    assert set(record) == {"onnxruntime", "openvino"}
    x = torch.rand(2, 1, *WINDOW)
    with torch.no_grad():
        ref = net(x)
        assert float((pred(x) - ref).abs().max()) <= 5e-3 * max(1.0, float(ref.abs().max()))
        assert float((pred(x).argmax(1) == ref.argmax(1)).float().mean()) > 0.99
    with pytest.raises(InputError, match="onnx_runtime must be one of"):
        onnx_network(net, WINDOW, tmp_path / "cache", runtime="tensorrt")


def test_new_weights_reexport(tmp_path: Path) -> None:
    net = _net(tmp_path)
    onnx_network(net, WINDOW, tmp_path / "cache", threads=1)
    with torch.no_grad():
        next(net.parameters()).add_(0.5)
    pred = onnx_network(net, WINDOW, tmp_path / "cache", threads=1)
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 2
    x = torch.rand(1, 1, *WINDOW)
    with torch.no_grad():
        assert float((pred(x) - net(x)).abs().max()) <= DEFAULT_TOLERANCE


def test_tolerance_violation_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="differs from eager PyTorch"):
        onnx_network(_net(tmp_path), WINDOW, tmp_path / "cache", tolerance=-1.0, threads=1)
    assert not list((tmp_path / "cache").glob("*.onnx"))


def test_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no ONNX file at"):
        OnnxPredictor(tmp_path / "missing.onnx")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        onnx_network(_net(tmp_path), WINDOW, tmp_path / "file")


@pytest.mark.slow
def test_bundle_onnx_overlay_matches_inference_json(tmp_path: Path) -> None:
    """``inference_onnx.json`` writes the same mask as ``inference.json`` (same weights, geometry, post-processing)."""
    import nibabel as nib
    import numpy as np
    from monai.bundle import ConfigWorkflow

    from dast_components.data.synthetic import kits19_affine, make_phantom, to_kits19_array
    from tests.bundles.kits19_utils import config_path, save_kits_case

    arch = write_tiny_arch(tmp_path / "arch.json")
    data = tmp_path / "data"
    _, label = make_phantom((40, 36, 24), (1.0, 1.0, 2.0), seed=3)
    label_k = to_kits19_array(label.astype(np.uint8))
    save_kits_case(data / "case_00000", (label_k * 100).astype(np.int16), label_k,
                   kits19_affine(label.shape, (1.0, 1.0, 2.0)))
    (tmp_path / "models").mkdir()
    torch.manual_seed(0)
    torch.save({"model": DASTNet(str(arch)).state_dict(), "bundle": {"intensity": {"lower": 0.0, "upper": 200.0}}},
               tmp_path / "models" / "model.pt")
    masks = []
    for extra in ([], [config_path("inference_onnx")]):
        out = tmp_path / ("onnx" if extra else "eager")
        workflow = ConfigWorkflow(
            config_file=[config_path("inference"), config_path("quick"), *extra], meta_file=config_path("metadata"),
            workflow_type="infer", bundle_root=str(tmp_path), dataset_dir=str(data), arch_file=str(arch),
            output_dir=str(out), device="cpu", num_workers=0)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
        masks.append(nib.load(str(out / "prediction_00000.nii.gz")))
    assert list((tmp_path / "models" / "onnx").glob("*.onnx"))
    np.testing.assert_allclose(masks[0].affine, masks[1].affine)
    a, b = np.asarray(masks[0].dataobj), np.asarray(masks[1].dataobj)
    assert a.shape == b.shape == label_k.shape
    assert float((a != b).mean()) < 1e-3  # argmax ties may flip at a handful of voxels
