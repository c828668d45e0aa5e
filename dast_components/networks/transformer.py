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

Paper: He et al., "DAST: Differentiable Architecture Search with Transformer for 3D Medical Image Segmentation",
MICCAI 2022 (https://arxiv.org/abs/2208.03464), section "Transformer" and Eq. 1-3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dast_components.networks.blocks import ConvNorm

__all__ = [
    "MultiHeadAttention",
    "FeedForward",
    "TransformerEncoderLayer",
    "TransformerDecoderLayer",
    "TransformerOp3D",
    "largest_divisor_at_most",
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

    Inputs ``x (B, L_q, C)`` and ``memory (B, L_k, C)``; output ``(B, L_q, C)``.
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
            x: decoder tokens ``(B, L_q, C)``.
            memory: encoder output ``(B, L_k, C)``.

        Returns:
            ``(B, L_q, C)``.
        """
        h = self.norm1(x)
        x = x + self.drop1(self.self_attn(h, h, h))
        x = x + self.drop2(self.cross_attn(self.norm2(x), memory, memory))
        return x + self.mlp(self.norm3(x))


class TransformerOp3D(nn.Module):
    """DAST transformer cell operation; output shape equals input shape.

    1. Projector (paper Eq. 1-2): trilinear resize of ``x`` to ``(g, g, g)``, concatenation of a learnable
       3-channel position map initialised to ``(i/g, j/g, k/g)``, 1x1x1 conv ``C + 3 -> C`` and norm.
    2. ``g^3`` tokens of dimension ``C`` -> pre-norm transformer encoder (``num_layers`` layers) -> decoder whose
       input is a learnable query embedding ``(g^3, C)`` that self-attends and cross-attends the encoder memory.
    3. Segmentation attention A: multi-head attention with query = decoder output and key/value = encoder output,
       with an output projection and **no residual**; :meth:`attention_maps` returns its weights.
    4. Reverse projector: tokens -> ``(C, g, g, g)`` -> 1x1x1 conv and norm -> trilinear resize to ``(H, W, D)``.

    The number of heads is the largest divisor of ``C`` that is ``<= num_heads`` (``C = 12`` with 8 requested heads
    gives 6), stored as ``self.num_heads``.

    Memory: :meth:`estimate_saved_elements` gives the float elements saved for backward per batch item;
    ``self.ram_cost`` holds it in MONAI's units (elements per output element) for a ``(2 * grid)^3`` input, which is
    only a placeholder for ``TopologySearch``: the cost of a transformer does not scale with ``H * W * D``, so use
    :meth:`ram_cost_for` with the real patch size.

    Args:
        in_channels: number of channels ``C`` of input and output (= token dimension).
        grid: token grid size per axis ``g``; ``g^3`` tokens (paper: 8, i.e. 512 tokens). At least 2 (an instance
            norm over a single voxel is undefined). Defaults to 8.
        num_heads: requested number of attention heads (reduced to a divisor of ``C``). Defaults to 8.
        num_layers: number of encoder layers and of decoder layers. Defaults to 1.
        mlp_ratio: feed-forward hidden width as a multiple of ``C``. Defaults to 2.0.
        dropout: dropout probability inside the transformer (training only). Defaults to 0.0.
        norm_name: MONAI norm for the two projectors. Defaults to ``("INSTANCE", {"affine": True})``.
        spatial_dims: number of spatial dimensions; only 3 is supported. Defaults to 3.

    Input and output ``(B, C, H, W, D)``; any ``H, W, D >= 1`` (smaller than, equal to or larger than ``g``).

    Examples::

        >>> import torch
        >>> op = TransformerOp3D(in_channels=8, grid=4)
        >>> op(torch.rand(2, 8, 10, 12, 7)).shape
        torch.Size([2, 8, 10, 12, 7])
        >>> op.attention_maps(torch.rand(2, 8, 10, 12, 7)).shape
        torch.Size([2, 64, 4, 4, 4])
    """

    # TorchScript constants (see MultiHeadAttention for why not ``Final[...]`` hints).
    __constants__ = ["in_channels", "grid", "num_tokens", "num_heads", "num_layers"]

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
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"TransformerOp3D supports spatial_dims=3 only, got spatial_dims={spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}.")
        if grid < 2:
            raise ValueError(
                f"grid must be at least 2 (the projector norms a grid^3 token volume, undefined for one voxel), "
                f"got grid={grid}."
            )
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
        self.num_tokens = grid**3
        self.num_heads = largest_divisor_at_most(in_channels, num_heads)
        self.num_layers = num_layers
        self.mlp_ratio = float(mlp_ratio)

        self.pos_embed = nn.Parameter(self.position_map(grid))
        self.projector = ConvNorm(3, in_channels + 3, in_channels, kernel_size=1, norm_name=norm_name)
        self.encoder_layers = nn.ModuleList(
            [TransformerEncoderLayer(in_channels, self.num_heads, mlp_ratio, dropout) for _ in range(num_layers)]
        )
        self.encoder_norm = nn.LayerNorm(in_channels)
        self.query_embed = nn.Parameter(torch.zeros(1, self.num_tokens, in_channels))
        nn.init.trunc_normal_(self.query_embed, std=0.02)
        self.decoder_layers = nn.ModuleList(
            [TransformerDecoderLayer(in_channels, self.num_heads, mlp_ratio, dropout) for _ in range(num_layers)]
        )
        self.decoder_norm = nn.LayerNorm(in_channels)
        self.seg_attn = MultiHeadAttention(in_channels, num_heads=self.num_heads, dropout=dropout)
        self.reverse_projector = ConvNorm(3, in_channels, in_channels, kernel_size=1, norm_name=norm_name)
        self.ram_cost = self.ram_cost_for((2 * grid,) * 3)

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

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                "TransformerOp3D expects input (B, "
                + str(self.in_channels)
                + ", H, W, D), got shape "
                + str(list(x.shape))
                + "."
            )

    def _encode_decode(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Projector, encoder and decoder. Returns ``(decoder_tokens, memory)``, both ``(B, g^3, C)``."""
        batch = x.shape[0]
        g = self.grid
        y = F.interpolate(x, size=[g, g, g], mode="trilinear", align_corners=False)
        y = torch.cat([y, self.pos_embed.expand(batch, -1, -1, -1, -1)], dim=1)
        tokens = self.projector(y).flatten(2).transpose(1, 2)
        for layer in self.encoder_layers:
            tokens = layer(tokens)
        memory = self.encoder_norm(tokens)
        queries = self.query_embed.expand(batch, -1, -1)
        for layer in self.decoder_layers:
            queries = layer(queries, memory)
        return self.decoder_norm(queries), memory

    def _reverse_project(self, tokens: torch.Tensor, spatial_size: List[int]) -> torch.Tensor:
        """``(B, g^3, C)`` tokens -> ``(B, C, H, W, D)``."""
        g = self.grid
        y = tokens.transpose(1, 2).reshape(tokens.shape[0], self.in_channels, g, g, g)
        return F.interpolate(self.reverse_projector(y), size=spatial_size, mode="trilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, H, W, D)``.

        Returns:
            ``(B, C, H, W, D)``.
        """
        self._check_input(x)
        queries, memory = self._encode_decode(x)
        tokens = self.seg_attn(queries, memory, memory)
        return self._reverse_project(tokens, [x.shape[2], x.shape[3], x.shape[4]])

    @torch.jit.export
    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Segmentation-attention (A) weights averaged over heads, computed on request and not stored.

        Wrap the call in ``torch.no_grad()`` unless gradients of the maps are wanted.

        Args:
            x: ``(B, C, H, W, D)``.

        Returns:
            ``(B, g^3, g, g, g)``: for each of the ``g^3`` queries (in ``(i, j, k)`` raster order of the token grid)
            a non-negative ``(g, g, g)`` map over key positions that sums to 1.
        """
        self._check_input(x)
        queries, memory = self._encode_decode(x)
        _, weights = self.seg_attn.forward_with_weights(queries, memory, memory)
        g = self.grid
        return weights.mean(dim=1).reshape(x.shape[0], self.num_tokens, g, g, g)

    @classmethod
    def estimate_saved_elements(
        cls,
        channels: int,
        spatial_size: Sequence[int],
        grid: int = 8,
        num_layers: int = 1,
        mlp_ratio: float = 2.0,
        num_heads: int = 8,
    ) -> float:
        """Float elements one op saves for backward per batch item, for an input of spatial size ``(H, W, D)``.

        Paper Eq. 3 models the op as ``M = N * C * (l')^3`` with ``N ~= 15`` token-sized tensors. Counting the
        tensors autograd actually keeps (``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage,
        parameters excluded; torch 2.13 CPU, fused attention) gives, with ``L = g^3`` tokens, ``n = num_layers``
        and ``r = mlp_ratio``::

            N = 11 + n * (22 + 4 * r)        # measured N = 41 for n = 1, r = 2 (paper: 15)

        per layer: encoder 8 + 2r (LayerNorm inputs/outputs, q, k, v, attention output, FFN hidden twice), decoder
        14 + 2r (two attention blocks); once: projector 2, encoder norm + memory 2, decoder norm 2, attention A 4,
        reverse projector 2, minus 1 because the first decoder layer norms the query parameter itself. Smaller
        terms, kept so the estimate is exact: the 3 position channels at the projector conv (``3 L``), LayerNorm
        mean/rstd (``(4 + 10 n) L``), the attention log-sum-exp per head (``heads * (3 n + 1) * L``) and the two
        instance norms' per-channel statistics (``6 C``).

        Nothing of input or output size is saved: trilinear resizing needs only the sizes for its backward, and
        the concatenation and projections act on the ``g^3`` grid (measured at 16^3 and 32^3: identical bytes).
        The op's output is kept by whatever consumes it (e.g. a mixed op's weighting), which its owner counts.
        ``spatial_size`` therefore only sets the units in :meth:`ram_cost_for`.

        Assumes dropout 0 and a fused attention kernel: with dropout in training, CPU attention falls back to the
        explicit path, which keeps ``heads * L * L`` weights per attention (plus dropout masks).

        Args:
            channels: token dimension ``C`` (the op's channels).
            spatial_size: input spatial size ``(H, W, D)``, positive.
            grid: token grid size per axis ``g``. Defaults to 8.
            num_layers: encoder and decoder layers. Defaults to 1.
            mlp_ratio: feed-forward width as a multiple of ``C``. Defaults to 2.0.
            num_heads: requested heads (reduced to a divisor of ``C`` as in the op). Defaults to 8.

        Returns:
            Saved float elements per batch item (multiply by the element size, e.g. 4 bytes for float32).

        Raises:
            ValueError: for a non-positive size or setting.
        """
        if len(spatial_size) != 3 or any(int(s) < 1 for s in spatial_size):
            raise ValueError(f"spatial_size must be three positive integers (H, W, D), got {spatial_size!r}.")
        if channels < 1 or grid < 1 or num_layers < 1 or mlp_ratio <= 0:
            raise ValueError(
                f"channels, grid, num_layers and mlp_ratio must be positive, got channels={channels}, grid={grid}, "
                f"num_layers={num_layers}, mlp_ratio={mlp_ratio}."
            )
        tokens = grid**3
        heads = largest_divisor_at_most(channels, num_heads)
        hidden = _hidden_dim(channels, mlp_ratio)
        # N * C written with the exact FFN width (4 * r * C -> 4 * hidden per layer)
        token_tensors = (11 + 22 * num_layers) * channels + 4 * num_layers * hidden
        per_token_stats = 3 + (4 + 10 * num_layers) + heads * (3 * num_layers + 1)
        return float(tokens * (token_tensors + per_token_stats) + 6 * channels)

    def saved_elements(self, spatial_size: Sequence[int]) -> float:
        """:meth:`estimate_saved_elements` with this op's settings.

        Args:
            spatial_size: input spatial size ``(H, W, D)``.

        Returns:
            Float elements saved for backward per batch item.
        """
        return self.estimate_saved_elements(
            self.in_channels, spatial_size, self.grid, self.num_layers, self.mlp_ratio, self.num_heads
        )

    def ram_cost_for(self, spatial_size: Sequence[int]) -> float:
        """Saved elements per output element (MONAI's ``ram_cost`` unit): ``saved_elements / (C * H * W * D)``.

        Args:
            spatial_size: input (= output) spatial size ``(H, W, D)``.

        Returns:
            The cost in float32 elements per output element.
        """
        return self.saved_elements(spatial_size) / (self.in_channels * math.prod(spatial_size))
