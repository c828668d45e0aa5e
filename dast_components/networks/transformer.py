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
"""DAST transformer cell operation: projector, encoder-decoder transformer, segmentation attention, reverse projector.

Paper: Yang et al., "DAST: Differentiable Architecture Search with Transformer for 3D Medical Image Segmentation",
MICCAI 2022 (https://arxiv.org/abs/2208.03464), section "Transformer" and Eq. 1-3. Where the paper leaves a choice
open (tokens, heads, segmentation attention, reverse projector), the reasons are in docs/design.md, "Transformer op".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import List, Tuple

import torch
import torch.nn.functional as F
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from dast_components.errors import IncompatibleWeightsError

__all__ = [
    "MultiHeadAttention",
    "FeedForward",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerOp3D",
    "largest_divisor_at_most",
    "attention_heads",
    "MIN_HEAD_DIM",
    "adaptive_average_pool3d",
    "trilinear_resize3d",
]


def largest_divisor_at_most(value: int, limit: int) -> int:
    """Return the largest divisor of ``value`` that is not greater than ``limit``.

    Used to pick the number of attention heads: the token dimension ``C`` must split evenly into heads, and the
    paper's 8 heads do not divide every channel count a search space produces (e.g. ``C = 12`` gives 6 heads).

    Args:
        value: the number to divide, positive.
        limit: the upper bound, positive.

    Returns:
        The largest ``d <= limit`` with ``value % d == 0`` (at least 1).

    Raises:
        ValueError: when ``value`` or ``limit`` is not positive.
    """
    if value < 1 or limit < 1:
        raise ValueError(f"value and limit must be positive integers, got value={value}, limit={limit}.")
    for candidate in range(min(value, limit), 0, -1):
        if value % candidate == 0:
            return candidate
    return 1


MIN_HEAD_DIM = 64
"""Smallest head width :func:`attention_heads` allows (see there)."""


def attention_heads(channels: int, num_heads: int = 8, min_head_dim: int = MIN_HEAD_DIM) -> int:
    """Number of attention heads of a ``channels``-wide transformer op.

    The paper asks for 8 heads; a cell of the search space can be as narrow as 32 channels (``channel_mul`` 0.5 at
    the highest resolution), where 8 heads are 4 channels wide. Dot products in 4 dimensions are a weak similarity,
    and the CPU fused attention kernel is slow on narrow heads: forward+backward of the 512 x 4096 segmentation
    attention (batch 2, torch 2.13, one thread) at 64 channels takes 0.32 s with 8 heads of 8, 0.098 s with 4 of 16
    and 0.073 s with 2 of 32; at 256 channels 0.385 s with 16 of 16 and 0.29 s with 8 of 32. So heads are the
    largest divisor of ``channels`` that is at most ``num_heads`` *and* keeps every head at least ``min_head_dim``
    wide (at least one head). With the default 64, the head width of ViT-B and UNETR (768 channels, 12 heads), the
    512 x 4096 attention takes 0.064 s at 64 channels (one head) and 0.245 s at 256 (4 heads): up to 64 channels one
    head, 128 -> 2, 256 -> 4, 512 and wider -> the paper's 8. The heads change no parameter shape, only how the
    ``C`` channels of ``q``, ``k`` and ``v`` are split.

    Args:
        channels: token dimension ``C``, positive.
        num_heads: requested heads (the paper's 8). Defaults to 8.
        min_head_dim: smallest head width. Defaults to :data:`MIN_HEAD_DIM` (64).

    Returns:
        The number of heads, a divisor of ``channels``.
    """
    if min_head_dim < 1:
        raise ValueError(f"min_head_dim must be positive, got {min_head_dim}.")
    return largest_divisor_at_most(channels, max(1, min(num_heads, channels // min_head_dim)))


class MultiHeadAttention(nn.Module):
    """Multi-head attention with a fused path and an explicit path that can return the attention weights.

    The fused path calls :func:`torch.nn.functional.scaled_dot_product_attention`, so no ``(B, heads, L_q, L_k)``
    weight matrix is kept for backward on devices with a fused kernel. The explicit path computes
    ``softmax(Q K^T / sqrt(d)) V`` itself and is what :meth:`forward_with_weights` uses; both paths give the same
    output.
    Attention dropout is applied only in training mode (unlike MONAI's ``SABlock``, which also drops in eval).
    Weights are returned on request and never stored on the module.

    Args:
        dim: token dimension ``C``; must be divisible by ``num_heads``.
        num_heads: number of attention heads. Defaults to 8.
        dropout: dropout probability on the attention weights (training only). Defaults to 0.0.
        qkv_bias: whether the query and value projections have a bias (the key projection never has one: softmax
            cancels it, so it would get no gradient). Defaults to True.
        fused: whether :meth:`forward` uses the fused kernel (True) or the explicit path (False). Defaults to True.

    Inputs ``query (B, L_q, C)``, ``key (B, L_k, C)``, ``value (B, L_k, C)``; output ``(B, L_q, C)``.

    Examples::

        >>> import torch
        >>> attn = MultiHeadAttention(dim=16, num_heads=4)
        >>> q, kv = torch.rand(2, 8, 16), torch.rand(2, 27, 16)
        >>> attn(q, kv, kv).shape
        torch.Size([2, 8, 16])
        >>> attn.forward_with_weights(q, kv, kv)[1].shape
        torch.Size([2, 4, 8, 27])
    """

    # TorchScript constants. Declared here rather than as ``Final[...]`` hints: with ``from __future__ import
    # annotations`` the hints are strings, which torch.jit does not resolve for module attributes.
    __constants__ = ["num_heads", "head_dim", "scale", "dropout", "fused"]

    def __init__(
        self, dim: int, num_heads: int = 8, dropout: float = 0.0, qkv_bias: bool = True, fused: bool = True
    ) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1 or dim % num_heads != 0:
            raise ValueError(f"dim must be a positive multiple of num_heads, got dim={dim}, num_heads={num_heads}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.dropout = float(dropout)
        self.fused = bool(fused)
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        # no key bias: it adds q . b_k to every logit of a query row, which softmax cancels (zero gradient)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> (B, heads, L, C / heads)."""
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, L, C / heads) -> (B, L, C)."""
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.num_heads * self.head_dim)

    def _project(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q = self._split_heads(self.q_proj(query))
        k = self._split_heads(self.k_proj(key))
        v = self._split_heads(self.v_proj(value))
        return q, k, v

    def _explicit_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(softmax(q k^T / sqrt(d)) v, weights)``; dropout (training only) acts on the product, not on
        the returned weights, so each row of the returned weights sums to 1."""
        weights = torch.softmax(torch.matmul(q * self.scale, k.transpose(-2, -1)), dim=-1)
        dropped = F.dropout(weights, p=self.dropout, training=self.training) if self.dropout > 0.0 else weights
        return torch.matmul(dropped, v), weights

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """
        Args:
            query: ``(B, L_q, C)``.
            key: ``(B, L_k, C)``.
            value: ``(B, L_k, C)``.

        Returns:
            ``(B, L_q, C)``.
        """
        q, k, v = self._project(query, key, value)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        else:
            out, _ = self._explicit_attention(q, k, v)
        return self.out_proj(self._merge_heads(out))

    def attend(self, query: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Attention whose keys and values are both ``inputs``: the same output as ``forward(query, inputs, inputs)``.

        With one head and no attention dropout the key and value projections move to the query side, exactly:
        the logits ``q k^T = q (K W_k^T)^T = (q W_k) K^T``, and, since each softmax row sums to 1,
        ``A (K W_v^T + b_v) = (A K) W_v^T + b_v``. The fused kernel then attends ``q W_k`` (``L_q`` rows) over
        ``inputs`` directly, so backward keeps ``inputs`` once instead of ``inputs``, ``k`` and ``v`` (two
        ``L_k x C`` tensors fewer; the segmentation attention has ``L_k = 4096`` keys and ``L_q = 512``
        queries), and the projections cost ``L_q`` instead of ``2 L_k`` rows. With several heads the folded
        query of each head would be ``C`` wide (``heads`` times the attention work), and with dropout the rows no
        longer sum to 1: both take :meth:`forward`.

        Args:
            query: ``(B, L_q, C)``.
            inputs: ``(B, L_k, C)``, keys and values.

        Returns:
            ``(B, L_q, C)``.
        """
        if self.num_heads != 1 or (self.training and self.dropout > 0.0) or not self.fused:
            return self.forward(query, inputs, inputs)
        q = torch.matmul(self.q_proj(query), self.k_proj.weight).unsqueeze(1)  # (B, 1, L_q, C): q W_k
        kv = inputs.unsqueeze(1)
        # the default scale 1 / sqrt(C) is the head's scale: one head is C wide
        out = F.scaled_dot_product_attention(q, kv, kv).squeeze(1)
        return self.out_proj(self.v_proj(out))

    def forward_with_weights(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Explicit path that also returns the attention weights.

        Args:
            query: ``(B, L_q, C)``.
            key: ``(B, L_k, C)``.
            value: ``(B, L_k, C)``.

        Returns:
            ``(output, weights)``: output ``(B, L_q, C)`` as :meth:`forward` computes it, and the softmax attention
            weights ``(B, heads, L_q, L_k)`` (before dropout; non-negative, each row sums to 1).
        """
        q, k, v = self._project(query, key, value)
        out, weights = self._explicit_attention(q, k, v)
        return self.out_proj(self._merge_heads(out)), weights


class FeedForward(nn.Module):
    """Position-wise feed-forward network ``Linear -> GELU -> Dropout -> Linear -> Dropout``.

    Args:
        dim: token dimension ``C``.
        hidden_dim: width of the hidden layer.
        dropout: dropout probability (training only). Defaults to 0.0.

    Input and output ``(B, L, C)``.
    """

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or hidden_dim < 1:
            raise ValueError(f"dim and hidden_dim must be positive, got dim={dim}, hidden_dim={hidden_dim}.")
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, L, C)``.

        Returns:
            ``(B, L, C)``.
        """
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def _hidden_dim(dim: int, mlp_ratio: float) -> int:
    """Width of the feed-forward hidden layer, at least 1."""
    return max(1, int(round(dim * mlp_ratio)))


class TransformerEncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: ``x + SA(LN(x))``, then ``x + FFN(LN(x))``.

    Args:
        dim: token dimension ``C``.
        num_heads: attention heads; must divide ``dim``.
        mlp_ratio: feed-forward hidden width as a multiple of ``dim``. Defaults to 2.0.
        dropout: dropout probability in attention, residual branches and FFN (training only). Defaults to 0.0.

    Input and output ``(B, L, C)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads=num_heads, dropout=dropout)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, _hidden_dim(dim, mlp_ratio), dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: tokens ``(B, L, C)``.

        Returns:
            ``(B, L, C)``.
        """
        h = self.norm1(x)
        x = x + self.drop1(self.self_attn(h, h, h))
        return x + self.mlp(self.norm2(x))


class TransformerDecoderLayer(nn.Module):
    """Pre-norm transformer decoder layer: self-attention, cross-attention to the encoder memory, FFN; each residual.

    Args:
        dim: token dimension ``C``.
        num_heads: attention heads; must divide ``dim``.
        mlp_ratio: feed-forward hidden width as a multiple of ``dim``. Defaults to 2.0.
        dropout: dropout probability in attention, residual branches and FFN (training only). Defaults to 0.0.

    Inputs ``x (B, L_q, C)`` or ``(1, L_q, C)``, and ``memory (B, L_k, C)``; output ``(B, L_q, C)``. Decoder
    queries that are the same for every batch item (a learned query embedding) can be passed with batch 1: the
    self-attention block then runs once and its result is broadcast to the batch before the cross-attention, which
    gives the same output as passing them expanded at a fraction of the time and of the memory kept for backward
    (with dropout in training the batch items then share one self-attention dropout mask).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads=num_heads, dropout=dropout)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads=num_heads, dropout=dropout)
        self.drop2 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, _hidden_dim(dim, mlp_ratio), dropout=dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: decoder tokens ``(B, L_q, C)``, or ``(1, L_q, C)`` when shared by the batch.
            memory: encoder output ``(B, L_k, C)``.

        Returns:
            ``(B, L_q, C)``.
        """
        if x.shape[0] != 1 and x.shape[0] != memory.shape[0]:
            raise ValueError(
                "TransformerDecoderLayer: x must have batch 1 (shared queries) or the memory's batch "
                + str(memory.shape[0])
                + ", got "
                + str(x.shape[0])
                + "."
            )
        h = self.norm1(x)
        x = x + self.drop1(self.self_attn(h, h, h))
        if x.shape[0] != memory.shape[0]:
            x = x.expand(memory.shape[0], -1, -1)
        x = x + self.drop2(self.cross_attn(self.norm2(x), memory, memory))
        return x + self.mlp(self.norm3(x))


def adaptive_average_pool3d(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Adaptive average pooling of ``(B, C, H, W, D)`` to ``(B, C, *size)`` as three small matrix products.

    Same windows and result as :func:`torch.nn.functional.adaptive_avg_pool3d` (output cell ``i`` of an axis of
    length ``n`` averages input indices ``floor(i n / t) .. ceil((i + 1) n / t) - 1``), so every input voxel reaches
    at least one output cell. Written as products with ``(t, n)`` pooling matrices because the ONNX exporter
    accepts adaptive pooling only when ``t`` divides ``n`` (a 20^3 feature map pooled to 8^3 fails), while matrix
    products export for every size. Backward saves only the three pooling matrices, nothing of input size.

    Args:
        x: ``(B, C, H, W, D)``.
        size: output size ``[t_h, t_w, t_d]``, each ``1 <= t <=`` the input size of its axis.

    Returns:
        ``(B, C, t_h, t_w, t_d)``.
    """
    return _separable_resize3d(
        x,
        size,
        _pool_matrix(x.shape[2], size[0], x),
        _pool_matrix(x.shape[3], size[1], x),
        _pool_matrix(x.shape[4], size[2], x),
    )


def _pool_matrix(length: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """``(out, length)`` averaging matrix of adaptive pooling along one axis, dtype and device of ``like``."""
    idx = torch.arange(out, device=like.device)
    start = torch.div(idx * length, out, rounding_mode="floor")
    end = torch.div((idx + 1) * length + out - 1, out, rounding_mode="floor")
    pos = torch.arange(length, device=like.device)
    inside = (pos.unsqueeze(0) >= start.unsqueeze(1)) & (pos.unsqueeze(0) < end.unsqueeze(1))
    weights = inside.to(like.dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def _linear_matrix(length: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """``(out, length)`` matrix of linear interpolation along one axis (``align_corners=False``, as
    :func:`torch.nn.functional.interpolate` computes it), dtype and device of ``like``."""
    # float64 only for float64 inputs (to match interpolate to their precision); float32 otherwise, as interpolate
    # computes: a float64 chain in an exported float32 graph hangs OpenVINO 2026.4's CPU compiler
    work = torch.float64 if like.dtype == torch.float64 else torch.float32
    src = (torch.arange(out, device=like.device, dtype=work) + 0.5) * (float(length) / float(out)) - 0.5
    src = src.clamp(min=0.0)
    low = src.floor().long().clamp(max=length - 1)
    high = (low + 1).clamp(max=length - 1)
    frac = (src - low.to(work)).unsqueeze(1)
    pos = torch.arange(length, device=like.device).unsqueeze(0)
    weights = (pos == low.unsqueeze(1)).to(work) * (1.0 - frac) + (pos == high.unsqueeze(1)).to(work) * frac
    return weights.to(like.dtype)


def _separable_resize3d(
    x: torch.Tensor, size: List[int], mh: torch.Tensor, mw: torch.Tensor, md: torch.Tensor
) -> torch.Tensor:
    """``(B, C, H, W, D) -> (B, C, *size)`` by the per-axis ``(size_i, n_i)`` matrices ``mh, mw, md``."""
    batch, channels, h = x.shape[0], x.shape[1], x.shape[2]
    y = torch.matmul(x, md.t())  # (B, C, H, W, t_d)
    y = torch.matmul(mw, y)  # (B, C, H, t_w, t_d)
    y = torch.matmul(mh, y.reshape(batch, channels, h, size[1] * size[2]))
    return y.reshape(batch, channels, size[0], size[1], size[2])


def trilinear_resize3d(x: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Trilinear resize of ``(B, C, H, W, D)`` to ``(B, C, *size)`` as three small matrix products.

    Same result as ``F.interpolate(x, size, mode="trilinear", align_corners=False)`` (to float rounding), but
    forward and backward are matrix products: on CPU (torch 2.13, one thread) forward+backward of an ``8^3 -> 32^3``
    upsampling of 32 channels takes 5.5 ms instead of 45 ms (``8^3 -> 80^3``: 3x faster). Backward saves only the
    three interpolation matrices, nothing of input or output size, and the products export to ONNX.

    Args:
        x: ``(B, C, H, W, D)``.
        size: output size ``[s_h, s_w, s_d]``, positive.

    Returns:
        ``(B, C, s_h, s_w, s_d)``.
    """
    return _separable_resize3d(
        x,
        size,
        _linear_matrix(x.shape[2], size[0], x),
        _linear_matrix(x.shape[3], size[1], x),
        _linear_matrix(x.shape[4], size[2], x),
    )


class TransformerOp3D(nn.Module):
    """DAST transformer cell operation; output shape equals input shape.

    1. Projector (paper Eq. 1-2): adaptive average pooling of ``x`` to the token grid ``(t_h, t_w, t_d)`` with
       ``t = min(g, size)`` per axis, concatenation of a learnable 3-channel position map initialised to
       ``(i/g, j/g, k/g)``, a linear projection ``C + 3 -> C`` (a 1x1x1 conv on the grid) and LayerNorm.
    2. ``T = t_h t_w t_d`` tokens of dimension ``C`` -> pre-norm transformer encoder (``num_layers`` layers) ->
       decoder whose input is a learnable query embedding (one ``C``-vector per token-grid cell) that self-attends
       and cross-attends the encoder memory.
    3. Segmentation attention A (paper Fig. 4): multi-head attention with query = decoder output (``T`` tokens)
       and key/value = the op input pooled to the key grid ``k = min(key_grid, size)`` per axis (16^3 = 4096
       positions by default), with an output projection and **no residual**. The keys get no LayerNorm of their own:
       the op input is already normalised (every path's connection block ends in a norm), and a LayerNorm there
       would keep one more ``K x C`` tensor per op for backward (as large as ``k`` or ``v``).
       :meth:`attention_maps` returns its weights, ``(B, T, k_h, k_w, k_d)`` (512 x 4096 at the paper's setting).
    4. Reverse projector: LayerNorm of the tokens -> ``(C, t_h, t_w, t_d)`` -> learned 1x1x1 conv -> trilinear
       upsampling to ``(H, W, D)`` (:func:`trilinear_resize3d`, matrix products) -> norm at the output resolution.

    Why these choices (they decide what the op costs, and so where the memory budget puts it):

    - *Aggregating projector.* Every input voxel reaches a token (pooling windows cover the input), so every
      voxel gets a gradient. A trilinear resize to ``g^3`` would read only ~8 voxels per token (about 0.8% of an
      80^3 map) and price the op as nearly free at high resolution. Pooling keeps nothing of input size for
      backward; it is written as matrix products (:func:`adaptive_average_pool3d`) so ONNX export works for any size.
    - *Never more tokens than voxels.* Along an axis shorter than ``g`` each voxel is one token (no upsampling
      before attention); the position map and the query embedding are pooled to that grid the same way.
    - *Reverse step.* A LayerNorm on the tokens, then a 1x1x1 conv (no bias). The LayerNorm matters: without it
      the conv would directly follow the attention's output projection and the two would be one linear map (the
      conv would add nothing); normalised per token, the conv is a learned step of its own. The conv commutes with
      trilinear interpolation (both are linear), so conv-then-upsample is the same function as
      upsample-then-conv at ``H W D / T`` times fewer FLOPs and without a full-resolution tensor saved for the
      conv; the output norm (instance norm by default, with a learned affine) then acts at the output resolution,
      where it keeps one output-sized tensor for backward. This is the op's only full-resolution memory.
    - *Key grid.* The paper's maps are 512 x 4096: keys come from the op input pooled to at most 16^3, not from
      the encoder tokens, so A relates each token to the input at a finer grid than the tokens.

    The number of heads is :func:`attention_heads`: the largest divisor of ``C`` that is ``<= num_heads`` and keeps
    heads at least 64 channels wide (``C <= 64`` gives 1, ``C = 128`` gives 2, ``C = 256`` gives 4, ``C >= 512``
    the paper's 8), stored as ``self.num_heads``.

    Memory: :meth:`estimate_saved_elements` gives the float elements saved for backward per batch item for a given
    input size; ``self.ram_cost`` holds it in MONAI's units (elements per output element) for a ``(2 * grid)^3``
    input, which is only a placeholder for ``TopologySearch``: the cost of a transformer is not proportional to
    ``H * W * D``, so use :meth:`ram_cost_for` with the real patch size.

    Args:
        in_channels: number of channels ``C`` of input and output (= token dimension).
        grid: token grid size per axis ``g``; at most ``g^3`` tokens (paper: 8, i.e. 512 tokens). At least 2.
            Defaults to 8.
        num_heads: requested number of attention heads (reduced by :func:`attention_heads`). Defaults to 8.
        num_layers: number of encoder layers and of decoder layers. Defaults to 1.
        mlp_ratio: feed-forward hidden width as a multiple of ``C``. Defaults to 2.0.
        dropout: dropout probability inside the transformer (training only). Defaults to 0.0.
        norm_name: MONAI norm of the reverse projector. Defaults to ``("INSTANCE", {"affine": True})``.
        spatial_dims: number of spatial dimensions; only 3 is supported. Defaults to 3.
        key_grid: key grid size per axis of the segmentation attention (paper Fig. 4: 16). Defaults to 16.

    Input and output ``(B, C, H, W, D)``; any ``H, W, D >= 1`` with ``H W D >= 2`` (the output norm needs two
    voxels), smaller than, equal to or larger than ``g``.

    Examples::

        >>> import torch
        >>> op = TransformerOp3D(in_channels=8, grid=4, key_grid=6)
        >>> op(torch.rand(2, 8, 10, 12, 3)).shape
        torch.Size([2, 8, 10, 12, 3])
        >>> op.attention_maps(torch.rand(2, 8, 10, 12, 3)).shape
        torch.Size([2, 48, 6, 6, 3])
    """

    # TorchScript constants (see MultiHeadAttention for why not ``Final[...]`` hints).
    __constants__ = ["in_channels", "grid", "key_grid", "num_tokens", "num_heads", "num_layers", "center_tokens"]

    def __init__(
        self,
        in_channels: int,
        grid: int = 8,
        num_heads: int = 8,
        num_layers: int = 1,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        norm_name: tuple | str = ("INSTANCE", {"affine": True}),
        spatial_dims: int = 3,
        key_grid: int = 16,
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"TransformerOp3D supports spatial_dims=3 only, got spatial_dims={spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if grid < 2:
            raise ValueError(f"grid must be at least 2, got grid={grid}.")
        if key_grid < 1:
            raise ValueError(f"key_grid must be positive, got key_grid={key_grid}.")
        if num_heads < 1:
            raise ValueError(f"num_heads must be positive, got {num_heads}.")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}.")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")

        self.in_channels = in_channels
        self.grid = grid
        self.key_grid = key_grid
        self.num_tokens = grid**3
        self.num_heads = attention_heads(in_channels, num_heads)
        self.num_layers = num_layers
        self.mlp_ratio = float(mlp_ratio)

        self.pos_embed = nn.Parameter(self.position_map(grid))
        self.projector = nn.Linear(in_channels + 3, in_channels)
        self.projector_norm = nn.LayerNorm(in_channels)
        self.encoder_layers = nn.ModuleList(
            [TransformerEncoderLayer(in_channels, self.num_heads, mlp_ratio, dropout) for _ in range(num_layers)]
        )
        self.encoder_norm = nn.LayerNorm(in_channels)
        self.query_embed = nn.Parameter(torch.zeros(1, in_channels, grid, grid, grid))
        nn.init.trunc_normal_(self.query_embed, std=0.02)
        self.decoder_layers = nn.ModuleList(
            [TransformerDecoderLayer(in_channels, self.num_heads, mlp_ratio, dropout) for _ in range(num_layers)]
        )
        self.decoder_norm = nn.LayerNorm(in_channels)
        self.seg_attn = MultiHeadAttention(in_channels, num_heads=self.num_heads, dropout=dropout)
        self.reverse_norm = nn.LayerNorm(in_channels)  # keeps the conv from folding into seg_attn.out_proj
        self.reverse_projector = nn.Conv3d(in_channels, in_channels, kernel_size=1, bias=False)  # a norm follows
        self.output_norm = get_norm_layer(name=norm_name, spatial_dims=3, channels=in_channels)
        # an instance norm ignores a per-channel constant (see _reverse_project)
        self.center_tokens = isinstance(self.output_norm, nn.InstanceNorm3d)
        self.ram_cost = self.ram_cost_for((2 * grid,) * 3)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):  # noqa: D401 (torch hook signature)
        """Refuse, with the reason, weights of the op before 0.3.1 of the bundles (they had a key LayerNorm and
        narrower heads, so even a non-strict load would compute a different function)."""
        if any(k.startswith(prefix + "key_norm.") for k in state_dict):
            raise IncompatibleWeightsError(
                f"{prefix or 'TransformerOp3D '}weights come from the transformer op before bundle versions 0.3.1 "
                "(search) / 0.3.5 (KiTS): they have a key LayerNorm ('key_norm.*') and were trained with narrower "
                "attention heads, so they do not fit this op; retrain (or search again) with the current version."
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @staticmethod
    def position_map(grid: int) -> torch.Tensor:
        """Normalised 3D position map of paper Eq. 2: channel 0 is ``i/g``, 1 is ``j/g``, 2 is ``k/g``.

        Args:
            grid: grid size per axis ``g``.

        Returns:
            ``(1, 3, g, g, g)`` float tensor.
        """
        steps = torch.arange(grid, dtype=torch.float32) / grid
        return torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij")).unsqueeze(0)

    @staticmethod
    def grid_size(spatial_size: List[int], limit: int) -> List[int]:
        """Pooled grid for an input of ``spatial_size``: ``min(limit, s)`` per axis (never more cells than voxels)."""
        return [min(limit, int(s)) for s in spatial_size]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                "TransformerOp3D expects input (B, "
                + str(self.in_channels)
                + ", H, W, D), got shape "
                + str(list(x.shape))
                + "."
            )

    def _pool(self, x: torch.Tensor, size: List[int]) -> torch.Tensor:
        """:func:`adaptive_average_pool3d`, skipped when ``x`` already has ``size``."""
        if x.shape[2] == size[0] and x.shape[3] == size[1] and x.shape[4] == size[2]:
            return x
        return adaptive_average_pool3d(x, size)

    def _encode_decode(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[int]]:
        """Projector, encoder and decoder.

        Returns:
            decoder tokens ``(B, T, C)`` and the token grid ``[t_h, t_w, t_d]``.
        """
        batch = x.shape[0]
        tokens_size = self.grid_size([x.shape[2], x.shape[3], x.shape[4]], self.grid)
        position = self._pool(self.pos_embed, tokens_size).expand(batch, -1, -1, -1, -1)
        y = torch.cat([self._pool(x, tokens_size), position], 1)
        tokens = self.projector_norm(self.projector(y.flatten(2).transpose(1, 2)))
        for layer in self.encoder_layers:
            tokens = layer(tokens)
        memory = self.encoder_norm(tokens)
        # (1, T, C): the first decoder layer's self-attention runs once for the batch (see TransformerDecoderLayer)
        queries = self._pool(self.query_embed, tokens_size).flatten(2).transpose(1, 2)
        for layer in self.decoder_layers:
            queries = layer(queries, memory)
        return self.decoder_norm(queries), tokens_size

    def _keys(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[int]]:
        """Keys/values of the segmentation attention: ``x`` pooled to the key grid, ``(B, K, C)``, and that grid."""
        keys_size = self.grid_size([x.shape[2], x.shape[3], x.shape[4]], self.key_grid)
        # one contiguous copy, the keys and values of MultiHeadAttention.attend
        return self._pool(x, keys_size).flatten(2).transpose(1, 2).contiguous(), keys_size

    def _reverse_project(self, tokens: torch.Tensor, tokens_size: List[int], spatial_size: List[int]) -> torch.Tensor:
        """``(B, T, C)`` tokens on the grid ``tokens_size`` -> ``(B, C, H, W, D)``."""
        y = self.reverse_norm(tokens).transpose(1, 2).reshape(
            tokens.shape[0], self.in_channels, tokens_size[0], tokens_size[1], tokens_size[2]
        )
        y = self.reverse_projector(y)
        if tokens_size != spatial_size:
            if self.center_tokens:
                # Same output: the instance norm ignores a per-channel constant and the resize keeps constants. But
                # an upsampled field can vary little around a large mean (e.g. before training), and runtimes that
                # compute the variance as E[x^2] - E[x]^2 in float32 (ONNX Runtime, OpenVINO) then cancel it away:
                # 0.17 error on outputs of at most 0.07 at 80^3. Centred tokens keep the mean near 0.
                y = y - y.mean(dim=(2, 3, 4), keepdim=True)
            y = trilinear_resize3d(y, spatial_size)
        return self.output_norm(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, H, W, D)``.

        Returns:
            ``(B, C, H, W, D)``.
        """
        self._check_input(x)
        queries, tokens_size = self._encode_decode(x)
        keys, _ = self._keys(x)
        tokens = self.seg_attn.attend(queries, keys)
        return self._reverse_project(tokens, tokens_size, [x.shape[2], x.shape[3], x.shape[4]])

    @torch.jit.export
    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation-attention (A) weights averaged over heads, computed on request and not stored.

        Wrap the call in ``torch.no_grad()`` unless gradients of the maps are wanted.

        Args:
            x: ``(B, C, H, W, D)``.

        Returns:
            ``(B, T, k_h, k_w, k_d)``: for each of the ``T = t_h t_w t_d`` tokens (in ``(i, j, k)`` raster order of
            the token grid ``min(g, size)``) a non-negative map over the key grid ``min(key_grid, size)`` that sums
            to 1. At the paper's setting (``g = 8``, ``key_grid = 16``, input >= 16^3): ``(B, 512, 16, 16, 16)``.
        """
        self._check_input(x)
        queries, _ = self._encode_decode(x)
        keys, keys_size = self._keys(x)
        _, weights = self.seg_attn.forward_with_weights(queries, keys, keys)
        return weights.mean(dim=1).reshape(x.shape[0], queries.shape[1], keys_size[0], keys_size[1], keys_size[2])

    @classmethod
    def estimate_saved_elements(
        cls,
        channels: int,
        spatial_size: Sequence[int],
        grid: int = 8,
        num_layers: int = 1,
        mlp_ratio: float = 2.0,
        num_heads: int = 8,
        key_grid: int = 16,
        batch_size: int = 1,
    ) -> float:
        """Float elements one op saves for backward per batch item, for an input of spatial size ``(H, W, D)``.

        Paper Eq. 3 models the op as ``M = N * C * (l')^3`` with ``N ~= 15`` token-sized tensors. Counting the
        tensors autograd actually keeps (``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage,
        parameters excluded; torch 2.13 CPU, fused attention) gives, with ``T = t_h t_w t_d`` tokens
        (``t = min(grid, size)`` per axis), ``K`` keys (``min(key_grid, size)`` per axis), ``V = H W D``,
        ``n = num_layers``, FFN width ``F`` and ``h`` heads::

            T * ((3 + 22 n) C + 4 n F + 9 + 10 n + 3 n h)    # N = 3 + 22 n + 4 n F / C: 33 for n = 1, F = 2C
            + K * C + 2 T C      (h = 1)                      # pooled keys; q W_k, W_v(A K): N = 35 for n = 1
            + K * 3 C            (h > 1)                      # pooled keys, k and v
            + V * C + 3 C                                     # output norm input and its statistics
            + T * (6 C + 2 + h) / batch_size                  # first decoder self-attention, shared by the batch

        per layer: encoder 8 + 2r token tensors (LayerNorm inputs/outputs, q, k, v, attention output, FFN hidden
        twice), decoder 14 + 2r (two attention blocks); once: projector input (``C + 3`` channels) and its
        LayerNorm 2, encoder norm 1, decoder norm 1, attention A query and output 2 (4 with one head, below), reverse
        LayerNorm output
        (the conv's input) 1. Per token: LayerNorm mean/rstd (``8 + 10 n``), the 3 position channels, and the attention
        log-sum-exp per head (``(3 n + 1) h``). Of these, the first decoder layer's self-attention block (LayerNorm
        output and its 2 statistics, q, k, v, attention output and its merged heads, and ``h`` log-sum-exps:
        ``6 C + 2 + h`` per token) acts on the learned query embedding, the same for every batch item, so it runs
        once per batch (:class:`TransformerDecoderLayer`) and is counted in the shared part; what stays per item is
        ``(3 + 22 n) C + 4 n F``, ``6 + 10 n`` statistics, the 3 position channels and ``3 n h`` log-sum-exps. The
        only full-resolution tensor is the output norm's input (the upsampled tokens): pooling and trilinear
        upsampling keep nothing of input size. With one head the segmentation attention A runs with its key and value
        projections on the query side (:meth:`MultiHeadAttention.attend`): it keeps the pooled keys once, instead of
        the keys, ``k`` and ``v``, and two token tensors more: ``q W_k`` (kept by the attention kernel) and the
        value-projected output ``(A K) W_v^T + b_v`` (the output projection's input), beside ``q`` and ``A K``, which
        take the places of ``q`` and ``A v``. The op's output is kept by whatever consumes it (e.g. a mixed op's
        weighting), which its owner counts.

        The tensors that do not scale with the batch are added divided by ``batch_size``: that self-attention block,
        the pooling and interpolation matrices (``sum(t_i * n_i)`` per pooled or resized tensor) and, when the input
        is smaller than the grid, the pooled query embedding (``T C``). With ``batch_size=1`` (the default) the
        result is an upper bound for any batch; at batch 2 it is 9% above the exact value at 6^3 inputs, 2% at 40^3.

        Assumes dropout 0 and a fused attention kernel: with dropout in training, CPU attention falls back to the
        math kernel of ``scaled_dot_product_attention``, which keeps ``heads * T * K`` weights per attention (plus
        dropout masks).

        Args:
            channels: token dimension ``C`` (the op's channels).
            spatial_size: input spatial size ``(H, W, D)``, positive.
            grid: token grid size per axis ``g``. Defaults to 8.
            num_layers: encoder and decoder layers. Defaults to 1.
            mlp_ratio: feed-forward width as a multiple of ``C``. Defaults to 2.0.
            num_heads: requested heads (reduced by :func:`attention_heads` as in the op). Defaults to 8.
            key_grid: key grid size per axis of the segmentation attention. Defaults to 16.
            batch_size: batch the batch-independent tensors are shared by. Defaults to 1 (an upper bound).

        Returns:
            Saved float elements per batch item (multiply by the element size, e.g. 4 bytes for float32).

        Raises:
            ValueError: for a non-positive size or setting.
        """
        if len(spatial_size) != 3 or any(int(s) < 1 for s in spatial_size):
            raise ValueError(f"spatial_size must be three positive integers (H, W, D), got {spatial_size!r}.")
        if channels < 1 or grid < 1 or key_grid < 1 or num_layers < 1 or mlp_ratio <= 0 or batch_size < 1:
            raise ValueError(
                f"channels, grid, key_grid, num_layers, mlp_ratio and batch_size must be positive, got "
                f"channels={channels}, grid={grid}, key_grid={key_grid}, num_layers={num_layers}, "
                f"mlp_ratio={mlp_ratio}, batch_size={batch_size}."
            )
        size = [int(s) for s in spatial_size]
        token_size = cls.grid_size(size, grid)
        key_size = cls.grid_size(size, key_grid)
        tokens, keys, volume = math.prod(token_size), math.prod(key_size), math.prod(size)
        n, heads, hidden = num_layers, attention_heads(channels, num_heads), _hidden_dim(channels, mlp_ratio)
        per_token = (3 + 22 * n) * channels + 4 * n * hidden + 9 + 10 * n + 3 * n * heads
        if heads == 1:  # folded projections (MultiHeadAttention.attend): the keys once, two more token tensors
            attention_a = keys * channels + tokens * 2 * channels
        else:  # the keys, k and v
            attention_a = keys * 3 * channels
        per_item = tokens * per_token + attention_a + volume * channels + 3 * channels
        shared = tokens * (6 * channels + 2 + heads)  # the first decoder self-attention block
        if token_size != size:  # the input pooled to the token grid, and the tokens resized back
            shared += 2 * sum(t * s for t, s in zip(token_size, size))
        if key_size != size:  # the input pooled to the key grid
            shared += sum(k * s for k, s in zip(key_size, size))
        if token_size != [grid] * 3:  # position map and query embedding pooled to a smaller token grid
            shared += 2 * sum(t * grid for t in token_size) + tokens * channels
        return float(per_item + shared / batch_size)

    def saved_elements(self, spatial_size: Sequence[int]) -> float:
        """:meth:`estimate_saved_elements` with this op's settings.

        Args:
            spatial_size: input spatial size ``(H, W, D)``.

        Returns:
            Float elements saved for backward per batch item.
        """
        return self.estimate_saved_elements(
            self.in_channels, spatial_size, self.grid, self.num_layers, self.mlp_ratio, self.num_heads, self.key_grid
        )

    def ram_cost_for(self, spatial_size: Sequence[int]) -> float:
        """Saved elements per output element (MONAI's ``ram_cost`` unit): ``saved_elements / (C * H * W * D)``.

        Args:
            spatial_size: input (= output) spatial size ``(H, W, D)``.

        Returns:
            The cost in float32 elements per output element.
        """
        return self.saved_elements(spatial_size) / (self.in_channels * math.prod(spatial_size))
