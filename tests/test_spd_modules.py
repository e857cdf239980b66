# SPD-YOLO, AGPL-3.0 license
"""The building blocks, one by one: SpaceToDepth, DepthToSpace, SPDConv."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ultralytics.nn.modules.conv import Focus

from spd_modules import DepthToSpace, SPDConv, SPDSizeError, SpaceToDepth


def numpy_space_to_depth(x: np.ndarray, s: int) -> np.ndarray:
    """Independent reference, written from the documented order with explicit loops over the output."""
    b, c, h, w = x.shape
    out = np.empty((b, s * s * c, h // s, w // s), dtype=x.dtype)
    for j in range(s):  # column offset: outer block index
        for i in range(s):  # row offset: inner block index
            block = j * s + i
            for ch in range(c):
                for y in range(h // s):
                    for xx in range(w // s):
                        out[:, block * c + ch, y, xx] = x[:, ch, y * s + i, xx * s + j]
    return out


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("blocks", [(1, 1, 1, 1), (2, 3, 3, 6), (1, 5, 4, 2)])
def test_space_to_depth_matches_numpy_reference(s, blocks, rng):
    b, c, h, w = blocks[0], blocks[1], blocks[2] * s, blocks[3] * s
    x = torch.randn(b, c, h, w, generator=rng)
    y = SpaceToDepth(s)(x)
    assert y.shape == (b, s * s * c, h // s, w // s)
    np.testing.assert_array_equal(y.numpy(), numpy_space_to_depth(x.numpy(), s))


def test_scale2_order_is_the_focus_slicing_order(rng):
    x = torch.randn(2, 3, 8, 6, generator=rng)
    expected = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
    assert torch.equal(SpaceToDepth()(x), expected)
    # pixel_unshuffle holds the same values in another channel order: it must not be swapped in silently
    other = F.pixel_unshuffle(x, 2)
    assert not torch.equal(other, expected)
    assert torch.equal(other.flatten().sort().values, expected.flatten().sort().values)


@pytest.mark.parametrize("s", [2, 3])
def test_round_trip_is_lossless(s, rng):
    x = torch.randn(2, 4, 6 * s, 5 * s, generator=rng)
    assert torch.equal(DepthToSpace(s)(SpaceToDepth(s)(x)), x)
    z = torch.randn(2, 4 * s * s, 3, 5, generator=rng)
    assert torch.equal(SpaceToDepth(s)(DepthToSpace(s)(z)), z)


def test_channels_last_and_non_contiguous_inputs(rng):
    x = torch.randn(2, 3, 8, 8, generator=rng)
    ref = SpaceToDepth()(x)
    assert torch.equal(SpaceToDepth()(x.to(memory_format=torch.channels_last)), ref)
    assert torch.equal(SpaceToDepth()(x.transpose(2, 3).contiguous().transpose(2, 3)), ref)


@pytest.mark.parametrize("hw", [(5, 8), (8, 7), (9, 9)])
def test_odd_size_raises_clear_error(hw):
    with pytest.raises(SPDSizeError, match=rf"SpaceToDepth\(s=2\) cannot split a {hw[0]}x{hw[1]} \(HxW\) feature map"):
        SpaceToDepth(2)(torch.zeros(1, 3, *hw))
    with pytest.raises(SPDSizeError, match="divisible by 3"):
        SpaceToDepth(3)(torch.zeros(1, 3, 6, 8))
    with pytest.raises(SPDSizeError, match="4-D"):
        SpaceToDepth(2)(torch.zeros(3, 8, 8))


def test_bad_scale_and_channels():
    for bad in (0, -2, 2.0, "2", True):
        with pytest.raises(TypeError, match="integer >= 1"):
            SpaceToDepth(bad)
    with pytest.raises(SPDSizeError, match="channels divisible by 4"):
        DepthToSpace(2)(torch.zeros(1, 6, 4, 4))


@pytest.mark.parametrize("k", [1, 3])
def test_spdconv_equals_focus_with_same_weights(k, rng):
    torch.manual_seed(0)
    focus, spd = Focus(3, 16, k), SPDConv(3, 16, k)
    spd.conv.load_state_dict(focus.conv.state_dict())  # the same Conv(12, 16, k) weights, names match one to one
    for m in (focus, spd):
        m.eval()
        m.conv.bn.running_mean.uniform_(-1, 1)  # non-trivial BN statistics, shared below
    spd.conv.bn.load_state_dict(focus.conv.bn.state_dict())
    x = torch.randn(2, 3, 32, 48, generator=rng)
    assert torch.equal(spd(x), focus(x))
    assert spd(x).shape == (2, 16, 16, 24)


def test_spdconv_scale_and_gradients(rng):
    m = SPDConv(4, 8, k=3, s=3)
    assert m.conv.conv.in_channels == 36 and m.conv.conv.stride == (1, 1)
    x = torch.randn(2, 4, 9, 12, generator=rng, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 8, 3, 4)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # every input pixel reaches the conv
    assert (x.grad != 0).float().mean() > 0.9
    assert m.conv.conv.weight.grad.abs().sum() > 0
