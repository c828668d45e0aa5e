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
"""Absolute memory budgets: GiB -> lambda, and decoding within a budget."""

from __future__ import annotations

import pytest
import torch

from dast_components.networks import DASTSearchSpace, estimate_memory
from dast_components.search import budget_to_lambda, decode_within_budget, export_arch

__all__: list[str] = []

PATCH = (32, 32, 32)
GIB = 1024**3


def _space(seed: int = 0) -> DASTSearchSpace:
    torch.manual_seed(seed)
    space = DASTSearchSpace(channel_mul=0.125, num_blocks=3, num_depths=3, grid=2)
    with torch.no_grad():  # logits favouring every path and the transformer: a costly plain decode
        space.log_alpha_a.fill_(3.0)
        space.log_alpha_c.copy_(torch.tensor([0.0, 0.5, 1.0]).expand_as(space.log_alpha_c))
    return space


def test_plain_decode_without_budget():
    space = _space()
    result = decode_within_budget(space, None, PATCH, 2)
    assert result.penalty == 0.0 and result.estimate == result.plain_estimate
    assert result.estimate == estimate_memory(result.arch, PATCH, 2)


def test_decode_is_penalised_until_it_fits_and_logits_are_restored():
    space = _space()
    before = [p.detach().clone() for p in (space.log_alpha_a, space.log_alpha_c)]
    plain = decode_within_budget(space, None, PATCH, 2)
    budget = plain.estimate * 0.8 / GIB
    result = decode_within_budget(space, budget, PATCH, 2)
    assert result.penalty > 0
    assert result.estimate <= budget * GIB
    assert result.plain_estimate == plain.estimate
    assert result.arch.op_counts()["transformer"] < plain.arch.op_counts()["transformer"] or (
        sum(map(sum, result.arch.arch_code_a)) < sum(map(sum, plain.arch.arch_code_a)))
    assert torch.equal(space.log_alpha_a, before[0]) and torch.equal(space.log_alpha_c, before[1])


def test_export_width_is_what_the_budget_sees():
    space = _space()
    narrow = decode_within_budget(space, None, PATCH, 2)
    wide = decode_within_budget(space, None, PATCH, 2, channel_mul=0.5)
    assert wide.arch.channel_mul == 0.5 and export_arch(space).channel_mul == 0.125
    assert wide.estimate > 3 * narrow.estimate


def test_impossible_budget_names_the_cheapest_decode():
    with pytest.raises(ValueError, match="cheapest decode needs"):
        decode_within_budget(_space(), 1e-6, PATCH, 2)


def test_budget_to_lambda_is_monotone_and_bounded():
    space = _space()
    plain = decode_within_budget(space, None, PATCH, 2).estimate / GIB
    lams = [budget_to_lambda(space, plain * f, PATCH, 2) for f in (0.85, 0.92, 1.0)]
    assert 0.0 < lams[0] < lams[1] < lams[2] <= 1.0
    assert budget_to_lambda(space, 1000.0, PATCH, 2) == 1.0
    with pytest.raises(ValueError, match="positive"):
        budget_to_lambda(space, 0.0, PATCH, 2)
    with pytest.raises(ValueError, match="alone need"):
        budget_to_lambda(space, 1e-6, PATCH, 2)
