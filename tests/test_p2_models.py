# SPD-YOLO, AGPL-3.0 license
"""P2 models (Detect at strides 4-32): names, strides, shapes, no strided conv, same topology as stock baselines."""

from copy import deepcopy

import pytest
import torch
from ultralytics.nn import tasks

import spd_yolo
from helpers import detect_feats, one_training_step, run_python, stride2_convs, strided_layers
from spd_yolo.layers import SpaceToDepth
from spd_yolo.models.configs import baseline_models, load_model_yaml
from spd_yolo.models.summary import main as summary_main
from spd_yolo.models.summary import stock_counterpart

# SPD-p2 -> baseline (ours for yolov5 and yolo11; ultralytics ships yolov8-p2.yaml and yolo26-p2.yaml)
FAMILIES = {
    "yolov5": "yolov5{}-p2", "yolov8": "yolov8{}-p2.yaml", "yolo11": "yolo11{}-p2", "yolo26": "yolo26{}-p2.yaml",
}
STRIDES = [4.0, 8.0, 16.0, 32.0]


def spd_name(family: str, scale: str = "n") -> str:
    return f"{family}{scale}-SPD-p2"


def parse(name: str):
    """The model layers of `name`, built by the YAML parser on the meta device (no weights, no forward: cheap at x)."""
    with torch.device("meta"):
        return tasks.parse_model(deepcopy(load_model_yaml(name)), ch=3, verbose=False)[0]


def stock_rows(name: str) -> list:
    """The YAML rows of `name` as the stock rows they stand for, with absolute 'from' indices: SPDConv and a
    non-strided Conv followed by SpaceToDepth become one stride-2 Conv (compared by output channels and stride)."""
    d = load_model_yaml(name)
    out, where = [], {}  # where: YAML row -> index in out
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        if m == "SpaceToDepth":
            prev_f, prev_n, prev_m, prev_args = out[-1]
            assert f == -1 and prev_m == "Conv" and prev_args == [prev_args[0], 1] and args == [2], (name, i)
            out[-1], where[i] = (prev_f, prev_n, "Conv", [prev_args[0], 2]), len(out) - 1
            continue
        if m in ("Conv", "SPDConv"):
            m, args = "Conv", [args[0], 2 if m == "SPDConv" else (args[2] if len(args) > 2 else 1)]
        froms = [where[i + x if x < 0 else x] for x in (f if isinstance(f, list) else [f])] if i else [-1]
        where[i] = len(out)
        out.append((froms, n, m, args))
    return out


def test_names():
    spd = {spd_name(f, s) for f in FAMILIES for s in "nsmlx"}
    assert spd <= set(spd_yolo.available_models("detect"))
    assert baseline_models() == tuple(f"{f}{s}-p2" for f in ("yolov5", "yolo11") for s in "nsmlx")
    assert not set(baseline_models()) & set(spd_yolo.available_models(None))  # the list shows SPD models only
    stock = [stock_counterpart(spd_name(f)) for f in FAMILIES]
    assert stock == ["yolov5n-p2.yaml", "yolov8n-p2.yaml", "yolo11n-p2.yaml", "yolo26n-p2.yaml"]


@pytest.mark.parametrize("family", FAMILIES)
def test_strides_and_topology_match_the_baseline(family):
    """Built at scale n: Detect at 4-32 for both; the SPD model's rows are its baseline's with SPD for stride 2 (the
    same rows for v8, v11 and v26; for v5 each non-strided Conv + SpaceToDepth pair is one stride-2 Conv row)."""
    name, base_name = spd_name(family), FAMILIES[family].format("n")
    ours, base = spd_yolo.build_model(name), spd_yolo.build_model(base_name)
    assert ours.stride.tolist() == base.stride.tolist() == STRIDES
    assert stock_rows(name) == stock_rows(base_name)
    d = load_model_yaml(name)
    split = sum(m == "SpaceToDepth" for _, _, m, _ in d["backbone"] + d["head"])
    assert split == (7 if family == "yolov5" else 0)  # v5: 4 backbone + 3 neck SPD rows, the stem is SPDConv
    assert len(d["backbone"] + d["head"]) == len(ours.model) == len(base.model) + split
    assert d["scales"] == load_model_yaml(base_name)["scales"]


@pytest.mark.parametrize("scale", "nsmlx")
@pytest.mark.parametrize("family", FAMILIES)
def test_every_scale_parses_without_strided_conv(family, scale):
    """Every scale: no strided conv or pooling, one SpaceToDepth per stride-2 conv of the baseline, and the Detect
    head sees the baseline's channels (parsed on the meta device; strides depend on the rows, not the scale)."""
    ours, base = parse(spd_name(family, scale)), parse(FAMILIES[family].format(scale))
    assert strided_layers(ours) == []
    assert sum(isinstance(m, SpaceToDepth) for m in ours.modules()) == stride2_convs(base) == 8
    assert len(ours[-1].cv2) == len(base[-1].cv2) == 4
    channels = [[b[0].conv.in_channels for b in m[-1].cv2] for m in (ours, base)]
    assert channels[0] == channels[1]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hw", [(640, 640), (256, 320)])
def test_forward_shapes(family, hw):
    model = spd_yolo.build_model(spd_name(family), nc=80).eval()
    h, w = hw
    with torch.no_grad():
        y, feats = model(torch.zeros(1, 3, h, w))
    assert y.shape == (1, 84, sum((h // s) * (w // s) for s in (4, 8, 16, 32)))
    assert [tuple(f.shape[-2:]) for f in detect_feats(feats)] == [(h // s, w // s) for s in (4, 8, 16, 32)]


@pytest.mark.slow  # starts fresh interpreters
def test_bare_names_resolve_from_another_directory(tmp_path):
    """Ours (SPD-p2 and our baselines) come from CONFIG_DIR, through `YOLO` too; yolov8n-p2 and yolov5n stay
    ultralytics' own YAMLs."""
    ours = ["yolov8n-SPD-p2", "yolov5n-SPD-p2.yaml", "yolo11n-SPD-p2", "yolo26n-SPD-p2", "yolov5n-p2",
            "yolo11n-p2.yaml"]
    code = (
        "import spd_yolo\nfrom spd_yolo.models.configs import resolve_model_yaml\n"
        f"for name in {[*ours, 'yolov8n-p2', 'yolov5n']!r}:\n"
        "    m = spd_yolo.build_model(name)\n"
        "    n = sum(p.numel() for p in m.parameters())\n"
        f"    if name in {ours!r}:\n"
        "        assert sum(p.numel() for p in spd_yolo.YOLO(name).model.parameters()) == n\n"
        "    print(name, resolve_model_yaml(name), m.stride.tolist()[0], n)\n"
    )
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:] for line in out.stdout.strip().splitlines()}
    for name in ours:
        assert rows[name][:2] == [str(spd_yolo.CONFIG_DIR / (name.removesuffix(".yaml") + ".yaml")), "4.0"]
    assert rows["yolov8n-p2"][:2] == ["yolov8n-p2.yaml", "4.0"] and rows["yolov5n"][:2] == ["yolov5n.yaml", "8.0"]
    for name in ("yolov8n-p2", "yolov5n"):  # ultralytics' files, as without the plugin
        stock = tasks.DetectionModel(f"{name}.yaml", verbose=False)
        assert int(rows[name][2]) == sum(p.numel() for p in stock.parameters())


@pytest.mark.parametrize("name", ["yolov8n-SPD-p2", "yolo26n-SPD-p2"])
def test_one_training_step(name):
    """yolov8n-SPD-p2 and yolo26n-SPD-p2 (end-to-end head) train: one batch through the ultralytics loss; the tiny
    boxes are learnt at P2."""
    model = spd_yolo.build_model(name, nc=2)
    loss, changed = one_training_step(model, [[0.5, 0.5, 0.1, 0.1], [0.3, 0.4, 0.05, 0.08]],
                                      watch=(model.model[0].conv.conv.weight,))
    assert torch.isfinite(loss).all() and loss.sum() > 0
    detect = model.model[-1]
    assert all(b[-1].weight.grad.abs().sum() > 0 for b in detect.cv3)  # classes: every level, P2 to P5
    assert detect.cv2[0][-1].weight.grad.abs().sum() > 0  # boxes of 3 to 6 pixels: assigned to the stride-4 level
    assert changed == [True]  # the SPD stem learns


def test_summary_prints_baselines_beside(capsys):
    names = ["yolov8n-SPD-p2", "yolo11n-SPD-p2", "yolov5n-SPD-p2", "yolo26n-SPD-p2"]
    assert summary_main([*names, "--imgsz", "256"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if "-SPD-p2 |" in r]
    assert [r.split("|")[1].strip() + ">" + r.split("|")[5].strip() for r in rows] == [
        "yolov8n-SPD-p2>yolov8n-p2", "yolo11n-SPD-p2>yolo11n-p2", "yolov5n-SPD-p2>yolov5n-p2",
        "yolo26n-SPD-p2>yolo26n-p2"]  # yolo26n-p2: ultralytics' own
    assert all(float(r.split("|")[4]) > 0 and float(r.split("|")[8]) > 0 for r in rows)  # GFLOPs of both
