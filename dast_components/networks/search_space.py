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
The DAST search space: MONAI's DiNTS topology search with a selectable op pool (skip / conv / transformer).

Reference: Yang et al., "DAST: Differentiable Architecture Search with Transformer for 3D Medical Image
Segmentation", MICCAI 2022; He et al., "DiNTS", CVPR 2021 <https://arxiv.org/abs/2103.15954>.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.networks.nets import TopologyInstance, TopologySearch

from dast_components.networks.arch_io import ArchCode
from dast_components.networks.cells import make_cell, resolve_ops
from dast_components.networks.costs import filter_nums, path_cost_table

__all__ = ["DASTSearchSpace", "DASTInstance", "decode_logits", "random_arch"]


def _topology_tables(num_depths: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Child models (every non-empty path activation, MONAI's order) and the node sets they read and write."""
    paths = 3 * num_depths - 2
    code2in = [(i + 1) // 3 - 1 + (i + 1) % 3 for i in range(paths)]
    code2out = ([d for d in range(num_depths) for _ in range(3)])[1:-1]
    # MONAI's _dfs order: binary counting with path 0 as the most significant bit, all-zero dropped
    idx = np.arange(1, 2**paths)
    children = (idx[:, None] >> np.arange(paths - 1, -1, -1)[None, :]) & 1
    node_bits = 2 ** np.arange(num_depths)
    reads = np.zeros((len(children), num_depths), dtype=int)
    writes = np.zeros((len(children), num_depths), dtype=int)
    for p in range(paths):
        reads[:, code2in[p]] |= children[:, p]
        writes[:, code2out[p]] |= children[:, p]
    return children, reads @ node_bits, writes @ node_bits


def decode_logits(
    log_alpha_a: torch.Tensor, log_alpha_c: torch.Tensor, num_depths: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """
    The most probable topology-consistent architecture of the path and op logits.

    Same objective as MONAI's ``TopologySearch.decode`` (shortest path over child models with edge weight
    ``-log(p + 1e-5) + 0.001``, where a block's child must read exactly the nodes the previous block wrote), solved by
    dynamic programming over blocks instead of Dijkstra on a dense graph: milliseconds instead of ~40 s for the
    paper's 12 x 4 grid on a CPU.

    Args:
        log_alpha_a: path logits ``(num_blocks, paths)``.
        log_alpha_c: op logits ``(num_blocks, paths, ops)``.
        num_depths: resolutions of the grid.

    Returns:
        ``node_a`` ``(num_blocks + 1, num_depths)``, ``arch_code_a`` ``(num_blocks, paths)``, ``arch_code_c``
        ``(num_blocks, paths)``, as integer numpy arrays.
    """
    children, reads, writes = _topology_tables(num_depths)
    p = torch.sigmoid(log_alpha_a.detach().double().cpu()).numpy()
    norm = 1.0 - np.prod(1.0 - p, axis=-1)
    num_blocks = p.shape[0]
    probs = np.stack(
        [np.prod(children * p[b] + (1 - children) * (1 - p[b]), axis=-1) / norm[b] for b in range(num_blocks)]
    )
    weights = -np.log(probs + 1e-5) + 0.001
    cost = weights[0].copy()
    back = np.zeros((num_blocks, len(children)), dtype=int)
    for b in range(1, num_blocks):
        best_cost = np.full(2**num_depths, np.inf)
        best_idx = np.zeros(2**num_depths, dtype=int)
        for i in np.argsort(cost, kind="stable")[::-1]:  # last write wins: the cheapest child per written node set
            best_cost[writes[i]], best_idx[writes[i]] = cost[i], i
        cost = best_cost[reads] + weights[b]
        back[b] = best_idx[reads]
    arch_code_a = np.zeros((num_blocks, children.shape[1]), dtype=int)
    node_a = np.zeros((num_blocks + 1, num_depths), dtype=int)
    child = int(np.argmin(cost))
    if not np.isfinite(cost[child]):
        raise RuntimeError("no topology-consistent architecture exists for these logits.")
    bits = 2 ** np.arange(num_depths)
    for b in range(num_blocks - 1, -1, -1):
        arch_code_a[b] = children[child]
        node_a[b + 1] = (writes[child] & bits) > 0
        if b == 0:
            node_a[0] = (reads[child] & bits) > 0
        child = back[b, child]
    arch_code_c = log_alpha_c.detach().argmax(-1).cpu().numpy().astype(int)
    return node_a, arch_code_a, arch_code_c


@contextlib.contextmanager
def _quiet():
    """MONAI's ``TopologyConstruction`` prints a timestamped line from its constructor; keep stdout clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class DASTSearchSpace(TopologySearch):
    """
    Multi-path topology and cell-op search space; pass it to ``monai.networks.nets.DiNTS`` as ``dints_space``.

    Args:
        channel_mul: channel multiplier; depth ``d`` has ``int(32 * 2**d * channel_mul)`` channels.
        num_blocks: levels of the grid (paper: 12).
        num_depths: resolutions of the grid (paper: 4).
        ops: op pool, a preset name (``"dast"`` = skip, 3x3x3 conv, transformer; ``"dints"`` = MONAI's five ops)
            or a list of op names.
        grid: transformer token grid per axis (``grid**3`` tokens; paper: 8).
        num_heads: transformer heads (the largest divisor of the channels not above it is used).
        num_layers: encoder and decoder layers of each transformer.
        mlp_ratio: FFN width / channels.
        dropout: transformer dropout (off in eval).
        act_name: activation.
        norm_name: normalisation.
        use_downsample: the DiNTS stems halve the input first.

    Example::

        from monai.networks.nets import DiNTS
        space = DASTSearchSpace(channel_mul=0.25, num_blocks=3, num_depths=3, grid=2)
        net = DiNTS(dints_space=space, in_channels=1, num_classes=3)
        net(torch.rand(1, 1, 32, 32, 32)).shape  # (1, 3, 32, 32, 32)
    """

    def __init__(
        self,
        channel_mul: float = 1.0,
        num_blocks: int = 12,
        num_depths: int = 4,
        ops: str | Sequence[str] = "dast",
        grid: int = 8,
        num_heads: int = 8,
        num_layers: int = 1,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        act_name: tuple | str = "RELU",
        norm_name: tuple | str = ("INSTANCE", {"affine": True}),
        use_downsample: bool = True,
    ) -> None:
        if num_blocks < 1 or num_depths < 1:
            raise ValueError(f"num_blocks and num_depths must be >= 1, got {num_blocks} and {num_depths}.")
        if min(filter_nums(channel_mul, num_depths)) < 1:
            raise ValueError(f"channel_mul={channel_mul} leaves a resolution with no channels.")
        self.op_names = resolve_ops(ops)
        self.transformer_settings = {
            "grid": grid, "num_heads": num_heads, "num_layers": num_layers, "mlp_ratio": mlp_ratio, "dropout": dropout
        }
        cell = make_cell(self.op_names, **self.transformer_settings)
        with _quiet():
            super().__init__(
                channel_mul=channel_mul,
                cell=cell,
                num_blocks=num_blocks,
                num_depths=num_depths,
                spatial_dims=3,
                act_name=act_name,
                norm_name=norm_name,
                use_downsample=use_downsample,
            )
        self.channel_mul = channel_mul
        self.node2in, self.node2out = self._node_maps()

    @property
    def stride(self) -> int:
        """Patch sizes must be multiples of this."""
        return 2 ** (self.num_depths + int(self.use_downsample))

    def _node_maps(self) -> tuple[list[list[int]], list[list[int]]]:
        # MONAI builds these lazily inside get_topology_entropy; build them once here
        node2in: list[list[int]] = [[] for _ in range(len(self.node_act_list))]
        node2out: list[list[int]] = [[] for _ in range(len(self.node_act_list))]
        for child_idx, child in enumerate(self.child_list):
            node_in, node_out = np.zeros(self.num_depths), np.zeros(self.num_depths)
            for p in range(len(self.arch_code2out)):
                node_out[self.arch_code2out[p]] += child[p]
                node_in[self.arch_code2in[p]] += child[p]
            node2in[self.node_act_dict[str((node_out >= 1).astype(int))]].append(child_idx)
            node2out[self.node_act_dict[str((node_in >= 1).astype(int))]].append(child_idx)
        return node2in, node2out

    def arch_parameters(self) -> list[torch.nn.Parameter]:
        """Path logits ``log_alpha_a`` ``(num_blocks, paths)``, op logits ``log_alpha_c`` ``(blocks, paths, ops)``."""
        return [self.log_alpha_a, self.log_alpha_c]

    def get_prob_a(self, child: bool = False):
        """Same as MONAI's, but follows the device of the logits instead of a stored ``device`` string."""
        self.device = self.log_alpha_a.device
        return super().get_prob_a(child=child)

    def path_costs(self, patch_size: Sequence[int]) -> torch.Tensor:
        """
        Saved elements per batch item of every (block, path, op) choice at a training patch size.

        Returns:
            float32 tensor ``(num_blocks, paths, ops)`` on the device of the logits.
        """
        table = path_cost_table(
            self.filter_nums, patch_size, self.num_depths, self.op_names, self.use_downsample,
            {k: self.transformer_settings[k] for k in ("grid", "num_heads", "num_layers", "mlp_ratio")},
        )
        return table.to(torch.float32).expand(self.num_blocks, -1, -1).to(self.log_alpha_c.device)

    def decode(self):
        """
        MONAI's ``decode()`` contract (``node_a, arch_code_a, arch_code_c, arch_code_a_max``) computed with
        :func:`decode_logits`. ``arch_code_a_max`` is not topology-consistent: never build a network from it.
        """
        node_a, arch_code_a, arch_code_c = decode_logits(self.log_alpha_a, self.log_alpha_c, self.num_depths)
        probs, _ = self.get_prob_a(child=True)
        arch_code_a_max = self.child_list[torch.argmax(probs, -1).cpu().numpy()]
        return node_a, arch_code_a, arch_code_c, arch_code_a_max

    def decode_arch(self) -> ArchCode:
        """The most probable topology-consistent architecture as an :class:`ArchCode`."""
        node_a, arch_code_a, arch_code_c = decode_logits(self.log_alpha_a, self.log_alpha_c, self.num_depths)
        s = self.transformer_settings
        return ArchCode(
            ops=self.op_names,
            node_a=node_a,
            arch_code_a=arch_code_a,
            arch_code_c=arch_code_c,
            num_blocks=self.num_blocks,
            num_depths=self.num_depths,
            channel_mul=self.channel_mul,
            use_downsample=self.use_downsample,
            grid=s["grid"],
            num_heads=s["num_heads"],
            num_layers=s["num_layers"],
            mlp_ratio=s["mlp_ratio"],
        )


class DASTInstance(TopologyInstance):
    """
    The searched network's cells (MONAI ``TopologyInstance`` with the architecture's op pool); TorchScript-able.

    Args:
        arch: the decoded architecture.
        channel_mul: overrides the architecture's channel multiplier if given.
        dropout: transformer dropout.
        act_name: activation.
        norm_name: normalisation.
    """

    def __init__(
        self,
        arch: ArchCode,
        channel_mul: float | None = None,
        dropout: float = 0.0,
        act_name: tuple | str = "RELU",
        norm_name: tuple | str = ("INSTANCE", {"affine": True}),
    ) -> None:
        cell = make_cell(
            arch.ops, grid=arch.grid, num_heads=arch.num_heads, num_layers=arch.num_layers,
            mlp_ratio=arch.mlp_ratio, dropout=dropout,
        )
        with _quiet():
            super().__init__(
                arch_code=arch.monai_arch_code(),
                channel_mul=arch.channel_mul if channel_mul is None else channel_mul,
                cell=cell,
                num_blocks=arch.num_blocks,
                num_depths=arch.num_depths,
                spatial_dims=3,
                act_name=act_name,
                norm_name=norm_name,
                use_downsample=arch.use_downsample,
            )


def random_arch(
    num_blocks: int = 12,
    num_depths: int = 4,
    ops: str | Sequence[str] = "dast",
    seed: int = 0,
    channel_mul: float = 1.0,
    **transformer: Any,
) -> ArchCode:
    """
    A random topology-consistent architecture: random logits decoded like a search result (for tests and benchmarks).

    Args:
        num_blocks, num_depths, ops: the search grid and op pool.
        seed: random seed of the logits.
        channel_mul: recorded channel multiplier.
        transformer: transformer settings (``grid``, ``num_heads``, ``num_layers``, ``mlp_ratio``).
    """
    names = resolve_ops(ops)
    paths = 3 * num_depths - 2
    gen = torch.Generator().manual_seed(seed)
    log_alpha_a = torch.randn(num_blocks, paths, generator=gen) * 2.0
    log_alpha_c = torch.randn(num_blocks, paths, len(names), generator=gen) * 2.0
    node_a, arch_code_a, arch_code_c = decode_logits(log_alpha_a, log_alpha_c, num_depths)
    return ArchCode(
        ops=names,
        node_a=node_a,
        arch_code_a=arch_code_a,
        arch_code_c=arch_code_c,
        num_blocks=num_blocks,
        num_depths=num_depths,
        channel_mul=channel_mul,
        provenance={"source": "random_arch", "seed": seed},
        **transformer,
    )
