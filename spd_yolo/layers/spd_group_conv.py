# SPD-YOLO, AGPL-3.0 license
"""SPD-Conv at the cost of the stride-2 convolution it replaces: space-to-depth, phase interleave, grouped conv.

A stock stride-2 k x k conv from c1 to c2 channels costs ``k*k*c1*c2`` multiply-adds per output pixel. `SPDConv`
(space-to-depth, then a k x k conv from 4*c1 channels) costs 4x that. With g groups the conv costs
``k*k*(4*c1/g)*c2``: g = 4 (s*s in general) is exactly the stock cost and the stock number of weights.

Grouping alone would defeat the purpose: `SpaceToDepth` is block-major (its output is 4 consecutive blocks of c1
channels, one block per pixel phase ``x[..., i::2, j::2]``), so 4 groups of consecutive channels would each see
ONE phase, i.e. be 4 independent strided convs and drop the mixing of the 4 pixels of every 2x2 block that SPD is
for. `SPDGroupConv` therefore interleaves the phases first (channel-major order, ``c*s*s + phase``, the order of
``torch.nn.functional.pixel_unshuffle`` up to the order of the phases): group ``i`` then holds input channels
``i*c1/g ... (i+1)*c1/g - 1`` with all s*s phases of each, i.e. every pixel of those channels, and each of its c2/g
outputs mixes every pixel of an (s*k) x (s*k) window (6x6 for s=2, k=3) of c1/g channels. The groups are mixed by
the next layer (the 1x1 input convolution of a C2f / C3k2, in the neck after a Concat).

It is the same function as a (s*k) x (s*k) stride-s convolution with g groups on the input (windows tiling every
pixel); as a model layer it is SPD plus a non-strided convolution, so a model of them has no strided convolution.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules.conv import Conv

from spd_yolo.layers.space_to_depth import SpaceToDepth

__all__ = ("SPDGroupConv", "interleave_phases", "space_to_depth_interleaved")


def interleave_phases(x: torch.Tensor, n: int) -> torch.Tensor:
    """Block-major SPD output (B, n*C, H, W) (block p: phase p of all C channels) -> channel-major (c*n + p)."""
    b, c4, h, w = x.shape
    return x.reshape(b, n, c4 // n, h, w).transpose(1, 2).reshape(b, c4, h, w)


def space_to_depth_interleaved(x: torch.Tensor, s: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, s*s*C, H/s, W/s), channel-major: channel c*s*s + p is phase p (in `SpaceToDepth`'s order)
    of input channel c. Equal to ``interleave_phases(space_to_depth(x, s), s*s)`` in one copy instead of two."""
    b, c, h, w = x.shape
    # (B, C, h, i, w, j) -> (B, C, j, i, h, w): the input channel outermost, then SpaceToDepth's phase order
    return x.reshape(b, c, h // s, s, w // s, s).permute(0, 1, 5, 3, 2, 4).reshape(b, s * s * c, h // s, w // s)


class SPDGroupConv(nn.Module):
    """`SpaceToDepth(s)`, phases interleaved, then a non-strided grouped ultralytics `Conv` (conv, BN, SiLU).

    A drop-in for ``Conv(c1, c2, k, s)`` with the same multiply-adds and weights when g = s*s (the default):
    (B, c1, H, W) -> (B, c2, H/s, W/s). See the module docstring for why the phases are interleaved.

    Args:
        c1 (int): Input channels (divisible by g: each group takes whole channels, every phase of them).
        c2 (int): Output channels (divisible by g).
        k (int): Kernel size of the non-strided convolution.
        s (int): Down-sampling factor, done by space-to-depth.
        p (int, optional): Padding (default: same padding).
        g (int, optional): Groups (default s*s: the cost of the stride-s k x k conv from c1 to c2).
        d (int): Dilation.
        act (bool | nn.Module): Activation.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2, p=None, g: int | None = None, d: int = 1, act=True):
        super().__init__()
        self.spd = SpaceToDepth(s)
        g = s * s if g is None else g
        if c1 % g or c2 % g:
            raise ValueError(
                f"SPDGroupConv with g={g} groups needs input and output channels divisible by {g} (each group takes "
                f"every phase of c1/g whole channels), got c1={c1}, c2={c2}"
            )
        self.conv = Conv(c1 * s * s, c2, k, 1, p, g, d, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Space-to-depth with the phases interleaved (one copy), grouped convolution."""
        self.spd.check(x)
        return self.conv(space_to_depth_interleaved(x, self.spd.s))
