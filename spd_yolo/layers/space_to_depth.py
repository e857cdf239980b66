# SPD-YOLO, AGPL-3.0 license
"""Space-to-depth, its inverse, and SPD-Conv (space-to-depth followed by a non-strided convolution).

SPD-Conv (Sunkara & Luo, ECML-PKDD 2022) replaces a strided convolution or a pooling layer by a space-to-depth
(SPD) layer, which moves every pixel into channels instead of skipping it, followed by a non-strided convolution.

Channel order (block size s): the output is the concatenation along channels of ``x[..., i::s, j::s]`` for
``j in range(s)`` (outer) and ``i in range(s)`` (inner), i.e. the row offset ``i`` varies fastest. For s=2 that is
``x[..., ::2, ::2]``, ``x[..., 1::2, ::2]``, ``x[..., ::2, 1::2]``, ``x[..., 1::2, 1::2]``: the order of the paper
authors' ``space_to_depth`` and of ultralytics' ``Focus``, so their weights map one to one. It is *not* the order of
``torch.nn.functional.pixel_unshuffle`` (which puts the input channel outermost).

Plain torch only: one reshape to 6-D (a view), one permute and one reshape back (a single copy forward and a single
copy backward), the same on CPU and CUDA, under ``torch.compile``, tracing and ONNX export.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.modules.conv import Conv

from spd_yolo.errors import SPDSizeError

__all__ = ("DepthToSpace", "SPDConv", "SpaceToDepth", "depth_to_space", "space_to_depth")


def space_to_depth(x: torch.Tensor, s: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, s*s*C, H/s, W/s) in the authors' (Focus) channel order, losing no pixel."""
    b, c, h, w = x.shape
    # (B, C, h, i, w, j) -> (B, j, i, C, h, w): column offset j outermost, row offset i next, then the input channel
    return x.reshape(b, c, h // s, s, w // s, s).permute(0, 5, 3, 1, 2, 4).reshape(b, s * s * c, h // s, w // s)


def depth_to_space(x: torch.Tensor, s: int = 2) -> torch.Tensor:
    """Inverse of `space_to_depth`: (B, s*s*C, H, W) -> (B, C, H*s, W*s)."""
    b, c4, h, w = x.shape
    c = c4 // (s * s)
    return x.reshape(b, s, s, c, h, w).permute(0, 3, 4, 2, 5, 1).reshape(b, c, h * s, w * s)


def _check_scale(s) -> int:
    if isinstance(s, bool) or not isinstance(s, int) or s < 1:
        raise TypeError(f"SPD scale must be an integer >= 1, got {s!r}")
    return s


def _checking() -> bool:
    """Whether to check shapes in Python (not while tracing, scripting or compiling: those see symbolic sizes)."""
    return not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling())


class _BlockLayer(nn.Module):
    """A parameter-free rearrangement of s x s pixel blocks (the base of the two layers below)."""

    def __init__(self, s: int = 2):
        super().__init__()
        self.s = _check_scale(s)

    def extra_repr(self) -> str:
        return f"s={self.s}"


class SpaceToDepth(_BlockLayer):
    """Parameter-free space-to-depth layer: (B, C, H, W) -> (B, s*s*C, H/s, W/s), lossless.

    Args:
        s (int): Block size (down-sampling factor). H and W must be divisible by it.
    """

    def check(self, x: torch.Tensor) -> None:
        """Raise `SPDSizeError` naming this layer if x is not 4-D or H or W is not divisible by s (skipped while
        tracing, scripting or compiling)."""
        if _checking():
            _check_divisible(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply space-to-depth; raise `SPDSizeError` naming this layer if H or W is not divisible by s."""
        self.check(x)
        return space_to_depth(x, self.s)


class DepthToSpace(_BlockLayer):
    """Inverse of `SpaceToDepth`: (B, s*s*C, H, W) -> (B, C, H*s, W*s).

    Args:
        s (int): Block size (up-sampling factor). The channels must be divisible by s*s.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply depth-to-space; raise `SPDSizeError` if the channels are not divisible by s*s."""
        if _checking() and x.shape[1] % (self.s * self.s):
            raise SPDSizeError(f"DepthToSpace(s={self.s}) needs channels divisible by {self.s**2}, got {x.shape[1]}")
        return depth_to_space(x, self.s)


class SPDConv(nn.Module):
    """SPD-Conv: `SpaceToDepth(s)` then a non-strided ultralytics `Conv` (conv, BN, SiLU) from s*s*c1 to c2 channels.

    A drop-in for ``Conv(c1, c2, k, s)`` with s > 1: in a model YAML, ``[-1, 1, Conv, [128, 3, 2]]`` becomes
    ``[-1, 1, SPDConv, [128, 3, 2]]``. The convolution itself always has stride 1; `s` is the SPD block size.
    (B, c1, H, W) -> (B, c2, H/s, W/s).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels.
        k (int): Kernel size of the non-strided convolution.
        s (int): Down-sampling factor, done by space-to-depth.
        p (int, optional): Padding (default: same padding).
        g (int): Groups.
        d (int): Dilation.
        act (bool | nn.Module): Activation.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2, p=None, g: int = 1, d: int = 1, act=True):
        super().__init__()
        self.spd = SpaceToDepth(s)
        self.conv = Conv(c1 * s * s, c2, k, 1, p, g, d, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Space-to-depth then convolution."""
        return self.conv(self.spd(x))


def _check_divisible(layer: nn.Module, x: torch.Tensor) -> None:
    """Raise `SPDSizeError` naming the layer (its model index when built from a YAML) if x cannot be split."""
    s = layer.s
    if x.dim() != 4:
        raise SPDSizeError(f"{_layer_name(layer)} expects a 4-D (B, C, H, W) input, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % s or w % s:
        raise SPDSizeError(
            f"{_layer_name(layer)} cannot split a {h}x{w} (HxW) feature map into {s}x{s} blocks: H and W must be "
            f"divisible by {s} (input shape {tuple(x.shape)}). Use an image size that is a multiple of the model "
            f"stride (32 for the detectors), e.g. through letterboxing as predict/val do."
        )


def _layer_name(layer: nn.Module) -> str:
    """'SpaceToDepth(s=2) at model layer 5' when the parser attached an index, else the class name."""
    index = getattr(layer, "spd_layer_index", None)
    where = f" at model layer {index}" if index is not None else ""
    return f"{type(layer).__name__}(s={layer.s}){where}"
