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
"""Small convolution/normalisation building blocks built from MONAI's layer factories."""

from __future__ import annotations

from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer
from torch import nn

__all__ = ["ConvNorm", "check_spatial_dims"]


def check_spatial_dims(spatial_dims: int, allowed: tuple[int, ...] = (2, 3)) -> int:
    """Validate ``spatial_dims`` once, before it feeds ``Conv[Conv.CONV, spatial_dims]``.

    Args:
        spatial_dims: number of spatial dimensions of the feature maps.
        allowed: the values accepted by the caller. Defaults to ``(2, 3)``.

    Returns:
        ``spatial_dims`` unchanged.

    Raises:
        ValueError: when ``spatial_dims`` is not one of ``allowed``.
    """
    if spatial_dims not in allowed:
        raise ValueError(f"spatial_dims must be one of {allowed}, got {spatial_dims!r}.")
    return spatial_dims


class ConvNorm(nn.Sequential):
    """Convolution followed by a normalisation layer: ``norm(conv(x))``.

    The convolution has no bias: every normalisation that MONAI's ``get_norm_layer`` builds subtracts a mean
    (batch, instance, group, layer) and so cancels a bias, which would then never receive a gradient; an affine
    norm supplies the shift instead. The padding keeps the spatial size for odd kernel sizes.

    Args:
        spatial_dims: number of spatial dimensions (2 or 3).
        in_channels: number of input channels ``C_in``.
        out_channels: number of output channels ``C_out``.
        kernel_size: convolution kernel size, odd. Defaults to 1 (a pointwise projection).
        norm_name: MONAI norm name or ``(name, kwargs)`` tuple. Defaults to ``("INSTANCE", {"affine": True})``.

    Input ``(B, C_in, H, W[, D])``; output ``(B, C_out, H, W[, D])``.

    Examples::

        >>> import torch
        >>> block = ConvNorm(3, in_channels=11, out_channels=8)
        >>> block(torch.rand(2, 11, 4, 4, 4)).shape
        torch.Size([2, 8, 4, 4, 4])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        norm_name: tuple | str = ("INSTANCE", {"affine": True}),
    ) -> None:
        check_spatial_dims(spatial_dims)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"in_channels and out_channels must be positive, got in_channels={in_channels}, "
                f"out_channels={out_channels}."
            )
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        conv_type = Conv[Conv.CONV, spatial_dims]
        super().__init__()
        self.add_module(
            "conv",
            conv_type(in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2, bias=False),
        )
        self.add_module("norm", get_norm_layer(name=norm_name, spatial_dims=spatial_dims, channels=out_channels))
