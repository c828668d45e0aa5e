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
Cell ops, op pools and the cell class of the DAST search space.

MONAI's ``TopologyConstruction`` counts ops from the class attribute ``cell.OPS3D`` while ``monai...dints.Cell``
rebuilds a fixed five-op dict in ``__init__`` (MONAI 1.6.1), so a custom pool needs its own cell class whose
class-level ``OPS3D`` lists the ops in order. :func:`make_cell` creates that class for an op pool; the order of
``OPS3D`` is the meaning of ``arch_code_c`` (docs/design.md, "MONAI's DiNTS classes").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from monai.networks.blocks.dints_block import (
    ActiConvNormBlock,
    FactorizedIncreaseBlock,
    FactorizedReduceBlock,
    P3DActiConvNormBlock,
)
from monai.networks.nets.dints import CellInterface
from torch import nn

from dast_components.errors import InputError
from dast_components.networks.costs import op_saved_elements, preprocess_saved_elements
from dast_components.networks.transformer import TransformerOp3D

__all__ = ["OP_POOLS", "resolve_ops", "build_op", "MixedOp", "SearchCell", "make_cell"]

#: Op pools by name. ``dast`` is the paper's pool; ``dints`` is MONAI's DiNTS pool, for the baseline.
OP_POOLS: dict[str, tuple[str, ...]] = {
    "dast": ("skip_connect", "conv_3x3x3", "transformer"),
    "dints": ("skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3", "conv_1x3x3"),
}
_KNOWN_OPS = ("skip_connect", "conv_3x3x3", "conv_3x3x1", "conv_3x1x3", "conv_1x3x3", "transformer")
_P3D_MODES = {"conv_3x3x1": 0, "conv_3x1x3": 1, "conv_1x3x3": 2}
# ram_cost reference size (MONAI units are per output element; the real estimate uses the patch size)
_REF_SIZE = (16, 16, 16)


def resolve_ops(ops: str | Sequence[str]) -> tuple[str, ...]:
    """
    Op names of a pool given by preset name (``"dast"``, ``"dints"``) or as a list of op names.

    Raises:
        ValueError: unknown preset or op name, or a repeated op.
    """
    if isinstance(ops, str):
        if ops not in OP_POOLS:
            raise InputError(f"unknown op pool {ops!r}; expected one of {sorted(OP_POOLS)} or a list of op names.")
        return OP_POOLS[ops]
    names = tuple(str(o) for o in ops)
    unknown = [o for o in names if o not in _KNOWN_OPS]
    if unknown or not names:
        raise InputError(f"unknown op name(s) {unknown or names}; known ops are {list(_KNOWN_OPS)}.")
    if len(set(names)) != len(names):
        raise InputError(f"op pool {list(names)} repeats an op.")
    return names


class _Identity(nn.Identity):
    """Skip connection; keeps nothing for backward."""

    def __init__(self) -> None:
        super().__init__()
        self.ram_cost = 0.0


def build_op(
    name: str,
    channels: int,
    act_name: tuple | str = "RELU",
    norm_name: tuple | str = ("INSTANCE", {"affine": True}),
    transformer: dict[str, Any] | None = None,
) -> nn.Module:
    """
    One cell op with ``channels`` input and output channels; ``.ram_cost`` is set in MONAI's units.

    Args:
        name: op name (see :data:`OP_POOLS`).
        channels: input and output channels.
        act_name: activation (MONAI name or tuple).
        norm_name: normalisation (MONAI name or tuple).
        transformer: keyword arguments of :class:`TransformerOp3D` (``grid``, ``num_heads``, ``num_layers``,
            ``mlp_ratio``, ``dropout``).
    """
    if name == "skip_connect":
        return _Identity()
    if name == "transformer":
        return TransformerOp3D(channels, norm_name=norm_name, **(transformer or {}))
    if name == "conv_3x3x3":
        op: nn.Module = ActiConvNormBlock(channels, channels, 3, padding=1, act_name=act_name, norm_name=norm_name)
    elif name in _P3D_MODES:
        op = P3DActiConvNormBlock(
            channels, channels, 3, padding=1, mode=_P3D_MODES[name], act_name=act_name, norm_name=norm_name
        )
    else:
        raise InputError(f"unknown op name {name!r}; known ops are {list(_KNOWN_OPS)}.")
    op.ram_cost = op_saved_elements(name, channels, _REF_SIZE) / (channels * 16**3)
    return op


def _build_preprocess(
    rate: int, c_prev: int, c: int, act_name: tuple | str, norm_name: tuple | str
) -> nn.Module:
    if rate == -1:
        block: nn.Module = FactorizedReduceBlock(c_prev, c, 3, act_name, norm_name)
    elif rate == 1:
        block = FactorizedIncreaseBlock(c_prev, c, 3, act_name, norm_name)
    elif c_prev == c:
        return _Identity()
    else:
        block = ActiConvNormBlock(c_prev, c, 1, 0, 3, act_name, norm_name)
    block.ram_cost = preprocess_saved_elements(rate, c_prev, c, _REF_SIZE) / (c * 16**3)
    return block


class MixedOp(nn.Module):
    """
    Weighted sum of the ops of one path (search), or the single selected op (retraining).

    Args:
        channels: channels of every op.
        ops: op names, in pool order.
        arch_code_c: one-hot (or binary) vector over ``ops``; only ops with a non-zero entry are built.
            ``None`` builds all ops (search).
        act_name, norm_name, transformer: see :func:`build_op`.
    """

    def __init__(
        self,
        channels: int,
        ops: Sequence[str],
        arch_code_c: Sequence[float] | torch.Tensor | None = None,
        act_name: tuple | str = "RELU",
        norm_name: tuple | str = ("INSTANCE", {"affine": True}),
        transformer: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        code = [1] * len(ops) if arch_code_c is None else [int(c) for c in arch_code_c]
        if len(code) != len(ops):
            raise ValueError(f"arch_code_c has {len(code)} entries for an op pool of {len(ops)} ops {list(ops)}.")
        self.op_names = [name for c, name in zip(code, ops) if c > 0]
        if not self.op_names:
            raise ValueError(f"arch_code_c {code} selects no op of {list(ops)}.")
        self.ops = nn.ModuleList([build_op(n, channels, act_name, norm_name, transformer) for n in self.op_names])

    def forward(self, x: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, H, W, D)``.
            weight: op weights (softmax of the op logits), one per built op; ``None`` sums unweighted.

        Returns:
            ``(B, C, H, W, D)``.
        """
        out: Optional[torch.Tensor] = None
        for idx, op in enumerate(self.ops):
            y = op(x)
            if weight is not None:
                y = y * weight[idx].to(y.dtype)
            out = y if out is None else out + y
        if out is None:  # no op built; rejected in __init__, kept for TorchScript's Optional refinement
            return x
        return out


class SearchCell(CellInterface):
    """
    A path of the search grid: a connection block (down/up-sample or channel alignment) then a :class:`MixedOp`.

    Use :func:`make_cell` to get the subclass for an op pool; MONAI's ``TopologyConstruction`` calls it as
    ``cell(c_prev, c, rate, arch_code_c, spatial_dims, act_name, norm_name)``.

    Args:
        c_prev: input channels.
        c: output channels.
        rate: ``-1`` downsample, ``1`` upsample, ``0`` same resolution.
        arch_code_c: op code of this path (see :class:`MixedOp`).
        spatial_dims: must be 3.
        act_name: activation.
        norm_name: normalisation.
    """

    DIRECTIONS = 3
    OPS3D: dict[str, Any] = {}
    OPS2D: dict[str, Any] = {}
    transformer_kwargs: dict[str, Any] = {}

    def __init__(
        self,
        c_prev: int,
        c: int,
        rate: int,
        arch_code_c: Sequence[float] | torch.Tensor | None = None,
        spatial_dims: int = 3,
        act_name: tuple | str = "RELU",
        norm_name: tuple | str = ("INSTANCE", {"affine": True}),
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"DAST cells are 3D only, got spatial_dims={spatial_dims}.")
        if not self.OPS3D:
            raise TypeError("SearchCell has no op pool; create a cell class with make_cell(ops).")
        self.preprocess = _build_preprocess(rate, c_prev, c, act_name, norm_name)
        self.op = MixedOp(c, list(self.OPS3D), arch_code_c, act_name, norm_name, self.transformer_kwargs)

    def forward(self, x: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            x: ``(B, c_prev, H, W, D)`` at the input resolution of the path.
            weight: op weights or ``None``.

        Returns:
            ``(B, c, H', W', D')`` at the output resolution of the path.
        """
        return self.op(self.preprocess(x), weight)


def make_cell(ops: str | Sequence[str] = "dast", **transformer_kwargs: Any) -> type[SearchCell]:
    """
    The cell class of an op pool, for MONAI's ``TopologySearch``/``TopologyInstance`` ``cell`` argument.

    Args:
        ops: pool preset name or op names in order.
        transformer_kwargs: settings of the transformer op (``grid``, ``num_heads``, ``num_layers``, ``mlp_ratio``,
            ``dropout``).

    Example::

        cell = make_cell("dast", grid=4)
        list(cell.OPS3D)  # ['skip_connect', 'conv_3x3x3', 'transformer']
    """
    names = resolve_ops(ops)
    pool = {name: name for name in names}
    return type(
        "SearchCell_" + "_".join(n.replace("conv_", "c") for n in names),
        (SearchCell,),
        {"OPS3D": pool, "transformer_kwargs": dict(transformer_kwargs), "__module__": __name__},
    )
