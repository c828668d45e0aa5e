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
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from dast_components.data.synthetic import write_dataset
from dast_components.networks import DASTNet, random_arch, save_arch
from dast_components.visualize import (
    capture_attention,
    find_intensity,
    foreground_attention,
    load_bundle_network,
    preprocess_image,
    transformer_ops,
    write_attention_maps,
)
from dast_components.visualize.__main__ import main


def _tiny_bundle(root, seed=0, wrap=None):
    """A bundle folder holding a random-initialised tiny DASTNet whose active paths are all transformers."""
    arch = random_arch(num_blocks=1, num_depths=2, ops="dast", seed=seed, channel_mul=0.125, grid=2)
    t = arch.ops.index("transformer")
    arch.arch_code_c = [[t] * len(row) for row in arch.arch_code_c]
    arch_file = save_arch(root / "models" / "arch_code.json", arch)
    torch.manual_seed(seed)
    net = DASTNet(arch_file)
    state = net.state_dict()
    record = {"intensity": {"lower": -100.0, "upper": 300.0}, "patch_size": [16, 16, 16], "arch": arch.to_dict()}
    torch.save(state if wrap is None else {wrap: state, "bundle": record}, root / "models" / "model.pt")
    return arch, net


@pytest.fixture(scope="module")
def ct_image(tmp_path_factory):
    folder = write_dataset(tmp_path_factory.mktemp("kits"), layout="kits19", num_cases=1, shape=(16, 16, 16),
                           spacing=(1.5, 1.5, 1.5))
    return folder / "case_00000" / "imaging.nii.gz"


def test_foreground_attention_weights_queries_by_cell_coverage():
    g = 2
    maps = torch.zeros(g**3, g, g, g)
    for q in range(g**3):
        maps[q].view(-1)[q] = 1.0  # query q looks only at key q
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    mask[:2, :2, :2] = True  # token cell 0 fully
    mask[2:, 2:, 2:4] = True  # token cell 7 fully
    mask[0, 2, 2] = True  # 1/8 of token cell 3 (i=0, j=1, k=1)
    avg, total = foreground_attention(maps, mask)
    assert total == pytest.approx(2.125)
    expected = torch.zeros(g**3)
    expected[[0, 7, 3]] = torch.tensor([1.0, 1.0, 0.125]) / 2.125
    assert torch.allclose(avg.flatten(), expected)
    uniform, none = foreground_attention(maps, torch.zeros(4, 4, 4))
    assert none == 0 and torch.allclose(uniform, torch.full((g, g, g), 1.0 / g**3))
    with pytest.raises(ValueError, match="token grid"):
        foreground_attention(torch.rand(5, 2, 2, 2), mask)
    # an anisotropic token grid (an op input smaller than g along one axis)
    avg, total = foreground_attention(torch.rand(8, 3, 3, 3), mask, token_grid=(2, 2, 2))
    assert avg.shape == (3, 3, 3)
    with pytest.raises(ValueError, match="token grid"):
        foreground_attention(torch.rand(12, 3, 3, 3), mask, token_grid=(2, 2, 2))


def test_query_summary_says_weighted_share_not_a_count():
    from dast_components.visualize.attention import query_summary

    text = query_summary(0.5, 8)
    assert "weighted by the share of each token's cell predicted kidney or tumor" in text
    assert "fills 0.5 of the 8 cells" in text and "0.5 of 8 queries" not in text
    assert query_summary(0.0, 8) == "no kidney or tumor predicted here: plain mean over all 8 query tokens"


def test_capture_attention_matches_the_op_on_its_input(tmp_path):
    arch, net = _tiny_bundle(tmp_path)
    net.eval()
    ops = transformer_ops(net)
    assert len(ops) == arch.op_counts()["transformer"] > 0
    assert list(ops) == sorted(arch.paths)
    x = torch.rand(1, 1, 16, 16, 16)
    logits, maps = capture_attention(net, x)
    assert logits.shape == (1, 3, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(logits, net(x))  # hooks do not change the output and are removed
    assert not any(op._forward_hooks for op in ops.values())
    for m in maps.values():
        # grid 2: 8 queries; keys: the op input itself (at most 16^3), a power-of-two fraction of the 16^3 input
        assert m.shape[:2] == (1, 8) and m.shape[2] == m.shape[3] == m.shape[4] in (2, 4, 8)
        assert torch.allclose(m.sum(dim=(2, 3, 4)), torch.ones(1, 8), atol=1e-5)


def test_write_attention_maps(tmp_path, ct_image, caplog):
    arch, _ = _tiny_bundle(tmp_path / "bundle")
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        result = write_attention_maps(tmp_path / "bundle", ct_image, out, dpi=40)
    assert "min/max" in caplog.text  # no intensity statistics in this bundle: said in the log
    assert result["roi"] is None  # no training patch recorded: the whole volume in one pass
    pre = nib.load(result["image"])
    assert np.allclose(np.diag(pre.affine)[:3], 1.0)  # RAS, 1 mm
    ref, _ = preprocess_image(ct_image)
    assert pre.shape == ref.shape
    assert nib.load(result["prediction"]).shape == pre.shape
    names = sorted(arch.paths)
    assert sorted(result["ops"]) == names
    for name in names:
        nifti = out / f"attention_{name}.nii.gz"
        png = out / f"attention_{name}.png"
        img = nib.load(nifti)
        data = np.asarray(img.dataobj)
        assert img.shape == pre.shape and np.allclose(img.affine, pre.affine)
        assert data.min() >= 0 and data.max() > 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # a sliding window of 8 passes plus one: several seconds on a busy 2-core CPU
def test_roi_window_and_checkpoint_record(tmp_path, ct_image, caplog):
    arch, _ = _tiny_bundle(tmp_path / "bundle", seed=3, wrap="model")
    window, source = find_intensity(tmp_path / "bundle", torch.load(tmp_path / "bundle/models/model.pt",
                                                                    weights_only=True)["bundle"])
    assert window == {"lower": -100.0, "upper": 300.0} and "record" in source
    (tmp_path / "bundle" / "models" / "arch_code.json").unlink()  # the record's architecture is used
    with caplog.at_level("INFO"):
        result = main(["attention", "--bundle_root", str(tmp_path / "bundle"), "--image", str(ct_image),
                       "--out", str(tmp_path / "out"), "--device", "cpu", "--dpi", "40"])  # roi auto: record's 16^3
    assert "from the weight file's record" in caplog.text
    assert "architecture from the record of" in caplog.text
    assert result["roi"] == [16, 16, 16]
    assert result["intensity"] == window
    shape = nib.load(result["image"]).shape
    for item in result["ops"].values():
        data = np.asarray(nib.load(item["nifti"]).dataobj)
        assert data.shape == shape and data.min() >= 0
        assert 0 < np.count_nonzero(data) <= 16**3  # the map covers the 16^3 window only


def test_intensity_from_config_and_network_key(tmp_path):
    root = tmp_path / "bundle"
    _tiny_bundle(root, seed=4, wrap="network")
    (root / "configs").mkdir()
    (root / "configs" / "inference.json").write_text(json.dumps({"intensity": {"lower": -50, "upper": 250}}))
    net, record = load_bundle_network(root)
    assert not net.training and record["intensity"]["lower"] == -100.0
    assert find_intensity(root)[0] == {"lower": -50.0, "upper": 250.0}


def test_clear_errors(tmp_path, ct_image):
    root = tmp_path / "bundle"
    _tiny_bundle(root, seed=3)
    with pytest.raises(FileNotFoundError, match="train the bundle"):
        load_bundle_network(root, weights=root / "models" / "nope.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_bundle_network(root, channel_mul=0.25)
    torch.save({"epoch": 3}, root / "models" / "other.pt")
    with pytest.raises(ValueError, match="state dict"):
        load_bundle_network(root, weights=root / "models" / "other.pt")
    with pytest.raises(ValueError, match="roi_size"):
        write_attention_maps(root, ct_image, tmp_path / "o", roi_size=12)
    dints = random_arch(2, 2, "dints", seed=0, channel_mul=0.125)
    save_arch(tmp_path / "dints" / "models" / "arch_code.json", dints)
    torch.save(DASTNet(dints).state_dict(), tmp_path / "dints" / "models" / "model.pt")
    with pytest.raises(ValueError, match="no transformer op"):
        write_attention_maps(tmp_path / "dints", ct_image, tmp_path / "o")
