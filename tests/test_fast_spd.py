# SPD-YOLO, AGPL-3.0 license
"""The compiled space-to-depth kernel: bit-identical to the slicing reference, used only where it applies."""

import copy
import inspect
import io
import os

import pytest
import torch

import spd_modules
from spd_modules import SPDConv, SpaceToDepth, space_to_depth, space_to_depth_reference
from spd_yolo import build_model, fast_spd

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@pytest.fixture(scope="session")
def kernel():
    """Build (or load the cached) kernel once for the session; skip the kernel tests when there is no compiler."""
    if not fast_spd.kernel_available():
        pytest.skip(f"fast SPD kernel not available here: {fast_spd.build_error()}")
    return True


@pytest.fixture
def kernel_calls(kernel, monkeypatch):
    """Count the calls that reach the compiled kernel."""
    calls = []
    real = fast_spd._run

    def spy(*args, **kwargs):
        calls.append(args[1].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(fast_spd, "_run", spy)
    monkeypatch.delenv("SPD_YOLO_FAST_SPD", raising=False)
    return calls


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits of t as integers (so -0.0, NaN payloads and inf compare exactly)."""
    t = t.contiguous()
    return t if t.dtype == torch.bool else t.view(_INT_OF_SIZE[t.element_size()])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(bits(a), bits(b))


def sample(shape, dtype, gen, channels_last=False) -> torch.Tensor:
    """Random values of `dtype`, with -0.0, inf and NaN mixed in for floats."""
    x = torch.randn(shape, generator=gen)
    if x.numel() >= 4:
        x.view(-1)[:4] = torch.tensor([-0.0, float("inf"), float("-inf"), float("nan")])
    x = (x * 50).to(dtype) if not dtype.is_floating_point else x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


SHAPES = [(1, 1, 2, 2), (3, 5, 6, 10), (2, 3, 8, 4), (1, 64, 32, 32), (5, 7, 10, 14), (0, 3, 4, 4), (2, 1, 2, 64)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int64, torch.bool]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_bit_identical(shape, dtype, channels_last, kernel_calls, rng):
    x = sample(shape, dtype, rng, channels_last)
    assert fast_spd.usable(x)
    y, ref = space_to_depth(x), space_to_depth_reference(x)
    assert same_bits(y, ref)
    assert y.stride() == ref.stride()  # same memory format as the reference (channels-last stays channels-last)
    assert len(kernel_calls) == 1


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (3, 5, 6, 10), (1, 64, 32, 32), (2, 3, 4, 12)], ids=str)
def test_backward_bit_identical(shape, dtype, channels_last, kernel_calls, rng):
    x = sample(shape, dtype, rng, channels_last)
    g = sample((shape[0], 4 * shape[1], shape[2] // 2, shape[3] // 2), dtype, rng)
    grads = []
    for fn in (space_to_depth, space_to_depth_reference):
        leaf = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
        out = fn(leaf)
        out.backward(g)
        grads.append((out, leaf.grad))
    assert same_bits(grads[0][0], grads[1][0])
    fast, ref = grads[0][1], grads[1][1]
    if dtype in (torch.float16, torch.bfloat16):
        # NaN stays NaN, but its payload in the reference depends on which (vector/scalar) add path ran: compare
        # the NaN positions, and every other value bit for bit (signed zeros included)
        assert torch.equal(fast.isnan(), ref.isnan())
        fast, ref = fast.masked_fill(fast.isnan(), 1.0), ref.masked_fill(ref.isnan(), 1.0)
    assert same_bits(fast, ref)
    assert len(kernel_calls) == 2  # forward and backward both went through the kernel


@pytest.mark.parametrize("make_grad", ["channels_last", "expanded", "transposed"])
def test_backward_with_unusual_gradient_layouts(make_grad, kernel, rng):
    x = torch.randn(2, 3, 6, 8, generator=rng)
    g = torch.randn(2, 12, 3, 4, generator=rng)
    g = {"channels_last": g.contiguous(memory_format=torch.channels_last), "expanded": g[:1].expand(2, -1, -1, -1),
         "transposed": g.transpose(2, 3).contiguous().transpose(2, 3)}[make_grad]
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    space_to_depth(a).backward(g)
    space_to_depth_reference(b).backward(g)
    assert torch.equal(a.grad, b.grad)


def test_double_backward_and_gradcheck(kernel, rng):
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64, generator=rng, requires_grad=True)
    assert torch.autograd.gradcheck(space_to_depth, (x,))
    assert torch.autograd.gradgradcheck(space_to_depth, (x,))
    assert torch.autograd.gradcheck(space_to_depth, (x,), check_forward_ad=True, check_backward_ad=False)


def test_requires_grad_off_and_no_grad(kernel_calls, rng):
    x = torch.randn(2, 4, 8, 8, generator=rng, requires_grad=True)
    with torch.no_grad():
        assert torch.equal(space_to_depth(x), space_to_depth_reference(x))
    with torch.inference_mode():
        assert torch.equal(space_to_depth(x), space_to_depth_reference(x))
    assert not space_to_depth(x.detach()).requires_grad
    assert len(kernel_calls) == 3


def test_depth_to_space_inverts(kernel, rng):
    z = torch.randn(2, 12, 3, 5, generator=rng)
    assert torch.equal(fast_spd.depth_to_space(z), spd_modules.depth_to_space(z, 2))
    assert torch.equal(space_to_depth(fast_spd.depth_to_space(z)), z)
    with pytest.raises(ValueError, match=r"\(B, 4C, h, w\)"):
        fast_spd.depth_to_space(torch.zeros(1, 6, 2, 2))


@pytest.mark.parametrize(
    "case",
    ["strided", "transposed", "odd_size", "scale3", "complex128", "3d", "subclass"],
)
def test_reference_where_the_kernel_does_not_apply(case, kernel_calls, rng):
    x = torch.randn(2, 3, 8, 12, generator=rng)
    s = 2
    if case == "strided":
        x = x[:, :, :, ::2]
    elif case == "transposed":
        x = x.transpose(2, 3)
    elif case == "odd_size":
        x = x[:, :, :7, :]
    elif case == "scale3":
        x, s = torch.randn(2, 3, 9, 6, generator=rng), 3
    elif case == "complex128":
        x = torch.randn(2, 3, 8, 12, dtype=torch.complex128, generator=rng)
    elif case == "3d":
        x = x[0]
    elif case == "subclass":

        class Tagged(torch.Tensor):
            pass

        x = x.as_subclass(Tagged)
    assert not fast_spd.usable(x, s)
    if case != "odd_size":
        assert torch.equal(space_to_depth(x, s), space_to_depth_reference(x, s))
    assert kernel_calls == []


def test_env_var_and_context_manager_force_the_reference(kernel_calls, monkeypatch, rng):
    x = torch.randn(2, 3, 8, 8, generator=rng)
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("SPD_YOLO_FAST_SPD", off)
        assert not fast_spd.usable(x)
        assert torch.equal(SpaceToDepth()(x), space_to_depth_reference(x))
    assert kernel_calls == []
    monkeypatch.setenv("SPD_YOLO_FAST_SPD", "1")
    assert fast_spd.usable(x)
    with fast_spd.enabled(False):
        assert not fast_spd.usable(x)
    assert fast_spd.usable(x)


def test_graph_capture_keeps_the_plain_ops(kernel_calls, rng):
    x = torch.randn(1, 3, 8, 8, generator=rng)
    traced = torch.jit.trace(SpaceToDepth(), x, check_trace=False)
    graph = str(traced.graph)
    assert "aten::cat" in graph and "aten::slice" in graph and "PythonOp" not in graph
    scripted = torch.jit.script(SpaceToDepth())
    assert torch.equal(scripted(x), space_to_depth_reference(x))
    compiled = torch.compile(SpaceToDepth(), backend="eager", fullgraph=True)  # dynamo traces the reference
    assert torch.equal(compiled(x), space_to_depth_reference(x))
    assert torch.func.vmap(space_to_depth)(x[None]).shape == (1, 1, 12, 4, 4)
    assert kernel_calls == []


def test_onnx_export_uses_plain_ops_and_matches(kernel_calls, rng, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = torch.nn.Sequential(SPDConv(3, 8, 3, 2), SpaceToDepth(), torch.nn.Conv2d(32, 4, 1)).eval()
    x = torch.randn(1, 3, 32, 32, generator=rng)
    path = tmp_path / "m.onnx"
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(model, (x,), str(path), opset_version=17, input_names=["images"], **kwargs)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"Slice", "Concat"} <= ops, ops
    assert all(n.domain in ("", "ai.onnx") for n in onnx.load(str(path)).graph.node)
    kernel_calls.clear()
    with torch.no_grad():
        want = model(x)
    assert len(kernel_calls) == 2  # eager torch took the fast path ...
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)  # ... and agrees with the export


def test_whole_model_unchanged_fast_on_vs_off(kernel_calls, rng):
    torch.manual_seed(0)
    base = build_model("yolov5n-SPD", nc=3)
    x = torch.rand(2, 3, 64, 64, generator=rng)
    results = []
    for flag in (False, True):
        model = copy.deepcopy(base)  # each pass starts from the same BN running statistics
        with fast_spd.enabled(flag):
            out = model.train()(x)
            loss = sum(t.float().sum() for t in (out["boxes"], out["scores"]))
            loss.backward()
            with torch.no_grad():
                pred = model.eval()(x)
        pred = pred[0] if isinstance(pred, (tuple, list)) else pred
        results.append((loss.detach(), pred, [p.grad for p in model.parameters() if p.grad is not None]))
    assert len(kernel_calls) > 0
    (l0, p0, g0), (l1, p1, g1) = results
    assert same_bits(l0, l1) and same_bits(p0, p1)
    assert len(g0) == len(g1) > 100 and all(same_bits(a, b) for a, b in zip(g0, g1))


def test_build_cache_and_missing_compiler(kernel, monkeypatch, tmp_path):
    """A fresh cache folder gets one library; without a compiler the build reports why (and nothing is cached)."""
    monkeypatch.setenv("SPD_YOLO_CACHE_DIR", str(tmp_path / "cache"))
    fn, why = fast_spd._build()
    assert fn is not None and why == ""
    files = os.listdir(tmp_path / "cache")
    assert len(files) == 1 and files[0].startswith("fast_spd_"), files  # the library only: no source or temp left
    monkeypatch.setenv("CC", "no-such-compiler-spd-yolo")
    monkeypatch.setenv("SPD_YOLO_CACHE_DIR", str(tmp_path / "other"))
    fn, why = fast_spd._build()
    assert fn is None and "no C compiler" in why


def test_fallback_without_kernel(monkeypatch, rng):
    """If the kernel could not be built, everything runs on the reference, silently."""
    monkeypatch.setitem(fast_spd._STATE, "fn", None)
    monkeypatch.setitem(fast_spd._STATE, "why", "simulated")
    x = torch.randn(1, 3, 8, 8, generator=rng, requires_grad=True)
    assert not fast_spd.usable(x)
    y = SpaceToDepth()(x)
    assert torch.equal(y, space_to_depth_reference(x))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_serialized_modules_unchanged(kernel, rng):
    """The fast path lives in a function: modules pickle and load as before (no new state)."""
    buf = io.BytesIO()
    torch.save(SPDConv(3, 4), buf)
    buf.seek(0)
    m = torch.load(buf, weights_only=False)
    assert set(m.state_dict()) == set(SPDConv(3, 4).state_dict())
