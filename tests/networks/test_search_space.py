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

import pytest
import torch
from monai.networks.nets import DiNTS

from dast_components.networks import (
    OP_POOLS,
    DASTNet,
    DASTSearchSpace,
    check_topology,
    load_arch,
    make_cell,
    random_arch,
    resolve_ops,
    save_arch,
)


def test_op_pools_by_name():
    assert list(make_cell("dast").OPS3D) == ["skip_connect", "conv_3x3x3", "transformer"]
    assert list(make_cell("dints").OPS3D) == list(OP_POOLS["dints"])
    assert resolve_ops(["skip_connect", "transformer"]) == ("skip_connect", "transformer")
    with pytest.raises(ValueError, match="unknown op pool"):
        resolve_ops("nas")
    with pytest.raises(ValueError, match="unknown op name"):
        resolve_ops(["skip_connect", "conv_5x5x5"])


@pytest.mark.parametrize("ops", ["dast", "dints"])
def test_tiny_supernet_forward_backward(ops):
    torch.manual_seed(0)
    space = DASTSearchSpace(channel_mul=0.125, num_blocks=2, num_depths=2, ops=ops, grid=2)
    assert space.log_alpha_c.shape == (2, 4, len(OP_POOLS[ops]))
    net = DiNTS(dints_space=space, in_channels=1, num_classes=3)
    out = net(torch.rand(1, 1, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32)
    out.mean().backward()
    assert space.log_alpha_a.grad is not None and space.log_alpha_a.grad.abs().sum() > 0
    assert space.log_alpha_c.grad is not None and space.log_alpha_c.grad.abs().sum() > 0
    assert space.stride == 8


def test_decode_is_topology_consistent_over_seeds():
    for seed in range(20):
        arch = random_arch(num_blocks=12, num_depths=4, ops="dast", seed=seed, grid=2)
        check_topology(arch)  # raises on an inconsistent code


def test_check_topology_rejects_inconsistent_code():
    arch = random_arch(num_blocks=3, num_depths=3, seed=0, grid=2)
    arch.node_a[2] = [1 - v for v in arch.node_a[2]]
    with pytest.raises(ValueError, match="node_a row 2"):
        check_topology(arch)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_network_from_saved_file_has_selected_ops(tmp_path, seed):
    arch = random_arch(num_blocks=3, num_depths=3, seed=seed, channel_mul=0.125, grid=2)
    path = save_arch(tmp_path / "arch_code.json", arch, iteration=5)
    net = DASTNet(path)
    built = {}
    for key, cell in net.dints_space.cell_tree.items():
        blk, p = (int(v) for v in key.strip("()").split(","))
        assert cell.op.op_names == [arch.ops[arch.arch_code_c[blk][p]]]
        built[f"b{blk:02d}_p{p:02d}"] = cell.op.op_names[0]
    assert built == load_arch(path).paths
    out = net(torch.rand(1, 1, 32, 32, 32))
    assert out.shape == (1, 3, 32, 32, 32)


def test_searched_network_scripts():
    arch = random_arch(num_blocks=2, num_depths=2, seed=3, channel_mul=0.125, grid=2)
    arch.arch_code_c = [[2] * 4 for _ in range(2)]  # transformers everywhere
    net = DASTNet(arch).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))


def test_decode_matches_monai_dijkstra():
    import numpy as np
    from monai.networks.nets import TopologySearch

    for seed in range(4):
        space = DASTSearchSpace(channel_mul=0.125, num_blocks=3, num_depths=3, grid=2)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            space.log_alpha_a.copy_(torch.randn(space.log_alpha_a.shape, generator=gen) * 2)
            space.log_alpha_c.copy_(torch.randn(space.log_alpha_c.shape, generator=gen))
        ours, reference = space.decode(), TopologySearch.decode(space)
        for a, b in zip(ours[:3], reference[:3]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
