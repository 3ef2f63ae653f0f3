"""The AnimeGANv2 generator (PyTorch port layout).

The layer structure and state-dict keys follow the public PyTorch checkpoints
(``block_a`` … ``block_e``, ``out_layer``) so that they load with
``strict=True``. ``width`` scales every channel count; ``width=1.0`` is the
upstream network (2,143,552 parameters), small widths give the tiny test
generators.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from animecli.models.norm import make_norm

Padding = int | tuple[int, int, int, int]


class ConvNormLReLU(nn.Sequential):
    """Reflection padding → conv (no bias unless asked) → GroupNorm(1) → LeakyReLU(0.2).

    Indices 0..3 match the upstream keys (``.1`` conv, ``.2`` norm).
    ``reflect=False`` (used by ``lite`` only) zero-pads inside the convolution
    instead: on CPU a separate reflection-pad layer costs a full copy of the
    activation map, about a fifth of ``lite``'s time. ``norm=False`` (``lite3``
    only) leaves the norm out (an ``nn.Identity`` keeps the indices) and gives
    the conv a bias.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: Padding = 1,
        groups: int = 1,
        bias: bool = False,
        fast_norm: bool = True,
        reflect: bool = True,
        norm: bool = True,
    ) -> None:
        pad: nn.Module = nn.ReflectionPad2d(padding) if reflect else nn.Identity()
        conv_pad = 0 if reflect else kernel_size // 2
        super().__init__(
            pad,
            # Without a norm the conv carries the bias the norm's shift would have given.
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding=conv_pad, groups=groups, bias=bias or not norm),
            make_norm(out_ch, fast_norm, inplace=True) if norm else nn.Identity(),
            nn.LeakyReLU(0.2, inplace=True),
        )


class InvertedResBlock(nn.Module):
    """MobileNetV2-style block: 1×1 expand → 3×3 depthwise → 1×1 project → norm (+ residual)."""

    def __init__(
        self, in_ch: int, out_ch: int, expansion: int = 2, fast_norm: bool = True, reflect: bool = True
    ) -> None:
        super().__init__()
        self.use_res = in_ch == out_ch
        hidden = in_ch * expansion
        self.layers = nn.Sequential(
            ConvNormLReLU(in_ch, hidden, kernel_size=1, padding=0, fast_norm=fast_norm, reflect=reflect),
            ConvNormLReLU(hidden, hidden, groups=hidden, bias=True, fast_norm=fast_norm, reflect=reflect),
            nn.Conv2d(hidden, out_ch, kernel_size=1, bias=False),
            make_norm(out_ch, fast_norm, inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in, H, W) → (N, out, H, W)."""
        out: torch.Tensor = self.layers(x)
        return x + out if self.use_res else out


def _ch(base: int, width: float) -> int:
    return max(4, round(base * width))


class GeneratorV2(nn.Module):
    """AnimeGANv2 generator.

    Args:
        width: channel multiplier (1.0 = upstream).
        align_corners: upsampling mode. ``True`` resizes to the exact skip size
            (upstream face_paint/celeba checkpoints); ``False`` uses scale
            factor 2 (the Paprika conversion).
        fast_norm: use :class:`~animecli.models.norm.FastGroupNorm` instead of
            ``nn.GroupNorm``; same parameters, same result.
    """

    def __init__(self, width: float = 1.0, align_corners: bool = True, fast_norm: bool = True) -> None:
        super().__init__()
        self.align_corners = align_corners
        c32, c64, c128, c256 = (_ch(c, width) for c in (32, 64, 128, 256))
        f = fast_norm
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, c32, kernel_size=7, padding=3, fast_norm=f),
            ConvNormLReLU(c32, c64, stride=2, padding=(0, 1, 0, 1), fast_norm=f),
            ConvNormLReLU(c64, c64, fast_norm=f),
        )
        self.block_b = nn.Sequential(
            ConvNormLReLU(c64, c128, stride=2, padding=(0, 1, 0, 1), fast_norm=f),
            ConvNormLReLU(c128, c128, fast_norm=f),
        )
        self.block_c = nn.Sequential(
            ConvNormLReLU(c128, c128, fast_norm=f),
            InvertedResBlock(c128, c256, 2, fast_norm=f),
            InvertedResBlock(c256, c256, 2, fast_norm=f),
            InvertedResBlock(c256, c256, 2, fast_norm=f),
            InvertedResBlock(c256, c256, 2, fast_norm=f),
            ConvNormLReLU(c256, c128, fast_norm=f),
        )
        self.block_d = nn.Sequential(
            ConvNormLReLU(c128, c128, fast_norm=f),
            ConvNormLReLU(c128, c128, fast_norm=f),
        )
        self.block_e = nn.Sequential(
            ConvNormLReLU(c128, c64, fast_norm=f),
            ConvNormLReLU(c64, c64, fast_norm=f),
            ConvNormLReLU(c64, c32, kernel_size=7, padding=3, fast_norm=f),
        )
        self.out_layer = nn.Sequential(nn.Conv2d(c32, 3, kernel_size=1, bias=False), nn.Tanh())

    def _up(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.align_corners:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise a batch.

        Args:
            x: (N, 3, H, W) RGB in [-1, 1]; H and W multiples of 4.

        Returns:
            (N, 3, H, W) RGB in [-1, 1].
        """
        out = self.block_a(x)
        half = (int(out.shape[-2]), int(out.shape[-1]))
        out = self.block_b(out)
        out = self.block_c(out)
        out = self._up(out, half)
        out = self.block_d(out)
        out = self._up(out, (int(x.shape[-2]), int(x.shape[-1])))
        out = self.block_e(out)
        result: torch.Tensor = self.out_layer(out)
        return result
