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
"""The searched DAST network: the ``network_def`` of the retraining bundle."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from monai.networks.nets import DiNTS
from monai.networks.nets.dints import StemTS
from torch import nn

from dast_components.errors import InputError
from dast_components.networks.arch_io import ArchCode, load_arch
from dast_components.networks.cells import resolve_ops
from dast_components.networks.search_space import DASTInstance

__all__ = ["DASTNet"]


class _ZeroStem(nn.Module):
    """Stand-in for the input stem of an inactive node: zeros of the stem's output shape, no parameters, no compute."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        self.channels = channels
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, spatial = x.shape[0], x.shape[2:]
        return x.new_zeros([b, self.channels] + [s // self.factor for s in spatial])


class DASTNet(DiNTS):
    """
    A searched architecture as a trainable segmentation network (MONAI ``DiNTS`` stems around a ``DASTInstance``).

    Input ``(B, in_channels, H, W, D)`` with each spatial size a multiple of :attr:`stride`; output
    ``(B, num_classes, H, W, D)`` logits. TorchScript-able.

    Args:
        arch: architecture file (``models/arch_code.json`` or a MONAI DiNTS ``.pt``) or an ``ArchCode``.
        in_channels: image channels.
        num_classes: output classes.
        channel_mul: overrides the channel multiplier stored in the architecture.
        ops: the op pool the caller expects; an architecture of another pool is rejected.
        grid: the transformer token grid the caller expects; an architecture with another grid is rejected.
        dropout: transformer dropout.
        act_name: activation.
        norm_name: normalisation.

    Example::

        net = DASTNet("bundles/dast_kits19_seg/models/arch_code.json", in_channels=1, num_classes=3)
    """

    def __init__(
        self,
        arch: str | os.PathLike | ArchCode,
        in_channels: int = 1,
        num_classes: int = 3,
        channel_mul: float | None = None,
        ops: str | Sequence[str] | None = None,
        grid: int | None = None,
        dropout: float = 0.0,
        act_name: tuple | str = "RELU",
        norm_name: tuple | str = ("INSTANCE", {"affine": True}),
    ) -> None:
        if isinstance(arch, ArchCode):
            code = arch
            if ops is not None or grid is not None:  # same checks as for a file
                if ops is not None and resolve_ops(ops) != code.ops:
                    raise InputError(f"architecture uses op pool {list(code.ops)}, config asks for {ops!r}.")
                if grid is not None and "transformer" in code.ops and int(grid) != code.grid:
                    raise InputError(f"architecture uses transformer grid {code.grid}, config asks for {grid}.")
        else:
            code = load_arch(arch, ops=ops, grid=grid)
        space = DASTInstance(code, channel_mul=channel_mul, dropout=dropout, act_name=act_name, norm_name=norm_name)
        super().__init__(
            dints_space=space,
            in_channels=in_channels,
            num_classes=num_classes,
            act_name=act_name,
            norm_name=norm_name,
            spatial_dims=3,
            use_downsample=code.use_downsample,
            node_a=torch.tensor(code.node_a, dtype=torch.int64),
        )
        self.arch = code
        self._prune_unused_stems(code)
        self.stride: int = 2 ** (code.num_depths + int(code.use_downsample))

    def _prune_unused_stems(self, code: ArchCode) -> None:
        """
        Drop the stems the searched topology never reads: DiNTS runs every input stem and zeroes the outputs of
        inactive nodes, and builds output stems below the deepest active output. Their parameters would get no
        gradient (DDP then needs ``find_unused_parameters``) and the input stems cost compute for nothing.
        """
        shift = int(code.use_downsample)
        for d in range(code.num_depths):
            if not code.node_a[0][d]:
                channels = self.filter_nums[d + shift]
                self.stem_down[str(d)] = StemTS(_ZeroStem(channels, 2 ** (d + shift)))
        deepest = max(d for d in range(code.num_depths) if code.node_a[-1][d])
        for d in range(deepest + 1, code.num_depths):
            self.stem_up[str(d)] = StemTS(nn.Identity())
