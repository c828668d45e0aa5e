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
"""Tests for the DAST transformer cell op and its attention module."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets.dints import MixedOp
from torch import nn

from dast_components.networks.transformer import (
    MultiHeadAttention,
    TransformerOp3D,
    adaptive_average_pool3d,
    attention_heads,
    largest_divisor_at_most,
)

__all__: list[str] = []

C = 8


def _seeded_op(**kwargs) -> TransformerOp3D:
    torch.manual_seed(0)
    return TransformerOp3D(**{"in_channels": C, "grid": 3, **kwargs})


def _saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward during ``module(x)``: one count per storage, parameters excluded."""
    param_storages = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_storages:
            seen[storage.data_ptr()] = storage.nbytes()
        # detached, so that ops saving their own output do not keep the graph (and more storages) alive
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(seen.values())


@pytest.mark.parametrize(
    "batch, grid, spatial",
    [
        (1, 4, (1, 1, 2)),  # smaller than the grid: one token per voxel
        (1, 4, (2, 3, 2)),  # smaller than the grid, anisotropic
        (2, 3, (5, 7, 9)),  # odd sizes, batch 2
        (2, 2, (16, 8, 4)),  # anisotropic, larger than the grid
        (1, 3, (3, 3, 3)),  # equal to the grid
    ],
)
def test_output_shape_equals_input_shape(batch, grid, spatial):
    op = _seeded_op(grid=grid)
    x = torch.randn(batch, C, *spatial)
    out = op(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient():
    op = _seeded_op(num_layers=2)
    x = torch.randn(2, C, 6, 5, 7)
    # out.sum() would be blind to everything before the final instance norm (a normalised map sums to a constant)
    (op(x) * torch.randn(2, C, 6, 5, 7)).sum().backward()
    for name, param in op.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().max() > 0, name


def test_gradient_reaches_the_input():
    op = _seeded_op()
    x = torch.randn(1, C, 4, 4, 4, requires_grad=True)
    (op(x) * torch.randn(1, C, 4, 4, 4)).sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 0


def test_position_map_initialisation():
    grid = 4
    pos = _seeded_op(grid=grid).pos_embed.detach()
    assert pos.shape == (1, 3, grid, grid, grid)
    i, j, k = 1, 2, 3
    assert torch.allclose(pos[0, :, i, j, k], torch.tensor([i / grid, j / grid, k / grid]))
    assert pos.min() == 0 and math.isclose(pos.max().item(), (grid - 1) / grid)


@pytest.mark.parametrize("grid, key_grid", [(2, 16), (3, 4)])
def test_attention_maps(grid, key_grid):
    op = _seeded_op(grid=grid, key_grid=key_grid).eval()
    attributes_before = set(vars(op)) | set(op.state_dict())
    x = torch.randn(2, C, 5, 6, 7)
    with torch.no_grad():
        maps = op.attention_maps(x)
    keys = [min(key_grid, s) for s in (5, 6, 7)]
    assert maps.shape == (2, grid**3, *keys)
    assert (maps >= 0).all()
    assert torch.allclose(maps.sum(dim=(2, 3, 4)), torch.ones(2, grid**3), atol=1e-5)
    # computed on request, nothing stored on the module
    assert set(vars(op)) | set(op.state_dict()) == attributes_before
    # the maps depend on the input
    with torch.no_grad():
        assert not torch.allclose(op.attention_maps(torch.randn(2, C, 5, 6, 7)), maps)


def test_attention_maps_at_the_paper_shape():
    """Paper Fig. 4: 512 queries (8^3 tokens) against 4096 keys (the input pooled to 16^3)."""
    op = TransformerOp3D(16, grid=8).eval()
    with torch.no_grad():
        assert op.attention_maps(torch.randn(1, 16, 32, 32, 24)).shape == (1, 512, 16, 16, 16)


@pytest.mark.parametrize("spatial", [40, 80])
def test_every_input_voxel_reaches_the_output(spatial):
    """The projector aggregates: the gradient of a randomly weighted sum of the output reaches (almost) every input
    voxel (the plain sum would be blind: the output instance norm makes it constant)."""
    torch.manual_seed(0)
    op = TransformerOp3D(16, grid=8)
    x = torch.randn(1, 16, spatial, spatial, spatial, requires_grad=True)
    (op(x) * torch.randn(1, 16, spatial, spatial, spatial)).sum().backward()
    assert (x.grad != 0).float().mean() >= 0.99


def test_adaptive_average_pool3d_matches_torch():
    x = torch.randn(2, 3, 20, 33, 7)
    for size in ([8, 8, 5], [20, 1, 7], [3, 11, 2]):
        torch.testing.assert_close(adaptive_average_pool3d(x, size), F.adaptive_avg_pool3d(x, size))


@pytest.mark.parametrize("spatial", [(3, 10, 5), (1, 1, 2), (8, 8, 8), (6, 20, 12)])
def test_never_more_tokens_than_voxels(spatial):
    op = _seeded_op(grid=8, key_grid=16).eval()
    with torch.no_grad():
        maps = op.attention_maps(torch.randn(1, C, *spatial))
    tokens = math.prod(min(8, s) for s in spatial)
    assert maps.shape[1] == tokens <= math.prod(spatial)
    assert maps.shape[2:] == tuple(min(16, s) for s in spatial)


def test_reverse_projector_is_upsample_then_learned_conv():
    """LayerNorm on the tokens, then the 1x1x1 conv on the token grid; that equals upsampling first and
    convolving at full size."""
    op = _seeded_op(grid=4)
    tokens = torch.randn(2, 4**3, C)
    out = op._reverse_project(tokens, [4, 4, 4], [9, 7, 12])
    grid = op.reverse_norm(tokens).transpose(1, 2).reshape(2, C, 4, 4, 4)
    upsampled = F.interpolate(grid, size=[9, 7, 12], mode="trilinear", align_corners=False)
    torch.testing.assert_close(out, op.output_norm(op.reverse_projector(upsampled)), atol=1e-5, rtol=1e-5)
    assert op.reverse_projector.weight.shape == (C, C, 1, 1, 1)


def test_reverse_step_does_not_fold_into_the_attention_projection():
    """The segmentation attention ends in a linear projection; a 1x1x1 conv right after it would be the same
    linear map (degenerate). The LayerNorm between them makes the step non-linear in the attention output:
    doubling the attention output does not double the reverse step's grid, and no single linear map
    reproduces conv(LN(.)) on random tokens."""
    op = _seeded_op(grid=4)
    tokens = torch.randn(2, 4**3, C)
    with torch.no_grad():
        a = op.reverse_projector(op.reverse_norm(tokens).transpose(1, 2).reshape(2, C, 4, 4, 4))
        b = op.reverse_projector(op.reverse_norm(2 * tokens + 1).transpose(1, 2).reshape(2, C, 4, 4, 4))
    assert not torch.allclose(b, 2 * a + op.reverse_projector(torch.ones(1, C, 1, 1, 1)), atol=1e-3)
    # least-squares fit of one affine map tokens -> conv(LN(tokens)) leaves a clear residual
    x = torch.cat([tokens.reshape(-1, C), torch.ones(2 * 4**3, 1)], 1)
    y = a.flatten(2).transpose(1, 2).reshape(-1, C)
    fit = torch.linalg.lstsq(x, y).solution
    assert (x @ fit - y).norm() / y.norm() > 0.05


def _onnx_runtime_output(op: nn.Module, x: torch.Tensor, tmp_path) -> torch.Tensor:
    """``op(x)`` exported (legacy exporter, opset 17) and run by ONNX Runtime (the test is skipped without it)."""
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "op.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(op, (x,), str(path), dynamo=False, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(out)


def test_onnx_export_matches_eager(tmp_path):
    """Legacy TorchScript-based exporter (``dynamo=False``, opset 17); pooling as matrix products exports for
    sizes the grid does not divide (20 -> 8)."""
    op = _seeded_op(grid=8).eval()
    x = torch.randn(1, C, 20, 12, 6)
    out = _onnx_runtime_output(op, x, tmp_path)
    with torch.no_grad():
        # float32 rounding of different kernels, scaled up by the output instance norm: ~1e-4 at most
        torch.testing.assert_close(out, op(x), atol=5e-4, rtol=1e-3)


def test_onnx_runtime_matches_eager_for_a_nearly_constant_upsampled_field(tmp_path):
    """Untrained, the op's upsampled output varies little around its mean per channel; ONNX Runtime's float32
    instance norm (variance as E[x^2] - E[x]^2) lost it (5% error at 40^3, 260% at 80^3) until the tokens were
    centred before upsampling."""
    torch.manual_seed(0)
    op = TransformerOp3D(32, grid=8).eval()
    x = torch.randn(1, 32, 40, 40, 40)
    out = _onnx_runtime_output(op, x, tmp_path)
    with torch.no_grad():
        ref = op(x)
    assert float((out - ref).abs().max()) <= 2e-3 * float(ref.abs().max())


def test_fused_and_explicit_attention_agree():
    torch.manual_seed(0)
    fused = MultiHeadAttention(dim=16, num_heads=4, dropout=0.3, fused=True).eval()
    explicit = MultiHeadAttention(dim=16, num_heads=4, dropout=0.3, fused=False).eval()
    explicit.load_state_dict(fused.state_dict())
    query, memory = torch.randn(2, 10, 16), torch.randn(2, 27, 16)
    out_fused = fused(query, memory, memory)
    out_with_weights, weights = fused.forward_with_weights(query, memory, memory)
    torch.testing.assert_close(out_fused, explicit(query, memory, memory), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_fused, out_with_weights, atol=1e-5, rtol=1e-5)
    assert weights.shape == (2, 4, 10, 27)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 10), atol=1e-5)


def test_fused_and_explicit_agree_inside_the_op():
    op = _seeded_op()
    x = torch.randn(2, C, 4, 5, 6)
    out_fused = op(x)  # training mode, dropout 0: both paths are deterministic
    for module in op.modules():
        if isinstance(module, MultiHeadAttention):
            module.fused = False
    # looser than the module test: the final instance norm divides float32 rounding by a small per-channel std
    torch.testing.assert_close(op(x), out_fused, atol=1e-4, rtol=1e-4)


def test_dropout_only_in_training():
    op = _seeded_op(dropout=0.5)
    x = torch.randn(2, C, 4, 4, 4)
    op.eval()
    assert torch.equal(op(x), op(x))
    op.train()
    assert not torch.allclose(op(x), op(x))


def test_torchscript_matches_eager():
    op = _seeded_op(dropout=0.1).eval()
    scripted = torch.jit.script(nn.Sequential(op)).eval()
    x = torch.randn(2, C, 5, 4, 6)
    torch.testing.assert_close(scripted(x), op(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(scripted[0].attention_maps(x), op.attention_maps(x), atol=1e-6, rtol=1e-6)


def test_torchscript_inside_monai_mixed_op():
    torch.manual_seed(0)
    ops = {"skip": lambda c: nn.Identity(), "transformer": lambda c: TransformerOp3D(c, grid=2)}
    mixed = MixedOp(C, ops).eval()
    scripted = torch.jit.script(mixed)
    x, weight = torch.randn(2, C, 4, 4, 4), torch.tensor([0.3, 0.7])
    torch.testing.assert_close(scripted(x, weight), mixed(x, weight), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "channels, num_heads, expected", [(8, 8, 8), (12, 8, 6), (10, 8, 5), (7, 8, 7), (9, 8, 3), (16, 4, 4), (13, 8, 1)]
)
def test_largest_divisor(channels, num_heads, expected):
    assert largest_divisor_at_most(channels, num_heads) == expected


@pytest.mark.parametrize(
    "channels, num_heads, expected",
    [(8, 8, 1), (32, 8, 1), (64, 8, 1), (96, 8, 1), (128, 8, 2), (192, 8, 3), (256, 8, 4), (512, 8, 8), (1024, 8, 8),
     (512, 4, 4), (320, 8, 5)],
)
def test_heads_keep_at_least_64_channels(channels, num_heads, expected):
    assert attention_heads(channels, num_heads) == expected
    op = TransformerOp3D(channels, grid=2, num_heads=num_heads)
    assert op.num_heads == expected
    assert op.seg_attn.num_heads == expected and op.seg_attn.head_dim * expected == channels


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid": 1}, "grid"),
        ({"spatial_dims": 2}, "spatial_dims"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerOp3D(**{"in_channels": C, **kwargs})


def test_wrong_input_channels():
    with pytest.raises(ValueError, match="expects input"):
        _seeded_op()(torch.randn(1, C + 1, 4, 4, 4))


def _measured_elements(op: TransformerOp3D, batch: int, spatial) -> float:
    torch.manual_seed(0)
    # a non-leaf input, as inside a network (a leaf input would be excluded like a parameter)
    x = torch.randn(batch, op.in_channels, *spatial, requires_grad=True) * 1.0
    return _saved_bytes(op.train(), x) / 4 / batch


@pytest.mark.parametrize("spatial", [6, 8, 12, 16, 20, 40, 80])
@pytest.mark.parametrize("batch", [1, 2])
def test_memory_estimate_equals_saved_tensors_at_grid_8(spatial, batch):
    op = TransformerOp3D(16, grid=8)
    size = (spatial,) * 3
    expected = TransformerOp3D.estimate_saved_elements(16, size, grid=8, batch_size=batch)
    assert _measured_elements(op, batch, size) == expected
    # the default (batch 1) is an upper bound at any batch, within 9% at batch 2
    assert expected <= op.saved_elements(size) <= 1.09 * expected


@pytest.mark.slow
def test_memory_estimate_equals_saved_tensors_at_160():
    op = TransformerOp3D(16, grid=8)
    assert _measured_elements(op, 1, (160,) * 3) == op.saved_elements((160,) * 3)


@pytest.mark.parametrize(
    "channels, grid, key_grid, spatial, num_layers, mlp_ratio",
    [
        (16, 4, 16, (16, 16, 16), 1, 2.0),
        (12, 3, 4, (9, 5, 30), 2, 4.0),  # 1 head (heads keep >= 64 channels), deeper and wider, anisotropic
        (128, 3, 4, (6, 6, 6), 1, 2.0),  # 2 heads: keys, k and v kept (no fold)
        (8, 8, 16, (3, 7, 30), 1, 2.0),  # smaller than the grid along two axes
    ],
)
def test_memory_estimate_other_settings(channels, grid, key_grid, spatial, num_layers, mlp_ratio):
    op = TransformerOp3D(channels, grid=grid, key_grid=key_grid, num_layers=num_layers, mlp_ratio=mlp_ratio)
    expected = TransformerOp3D.estimate_saved_elements(
        channels, spatial, grid=grid, num_layers=num_layers, mlp_ratio=mlp_ratio, key_grid=key_grid, batch_size=2
    )
    assert _measured_elements(op, 2, spatial) == expected


def test_ram_cost_units():
    op = TransformerOp3D(16, grid=4)
    size = (20, 24, 28)
    assert math.isclose(op.ram_cost_for(size), op.saved_elements(size) / (16 * 20 * 24 * 28))
    assert math.isclose(op.ram_cost, op.ram_cost_for((8, 8, 8)))
    # one output-sized tensor plus a token part that stops growing: the per-output-element cost falls towards 1
    assert 1.0 < op.ram_cost_for((64,) * 3) < op.ram_cost_for((32,) * 3)
    with pytest.raises(ValueError, match="spatial_size"):
        op.saved_elements((16, 16))


@pytest.mark.parametrize(
    "in_size, out_size",
    [((8, 8, 8), (32, 32, 32)), ((7, 5, 3), (3, 9, 1)), ((10, 6, 9), (4, 7, 13)), ((16, 16, 16), (5, 5, 5)),
     ((1, 4, 6), (5, 1, 6))],
)
def test_trilinear_resize_equals_interpolate(in_size, out_size):
    from dast_components.networks.transformer import trilinear_resize3d

    x = torch.randn(2, 3, *in_size, dtype=torch.float64)
    expected = torch.nn.functional.interpolate(x, size=out_size, mode="trilinear", align_corners=False)
    torch.testing.assert_close(trilinear_resize3d(x, list(out_size)), expected, atol=1e-12, rtol=1e-12)


def test_trilinear_resize_in_float32_equals_interpolate():
    from dast_components.networks.transformer import trilinear_resize3d

    x = torch.randn(2, 3, 6, 5, 4)
    expected = torch.nn.functional.interpolate(x, size=[13, 10, 4], mode="trilinear", align_corners=False)
    torch.testing.assert_close(trilinear_resize3d(x, [13, 10, 4]), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("channels, heads", [(16, 1), (128, 2)])
def test_attend_equals_attention_with_keys_as_values(channels, heads):
    from dast_components.networks.transformer import MultiHeadAttention

    torch.manual_seed(0)
    attn = MultiHeadAttention(channels, num_heads=heads).double()
    query = torch.randn(2, 8, channels, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(2, 30, channels, dtype=torch.float64, requires_grad=True)
    folded, plain = attn.attend(query, inputs), attn(query, inputs, inputs)
    torch.testing.assert_close(folded, plain, atol=1e-12, rtol=1e-12)
    shared = query[:1]  # a query shared by the batch (the op's first decoder layer shares its queries)
    torch.testing.assert_close(attn.attend(shared, inputs), attn(shared, inputs, inputs), atol=1e-12, rtol=1e-12)
    grads = torch.autograd.grad(folded.square().sum(), [query, inputs, *attn.parameters()])
    expected = torch.autograd.grad(plain.square().sum(), [query, inputs, *attn.parameters()])
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-10)


def test_attend_keeps_the_keys_once():
    from dast_components.networks.transformer import MultiHeadAttention

    attn = MultiHeadAttention(16, num_heads=1)
    query, inputs = torch.randn(2, 8, 16, requires_grad=True), torch.randn(2, 4096, 16, requires_grad=True)
    big = []

    def pack(t):
        if t.numel() >= inputs.numel():
            big.append(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        attn.attend(query, inputs)
    assert len(set(big)) == 1  # only the keys themselves; forward(q, K, K) keeps K, k and v
    big.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        attn(query, inputs, inputs)
    assert len(set(big)) == 3


def test_shared_decoder_queries_equal_expanded_ones():
    from dast_components.networks.transformer import TransformerDecoderLayer

    torch.manual_seed(0)
    layer = TransformerDecoderLayer(16, num_heads=1).eval()
    queries, memory = torch.randn(1, 8, 16, requires_grad=True), torch.randn(3, 10, 16)
    shared = layer(queries, memory)
    expanded = layer(queries.expand(3, -1, -1), memory)
    torch.testing.assert_close(shared, expanded)
    g_shared = torch.autograd.grad(shared.sum(), queries)[0]
    g_expanded = torch.autograd.grad(expanded.sum(), queries)[0]
    torch.testing.assert_close(g_shared, g_expanded)
    with pytest.raises(ValueError, match="batch 1"):
        layer(torch.randn(2, 8, 16), memory)


def test_weights_of_the_op_before_0_3_1_are_refused_with_the_reason():
    op = TransformerOp3D(16, grid=2)
    state = op.state_dict()
    state["key_norm.weight"], state["key_norm.bias"] = torch.ones(16), torch.zeros(16)
    with pytest.raises(RuntimeError, match="before bundle versions 0.3.1"):
        op.load_state_dict(state, strict=False)
