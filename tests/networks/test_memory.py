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

from dast_components.networks import build_op, estimate_memory, max_patch_size, random_arch, saved_tensor_bytes
from dast_components.networks.cells import _build_preprocess
from dast_components.networks.costs import op_saved_elements, preprocess_saved_elements


@pytest.mark.parametrize("name", ["skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_1x3x3"])
def test_op_counts_match_autograd(name):
    op = build_op(name, 8)
    x = torch.rand(2, 8, 12, 10, 8, requires_grad=True)
    measured = saved_tensor_bytes(lambda: op(x))
    expected = op_saved_elements(name, 8, (12, 10, 8)) * 2 * 4
    assert abs(measured - expected) <= 0.05 * max(expected, 1) + 4096


@pytest.mark.parametrize("rate,c_in,c_out", [(-1, 4, 8), (1, 8, 4), (0, 4, 8), (0, 8, 8)])
def test_connection_counts_match_autograd(rate, c_in, c_out):
    block = _build_preprocess(rate, c_in, c_out, "RELU", ("INSTANCE", {"affine": True}))
    size_in = {-1: (16, 16, 16), 1: (8, 8, 8), 0: (8, 8, 8)}[rate]
    size_out = tuple(s * 2 ** rate for s in size_in) if rate else size_in
    x = torch.rand(2, c_in, *size_in) + 0.1
    measured = saved_tensor_bytes(lambda: block(x))
    expected = preprocess_saved_elements(rate, c_in, c_out, size_out) * 2 * 4
    assert abs(measured - expected) <= 0.05 * max(expected, 1) + 4096


def test_estimate_grows_with_patch_and_batch_and_budget_search():
    arch = random_arch(num_blocks=3, num_depths=3, seed=0, channel_mul=0.25, grid=2)
    small, large = estimate_memory(arch, 32, 1), estimate_memory(arch, 64, 1)
    assert 0 < small < large
    assert estimate_memory(arch, 64, 2) > large
    edge = max_patch_size(arch, budget_gib=0.5, batch_size=2)
    assert edge % 16 == 0 and edge > 0
    assert estimate_memory(arch, edge, 2) <= 0.5 * 1024**3 < estimate_memory(arch, edge + 16, 2)
    with pytest.raises(ValueError, match="budget_gib"):
        max_patch_size(arch, budget_gib=0)


def test_saved_tensor_bytes_counts_only_what_backward_still_needs():
    x = torch.rand(1000, requires_grad=True)

    def fn():
        torch.relu(x * 2).sum()  # a branch whose graph is freed at once
        return torch.relu(x * 3)  # keeps its output (4000 bytes) for backward

    assert saved_tensor_bytes(fn) == 4000
