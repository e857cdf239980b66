# SPD-YOLO, AGPL-3.0 license
"""SPD-lite models (issue 12 part 6): SPD at the stock model's cost. yolov8/yolo11/yolo26-SPD-lite keep every pixel at
each down-sampling (no strided conv or pooling) with GFLOPs within 5% of stock, at every scale; `SPDGroupConv` mixes
the 4 pixel phases inside each group and is exactly a 6x6 stride-2 grouped conv."""

import pytest
import torch
import torch.nn.functional as F
from ultralytics.nn.modules import Conv

import spd_yolo
from helpers import (
    detect_feats,
    large_scales_slow,
    one_training_step,
    run_python,
    stride2_convs,
    strided_layers,
    write_yaml,
)
from spd_yolo.layers import LAYERS, SpaceToDepth, SPDConv, SPDGroupConv, interleave_phases, space_to_depth_interleaved
from spd_yolo.models.configs import load_model_yaml
from spd_yolo.models.summary import main as summary_main
from spd_yolo.models.summary import stock_counterpart
from spd_yolo.rewrite import rewrite_spd

FAMILIES = ("yolov8", "yolo11", "yolo26")
NAMES = [f"{f}{s}-SPD-lite" for f in FAMILIES for s in "nsmlx"]


def test_names_and_stock_counterparts():
    assert set(NAMES) <= set(spd_yolo.available_models("detect"))
    assert stock_counterpart("yolov8n-SPD-lite") == "yolov8n.yaml"
    assert stock_counterpart("yolo11x-SPD-lite.yaml") == "yolo11x.yaml"
    assert stock_counterpart("yolo26s-SPD-lite") == "yolo26s.yaml"
    for name in NAMES:
        d = load_model_yaml(name)
        assert d["scale"] == name[len(name.split("-")[0]) - 1]
        assert d["scales"] == load_model_yaml(stock_counterpart(name))["scales"]


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_are_the_stock_rows(family):
    """Every row is stock's; each stride-2 Conv [c2, 3, 2] is SPDGroupConv [c2, 3, 2] (the stem: SPDConv [c2, 1, 2]).
    The other keys too (nc, scales; for yolo26 end2end and reg_max)."""
    ours, stock = load_model_yaml(f"{family}n-SPD-lite"), load_model_yaml(f"{family}n.yaml")
    top = [{k: v for k, v in d.items() if k not in ("backbone", "head", "yaml_file")} for d in (ours, stock)]
    assert top[0] == top[1]
    rows, stock_rows = ours["backbone"] + ours["head"], stock["backbone"] + stock["head"]
    assert len(rows) == len(stock_rows)
    for i, (row, base) in enumerate(zip(rows, stock_rows)):
        if base[2] == "Conv" and base[3][2:3] == [2]:
            want = "SPDConv" if i == 0 else "SPDGroupConv"
            assert row[:3] == [*base[:2], want] and row[3] == [base[3][0], 1 if i == 0 else 3, 2], (i, row)
        else:
            assert row == base, (i, row)


@pytest.mark.parametrize("name", large_scales_slow(NAMES))
def test_stock_cost_no_strided_layer_every_scale(name):
    """GFLOPs at 640 (nc=80) within 5% of stock; Detect at 8-16-32; no strided conv or pooling; one SpaceToDepth
    per stride-2 conv of stock; the same weights as stock except the 1x1 stem (12*c2 instead of 27*c2).

    Real builds, GFLOPs by thop as `model.info()` counts them (it profiles stride-sized proxies and extrapolates, so
    the build dominates): 20 models in 20-40 s on 2 shared CPU cores, x included."""
    ours = spd_yolo.build_model(name, nc=80)
    stock = spd_yolo.build_model(stock_counterpart(name), nc=80)
    a, b = spd_yolo.model_stats(ours, name, 640), spd_yolo.model_stats(stock, "stock", 640)
    assert 0.95 <= a.gflops / b.gflops <= 1.05, (a.gflops, b.gflops)
    assert 0.99 <= a.gflops / b.gflops <= 1.0  # only the stem differs, and it is the cheaper one
    assert ours.stride.tolist() == stock.stride.tolist() == [8.0, 16.0, 32.0]
    assert strided_layers(ours) == []
    assert sum(isinstance(m, SpaceToDepth) for m in ours.modules()) == stride2_convs(stock) == 7
    assert [type(m) for m in ours.modules() if isinstance(m, (SPDConv, SPDGroupConv))] == [SPDConv] + [SPDGroupConv] * 6
    for m, s in zip(ours.model, stock.model):
        if isinstance(m, SPDGroupConv):  # 3x3 on 4*c1 channels in 4 groups: the weights (and MACs) of stock's conv
            assert m.conv.conv.weight.shape == s.conv.weight.shape and m.conv.conv.groups == 4
            assert m.conv.conv.stride == (1, 1) and s.conv.stride == (2, 2)
    stem_c2 = stock.model[0].conv.out_channels
    assert b.params - a.params == (27 - 12) * stem_c2
    assert [x[0].conv.in_channels for x in ours.model[-1].cv2] == [x[0].conv.in_channels for x in stock.model[-1].cv2]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hw", [(640, 640), (320, 480)])
def test_forward_shapes(family, hw):
    model = spd_yolo.build_model(f"{family}n-SPD-lite", nc=80).eval()
    h, w = hw
    with torch.no_grad():
        y, feats = model(torch.zeros(1, 3, h, w))
    assert y.shape == (1, 84, sum((h // s) * (w // s) for s in (8, 16, 32)))
    assert [tuple(f.shape[-2:]) for f in detect_feats(feats)] == [(h // s, w // s) for s in (8, 16, 32)]


def test_group_sees_every_phase(rng):
    """A pixel at any of the 4 positions of a 2x2 block reaches every output of its channel's group, and no other
    group. Without the interleave (SPDConv with g=4: groups of consecutive block-major channels) group 0 would see
    phase (0, 0) only: 4 strided convs that never mix the pixels of a block."""
    c1, c2 = 8, 12
    ours, plain = SPDGroupConv(c1, c2, 1).eval(), SPDConv(c1, c2, 1, 2, None, 4).eval()
    x = torch.randn(1, c1, 4, 4, generator=rng)
    for r, c in ((0, 0), (1, 0), (0, 1), (1, 1)):  # the 4 phases of block (0, 0), channel 0 (group 0)
        x2 = x.clone()
        x2[0, 0, r, c] += 1.0
        with torch.no_grad():
            changed = (ours(x2) - ours(x)).abs()[0, :, 0, 0] > 0
            changed_plain = (plain(x2) - plain(x)).abs()[0, :, 0, 0] > 0
        assert changed.tolist() == [True] * (c2 // 4) + [False] * (c2 - c2 // 4), (r, c)
        assert changed_plain[: c2 // 4].all() == ((r, c) == (0, 0))  # the plain grouping sees one phase per group


def test_equals_a_grouped_6x6_stride2_conv(rng):
    """SPD + interleave + 3x3 grouped conv (padding 1) is the 6x6 stride-2 grouped conv (padding 2) with
    W'[o, c, 2a + i, 2b + j] = W[o, 4c + 2j + i, a, b] (SPD phase 2j + i holds x[..., i::2, j::2])."""
    c1, c2, g = 8, 16, 4
    m = SPDGroupConv(c1, c2, 3, 2)
    w = m.conv.conv.weight.detach()  # (c2, 4 * c1 / g, 3, 3)
    assert w.shape == (c2, 4 * c1 // g, 3, 3) and m.conv.conv.groups == g
    # [o, c, j, i, a, b] -> [o, c, a, i, b, j] -> [o, c, 2a + i, 2b + j]
    w6 = w.reshape(c2, c1 // g, 2, 2, 3, 3).permute(0, 1, 4, 3, 5, 2).reshape(c2, c1 // g, 6, 6)
    x = torch.randn(2, c1, 16, 24, generator=rng)
    ref = F.conv2d(x, w6, stride=2, padding=2, groups=g)
    with torch.no_grad():
        got = m.conv.conv(space_to_depth_interleaved(x, 2))  # what forward runs before its BN and activation
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert got.shape == (2, c2, 8, 12)


@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_one_copy_interleave_equals_spd_then_interleave(s, channels_last, rng):
    """The layer's single permute gives exactly SpaceToDepth followed by interleave_phases, and the same gradient."""
    x = torch.randn(2, 5, 6 * s, 4 * s, generator=rng)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    got, ref = space_to_depth_interleaved(a, s), interleave_phases(SpaceToDepth(s)(b), s * s)
    assert torch.equal(got, ref) and got.shape == (2, 5 * s * s, 6, 4)
    g = torch.randn(got.shape, generator=rng)
    got.backward(g)
    ref.backward(g)
    assert torch.equal(a.grad, b.grad)


def test_odd_input_names_the_group_conv_layer():
    model = spd_yolo.build_model("yolov8n-SPD-lite", nc=2)
    with pytest.raises(spd_yolo.SPDSizeError, match=r"SpaceToDepth\(s=2\) at model layer 1 cannot split a 33x32"):
        model.model[1](torch.zeros(1, 16, 33, 32))


def test_bad_channels_name_the_layer(tmp_path):
    """Groups must divide the channels the parser works out: an SPDGroupConv on the 3-channel image is refused."""
    head, stem = [[[-1], 1, "Detect", ["nc"]]], [-1, 1, "SPDConv", [16, 1, 2]]
    cfg = write_yaml(tmp_path / "m.yaml", [[-1, 1, "SPDGroupConv", [16, 3, 2]]], head)
    with pytest.raises(spd_yolo.SPDConfigError, match=r"m\.yaml: layer 0 \(SPDGroupConv\).*divisible by 4"):
        spd_yolo.build_model(str(cfg))
    cfg = write_yaml(tmp_path / "n.yaml", [stem, [-1, 1, "SPDGroupConv", []]], head)
    bad_args = r"layer 1 \(SPDGroupConv\): expected \[c2, k=3, s=2, p=None, g=s\*s, d=1"
    with pytest.raises(spd_yolo.SPDConfigError, match=bad_args):
        spd_yolo.build_model(str(cfg))
    # an explicit g=4 (5th argument, as for SPDConv) is the default
    cfg = write_yaml(tmp_path / "ok.yaml", [stem, [-1, 1, "SPDGroupConv", [32, 3, 2, None, 4]]], head)
    model = spd_yolo.build_model(str(cfg))
    assert model.model[1].conv.conv.groups == 4 and model.stride.tolist() == [4.0]


@pytest.mark.parametrize("name", ["yolov8n-SPD-lite", "yolo26n-SPD-lite"])
def test_one_training_step(name):
    """yolov8n-SPD-lite and yolo26n-SPD-lite (end-to-end head) train: one batch through the ultralytics loss,
    gradients in every SPDGroupConv, SGD step."""
    torch.manual_seed(0)
    model = spd_yolo.build_model(name, nc=2)
    convs = [m.conv.conv.weight for m in model.model if isinstance(m, SPDGroupConv)]
    loss, changed = one_training_step(model, [[0.5, 0.5, 0.3, 0.3], [0.3, 0.4, 0.2, 0.25]],
                                      watch=(model.model[0].conv.conv.weight, *convs))
    assert torch.isfinite(loss).all() and loss.sum() > 0
    assert len(convs) == 6 and all(w.grad is not None and w.grad.abs().sum() > 0 for w in convs)
    assert all(changed)


def test_rewrite_folds_the_stem_and_every_group_conv_and_keeps_outputs(rng):
    """The inference rewrite turns the SPD + 1x1 stem into a 2x2 stride-2 conv and each SPDGroupConv into a 6x6
    stride-2 conv with 4 groups: no SPD left, the stock model's weight count, the same outputs (fused and not)."""
    model = spd_yolo.build_model("yolo11n-SPD-lite", nc=3).eval()
    x = torch.rand(1, 3, 64, 96, generator=rng)
    for m in (model, spd_yolo.build_model("yolo11n-SPD-lite", nc=3).fuse().eval()):
        fast, done = rewrite_spd(m)
        group_rows = [i for i, layer in enumerate(m.model) if isinstance(layer, SPDGroupConv)]
        assert done == ["model.SPDConv 0: 2x2 stride-2 conv"] + [
            f"model.SPDGroupConv {i}: 6x6 stride-2 4-group conv" for i in group_rows]
        assert len(group_rows) == 6 and all(type(fast.model[i]) is Conv for i in [0, *group_rows])
        assert not any(isinstance(layer, (SpaceToDepth, SPDGroupConv)) for layer in fast.modules())
        assert sum(p.numel() for p in fast.parameters()) == sum(p.numel() for p in m.parameters())
        with torch.no_grad():
            torch.testing.assert_close(fast(x)[0], m(x)[0], rtol=1e-4, atol=1e-4)


def test_safe_loading_allows_the_layer():
    assert SPDGroupConv in LAYERS
    assert SPDGroupConv in torch.serialization.get_safe_globals()


@pytest.mark.slow  # starts fresh interpreters
def test_bare_names_resolve_from_another_directory(tmp_path):
    code = (
        "import spd_yolo\n"
        "for name in ('yolov8n-SPD-lite', 'yolo11n-SPD-lite.yaml', 'yolo26n-SPD-lite'):\n"
        "    m = spd_yolo.YOLO(name)\n"
        "    print(name, spd_yolo.resolve_model_cfg(name), m.task, sum(p.numel() for p in m.model.parameters()))\n"
    )
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.strip().splitlines()]
    assert len(rows) == 3
    for (name, path, task, n), want in zip(rows, ("yolov8n-SPD-lite", "yolo11n-SPD-lite", "yolo26n-SPD-lite")):
        assert path == str(spd_yolo.CONFIG_DIR / f"{want}.yaml") and task == "detect"
        assert int(n) == sum(p.numel() for p in spd_yolo.build_model(want).parameters())


def test_summary_prints_stock_beside(capsys):
    assert summary_main(["yolov8n-SPD-lite", "yolo11n-SPD-lite", "yolo26n-SPD-lite", "--imgsz", "640"]) == 0
    rows = [[c.strip() for c in r.split("|")] for r in capsys.readouterr().out.splitlines() if "-SPD-lite |" in r]
    assert [(r[1], r[5]) for r in rows] == [
        ("yolov8n-SPD-lite", "yolov8n"), ("yolo11n-SPD-lite", "yolo11n"), ("yolo26n-SPD-lite", "yolo26n")]
    assert all(r[9] == "0.99x" for r in rows)  # GFLOPs ratio
