# SPD-YOLO, AGPL-3.0 license
"""ResNet for small inputs (the paper's classification case study): stem, residual blocks and stages, each with an
`spd` switch. spd=True: every down-sampling is SpaceToDepth followed by a non-strided convolution; spd=False: the
stock strided convolution (the CIFAR-style ResNet baseline). Both give the same feature-map size at every stage.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from ultralytics.nn.modules.conv import Conv

from spd_yolo.layers.space_to_depth import DepthToSpace, SpaceToDepth, SPDConv

__all__ = ("ResNetBasicBlock", "ResNetBottleneck", "ResNetStage", "ResNetStem", "full_res_conv_as_spd")


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)


def _down_conv(c1: int, c2: int, k: int, s: int, spd: bool, act) -> nn.Module:
    """Conv (conv, BN, act) from c1 to c2 that down-samples by s: (B, c1, H, W) -> (B, c2, H/s, W/s).

    s == 1: a plain non-strided `Conv`. s > 1 and spd: `SPDConv` (SpaceToDepth(s), then a non-strided k x k conv on
    s*s*c1 channels). s > 1 and not spd: a stride-s `Conv` (padding k // 2), the stock ResNet down-sampling.
    """
    if s == 1:
        return Conv(c1, c2, k, 1, act=act)
    return SPDConv(c1, c2, k, s, act=act) if spd else Conv(c1, c2, k, s, act=act)


def full_res_conv_as_spd(weight: torch.Tensor, s: int = 2, k: int = 3) -> torch.Tensor:
    """Weights of a k x k 'same' conv for ``DepthToSpace(s)(conv(SpaceToDepth(s)(x)))`` equal to a stride-1 conv.

    `weight` (C2, C1, K, K), K odd, is a stride-1 'same' convolution at full resolution; the result (s*s*C2, s*s*C1,
    k, k) makes the SPD-space conv compute exactly that function (every output phase the same filter, shifted).
    Exact when K <= s * (k // 2) * 2 + 1 (K <= 5 for s=2, k=3); taps beyond that window raise ValueError.
    Used to initialise the SPD stem like a plain conv stem: independently initialised phases start with a
    period-s pattern in every feature map (the pixel-shuffle "checkerboard"), which keeps the stem from learning
    1-pixel textures (ICNR, Aitken et al. 2017, is the same idea for up-sampling).
    """
    c2, c1, kf, kf2 = weight.shape
    r, p = kf // 2, k // 2
    if kf != kf2 or kf % 2 == 0 or r > s * p:
        raise ValueError(f"a {kf}x{kf2} kernel cannot be expressed by a {k}x{k} conv on SpaceToDepth({s}) input")
    out = weight.new_zeros(s * s * c2, s * s * c1, k, k)
    for i, j, di, dj in itertools.product(range(s), repeat=4):  # output phase (i, j), input phase (di, dj)
        o, q = (j * s + i) * c2, (dj * s + di) * c1  # channel blocks in SpaceToDepth's order (column offset outer)
        for u, v in itertools.product(range(-p, p + 1), repeat=2):  # tap in SPD space = pixel offset s*u + di - i
            a, b = s * u + di - i + r, s * v + dj - j + r
            if 0 <= a < kf and 0 <= b < kf:
                out[o : o + c2, q : q + c1, u + p, v + p] = weight[:, :, a, b]
    return out


class ResNetStem(nn.Module):
    """Full-resolution ResNet stem for small inputs: (B, c1, H, W) -> (B, c2, H, W). No max-pool, no stride.

    spd=False: a k x k stride-1 conv, BN, ReLU (the CIFAR-style stem that replaces ImageNet's 7x7/2 conv + max-pool).
    spd=True: SpaceToDepth(2), a k x k stride-1 conv from 4*c1 to 4*c2 channels, DepthToSpace(2), BN, ReLU: the conv
    sees the lossless 2x2-block view of the image (a 2k x 2k window per output pixel) and the output is put back at
    full resolution, so both stems feed stage 1 the same H x W map. H and W must be even. The conv starts as a
    full-resolution k x k conv (`full_res_conv_as_spd`); its four output phases then learn apart as training needs.

    Args:
        c1 (int): Input channels (3 for RGB).
        c2 (int): Output channels.
        k (int): Kernel size of the convolution.
        spd (bool): SPD stem (True) or the plain stride-1 conv stem (False).
    """

    def __init__(self, c1: int, c2: int, k: int = 3, spd: bool = True):
        super().__init__()
        self.spd = bool(spd)
        if self.spd:
            self.s2d = SpaceToDepth(2)
            self.conv = nn.Conv2d(4 * c1, 4 * c2, k, 1, k // 2, bias=False)
            self.d2s = DepthToSpace(2)
            self.bn = nn.BatchNorm2d(c2)
            self.act = _relu()
            with torch.no_grad():  # start as a full-resolution k x k conv: no 2x2 phase pattern at initialisation
                full = nn.Conv2d(c1, c2, k, bias=False).weight
                self.conv.weight.copy_(full_res_conv_as_spd(full, 2, k))
        else:
            self.conv = Conv(c1, c2, k, 1, act=_relu())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stem forward; the SPD stem's SpaceToDepth raises `SPDSizeError` for an odd H or W."""
        if not self.spd:
            return self.conv(x)
        return self.act(self.bn(self.d2s(self.conv(self.s2d(x)))))


class ResNetBasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, ResNet18/34): (B, c1, H, W) -> (B, c2, H/s, W/s).

    The first conv down-samples by s (see `_down_conv`); the shortcut is the identity when s == 1 and c1 == c2, else
    a 1x1 conv + BN that down-samples the same way (SpaceToDepth + non-strided 1x1 conv with spd, a strided 1x1 conv
    without).
    """

    expansion = 1

    def __init__(self, c1: int, c2: int, s: int = 1, spd: bool = True):
        super().__init__()
        self.cv1 = _down_conv(c1, c2, 3, s, spd, _relu())
        self.cv2 = Conv(c2, c2, 3, 1, act=False)
        self.shortcut = nn.Identity() if s == 1 and c1 == c2 else _down_conv(c1, c2, 1, s, spd, False)
        self.act = _relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(cv2(cv1(x)) + shortcut(x))."""
        return self.act(self.cv2(self.cv1(x)) + self.shortcut(x))


class ResNetBottleneck(nn.Module):
    """ResNet bottleneck block (1x1, 3x3, 1x1; ResNet50+): (B, c1, H, W) -> (B, c2, H/s, W/s), inner width c2 / 4.

    The 3x3 conv down-samples by s (stride on the 3x3, as torchvision's ResNet v1.5); the shortcut as in
    `ResNetBasicBlock`.
    """

    expansion = 4

    def __init__(self, c1: int, c2: int, s: int = 1, spd: bool = True):
        super().__init__()
        c_ = c2 // self.expansion
        self.cv1 = Conv(c1, c_, 1, 1, act=_relu())
        self.cv2 = _down_conv(c_, c_, 3, s, spd, _relu())
        self.cv3 = Conv(c_, c2, 1, 1, act=False)
        self.shortcut = nn.Identity() if s == 1 and c1 == c2 else _down_conv(c1, c2, 1, s, spd, False)
        self.act = _relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(cv3(cv2(cv1(x))) + shortcut(x))."""
        return self.act(self.cv3(self.cv2(self.cv1(x))) + self.shortcut(x))


class ResNetStage(nn.Module):
    """One ResNet stage: n blocks, the first down-sampling by s: (B, c1, H, W) -> (B, c2, H/s, W/s).

    Args:
        c1 (int): Input channels.
        c2 (int): Output channels (for bottleneck blocks 4x the inner width, e.g. 256 for ResNet50's first stage).
        n (int): Number of blocks.
        s (int): Down-sampling factor of the first block (1 or 2 in ResNet).
        bottleneck (bool): Bottleneck blocks (ResNet50) instead of basic blocks (ResNet18).
        spd (bool): Down-sample with SpaceToDepth + non-strided convs (True) or with strided convs (False).
    """

    def __init__(self, c1: int, c2: int, n: int = 1, s: int = 1, bottleneck: bool = False, spd: bool = True):
        super().__init__()
        block = ResNetBottleneck if bottleneck else ResNetBasicBlock
        self.m = nn.Sequential(*(block(c1 if i == 0 else c2, c2, s if i == 0 else 1, spd) for i in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the blocks in turn."""
        return self.m(x)
