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
"""Unit tests of one bi-level search step on a tiny search space."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import DiNTS

from dast_components.losses import MemoryBudgetLoss
from dast_components.networks import DASTSearchSpace
from dast_components.search import (
    BiLevelStep,
    arch_lr_factor,
    arch_parameters,
    entropy_terms,
    ramp_factor,
    weight_parameters,
)

__all__: list[str] = []

PATCH = (16, 16, 16)


def _net(ops: str = "dast") -> DiNTS:
    torch.manual_seed(0)
    space = DASTSearchSpace(channel_mul=0.125, num_blocks=2, num_depths=2, ops=ops, grid=2)
    return DiNTS(dints_space=space, in_channels=1, num_classes=3)


def _engine(net: DiNTS, **kwargs) -> BiLevelStep:
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.SGD(weight_parameters(net), lr=0.1, momentum=0.9)
    arch_opt = torch.optim.Adam(arch_parameters(net), lr=0.05)
    return BiLevelStep(net, loss, opt, arch_opt, MemoryBudgetLoss(net.dints_space, PATCH, 0.2), **kwargs)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(2, 1, *PATCH, generator=g),
            "label": torch.randint(0, 3, (2, 1, *PATCH), generator=g).float()}


def _snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _changed(before: list[torch.Tensor], params: list[torch.nn.Parameter]) -> bool:
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, params))


def test_weight_step_moves_weights_only():
    net = _net()
    engine = _engine(net)
    weights, arch = _snapshot(engine.weight_params), _snapshot(engine.arch_params)
    out = engine.weight_step(_batch())
    assert set(out) == {"loss"} and out["loss"] > 0
    assert _changed(weights, engine.weight_params)
    assert not _changed(arch, engine.arch_params)


def test_arch_step_moves_logits_only_and_reports_terms():
    net = _net()
    engine = _engine(net)
    weights, arch = _snapshot(engine.weight_params), _snapshot(engine.arch_params)
    out = engine.arch_step(_batch(1), ramp=1.0)
    for key in ("arch_loss", "arch_total", "entropy_a", "entropy_c", "topology", "memory", "memory_ratio", "ramp"):
        assert key in out
    assert _changed(arch, engine.arch_params)
    assert not _changed(weights, engine.weight_params)
    # the weights are trainable again for the next weight step, the logits are not
    assert all(p.requires_grad for p in engine.weight_params)
    assert not any(p.requires_grad for p in engine.arch_params)


def test_ramp_scales_the_regularisers():
    outs = []
    for ramp in (0.0, 1.0):
        engine = _engine(_net())
        outs.append(engine.arch_step(_batch(2), ramp=ramp))
    reg = outs[1]["entropy_a"] + outs[1]["entropy_c"] + 0.001 * outs[1]["topology"] + outs[1]["memory"]
    assert outs[0]["arch_total"] == pytest.approx(outs[0]["arch_loss"], rel=1e-6)
    assert outs[1]["arch_total"] == pytest.approx(outs[1]["arch_loss"] + reg, rel=1e-5)


def test_memory_term_steers_op_logits():
    # with only the memory term (no segmentation signal), a low lambda must make the costliest op less likely
    net = _net()
    space = net.dints_space
    mem = MemoryBudgetLoss(space, PATCH, memory_lambda=0.0)
    before = torch.softmax(space.log_alpha_c.detach(), -1)
    engine = BiLevelStep(
        net, lambda out, lab: out.sum() * 0.0, torch.optim.SGD(weight_parameters(net), lr=0.1),
        torch.optim.Adam(arch_parameters(net), lr=0.1), mem, entropy_weight=0.0, topology_weight=0.0,
    )
    ratio0 = float(mem.ratio().detach())
    for _ in range(5):
        engine.arch_step(_batch(), ramp=1.0)
    after = torch.softmax(space.log_alpha_c.detach(), -1)
    costliest = mem.costs.argmax(-1, keepdim=True)
    assert (after.gather(-1, costliest) < before.gather(-1, costliest)).float().mean() > 0.9
    assert float(mem.ratio()) < ratio0


def test_rejects_arch_logits_in_weight_optimizer():
    net = _net()
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    bad = torch.optim.SGD(net.weight_parameters(), lr=0.1)  # MONAI's list includes the logits
    with pytest.raises(ValueError, match="weight_parameters"):
        BiLevelStep(net, loss, bad, torch.optim.Adam(arch_parameters(net)))
    with pytest.raises(ValueError, match="architecture optimizer"):
        BiLevelStep(net, loss, torch.optim.SGD(weight_parameters(net), lr=0.1),
                            torch.optim.Adam(weight_parameters(net)[:1]))


def test_amp_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("the network is on CPU only when CUDA is absent")
    with pytest.raises(ValueError, match="CUDA"):
        _engine(_net(), amp=True)


def test_negative_weight_rejected():
    with pytest.raises(ValueError, match="memory_weight"):
        _engine(_net(), memory_weight=-1.0)


def test_arch_lr_factor():
    assert arch_lr_factor(5, 10) == 1.0
    assert arch_lr_factor(5, 10, anneal_iterations=4) == 1.0  # annealing starts at iteration 6
    assert arch_lr_factor(6, 10, anneal_iterations=4) == pytest.approx(0.5 * (1 + math.cos(math.pi / 5)))
    assert arch_lr_factor(9, 10, anneal_iterations=4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 5)))
    rates = [arch_lr_factor(i, 10, anneal_iterations=4) for i in range(10)]
    assert all(a >= b for a, b in zip(rates, rates[1:])) and 0 < rates[-1] < 0.1


def test_ramp_factor():
    assert ramp_factor(0, 4, 10) == 0.0
    assert ramp_factor(3, 4, 10) == 0.0
    assert ramp_factor(4, 4, 10) == 0.0
    assert ramp_factor(9, 4, 10) == 1.0
    assert ramp_factor(6, 4, 10) == pytest.approx(0.4)
    assert ramp_factor(0, 0, 1) == 1.0
    # a ramp that ends early holds full weight for the rest of the search
    assert ramp_factor(6, 4, 20, ramp_iterations=4) == pytest.approx(0.5)
    assert ramp_factor(8, 4, 20, ramp_iterations=4) == 1.0
    assert ramp_factor(19, 4, 20, ramp_iterations=4) == 1.0
    assert ramp_factor(3, 4, 20, ramp_iterations=4) == 0.0


def test_entropy_terms_extremes():
    space = _net().dints_space
    with torch.no_grad():
        space.log_alpha_c.zero_()
    _, uniform_c, probs = entropy_terms(space)
    # DiNTS averages -p log p over every (block, path, op) element: ln(3) / 3 for uniform op probabilities
    assert float(uniform_c) == pytest.approx(float(torch.log(torch.tensor(3.0))) / 3, rel=1e-5)
    assert probs.shape == (space.num_blocks, len(space.child_list))
    with torch.no_grad():
        space.log_alpha_c.copy_(torch.tensor([100.0, 0.0, 0.0]).expand_as(space.log_alpha_c))
    _, sharp_c, _ = entropy_terms(space)
    assert float(sharp_c) < 1e-6


def test_dints_op_pool_steps():
    net = _net("dints")
    engine = _engine(net)
    out = engine.step(_batch(), _batch(1), ramp=0.5)
    assert {"loss", "arch_loss", "memory"} <= set(out)


def test_arch_step_with_a_single_block():
    # MONAI's topology entropy is the plain int 0 for one block; the step must still report floats
    space = DASTSearchSpace(channel_mul=0.125, num_blocks=1, num_depths=2, grid=2)
    net = DiNTS(dints_space=space, in_channels=1, num_classes=3)
    out = _engine(net).step(_batch(), _batch(1), ramp=1.0)
    assert out["topology"] == 0.0 and out["arch_total"] > 0
