# SPD-YOLO, AGPL-3.0 license
"""The model family: every config and scale builds, strides, shapes, no strided conv or pooling, parser bookkeeping."""

import pytest
import torch
from torch import nn
from ultralytics.nn.tasks import ClassificationModel, DetectionModel

import spd_yolo
from helpers import (
    REPO,
    detect_feats,
    large_scales_slow,
    one_training_step,
    run_python,
    stride2_convs,
    strided_layers,
    write_yaml,
)
from spd_yolo.errors import SPDSizeError
from spd_yolo.layers import SpaceToDepth, SPDConv
from spd_yolo.models import registry

ALL_MODELS = spd_yolo.available_models()
# the P2 models (strides 4-32): test_p2_models.py; the stock-cost SPD-lite models: test_lite_models.py
P3_MODELS = [n for n in ALL_MODELS if not n.endswith(("-p2", "-lite"))]
FAMILIES = ["yolov5-SPD", "yolov8-SPD", "yolo11-SPD", "yolo26-SPD"]
LITE = ["yolov8-SPD-lite", "yolo11-SPD-lite", "yolo26-SPD-lite"]  # SPD at the stock model's GFLOPs (issue 12 part 6)


def test_all_names_exist():
    spd = {f"{f.split('-')[0]}{s}-SPD{p}" for f in FAMILIES for s in "nsmlx" for p in ("", "-p2")}
    lite = {f"{f.split('-')[0]}{s}-SPD-lite" for f in LITE for s in "nsmlx"}
    assert set(ALL_MODELS) == spd | lite
    # the classification ResNets (#6) are listed apart, so ALL_MODELS stays the detectors
    assert spd_yolo.available_models("classify") == ("resnet18", "resnet18-SPD", "resnet50", "resnet50-SPD")
    assert spd_yolo.available_models(None) == ALL_MODELS + spd_yolo.available_models("classify")


@pytest.mark.parametrize("name", large_scales_slow(P3_MODELS))
def test_every_model_builds_without_strided_conv_or_pooling(name):
    model = spd_yolo.build_model(name, nc=3)
    assert isinstance(model, DetectionModel)
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert strided_layers(model) == []
    n_spd = sum(isinstance(m, SpaceToDepth) for m in model.modules())
    n_spdconv = sum(isinstance(m, SPDConv) for m in model.modules())
    # yolov5-SPD: SPD stem + 4 backbone + 2 neck SpaceToDepth rows; v8/11/26: the 7 stride-2 Convs became SPDConv
    assert (n_spd, n_spdconv) == ((7, 1) if name.startswith("yolov5") else (7, 7))
    model.eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 3, 64, 96))[0]
    assert y.shape == (1, 4 + 3, (8 * 12) + (4 * 6) + (2 * 3))


@pytest.mark.parametrize("family", ["yolov5n-SPD", "yolov8n-SPD", "yolo11n-SPD", "yolo26n-SPD"])
@pytest.mark.parametrize("hw", [(640, 640), (320, 480)])
def test_forward_shapes(family, hw):
    model = spd_yolo.build_model(family, nc=80).eval()
    h, w = hw
    with torch.no_grad():
        y, feats = model(torch.zeros(1, 3, h, w))
    anchors = sum((h // s) * (w // s) for s in (8, 16, 32))
    assert y.shape == (1, 84, anchors)
    assert [tuple(f.shape[-2:]) for f in detect_feats(feats)] == [(h // s, w // s) for s in (8, 16, 32)]


@pytest.mark.slow  # starts fresh interpreters
def test_stock_yamls_identical_with_plugin(tmp_path):
    """Stock YAMLs must build exactly as without the plugin: compare against a process that never imports it."""
    names = ["yolov5n.yaml", "yolov8n.yaml", "yolo11n.yaml"]
    code = (
        "import sys\nfrom ultralytics.nn.tasks import DetectionModel\n"
        f"for n in {names!r}:\n"
        "    m = DetectionModel(n, verbose=False)\n"
        "    print(n, sum(p.numel() for p in m.parameters()), len(m.state_dict()))\n"
        "assert 'spd_yolo' not in sys.modules and 'spd_modules' not in sys.modules\n"
    )
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    expected = out.stdout.split()
    got = []
    for n in names:
        m = DetectionModel(n, verbose=False)
        got += [n, str(sum(p.numel() for p in m.parameters())), str(len(m.state_dict()))]
    assert registry.is_registered()
    assert got == expected


@pytest.mark.parametrize("family", ["yolov8", "yolo26"])
def test_spdconv_bookkeeping_matches_conv(family):
    """SPDConv rows get Conv's width multiple, make-divisible and max_channels: compare with the stock model."""
    for scale in "nl":  # l caps channels at 512
        ours = spd_yolo.build_model(f"{family}{scale}-SPD")
        stock = spd_yolo.build_model(f"{family}{scale}.yaml")
        for a, b in zip(ours.model, stock.model):
            if isinstance(a, SPDConv):
                assert b.conv.stride == (2, 2)
                assert a.conv.conv.out_channels == b.conv.out_channels
                assert a.conv.conv.in_channels == 4 * b.conv.in_channels
                assert a.conv.conv.kernel_size == b.conv.kernel_size and a.conv.conv.stride == (1, 1)
            else:
                assert type(a) is type(b) and a.f == b.f
        # everything after the first layer differs only by the SPD convs' 4x input channels
        extra = sum(m.np - (m.np - m.conv.conv.weight.numel() * 3 // 4) for m in ours.model if isinstance(m, SPDConv))
        assert sum(p.numel() for p in ours.parameters()) - sum(p.numel() for p in stock.parameters()) == extra
        assert sum(isinstance(m, SpaceToDepth) for m in ours.modules()) == stride2_convs(stock) == 7


def test_yolo26_spd_rows_are_the_stock_rows():
    """yolo26-SPD / yolo26-SPD-p2 are ultralytics' yolo26 / yolo26-p2 row for row (same indices, so a stock
    checkpoint maps onto them layer by layer), each stride-2 `Conv [c2, 3, 2]` an `SPDConv [c2, 3, 2]`; the top-level
    keys (nc, end2end, reg_max, scales) are stock's."""
    for name, stock_name in (("yolo26n-SPD", "yolo26n.yaml"), ("yolo26n-SPD-p2", "yolo26n-p2.yaml")):
        ours, stock = spd_yolo.load_model_yaml(name), spd_yolo.load_model_yaml(stock_name)
        top = [{k: v for k, v in d.items() if k not in ("backbone", "head", "yaml_file")} for d in (ours, stock)]
        assert top[0] == top[1] and top[0]["end2end"] is True and top[0]["reg_max"] == 1
        assert len(ours["backbone"]) == len(stock["backbone"]) and len(ours["head"]) == len(stock["head"])
        strided = []
        for i, (row, base) in enumerate(zip(ours["backbone"] + ours["head"], stock["backbone"] + stock["head"])):
            if base[2] == "Conv" and base[3][2:3] == [2]:
                strided.append(i)
                assert row == [*base[:2], "SPDConv", base[3]], (name, i, row)
            else:
                assert row == base, (name, i, row)
        assert strided == ([0, 1, 3, 5, 7, 17, 20] if name == "yolo26n-SPD" else [0, 1, 3, 5, 7, 20, 23, 26])


def test_yolo26_spd_gflops_and_end_to_end_head_trains():
    """yolo26n-SPD costs stock yolo26n plus 3x its stride-2 convs (each SPDConv is the same conv on 4x the channels,
    at the same output size), keeps YOLO26's end-to-end head (one-to-one branch, reg_max 1, E2E loss), and trains:
    one SGD step with gradients in both branches and in the SPD stem."""
    ours, stock = spd_yolo.build_model("yolo26n-SPD", nc=80), spd_yolo.build_model("yolo26n.yaml", nc=80)
    a, b = spd_yolo.model_stats(ours, "yolo26n-SPD"), spd_yolo.model_stats(stock, "yolo26n")
    macs = []
    hooks = [m.register_forward_hook(lambda m, i, o: macs.append(o.numel() * m.in_channels * m.kernel_size[0] ** 2))
             for m in stock.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    with torch.no_grad():
        stock.eval()(torch.zeros(1, 3, 640, 640))
    for h in hooks:
        h.remove()
    assert len(macs) == 7
    assert a.gflops - b.gflops == pytest.approx(3 * 2 * sum(macs) / 1e9, rel=0.01)
    assert 1.8 < a.gflops / b.gflops < 1.9, (a.gflops, b.gflops)  # 11.46 / 6.24 GFLOPs
    detect = ours.model[-1]
    assert detect.reg_max == 1 and detect.one2one_cv2 is not None and ours.yaml["end2end"] is True
    model = spd_yolo.build_model("yolo26n-SPD", nc=2)
    detect = model.model[-1]
    loss, changed = one_training_step(model, [[0.5, 0.5, 0.3, 0.3], [0.3, 0.4, 0.2, 0.25]],
                                      watch=(model.model[0].conv.conv.weight,))
    assert type(model.criterion).__name__ == "E2ELoss" and torch.isfinite(loss).all() and loss.sum() > 0
    for branch in (detect.cv3, detect.one2one_cv3):
        assert all(b[-1].weight.grad.abs().sum() > 0 for b in branch)
    assert changed == [True]


def test_yolov5_spd_matches_stock_after_the_spd_points():
    """yolov5-SPD is stock YOLOv5 with each stride-2 Conv split into Conv(s=1) + SpaceToDepth (4x channels after)."""
    ours, stock = spd_yolo.build_model("yolov5s-SPD"), spd_yolo.build_model("yolov5s.yaml")
    spd_rows = [m.i for m in ours.model if type(m) is SpaceToDepth]
    assert spd_rows == [2, 5, 8, 11, 23, 27]
    for i in spd_rows:
        conv = ours.model[i - 1]
        assert conv.conv.stride == (1, 1) and conv.conv.kernel_size == (3, 3)
    # the C3 after each backbone SPD takes 4x the channels of the conv before it
    for i in spd_rows[:4]:
        assert ours.model[i + 1].cv1.conv.in_channels == 4 * ours.model[i - 1].conv.out_channels
    # in the neck the SPD output (4x) is concatenated with the lateral branch before the C3
    for i, lateral in ((23, 18), (27, 14)):
        c3 = ours.model[i + 2]
        expected = 4 * ours.model[i - 1].conv.out_channels + ours.model[lateral].conv.out_channels
        assert c3.cv1.conv.in_channels == expected
    assert isinstance(ours.model[0], SPDConv) and ours.model[0].conv.conv.in_channels == 12
    # detect heads see the same channel counts as the stock model
    assert [m[0].conv.in_channels for m in ours.model[-1].cv2] == [m[0].conv.in_channels for m in stock.model[-1].cv2]


def test_authors_rows_parse_unchanged(tmp_path):
    """The paper authors' `[-1, 1, space_to_depth, [1]]` rows (unused dimension arg) build with 4x channels."""
    cfg = write_yaml(
        tmp_path / "authors.yaml",
        backbone=[
            [-1, 1, "Focus", [16, 3]],
            [-1, 1, "Conv", [32, 3, 1]],
            [-1, 1, "space_to_depth", [1]],
            [-1, 1, "C3", [32]],
            [-1, 1, "Conv", [32, 3, 1]],
            [-1, 1, "space_to_depth", [1]],
            [-1, 1, "Conv", [32, 3, 1]],
            [-1, 1, "space_to_depth", [1]],
        ],
        head=[[[3, 5, 7], 1, "Detect", ["nc"]]],
    )
    model = DetectionModel(str(cfg), verbose=False)
    assert model.model[3].cv1.conv.in_channels == 128  # C3 after the SPD of 32 channels takes 4 x 32
    assert model.stride.tolist() == [4.0, 8.0, 16.0]
    assert model.model[-1].cv2[0][0].conv.in_channels == 32
    assert model.model[-1].cv2[1][0].conv.in_channels == 128
    assert model.model[-1].cv2[2][0].conv.in_channels == 128


def test_space_to_depth_scale3_bookkeeping(tmp_path):
    """A general scale s gives s*s*C channels in the parser's bookkeeping (classification YAML, stride 3)."""
    cfg = write_yaml(
        tmp_path / "cls.yaml",
        backbone=[[-1, 1, "Conv", [8, 3, 1]], [-1, 1, "SpaceToDepth", [3]], [-1, 1, "Conv", [16, 3, 1]]],
        head=[[-1, 1, "Classify", ["nc"]]],
        nc=5,
    )
    model = ClassificationModel(str(cfg), verbose=False)
    assert model.model[2].conv.in_channels == 72
    assert model(torch.zeros(2, 3, 18, 27)).shape == (2, 5)


def test_verbose_summary_shows_spd_rows(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="ultralytics"):
        spd_yolo.build_model("yolov5n-SPD", verbose=True)
    rows = [" ".join(m.split()) for m in caplog.messages]
    assert "0 -1 1 1760 spd_yolo.layers.SPDConv [3, 16, 3, 2]" in rows
    assert "2 -1 1 0 spd_yolo.layers.SpaceToDepth [2]" in rows
    assert "28 [-1, 14] 1 0 ultralytics.nn.modules.conv.Concat [1]" in rows  # stock rows as ultralytics prints them
    assert len([r for r in rows if r.split(" ")[0].isdigit()]) == 31  # one line per layer, none lost or repeated


def test_model_stats_true_gflops():
    """GFLOPs of SPD models are real (ultralytics' stock counter says 0.0 for a 12-channel first layer)."""
    from ultralytics.utils.torch_utils import get_flops

    model = spd_yolo.build_model("yolov5n-SPD")
    stats = spd_yolo.model_stats(model, "yolov5n-SPD")
    assert stats.params == sum(p.numel() for p in model.parameters())
    assert registry._STOCK["get_flops"](model) == 0.0  # the bug we correct
    # independent count of the convolutions' multiply-adds at 640 with forward hooks
    macs = []

    def hook(m, inp, out):
        macs.append(out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 640, 640))
    for h in handles:
        h.remove()
    conv_gflops = 2 * sum(macs) / 1e9
    assert conv_gflops <= stats.gflops < conv_gflops * 1.03  # thop also counts BN and the Detect head's extras
    assert stats.gflops == get_flops(model, 640)  # ultralytics' own info() now reports it too
    stock = spd_yolo.model_stats(spd_yolo.build_model("yolov5n.yaml"))
    assert 1.4 < stats.gflops / stock.gflops < 1.7


def test_size_error_names_the_layer():
    model = spd_yolo.build_model("yolov5n-SPD").eval()
    with pytest.raises(SPDSizeError, match=r"SpaceToDepth\(s=2\) at model layer 5 cannot split a 25x25"):
        model(torch.zeros(1, 3, 100, 100))
    with pytest.raises(SPDSizeError, match=r"at model layer 0 cannot split a 63x64"):
        model(torch.zeros(1, 3, 63, 64))


def test_registration_is_idempotent():
    from ultralytics.nn import tasks
    from ultralytics.utils import torch_utils

    stock = registry._STOCK["parse_model"]
    for _ in range(3):
        registry.register()
    assert tasks.parse_model is registry.parse_model
    assert torch_utils.get_flops is registry.get_flops
    assert tasks.yaml_model_load is registry.yaml_model_load
    assert registry._STOCK["parse_model"] is stock and stock.__module__ == "ultralytics.nn.tasks"
    assert registry._STOCK["yaml_model_load"].__module__ == "ultralytics.nn.tasks"
    assert sum(isinstance(m, SPDConv) for m in spd_yolo.build_model("yolov5n-SPD").modules()) == 1


@pytest.mark.slow  # starts fresh interpreters
@pytest.mark.parametrize("folder", ["env.4mTVlf", "2nd project"])
def test_scaled_names_load_from_a_folder_whose_path_has_digit_and_scale_letter(folder, tmp_path):
    """ultralytics turns yolov5n-SPD.yaml into its family file with a regex over the whole path, so a folder named like
    mktemp's 'env.4mTVlf' (4, then m) broke every scaled name of an installation inside it (a wheel-smoke run failed
    so). Here: the family YAMLs copied into such a folder, loaded and built by scaled name, also through YOLO, in a
    fresh process (as a user who installed there); the stock loader fails on the same path."""
    import shutil

    from ultralytics.nn import tasks

    root = tmp_path / folder / "configs"
    root.mkdir(parents=True)
    for family in ("yolov5-SPD.yaml", "yolo11-SPD.yaml"):
        shutil.copy(spd_yolo.CONFIG_DIR / family, root / family)
    with pytest.raises(FileNotFoundError):
        registry._STOCK["yaml_model_load"](root / "yolov5s-SPD.yaml")
    d = tasks.yaml_model_load(root / "yolov5s-SPD.yaml")
    assert d["scale"] == "s" and d["yaml_file"] == str(root / "yolov5s-SPD.yaml") and "backbone" in d
    model = spd_yolo.build_model(str(root / "yolo11m-SPD.yaml"), nc=3)
    assert model.yaml["scale"] == "m" and model.stride.tolist() == [8.0, 16.0, 32.0]
    code = (f"import spd_yolo\nm = spd_yolo.YOLO({str(root / 'yolov5n-SPD.yaml')!r})\n"
            "print(m.model.yaml['scale'], sum(p.numel() for p in m.model.parameters()))")
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    scale, params = out.stdout.split()
    assert scale == "n" and int(params) == sum(p.numel() for p in spd_yolo.build_model("yolov5n-SPD").parameters())


@pytest.mark.slow  # starts fresh interpreters
def test_bare_names_resolve_from_any_directory(tmp_path):
    code = (
        "from spd_yolo import YOLO\n"
        "for name in ('yolov5s-SPD', 'yolov5s-SPD.yaml', 'yolo11n-SPD', 'yolo26n-SPD'):\n"
        "    m = YOLO(name)\n"
        "    print(name, m.task, sum(p.numel() for p in m.model.parameters()))\n"
    )
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    s1, s2 = (int(line.split()[-1]) for line in lines[:2])
    assert s1 == s2 == sum(p.numel() for p in spd_yolo.build_model("yolov5s-SPD").parameters())
    assert all(" detect " in line for line in lines)


def test_resolve_model_cfg_passthrough_and_errors(tmp_path):
    assert spd_yolo.resolve_model_cfg("yolov5s-SPD") == str(spd_yolo.CONFIG_DIR / "yolov5s-SPD.yaml")
    assert spd_yolo.resolve_model_cfg("yolov5-SPD.yaml") == str(spd_yolo.CONFIG_DIR / "yolov5-SPD.yaml")
    assert spd_yolo.resolve_model_cfg("yolov5n.yaml") == "yolov5n.yaml"
    assert spd_yolo.resolve_model_cfg("runs/best.pt") == "runs/best.pt"
    local = tmp_path / "yolov5s-SPD.yaml"
    local.write_text("nc: 1\n")
    assert spd_yolo.resolve_model_cfg(local) == str(local)  # an existing file always wins
    for bad in ("yolov5q-SPD", "yolov9s-SPD.yaml", "yolov5s-spd"):
        with pytest.raises(spd_yolo.SPDConfigError, match=r"unknown SPD model .*Available: yolov5n-SPD"):
            spd_yolo.resolve_model_cfg(bad)


def test_bare_stock_and_unknown_names_as_model_yamls(tmp_path, monkeypatch):
    """Where a model YAML is expected, a bare name means that YAML: `yolov5n` is ultralytics' yolov5n.yaml (scale n),
    an unknown one is an SPDConfigError naming it (was an AssertionError from ultralytics' suffix check)."""
    from spd_yolo.models.configs import resolve_model_yaml

    monkeypatch.chdir(tmp_path)
    assert resolve_model_yaml("yolov5n") == "yolov5n.yaml"
    assert resolve_model_yaml("yolov5n-SPD") == str(spd_yolo.CONFIG_DIR / "yolov5n-SPD.yaml")
    (tmp_path / "mine").write_text("nc: 1\n")
    assert resolve_model_yaml("mine") == "mine"  # an existing file is taken as it is
    d = spd_yolo.load_model_yaml("yolov5n")
    assert d["scale"] == "n" and d["backbone"] == spd_yolo.load_model_yaml("yolov5n.yaml")["backbone"]
    assert sum(p.numel() for p in spd_yolo.build_model("yolov5n").parameters()) == sum(
        p.numel() for p in spd_yolo.build_model("yolov5n.yaml").parameters())
    with pytest.raises(spd_yolo.SPDConfigError, match="model YAML nosuchmodel not found"):
        spd_yolo.load_model_yaml("nosuchmodel")


def test_config_dir_is_the_repo_folder():
    assert spd_yolo.CONFIG_DIR == REPO / "yaml_configs"
    classifiers = ["resnet18", "resnet18-SPD", "resnet50", "resnet50-SPD"]
    p2 = [f"{f}-p2" for f in FAMILIES] + ["yolov5-p2", "yolo11-p2"]  # SPD-p2 models and their stock baselines
    assert sorted(p.stem for p in spd_yolo.CONFIG_DIR.glob("*.yaml")) == sorted(FAMILIES + p2 + LITE + classifiers)


def test_no_font_download_while_offline(network_guard, monkeypatch, tmp_path):
    """Patch point: ultralytics' check_font asks the network for a font it has not cached, whatever YOLO_OFFLINE says;
    ours (in every module ultralytics calls it from) looks only on this machine while offline."""
    from ultralytics import utils as ul_utils
    from ultralytics.data import utils as data_utils
    from ultralytics.utils import checks, plotting

    assert checks.check_font is data_utils.check_font is plotting.check_font is registry.check_font
    monkeypatch.setattr(ul_utils, "USER_CONFIG_DIR", tmp_path)  # nothing cached
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    assert registry.check_font("NoSuchFont-SPD.ttf") is None and network_guard == []
    (tmp_path / "NoSuchFont-SPD.ttf").write_bytes(b"")
    assert registry.check_font("NoSuchFont-SPD.ttf") == tmp_path / "NoSuchFont-SPD.ttf"
    registry._STOCK["check_font"]("Missing-SPD.ttf")  # the stock function: a look-up, refused by the guard
    assert network_guard, "ultralytics' check_font no longer reaches the network: the patch may be dropped"
    network_guard.clear()
