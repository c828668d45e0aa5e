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
Training-memory costs of the parts of DAST networks: the bottom layer of the memory model.

Every block reports the number of float elements it keeps for the backward pass ("saved elements") per batch item,
given its channels and the spatial size of its output. The counts were derived from the autograd graph and checked
with :func:`saved_tensor_bytes` (``torch.autograd.graph.saved_tensors_hooks``), so their sum is a usable budget,
unlike MONAI's ``get_ram_cost_usage`` (which leaves out the stems, the output and the backward temporaries, and counts
3D feature sizes twice; measured on MONAI 1.6.1). See docs/design.md, "Memory model".

Layers: the cell ops (:mod:`.cells`) take their MONAI ``ram_cost`` from here, so this module sits below every network
class; the whole-network estimate (:func:`dast_components.networks.memory.estimate_memory`, stems + cells + head plus
parameters, gradients and optimiser state) sits above them. The same per-path costs feed the differentiable
:class:`dast_components.losses.MemoryBudgetLoss`, so the search and the final estimate agree.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dast_components.networks.transformer import TransformerOp3D

__all__ = [
    "saved_tensor_bytes",
    "op_saved_elements",
    "preprocess_saved_elements",
    "stem_saved_elements",
    "path_cost_table",
    "filter_nums",
]


def filter_nums(channel_mul: float, num_depths: int) -> list[int]:
    """Channels of the ``num_depths + 1`` resolution levels, as MONAI's ``TopologyConstruction`` computes them."""
    return [int(32 * (2**i) * channel_mul) for i in range(num_depths + 1)]


def _volume(spatial_size: Sequence[int]) -> float:
    return float(math.prod(int(s) for s in spatial_size))


def op_saved_elements(
    name: str, channels: int, spatial_size: Sequence[int], transformer: dict[str, Any] | None = None
) -> float:
    """
    Float elements one cell op keeps for backward, per batch item.

    Args:
        name: op name from an op pool (``skip_connect``, ``conv_3x3x3``, ``conv_3x3x1``, ``conv_3x1x3``,
            ``conv_1x3x3``, ``transformer``).
        channels: channels of the op (input == output).
        spatial_size: spatial size ``(H, W, D)`` of the op's input and output.
        transformer: keyword arguments of :meth:`TransformerOp3D.estimate_saved_elements` (``grid``, ``num_layers``,
            ``mlp_ratio``) for the ``transformer`` op.
    """
    vol = _volume(spatial_size) * channels
    if name == "skip_connect":
        return 0.0  # identity: nothing saved
    if name == "conv_3x3x3":
        return 2.0 * vol  # relu output (read by the conv) + conv output (read by the norm)
    if name in ("conv_3x3x1", "conv_3x1x3", "conv_1x3x3"):
        return 3.0 * vol  # relu output + two conv outputs
    if name == "transformer":
        return TransformerOp3D.estimate_saved_elements(channels, spatial_size, **(transformer or {}))
    raise ValueError(f"unknown op name {name!r}: no memory model for it.")


def preprocess_saved_elements(rate: int, c_in: int, c_out: int, out_size: Sequence[int]) -> float:
    """
    Float elements the connection block in front of a cell op keeps, per batch item.

    Args:
        rate: ``-1`` 2x downsample, ``1`` 2x upsample, ``0`` same resolution.
        c_in: input channels.
        c_out: output channels.
        out_size: spatial size of the block output.
    """
    vol = _volume(out_size)
    if rate == -1:  # relu at the input resolution (8x), then concatenated strided convs -> norm
        return (8.0 * c_in + c_out) * vol
    if rate == 1:  # upsample -> relu (saved at output resolution) -> 1x1 conv -> norm
        return (c_in + c_out) * vol
    if c_in == c_out:
        return 0.0
    return (c_in + c_out) * vol  # align channels: relu -> 1x1 conv -> norm


def stem_saved_elements(
    channels: Sequence[int],
    patch_size: Sequence[int],
    num_depths: int,
    num_classes: int,
    in_channels: int = 1,
    input_nodes: Sequence[int] | None = None,
    output_nodes: Sequence[int] | None = None,
) -> float:
    """
    Float elements kept by DiNTS' input stems, output stems, head and loss, per batch item (``use_downsample=True``).

    Args:
        channels: ``filter_nums`` of the network (``num_depths + 1`` values).
        patch_size: spatial size of the network input.
        num_depths: number of resolutions of the search space.
        num_classes: output channels.
        in_channels: input channels.
        input_nodes: ``node_a[0]`` of a decoded architecture: inactive input stems are pruned by ``DASTNet``.
        output_nodes: ``node_a[-1]``: output stems below the deepest active output are never run.
    """
    full = _volume(patch_size)
    total = 0.0
    deepest = num_depths - 1 if output_nodes is None else max(d for d in range(num_depths) if output_nodes[d])
    for d in range(num_depths):
        v_d = full / 8.0**d  # stem input resolution (the image resized by 1 / 2**d)
        if input_nodes is None or input_nodes[d]:
            total += in_channels * v_d if d > 0 else in_channels * full  # conv input (the resized image)
            total += 2.0 * channels[d] * v_d  # norm input + relu output
            total += channels[d + 1] * v_d / 8.0  # strided conv -> norm input
        if d > deepest:
            continue
        # output stem at this depth: relu (input res) + conv output, then upsample (saves nothing); the add of the
        # deeper output stem into this one's input keeps nothing for backward
        total += (channels[d + 1] + channels[d]) * v_d / 8.0
    # final head at full resolution: relu output, conv output, norm output (read by the 1x1 conv)
    total += 3.0 * channels[0] * full
    # softmax, log-softmax and one-hot target of Dice + CE (measured 3 * classes - 1 without background)
    total += 3.0 * num_classes * full
    return total


def path_cost_table(
    channels: Sequence[int],
    patch_size: Sequence[int],
    num_depths: int,
    ops: Sequence[str],
    use_downsample: bool = True,
    transformer: dict[str, Any] | None = None,
) -> torch.Tensor:
    """
    Saved elements of every (path, op) choice of one block, per batch item, connection block included.

    Paths are numbered as in MONAI's ``TopologyConstruction`` (``3 * num_depths - 2`` per block).

    Returns:
        float64 tensor of shape ``(paths, len(ops))``.
    """
    paths = 3 * num_depths - 2
    arch_code2in = [(i + 1) // 3 - 1 + (i + 1) % 3 for i in range(paths)]
    arch_code2ops = ([-1, 0, 1] * num_depths)[1:-1]
    arch_code2out = ([d for d in range(num_depths) for _ in range(3)])[1:-1]
    shift = int(use_downsample)
    table = torch.zeros(paths, len(ops), dtype=torch.float64)
    for p in range(paths):
        d_out = arch_code2out[p]
        size = [s / 2 ** (d_out + shift) for s in patch_size]
        c_in, c_out = channels[arch_code2in[p] + shift], channels[d_out + shift]
        pre = preprocess_saved_elements(arch_code2ops[p], c_in, c_out, size)
        for o, name in enumerate(ops):
            table[p, o] = pre + op_saved_elements(name, c_out, size, transformer)
    return table


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """
    Bytes of the tensors autograd still keeps for backward once ``fn()`` has returned (parameters excluded).

    Only tensors alive while ``fn``'s result is held are counted (branches whose graph was already freed are not), and
    tensors are deduplicated by storage, so a tensor saved by two consumers counts once. Use it to check the
    per-block counts of this module.

    Args:
        fn: a callable running the forward pass whose saved tensors are counted.
    """
    saved: list[weakref.ref] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        is_param = isinstance(t, torch.nn.Parameter) or (t.requires_grad and t.is_leaf)
        d = t.detach()
        if not is_param:
            saved.append(weakref.ref(d))
        return d

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    storages: dict[int, int] = {}
    for ref in saved:
        d = ref()
        if d is not None:
            st = d.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
    del out
    return sum(storages.values())
