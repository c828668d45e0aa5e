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
An absolute memory budget (GiB at a training patch) for the search, beyond DiNTS' relative factor lambda.

The search runs at one width (``channel_mul``, 0.5 as in DiNTS) while the exported architecture is retrained at
another (``arch_channel_mul``, 1.0 as in DiNTS' retraining); the budget is about the retrained network, so
everything here is computed at the export width and the training patch:

- :func:`budget_to_lambda` turns the budget into the target fraction lambda of
  :class:`~dast_components.losses.MemoryBudgetLoss` (cells' share of the budget over all-paths-costliest-op cells;
  the fraction barely depends on the width, as every cost is nearly linear in the channels);
- :func:`decode_within_budget` decodes the logits and, when the decoded architecture's
  :func:`~dast_components.networks.estimate_memory` exceeds the budget, decodes again from logits penalised by
  memory cost (a stricter trade-off, like a smaller lambda) with a growing penalty until it fits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from dast_components.networks.arch_io import ArchCode
from dast_components.networks.costs import filter_nums, path_cost_table
from dast_components.networks.memory import estimate_memory

__all__ = [
    "GIB",
    "BudgetDecode",
    "budget_to_lambda",
    "cell_elements",
    "cost_table",
    "decode_within_budget",
    "export_arch",
]

logger = logging.getLogger(__name__)

GIB = float(1024**3)
_PENALTIES = (0.0,) + tuple(2.0**k for k in range(-3, 11))


class BudgetDecode(NamedTuple):
    """Result of :func:`decode_within_budget`."""

    arch: ArchCode  #: the exported architecture
    estimate: int  #: its estimated training memory (bytes) at the training patch
    penalty: float  #: memory penalty beta of the decode (0: the plain decode)
    plain_estimate: int  #: estimate of the plain (beta = 0) decode


def export_arch(space: Any, channel_mul: float | None = None) -> ArchCode:
    """
    The current decode of ``space`` as an :class:`ArchCode` recording the width the network will be retrained at.

    Args:
        space: a :class:`~dast_components.networks.DASTSearchSpace`.
        channel_mul: export width; ``None`` keeps the search width.
    """
    arch = space.decode_arch()
    if channel_mul is not None:
        arch.channel_mul = float(channel_mul)
    return arch


def cost_table(
    space: Any, patch_size: Sequence[int], channel_mul: float | None = None, batch_size: int = 1
) -> torch.Tensor:
    """
    Saved elements per batch item of every (path, op) choice of one block at ``patch_size`` and the export width,
    at ``batch_size`` (a transformer keeps a few tensors once per batch; 1 gives the upper bound).

    Returns:
        float64 tensor ``(paths, ops)`` on the CPU.
    """
    mul = space.channel_mul if channel_mul is None else channel_mul
    settings = space.transformer_settings
    return path_cost_table(
        filter_nums(mul, space.num_depths), patch_size, space.num_depths, space.op_names, space.use_downsample,
        {"grid": settings["grid"], "num_layers": settings["num_layers"], "mlp_ratio": settings["mlp_ratio"],
         "batch_size": int(batch_size)},
    )


def cell_elements(arch: ArchCode, table: torch.Tensor) -> float:
    """Saved elements per batch item of the active cells of ``arch`` (``table`` from :func:`cost_table`)."""
    total = 0.0
    for b in range(arch.num_blocks):
        for p, active in enumerate(arch.arch_code_a[b]):
            if active:
                total += float(table[p, arch.arch_code_c[b][p]])
    return total


def budget_to_lambda(
    space: Any,
    budget_gib: float,
    patch_size: Sequence[int],
    batch_size: int = 2,
    channel_mul: float | None = None,
    in_channels: int = 1,
    num_classes: int = 3,
) -> float:
    """
    The memory factor lambda whose cells' share keeps the whole training step within ``budget_gib``.

    ``lambda = (budget - fixed) / (batch * 4 B * full)`` clipped to ``[0, 1]``, where ``fixed`` is the estimate of
    the current decode without its cells (stems, head, workspace, parameters, gradients, optimiser state) and
    ``full`` the cells' saved elements with every path on and its costliest op.

    Args:
        space: the search space.
        budget_gib: training memory budget in GiB.
        patch_size: training patch ``(H, W, D)`` the budget is meant for.
        batch_size: training batch size.
        channel_mul: export width (``None``: the search width).
        in_channels: image channels.
        num_classes: output classes.

    Raises:
        ValueError: a non-positive budget, or one that the network without cells already exceeds.
    """
    if budget_gib is None or float(budget_gib) <= 0:
        raise ValueError(f"memory_budget_gib must be a positive number of GiB, got {budget_gib}.")
    table = cost_table(space, patch_size, channel_mul, batch_size)
    full = float(table.amax(-1).sum()) * space.num_blocks
    arch = export_arch(space, channel_mul)
    total = estimate_memory(arch, patch_size, batch_size, in_channels, num_classes)
    fixed = total - cell_elements(arch, table) * batch_size * 4
    lam = (float(budget_gib) * GIB - fixed) / (batch_size * 4 * full)
    if lam <= 0:
        raise ValueError(
            f"memory_budget_gib={budget_gib} at train_patch_size {list(patch_size)}, batch {batch_size}: the stems, "
            f"head and parameters alone need about {fixed / GIB:.2f} GiB, so no cell fits. Raise the budget or lower "
            "train_patch_size or arch_channel_mul."
        )
    return float(min(lam, 1.0))


def decode_within_budget(
    space: Any,
    budget_gib: float | None,
    patch_size: Sequence[int],
    batch_size: int = 2,
    channel_mul: float | None = None,
    in_channels: int = 1,
    num_classes: int = 3,
) -> BudgetDecode:
    """
    Decode the architecture; with a budget, penalise memory in the logits until the decode fits.

    The penalised logits are ``log_alpha_c - beta * cost_c / max_cost`` and ``log_alpha_a - beta * cost_a / max_cost``
    (``cost_a``: a path's cost with the op the penalised op logits pick), for ``beta`` = 0, 1/8, 1/4, ..., 1024; the
    search space's logits are restored afterwards. Without a budget this is :func:`export_arch`.

    Args:
        space: the search space.
        budget_gib: training memory budget in GiB, or ``None``.
        patch_size: training patch.
        batch_size: training batch size.
        channel_mul: export width (``None``: the search width).
        in_channels: image channels.
        num_classes: output classes.

    Returns:
        a :class:`BudgetDecode`; its ``penalty`` is 0 when the plain decode fits.

    Raises:
        ValueError: no decode fits, not even the cheapest one (the message gives its estimate).
    """
    if budget_gib is None:
        arch = export_arch(space, channel_mul)
        est = estimate_memory(arch, patch_size, batch_size, in_channels, num_classes)
        return BudgetDecode(arch, est, 0.0, est)
    budget = float(budget_gib) * GIB
    table = cost_table(space, patch_size, channel_mul, batch_size).to(torch.float32)
    norm = table / table.max().clamp_min(1e-12)
    alpha_a, alpha_c = space.log_alpha_a, space.log_alpha_c
    saved = (alpha_a.detach().clone(), alpha_c.detach().clone())
    best: BudgetDecode | None = None
    plain = 0
    seen: dict[tuple[str, str], int] = {}
    try:
        for beta in _PENALTIES:
            with torch.no_grad():
                cost_c = norm.to(alpha_c.device).expand_as(alpha_c)
                alpha_c.copy_(saved[1] - beta * cost_c)
                chosen = cost_c.gather(-1, alpha_c.argmax(-1, keepdim=True)).squeeze(-1)
                alpha_a.copy_(saved[0] - beta * chosen)
            arch = export_arch(space, channel_mul)
            key = (str(arch.arch_code_a), str(arch.arch_code_c))
            if key not in seen:  # large penalties repeat decodes; each estimate builds the network once
                seen[key] = estimate_memory(arch, patch_size, batch_size, in_channels, num_classes)
            est = seen[key]
            if beta == 0.0:
                plain = est
            if best is None or est < best.estimate:
                best = BudgetDecode(arch, est, beta, plain)
            if est <= budget:
                if beta > 0:
                    logger.warning(
                        "the decoded architecture exceeded the %.2f GiB budget; decoded with memory penalty beta=%g "
                        "instead: %.2f GiB estimated at patch %s, batch %d.",
                        budget_gib, beta, est / GIB, list(patch_size), batch_size,
                    )
                return BudgetDecode(arch, est, beta, plain)
    finally:
        with torch.no_grad():
            alpha_a.copy_(saved[0])
            alpha_c.copy_(saved[1])
    cheapest = f"{best.estimate / GIB:.2f} GiB" if best is not None else "an unknown amount"
    raise ValueError(
        f"no architecture of this search space fits memory_budget_gib={budget_gib} at train_patch_size "
        f"{list(patch_size)}, batch {batch_size}: the cheapest decode needs {cheapest}. Raise the "
        "budget, lower train_patch_size, or use a smaller arch_channel_mul."
    )
