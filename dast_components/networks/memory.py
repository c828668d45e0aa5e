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
Training memory of a whole decoded DAST network: the top layer of the memory model.

:func:`estimate_memory` sums the per-block costs of :mod:`dast_components.networks.costs` over a network's stems,
active cells and output head, and adds parameters, gradients and optimiser state; :func:`max_patch_size` inverts it
for a budget. It builds :class:`~dast_components.networks.nets.DASTNet` to count parameters, so it sits above the
network classes (the cost functions sit below them). The cost functions are re-exported here under their old names.
See docs/design.md, "Memory model" and "Package layers".
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from dast_components.networks.arch_io import ArchCode, load_arch
from dast_components.networks.costs import (
    filter_nums,
    op_saved_elements,
    path_cost_table,
    preprocess_saved_elements,
    saved_tensor_bytes,
    stem_saved_elements,
)
from dast_components.networks.nets import DASTNet

__all__ = [
    "WORKSPACE_COPIES",
    "estimate_memory",
    "max_patch_size",
    # re-exported from dast_components.networks.costs
    "filter_nums",
    "op_saved_elements",
    "path_cost_table",
    "preprocess_saved_elements",
    "saved_tensor_bytes",
    "stem_saved_elements",
]


def _as_arch(arch: ArchCode | str | os.PathLike) -> ArchCode:
    if isinstance(arch, (str, bytes)) or hasattr(arch, "__fspath__"):
        return load_arch(arch)  # type: ignore[arg-type]
    return arch  # type: ignore[return-value]


def _parameter_count(arch: ArchCode, in_channels: int, num_classes: int) -> int:
    net = DASTNet(arch, in_channels=in_channels, num_classes=num_classes)
    return sum(p.numel() for p in net.parameters())


#: Backward working set of a training step, in full-resolution copies of the first depth's channels: how far the
#: peak rises above the end of the forward pass (loss and head backward, gradient buffers of the first cells).
#: Calibrated with ``python -m benchmarks.memory_estimate --seed 100`` (10 architectures other than the benchmark's
#: own seeds 0-9): they needed 1.53-1.77 copies, median 1.64; 1.7 keeps most estimates at or above the peak.
WORKSPACE_COPIES = 1.7


def estimate_memory(
    arch: ArchCode | str,
    patch_size: Sequence[int] | int,
    batch_size: int = 2,
    in_channels: int = 1,
    num_classes: int = 3,
    bytes_per_element: int = 4,
    optimizer_states: int = 1,
    num_parameters: int | None = None,
) -> int:
    """
    Estimated peak training memory (bytes) of a decoded architecture.

    Sum of: activations kept for backward (stems, active cells with their connection blocks, head and loss) times the
    batch; a backward working set of :data:`WORKSPACE_COPIES` copies of the first depth's full-resolution
    activation; parameters, their gradients and ``optimizer_states`` optimiser buffers (1 for SGD with momentum, 2
    for Adam).

    Args:
        arch: an :class:`~dast_components.networks.arch_io.ArchCode` or the path of an architecture file.
        patch_size: spatial size of the training patch (an int means a cube).
        batch_size: patches per step.
        in_channels: image channels.
        num_classes: output classes.
        bytes_per_element: 4 for float32 training.
        optimizer_states: optimiser buffers per parameter.
        num_parameters: parameter count if known (otherwise the network is built once to count them).

    Returns:
        estimated bytes.
    """
    arch = _as_arch(arch)
    if isinstance(patch_size, int):
        patch_size = (patch_size,) * 3
    if len(patch_size) != 3:
        raise ValueError(f"patch_size must have 3 values (H, W, D), got {patch_size}.")
    channels = filter_nums(arch.channel_mul, arch.num_depths)
    table = path_cost_table(  # at this batch: a transformer keeps a few tensors once per batch
        channels, patch_size, arch.num_depths, arch.ops, arch.use_downsample,
        dict(arch.transformer_kwargs(), batch_size=int(batch_size)),
    )
    cells = 0.0
    for blk in range(arch.num_blocks):
        for p, active in enumerate(arch.arch_code_a[blk]):
            if active:
                cells += float(table[p, int(arch.arch_code_c[blk][p])])
    stems = stem_saved_elements(
        channels, patch_size, arch.num_depths, num_classes, in_channels, arch.node_a[0], arch.node_a[-1]
    )
    workspace = WORKSPACE_COPIES * channels[0] * float(math.prod(int(s) for s in patch_size))
    activations = (cells + stems + workspace) * batch_size
    if num_parameters is None:
        num_parameters = _parameter_count(arch, in_channels, num_classes)
    params = num_parameters * (2 + optimizer_states)
    return int((activations + params) * bytes_per_element)


def max_patch_size(
    arch: ArchCode | str,
    budget_gib: float,
    batch_size: int = 2,
    stride: int | None = None,
    max_size: int = 1024,
    **kwargs: Any,
) -> int:
    """
    Largest cubic patch edge (a multiple of the network stride) whose estimated training memory fits the budget.

    Args:
        arch: an ``ArchCode`` or the path of an architecture file.
        budget_gib: memory budget in GiB.
        batch_size: patches per step.
        stride: required multiple (default ``2 ** (num_depths + 1)``).
        max_size: upper bound of the search.
        kwargs: passed to :func:`estimate_memory`.

    Returns:
        the patch edge, or 0 if even the smallest patch does not fit.
    """
    arch = _as_arch(arch)
    if budget_gib <= 0:
        raise ValueError(f"budget_gib must be positive, got {budget_gib}.")
    stride = stride or 2 ** (arch.num_depths + 1)
    budget = budget_gib * 1024**3
    if "num_parameters" not in kwargs:
        kwargs["num_parameters"] = _parameter_count(arch, kwargs.get("in_channels", 1), kwargs.get("num_classes", 3))
    best, size = 0, stride
    while size <= max_size:  # memory grows monotonically with the patch edge
        if estimate_memory(arch, size, batch_size, **kwargs) > budget:
            break
        best, size = size, size + stride
    return best
