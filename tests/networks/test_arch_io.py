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

import numpy as np
import pytest
import torch

from dast_components.networks import DASTNet, DASTSearchSpace, load_arch, random_arch, save_arch


def test_round_trip_and_readable_keys(tmp_path):
    space = DASTSearchSpace(channel_mul=0.125, num_blocks=3, num_depths=3, grid=2)
    path = save_arch(tmp_path / "a.json", space, config_hash="abc", iteration=10, val_dice=0.5, **{"lambda": 0.8})
    data = json.loads(path.read_text())
    for key in ("ops", "node_a", "arch_code_a", "arch_code_c", "transformer", "channel_mul", "lambda", "provenance"):
        assert key in data
    assert data["ops"] == ["skip_connect", "conv_3x3x3", "transformer"]
    assert data["provenance"] == {"config_hash": "abc", "iteration": 10, "val_dice": 0.5}
    assert all(k.startswith("b") and "_p" in k for k in data["paths"])
    arch = load_arch(path)
    assert arch.to_dict() == data
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temp file


def _dints_pt(tmp_path, ops=5, one_hot=False):
    arch = random_arch(num_blocks=3, num_depths=3, ops="dints", seed=4, grid=2)
    code_c = np.asarray(arch.arch_code_c)
    if one_hot:
        code_c = np.eye(ops)[code_c % ops]
    path = tmp_path / "arch_code.pt"
    torch.save(
        {
            "node_a": np.asarray(arch.node_a),
            "arch_code_a": np.asarray(arch.arch_code_a),
            "arch_code_a_max": np.asarray(arch.arch_code_a),
            "arch_code_c": code_c,
            "iter_num": 7,
            "epochs": 1,
        },
        path,
    )
    return path, arch


def test_loads_monai_dints_pt(tmp_path):
    path, arch = _dints_pt(tmp_path)
    loaded = load_arch(path)
    assert loaded.ops == arch.ops and loaded.arch_code_c == arch.arch_code_c and loaded.node_a == arch.node_a
    net = DASTNet(path, ops="dints")
    assert net(torch.rand(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)


def test_rejects_code_of_another_op_pool(tmp_path):
    path, _ = _dints_pt(tmp_path, one_hot=True)
    with pytest.raises(ValueError, match="codes 5 ops per path"):
        load_arch(path, ops="dast")
    json_path = save_arch(tmp_path / "a.json", random_arch(3, 3, "dints", seed=1, grid=2))
    with pytest.raises(ValueError, match="op pool"):
        load_arch(json_path, ops="dast")
    data = json.loads(json_path.read_text())
    data["ops"] = ["skip_connect", "conv_3x3x3", "transformer"]
    data["arch_code_c"] = [[4] * 7] * 3
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="another op pool"):
        load_arch(json_path)


def test_rejects_other_grid_and_missing_file(tmp_path):
    path = save_arch(tmp_path / "a.json", random_arch(2, 2, "dast", seed=0, grid=4))
    with pytest.raises(ValueError, match="grid 4"):
        load_arch(path, grid=8)
    with pytest.raises(FileNotFoundError, match="dast_search"):
        load_arch(tmp_path / "missing.json")
