# SPD-YOLO, AGPL-3.0 license
"""The exact inference rewrite: SPD followed by a convolution == one strided convolution."""

import pytest
import torch
from torch import nn

from helpers import slicing_space_to_depth
from spd_yolo import build_model
from spd_yolo.layers import SpaceToDepth, SPDConv
from spd_yolo.rewrite import can_rewrite_conv, rewrite_spd, strided_equivalent


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("k,p", [(1, 0), (3, 1), (3, 0), (5, 2), (2, 1)])
@pytest.mark.parametrize("bias", [False, True])
def test_strided_equivalent_is_the_same_function(s, k, p, bias, rng):
    c1, c2 = 5, 7
    conv = nn.Conv2d(s * s * c1, c2, k, 1, p, bias=bias).double()
    x = torch.randn(2, c1, 4 * s, 6 * s, dtype=torch.float64, generator=rng)
    want = conv(slicing_space_to_depth(x, s))
    new = strided_equivalent(conv, s)
    assert new.kernel_size == (s * k, s * k) and new.stride == (s, s) and new.padding == (s * p, s * p)
    got = new(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("g", [1, 2, 4])
def test_strided_equivalent_of_interleaved_phases_keeps_the_groups(s, g, rng):
    """After the phases are interleaved (SPDGroupConv), a g-group conv is a g-group strided conv; the reference is the
    slicing SPD followed by the interleave written out as an index."""
    c1, c2, k = 4, 8, 3
    conv = nn.Conv2d(s * s * c1, c2, k, 1, 1, groups=g).double()
    x = torch.randn(2, c1, 4 * s, 5 * s, dtype=torch.float64, generator=rng)
    blocks = slicing_space_to_depth(x, s)  # channel p*c1 + c: phase p of channel c
    interleaved = blocks[:, [p * c1 + c for c in range(c1) for p in range(s * s)]]  # channel c*s*s + p
    new = strided_equivalent(conv, s, interleaved=True)
    assert (new.groups, new.kernel_size, new.stride, new.padding) == (g, (s * k, s * k), (s, s), (s, s))
    assert can_rewrite_conv(conv, s, interleaved=True) and (g == 1) == can_rewrite_conv(conv, s)
    torch.testing.assert_close(new(x), conv(interleaved), rtol=1e-12, atol=1e-12)


def test_stem_is_yolov5s_6x6_conv(rng):
    """SPD then a 3x3 'same' conv (p=1) is a 6x6 stride-2 conv with padding 2 on the image, as YOLOv5's stem."""
    conv = nn.Conv2d(12, 16, 3, 1, 1, bias=False)
    new = strided_equivalent(conv)
    assert (new.in_channels, new.kernel_size, new.stride, new.padding) == (3, (6, 6), (2, 2), (2, 2))
    x = torch.rand(1, 3, 64, 64, generator=rng)
    torch.testing.assert_close(new(x), conv(slicing_space_to_depth(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [nn.Conv2d(8, 4, 3, 1, 1, groups=2), nn.Conv2d(8, 4, 3, 2, 1), nn.Conv2d(8, 4, 3, 1, 2, dilation=2),
     nn.Conv2d(8, 4, 3, 1, "same"), nn.Conv2d(6, 4, 1), nn.Conv2d(8, 4, 3, 1, 1, padding_mode="reflect")],
    ids=["groups", "stride", "dilation", "same-string", "channels", "reflect"],
)
def test_not_rewritable_convs_are_refused(conv):
    assert not can_rewrite_conv(conv, 2)
    with pytest.raises(ValueError, match="no exact strided equivalent"):
        strided_equivalent(conv)


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so fused and unfused models both test the folding of real numbers."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.mark.parametrize(
    "name,fused,expected",
    [("yolov5n-SPD", True, 5), ("yolov5n-SPD", False, 5), ("yolo11n-SPD", True, 7), ("yolo26n-SPD", True, 7)],
    ids=["yolov5n-SPD-fused", "yolov5n-SPD-unfused", "yolo11n-SPD-fused", "yolo26n-SPD-fused"],
)
def test_whole_models_give_equal_outputs(name, fused, expected, rng):
    torch.manual_seed(0)
    model = _randomize_bn(build_model(name, nc=4)).eval()
    if fused:
        model = model.fuse(verbose=False)
    new, done = rewrite_spd(model)
    assert len(done) == expected, done
    assert not any(isinstance(m, SPDConv) for m in new.modules())
    assert any(isinstance(m, SPDConv) for m in model.modules())  # the original is left as it was
    if name.startswith("yolov5"):
        # the backbone SPD layers fold into the next C3; the two neck SPD layers feed a Concat (no single-conv
        # equivalent) and stay
        assert [i for i, m in enumerate(new.model) if isinstance(m, SpaceToDepth)] == [23, 27]
        assert [i for i, m in enumerate(new.model) if isinstance(m, nn.Identity)] == [2, 5, 8, 11]
        assert all(getattr(new.model[i], "i", None) == i for i in (2, 5, 8, 11))  # ultralytics bookkeeping kept
    x = torch.rand(1, 3, 64, 64, generator=rng)
    with torch.no_grad():
        want, got = model(x)[0], new(x)[0]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)  # float32: summation order only
        want64, got64 = model.double()(x.double())[0], new.double()(x.double())[0]
    torch.testing.assert_close(got64, want64, rtol=1e-10, atol=1e-9)


def test_inplace_and_nested_spdconv(rng):
    seq = nn.Sequential(SPDConv(3, 8, 3, 2), nn.Sequential(SPDConv(8, 8, 1, 2))).eval()
    x = torch.rand(1, 3, 16, 16, generator=rng)
    with torch.no_grad():
        want = seq(x)
        same, done = rewrite_spd(seq, inplace=True)
        assert same is seq and len(done) == 2
        torch.testing.assert_close(seq(x), want, rtol=1e-5, atol=1e-5)
