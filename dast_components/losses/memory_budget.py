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
"""
Memory-budget loss of the architecture search that sees op choice as well as topology.

MONAI's ``TopologySearch.get_ram_cost_usage(full=True)`` keeps the op softmax in the reference, so the ratio
``usage / full`` barely depends on which op a path picks (measured on MONAI 1.6.1: its gradient to the op
logits is ~80x smaller than to the path logits). Here ``full`` is a fixed reference:
every path on, each with its costliest op, so choosing a cheaper op lowers the ratio as much as dropping a path.
See docs/design.md, "Memory budget".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MemoryBudgetLoss"]


class MemoryBudgetLoss(nn.Module):
    """
    ``|target - usage / full|`` over the expected saved activations of the searched cells.

    ``usage = sum_{b,p} P(path b,p) * sum_o softmax(alpha_c)[b,p,o] * cost[b,p,o]``, where ``cost`` is the saved
    elements of the path's connection block plus op at the training patch size
    (:func:`dast_components.networks.costs.path_cost_table`), and ``full = sum_{b,p} max_o cost[b,p,o]``.

    Args:
        search_space: a :class:`~dast_components.networks.DASTSearchSpace`.
        patch_size: training patch size ``(H, W, D)`` the costs are computed for.
        memory_lambda: target fraction of ``full`` (paper: 0.2, 0.5, 0.8). An absolute budget in GiB is converted
            to this fraction by :func:`dast_components.search.budget.budget_to_lambda`.

    The costs are per batch item at batch 1, an upper bound for a transformer (it keeps a few tensors once per
    batch, see ``TransformerOp3D.estimate_saved_elements``); the budget conversion prices them at the training batch.
    So a transformer weighs up to a few percent more in ``usage / full`` here than in the conversion: a lambda from a
    budget errs on the side of fewer transformers, and the exported decode is checked at the real batch anyway.

    Example::

        loss = MemoryBudgetLoss(space, patch_size=(96, 96, 96), memory_lambda=0.5)
        loss().backward()  # gradients reach space.log_alpha_a and space.log_alpha_c
    """

    def __init__(
        self,
        search_space: nn.Module,
        patch_size: Sequence[int],
        memory_lambda: float = 0.8,
    ) -> None:
        super().__init__()
        if len(patch_size) != 3:
            raise ValueError(f"patch_size must have 3 values, got {patch_size}.")
        self.space = [search_space]  # a list keeps the space out of this module's parameters
        costs = search_space.path_costs(patch_size)
        self.register_buffer("costs", costs, persistent=False)
        self.full = float(costs.amax(-1).sum())
        self.patch_size = tuple(int(s) for s in patch_size)
        if not 0.0 <= memory_lambda <= 1.0:
            raise ValueError(f"memory_lambda must be in [0, 1], got {memory_lambda}.")
        self.memory_lambda = float(memory_lambda)

    def usage(self) -> torch.Tensor:
        """Expected saved elements of the cells per batch item (differentiable in the architecture logits)."""
        space = self.space[0]
        _, prob_a = space.get_prob_a(child=False)
        prob_c = torch.softmax(space.log_alpha_c, dim=-1)
        return (prob_a * (prob_c * self.costs.to(prob_c)).sum(-1)).sum()

    def ratio(self) -> torch.Tensor:
        """``usage / full``."""
        return self.usage() / self.full

    def decoded_usage(self) -> float:
        """Saved elements per batch item of the cells of the current decoded architecture."""
        arch = self.space[0].decode_arch()
        total = 0.0
        for b, row in enumerate(arch.arch_code_a):
            for p, active in enumerate(row):
                if active:
                    total += float(self.costs[b, p, arch.arch_code_c[b][p]])
        return total

    def forward(self) -> torch.Tensor:
        """Returns the scalar loss ``|memory_lambda - usage / full|``."""
        return (self.memory_lambda - self.ratio()).abs()
