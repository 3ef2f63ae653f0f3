"""``lite``: a small, fast student generator distilled from the anime teachers.

Same U-shape as AnimeGANv2 (two stride-2 downsamplings, a residual body at
1/4 resolution, two bilinear upsamplings), but every spatial convolution after
the stem is depthwise-separable and the full-resolution head runs at 32–64
channels instead of 64–128. At 512×512 it costs about 1/12 of v2's
multiply-adds with about 1/5 of its parameters (see ``docs/models.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from animecli.models.norm import make_norm
from animecli.models.v2 import ConvNormLReLU, InvertedResBlock, _ch


class SepConvNormLReLU(nn.Sequential):
    """Depthwise k×k conv (zero padding) → pointwise 1×1 conv → GroupNorm(1) → LeakyReLU(0.2).

    Zero padding inside the convolution rather than a reflection-pad layer: see
    :class:`~animecli.models.v2.ConvNormLReLU`. With padding k//2, stride 2
    maps an even H×W to exactly H/2×W/2. ``norm=False``: no norm (an
    ``nn.Identity`` keeps the indices); the pointwise conv gets a bias instead.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, fast_norm: bool = True,
        norm: bool = True,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_ch, in_ch, kernel_size, stride, padding=kernel_size // 2, groups=in_ch, bias=False),
            nn.Conv2d(in_ch, out_ch, 1, bias=not norm),
            make_norm(out_ch, fast_norm, inplace=True) if norm else nn.Identity(),
            nn.LeakyReLU(0.2, inplace=True),
        )


class GeneratorLite(nn.Module):
    """The ``lite`` student generator.

    Args:
        width: channel multiplier (1.0 = the shipped students).
        fast_norm: use the fast normalisation (same parameters either way).
        slim_head: the ``lite2`` layout: the 64→32-channel layer that opens the
            last stage runs *before* the last upsampling (as ``reduce``), so no
            64-channel map ever exists at full resolution. Same layers and
            parameter count as ``lite``; at 1024×1024 it keeps two 32-channel
            full-resolution maps alive instead of two 64-channel ones.
        lean_norms: the ``lite3`` layout (with ``slim_head``): the first conv and
            the decoder (``up1``, ``reduce``, ``up2``) are conv (with bias) →
            LeakyReLU; only the encoder's half- and quarter-resolution layers
            (``stem.1-2``, ``down``, ``body``) normalise. A whole-image norm at full
            resolution costs two passes over the map, and onnxruntime converts its
            blocked layout out and back around each one. Leaving out the encoder's
            half-resolution norms too was no faster and made onnxruntime keep
            ~105 MB more at 1024×684 (``docs/models.md``).
    """

    def __init__(
        self, width: float = 1.0, fast_norm: bool = True, slim_head: bool = False, lean_norms: bool = False
    ) -> None:
        super().__init__()
        c32, c64, c128 = (_ch(c, width) for c in (32, 64, 128))
        f = fast_norm
        n = not lean_norms  # whether the first conv and the decoder (up1, reduce, up2) have norms
        # Without whole-image norms in the decoder (lite3), each output row depends only on nearby
        # rows of encode()'s output and of the input: the decoder can then run on bands of rows
        # (animecli.inference.ort_session), holding only a band's full-resolution maps in memory.
        self.local_decoder = lean_norms and slim_head
        self.stem = nn.Sequential(
            ConvNormLReLU(3, c32, kernel_size=3, padding=1, fast_norm=f, reflect=False, norm=n),
            SepConvNormLReLU(c32, c64, stride=2, fast_norm=f),
            SepConvNormLReLU(c64, c64, fast_norm=f),
        )
        self.down = nn.Sequential(
            SepConvNormLReLU(c64, c128, stride=2, fast_norm=f),
            SepConvNormLReLU(c128, c128, fast_norm=f),
        )
        self.body = nn.Sequential(
            SepConvNormLReLU(c128, c128, fast_norm=f),
            InvertedResBlock(c128, c128, 2, fast_norm=f, reflect=False),
            InvertedResBlock(c128, c128, 2, fast_norm=f, reflect=False),
            InvertedResBlock(c128, c128, 2, fast_norm=f, reflect=False),
            InvertedResBlock(c128, c128, 2, fast_norm=f, reflect=False),
            SepConvNormLReLU(c128, c128, fast_norm=f),
        )
        self.up1 = nn.Sequential(
            SepConvNormLReLU(c128, c64, fast_norm=f, norm=n),
            SepConvNormLReLU(c64, c64, fast_norm=f, norm=n),
        )
        opening = SepConvNormLReLU(c64, c32, fast_norm=f, norm=n)
        full_res = [
            SepConvNormLReLU(c32, c32, fast_norm=f, norm=n),
            SepConvNormLReLU(c32, c32, kernel_size=7, fast_norm=f, norm=n),
        ]
        # Separate module names for the two layouts, so that a state dict says
        # which one it is made for (see animecli.models.registry.detect_arch).
        self.reduce: nn.Module | None = opening if slim_head else None
        self.up2 = nn.Sequential(*full_res) if slim_head else nn.Sequential(opening, *full_res)
        self.head = nn.Sequential(nn.Conv2d(c32, 3, kernel_size=1, bias=False))
        # Colour skip: a 1×1 map from the input photo straight to the output
        # (before tanh), starting as the identity. Without it the students
        # learned edges long before colours and came out under-saturated;
        # with it they start from the photo's colours and learn the shift.
        self.skip = nn.Conv2d(3, 3, kernel_size=1, bias=True)
        with torch.no_grad():
            self.skip.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            assert self.skip.bias is not None  # built with bias=True
            self.skip.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stylise a batch.

        Args:
            x: (N, 3, H, W) RGB in [-1, 1]; H and W multiples of 4.

        Returns:
            (N, 3, H, W) RGB in [-1, 1].
        """
        s = self.stem(x)
        return self.decode(self.body(self.down(s)), x, s.shape[-2:])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder: (N, 3, H, W) in [-1, 1], H and W multiples of 4 → (N, C, H/4, W/4) features."""
        return self.body(self.down(self.stem(x)))  # type: ignore[no-any-return]

    def decode(self, feats: torch.Tensor, x: torch.Tensor, mid_size: Sequence[int] | None = None) -> torch.Tensor:
        """The decoder: :meth:`encode`'s features and the input (for its size and the colour skip).

        Args:
            feats: (N, C, H/4, W/4) features.
            x: (N, 3, H, W) the encoder's input, in [-1, 1].
            mid_size: the half-resolution size (default: twice the features' size).

        Returns:
            (N, 3, H, W) RGB in [-1, 1].
        """
        # Shapes stay symbolic when traced (an ONNX export keeps the sizes dynamic).
        size = mid_size if mid_size is not None else (2 * feats.shape[-2], 2 * feats.shape[-1])
        out = F.interpolate(feats, size=size, mode="bilinear", align_corners=False)
        out = self.up1(out)
        if self.reduce is not None:
            out = self.reduce(out)
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        out = self.up2(out)
        return torch.tanh(self.head(out) + self.skip(x))
