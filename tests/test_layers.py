# SPD-YOLO, AGPL-3.0 license
"""The building blocks, one by one: SpaceToDepth, DepthToSpace, SPDConv (plain torch, in every execution mode)."""

import ast

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ultralytics.nn.modules.conv import Focus

import spd_modules
import spd_yolo.layers
from helpers import REPO, slicing_space_to_depth
from spd_yolo.errors import SPDSizeError
from spd_yolo.layers import DepthToSpace, SpaceToDepth, SPDConv, space_to_depth


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


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_outputs_and_gradients_equal_the_slicing_reference(s, layout, rng):
    """torch.equal in forward and backward against the slicing reference, whatever the input's memory layout."""
    base = torch.randn(2, 5, 4 * s, 6 * s, generator=rng)
    if layout == "channels_last":
        base = base.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        base = base.transpose(2, 3).contiguous().transpose(2, 3)
    g = torch.randn(2, 5 * s * s, 4, 6, generator=rng)
    x1, x2 = base.clone().requires_grad_(), base.clone().requires_grad_()
    y1, y2 = SpaceToDepth(s)(x1), slicing_space_to_depth(x2, s)
    assert torch.equal(y1, y2)
    y1.backward(g)
    y2.backward(g)
    assert torch.equal(x1.grad, x2.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.bool])
def test_any_dtype_moves_bytes_exactly(dtype, rng):
    x = (torch.randn(1, 3, 8, 8, generator=rng) * 50).to(dtype)
    assert torch.equal(space_to_depth(x), slicing_space_to_depth(x))


def test_one_copy_each_way(rng):
    """Forward is one reshape-copy of a permuted view (the result owns new memory laid out contiguously); the input
    is never copied first (the 6-D reshape of a contiguous input is a view)."""
    x = torch.randn(2, 3, 8, 8, generator=rng)
    b, c, h, w = x.shape
    assert x.reshape(b, c, h // 2, 2, w // 2, 2).data_ptr() == x.data_ptr()
    y = space_to_depth(x)
    assert y.is_contiguous() and y.data_ptr() != x.data_ptr()


def test_torch_compile_graph_and_trace_match_eager(rng):
    """Captured by torch.compile (aot_eager: the graph tracer and autograd, no code generation), torch.jit.trace
    and torch.export, the layer gives the eager values."""
    model = torch.nn.Sequential(SpaceToDepth(2), torch.nn.Conv2d(12, 4, 1), SpaceToDepth(2))
    x = torch.randn(2, 3, 16, 24, generator=rng)
    want = model(x)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), want)
    traced = torch.jit.trace(model, x)
    assert torch.equal(traced(x), want)
    exported = torch.export.export(model, (x,))
    assert torch.equal(exported.module()(x), want)


def test_onnx_export_matches(rng, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = torch.nn.Sequential(SPDConv(3, 8, 3), SpaceToDepth(2)).eval()
    x = torch.randn(1, 3, 32, 48, generator=rng)
    path = tmp_path / "spd.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_old_module_name_reexports_the_same_classes():
    """`spd_modules` is the historic name: the same classes (checkpoints that pickled spd_modules.X load as these)."""
    for name in spd_modules.__all__:
        assert getattr(spd_modules, name) is getattr(spd_yolo.layers, name, None) or name == "SPDSizeError", name
    assert spd_modules.SPDSizeError is SPDSizeError
    assert SpaceToDepth.__module__ == "spd_yolo.layers.space_to_depth"  # what a checkpoint names now


def test_layers_import_only_torch_ultralytics_conv_and_our_errors():
    """The bottom of the dependency order: the layer modules import torch, ultralytics' Conv and spd_yolo.errors (and
    each other), nothing that touches ultralytics internals, and no native-code loader."""
    allowed = {"__future__", "itertools", "torch", "torch.nn", "ultralytics.nn.modules.conv", "spd_yolo.errors",
               "spd_yolo.layers.space_to_depth", "spd_yolo.layers.resnet", "spd_yolo.layers.spd_group_conv"}
    for path in sorted((REPO / "spd_yolo/layers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module]
            else:
                continue
            assert set(names) <= allowed, f"{path.name} imports {names}"
