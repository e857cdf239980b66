# SPD-YOLO, AGPL-3.0 license
"""The exact SPD upgrade of stock checkpoints (spd_yolo.upgrade): the kernel identity against plain strided
convolutions, every stock family against its SPD twin and back through rewrite_spd on a real image, the checkpoint
command and its bad inputs, and the three places where users load stock weights into an SPD model."""

import copy
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ultralytics.data.augment import LetterBox
from ultralytics.utils import ASSETS

import spd_yolo
from forkserver import run_module
from helpers import REPO, slicing_space_to_depth
from spd_yolo import YOLO, build_model
from spd_yolo.engine import FINETUNE_KEY, checkpoint_record
from spd_yolo.errors import UpgradeError
from spd_yolo.rewrite import rewrite_spd
from spd_yolo.upgrade import (
    RECORD_KEY,
    TOLERANCE,
    main,
    plan_upgrade,
    spd_kernel,
    twin_name,
    upgrade_checkpoint,
    upgrade_model,
)

# stock model (ultralytics' YAML or our baseline) -> its SPD twin
TWINS = {
    "yolov5nu.yaml": "yolov5n-SPD",
    "yolov8n.yaml": "yolov8n-SPD",
    "yolo11n.yaml": "yolo11n-SPD",
    "yolo26n.yaml": "yolo26n-SPD",
    "yolov8n-p2.yaml": "yolov8n-SPD-p2",
    "yolo26n-p2.yaml": "yolo26n-SPD-p2",
    "yolov5n-p2": "yolov5n-SPD-p2",
    "yolo11n-p2": "yolo11n-SPD-p2",
    "yolov5su.yaml": "yolov5s-SPD",  # the s scales
    "yolo11s.yaml": "yolo11s-SPD",
}


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """`model` in eval mode with random BatchNorm statistics and affine weights, so that no layer is an identity and
    a mis-indexed weight shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:  # the head's last convs: no prior dominates
                m.bias.zero_()
    return model.eval()


def head_outputs(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The detection head's input feature maps (computed by everything before it), then its decoded predictions
    (B, 4 + nc, anchors) split into boxes (pixels) and class probabilities; for an end-to-end head (whose decoded
    output is a top-k, whose order rounding may swap) its raw box and class outputs of both branches instead."""
    feats = []
    hook = model.model[-1].register_forward_pre_hook(lambda m, inputs: feats.extend(inputs[0]))
    with torch.no_grad():
        y, raw = model(x)
    hook.remove()
    if "one2one" not in raw:
        return [*feats, y[:, :4], y[:, 4:]]
    return [*feats, *(raw[b][k] for b in ("one2many", "one2one") for k in ("boxes", "scores"))]


def largest_difference(a: list, b: list) -> float:
    """max |a - b| / max(1, max |a|) over paired tensors, each pair on its own scale (boxes in pixels, scores)."""
    assert [t.shape for t in a] == [t.shape for t in b]
    return max(float((s - t).abs().max()) / max(1.0, float(s.abs().max())) for s, t in zip(a, b))


def letterboxed_bus(size: int = 320) -> torch.Tensor:
    """ultralytics' bus.jpg letterboxed as predict does it (minimal padding to a multiple of 32), RGB, 0-1."""
    img = cv2.imread(str(ASSETS / "bus.jpg"))
    img = LetterBox((size, size), auto=True, stride=32)(image=img)
    return torch.from_numpy(np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1))).float()[None] / 255


def stock_checkpoint(path, cfg: str = "yolov8n.yaml", nc: int = 3, seed: int = 0, **model_attrs):
    """A stock checkpoint as ultralytics writes one (model pickled in FP16, train args, epoch -1)."""
    model = randomized(build_model(cfg, nc=nc), seed)
    model.names = {i: f"class{i}" for i in range(nc)}
    for k, v in model_attrs.items():
        setattr(model, k, v)
    torch.save({"model": copy.deepcopy(model).half(), "ema": None, "optimizer": None, "epoch": -1,
                "train_args": {"imgsz": 320, "data": "my.yaml"}, "date": "2026-12-04"}, path)
    return model


# ---------------------------------------------------------------------------------------------------------------------
# The kernel identity.


@pytest.mark.parametrize("k, p, K, P", [(3, 1, 3, 1), (6, 2, 3, 1), (1, 0, 1, 0), (2, 0, 1, 0), (5, 2, 3, 1)])
def test_spd_kernel_equals_the_strided_conv(k, p, K, P, rng):
    """conv(x, W, stride 2, pad p) == conv(SPD(x), spd_kernel(W), stride 1, pad P), SPD by slicing."""
    w = torch.randn(6, 5, k, k, generator=rng, dtype=torch.float64)
    x = torch.randn(2, 5, 16, 24, generator=rng, dtype=torch.float64)
    new, mask = spd_kernel(w, 2, (p, p), (K, K), (P, P))
    assert new.shape == (6, 20, K, K) and mask.shape == (1, 20, K, K)
    assert int(mask.sum()) == 5 * k * k  # every stock tap landed once
    assert torch.count_nonzero(new * ~mask) == 0
    expected = F.conv2d(x, w, stride=2, padding=p)
    got = F.conv2d(slicing_space_to_depth(x, 2), new, padding=P)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_spd_kernel_3x3_uses_four_of_nine_taps_per_phase():
    """The issue's mapping: tap a lands in block A = (a + 1) // 2 at phase i = (a + 1) % 2."""
    w = torch.arange(9.0).reshape(1, 1, 3, 3)
    new, mask = spd_kernel(w, 2, (1, 1), (3, 3), (1, 1))
    for a in range(3):
        for b in range(3):
            A, i, B, j = (a + 1) // 2, (a + 1) % 2, (b + 1) // 2, (b + 1) % 2
            assert new[0, 2 * j + i, A, B] == w[0, 0, a, b]
    assert mask.sum(dim=(2, 3)).flatten().tolist() == [1, 2, 2, 4]  # phase (0,0) 1 tap, (1,0) 2, (0,1) 2, (1,1) 4


def test_spd_kernel_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="does not fit"):
        spd_kernel(torch.zeros(1, 1, 5, 5), 2, (2, 2), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="different output sizes"):
        spd_kernel(torch.zeros(1, 1, 3, 3), 2, (0, 0), (3, 3), (1, 1))


# ---------------------------------------------------------------------------------------------------------------------
# Every family: exact, and back to the stock function through rewrite_spd.


@pytest.mark.parametrize("stock_cfg", list(TWINS))
def test_every_family_upgrades_exactly_and_rewrites_back(stock_cfg):
    stock = randomized(build_model(stock_cfg, nc=3))
    assert twin_name(stock.yaml) == TWINS[stock_cfg]
    up = upgrade_model(stock, TWINS[stock_cfg])
    assert up.max_diff <= TOLERANCE * max(1.0, up.scale)  # checked by the upgrade on its own random input
    spd = up.model.eval()
    assert not any(isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1) for m in spd.modules())
    x = letterboxed_bus()
    assert x.shape[-2:] == (320, 256)  # portrait: letterboxed to a non-square size, as predict does
    ref = head_outputs(stock, x)
    diff = largest_difference(ref, head_outputs(spd, x))
    assert diff <= TOLERANCE, f"{stock_cfg}: upgraded differs by {diff} (relative)"
    back, done = rewrite_spd(spd)
    assert done
    diff = largest_difference(ref, head_outputs(back.eval(), x))
    assert diff <= TOLERANCE, f"{stock_cfg}: stock -> upgrade -> rewrite_spd differs by {diff} (relative)"


def test_the_comparison_can_fail():
    """ultralytics' name-and-shape transfer (what loading stock weights into an SPD YAML did before) does not keep
    the function: the same comparison sees it."""
    stock = randomized(build_model("yolov8n.yaml", nc=3))
    plain = build_model("yolov8n-SPD", nc=3).eval()
    plain.load(stock)
    x = letterboxed_bus()
    assert largest_difference(head_outputs(stock, x), head_outputs(plain, x)) > 100 * TOLERANCE  # 0.07 here


def test_new_weight_masks_mark_exactly_the_zero_started_taps():
    stock = randomized(build_model("yolov5nu.yaml", nc=3))
    up = upgrade_model(stock, "yolov5n-SPD")
    state = up.model.state_dict()
    # yolov5-SPD: the stem fills its 3x3 kernel completely; 4 backbone C3 (cv1, cv2) and 2 neck C3 read SPD outputs
    assert "model.0.conv.conv.weight" in up.new_weights and not up.new_weights["model.0.conv.conv.weight"].any()
    consumers = sorted({k.split(".")[1] for k in up.new_weights} - {"0"}, key=int)
    assert consumers == ["3", "6", "9", "12", "25", "29"]
    for name, mask in up.new_weights.items():
        w = state[name]
        assert torch.count_nonzero(w * mask) == 0, name  # zero where marked new
        if name != "model.0.conv.conv.weight":
            assert mask.float().mean() > 0.5, name  # three of four phases (and a concat partner's share) are new


# ---------------------------------------------------------------------------------------------------------------------
# Twins and non-twins.


def test_plan_names_the_first_row_that_differs():
    v8, v11 = build_model("yolov8n.yaml").yaml, spd_yolo.load_model_yaml("yolo11n-SPD")
    with pytest.raises(UpgradeError, match=r"not the SPD twin of yolov8n.yaml: stock layer 2 C2f .* vs .*layer 2 C3k2"):
        plan_upgrade(v8, v11)
    with pytest.raises(UpgradeError, match=r"scale n \[0.33, 0.25, 1024\] vs scale s"):
        plan_upgrade(v8, spd_yolo.load_model_yaml("yolov8s-SPD"))
    with pytest.raises(UpgradeError, match="cannot hold a dense strided convolution exactly; upgrade to its dense "
                                           "twin yolov8n-SPD"):
        plan_upgrade(v8, spd_yolo.load_model_yaml("yolov8n-SPD-lite"))
    with pytest.raises(UpgradeError, match="has no SPD layer"):
        plan_upgrade(v8, build_model("yolov8n.yaml").yaml)
    grouped = copy.deepcopy(v8)
    grouped["backbone"][1] = [-1, 1, "Conv", [128, 3, 2, None, 2]]
    with pytest.raises(UpgradeError, match="stock layer 1 .* a grouped strided Conv has no exact SPD equivalent"):
        plan_upgrade(grouped, spd_yolo.load_model_yaml("yolov8n-SPD"))


def test_twin_names():
    for cfg, name in [("yolov5su.yaml", "yolov5s-SPD"), ("yolo11s.yaml", "yolo11s-SPD"), ("yolov8m-p2.yaml",
                                                                                           "yolov8m-SPD-p2")]:
        assert twin_name(spd_yolo.load_model_yaml(cfg)) == name
    with pytest.raises(UpgradeError, match="has no SPD twin here; give --to"):
        twin_name(spd_yolo.load_model_yaml("yolov8n-ghost.yaml"))


# ---------------------------------------------------------------------------------------------------------------------
# The checkpoint command.


def test_upgrade_checkpoint_keeps_classes_args_and_records_the_source(tmp_path, capsys):
    src, dst = tmp_path / "yolov8n-mine.pt", tmp_path / "out" / "spd.pt"
    stock_checkpoint(src, nc=3)
    assert main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "SPD upgrade: yolov8n-mine.pt -> yolov8n-SPD, exact: 7 layers re-indexed, largest output difference" in out
    ckpt = torch.load(dst, map_location="cpu", weights_only=False)
    model = ckpt["model"].float().eval()
    assert model.names == {0: "class0", 1: "class1", 2: "class2"} and model.model[-1].nc == 3
    assert ckpt["train_args"] == {"imgsz": 320, "data": "my.yaml"} and ckpt["optimizer"] is None
    import hashlib

    record = ckpt[RECORD_KEY]
    assert record["source"] == "yolov8n-mine.pt" and record["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert record["by"] == f"upgraded by spd-yolo {spd_yolo.__version__}" and record["target"] == "yolov8n-SPD"
    assert getattr(model, RECORD_KEY)["sha256"] == record["sha256"]
    # predicts what the stock checkpoint predicts (both stored in FP16: the re-indexing moves values, never rounds them)
    stock = torch.load(src, map_location="cpu", weights_only=False)["model"].float().eval()
    x = letterboxed_bus()
    assert largest_difference(head_outputs(stock, x), head_outputs(model, x)) <= TOLERANCE
    assert record["max_diff"] <= record["tolerance"]


@pytest.mark.slow  # starts fresh interpreters
def test_the_module_runs_as_a_command(tmp_path):
    src = tmp_path / "s.pt"
    stock_checkpoint(src, "yolov5nu.yaml")
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-m", "spd_yolo.upgrade", str(src), str(tmp_path / "o.pt"), "--to",
                           "yolov5n-SPD"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "-> yolov5n-SPD, exact: 13 layers re-indexed" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A stock yolov8n checkpoint, a classifier, an SPD checkpoint and a truncated file."""
    root = tmp_path_factory.mktemp("ckpts")
    stock_checkpoint(root / "yolov8n.pt")
    cls = build_model("resnet18", nc=3)
    torch.save({"model": cls, "train_args": {}, "epoch": -1}, root / "resnet18.pt")
    spd = build_model("yolov8n-SPD", nc=3)
    torch.save({"model": spd, "train_args": {}, "epoch": -1}, root / "spd.pt")
    data = (root / "yolov8n.pt").read_bytes()
    (root / "cut.pt").write_bytes(data[: len(data) // 2])
    (root / "notes.pt").write_text("not a checkpoint\n")
    return root


@pytest.mark.parametrize("name, extra, message", [
    ("resnet18.pt", [], "a 'classify' model; the SPD upgrade takes detection models"),
    ("yolov8n.pt", ["--to", "yolo11n-SPD"], "yolo11n-SPD.yaml is not the SPD twin of yolov8n.yaml: stock layer 2"),
    ("yolov8n.pt", ["--to", "yolov8s-SPD"], "scale n [0.33, 0.25, 1024] vs scale s [0.33, 0.5, 1024]"),
    ("yolov8n.pt", ["--to", "yolov8n-SPD-lite"], "grouped SPD convolutions (SPDGroupConv) cannot hold"),
    ("yolov8n.pt", ["--to", "yolov9n-SPD"], "unknown SPD model 'yolov9n-SPD'"),
    ("spd.pt", [], "already an SPD model"),
    ("cut.pt", [], "truncated or damaged checkpoint"),
    ("notes.pt", [], "not a PyTorch checkpoint"),
    ("missing.pt", [], "missing.pt: no such file"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(checkpoints, tmp_path, capsys, name, extra, message):
    out = tmp_path / "out.pt"
    assert main([str(checkpoints / name), str(out), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_overwrite(checkpoints, tmp_path, capsys):
    out = tmp_path / "out.pt"
    out.write_bytes(b"keep me")
    assert main([str(checkpoints / "yolov8n.pt"), str(out)]) == 1
    assert "out.pt exists; give --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main([str(checkpoints / "yolov8n.pt"), str(out), "--overwrite"]) == 0
    assert RECORD_KEY in torch.load(out, map_location="cpu", weights_only=False)


def test_outputs_that_differ_write_nothing(checkpoints, tmp_path, monkeypatch):
    """A re-indexing that were wrong would be caught by the output check, before anything is written."""
    from spd_yolo import upgrade

    real = upgrade.spd_kernel

    def wrong(weight, *args):
        w, mask = real(weight, *args)
        return w.flip(-1), mask

    monkeypatch.setattr(upgrade, "spd_kernel", wrong)
    out = tmp_path / "out.pt"
    with pytest.raises(UpgradeError, match="outputs differ from the stock model's by .* not exact, nothing written"):
        upgrade_checkpoint(checkpoints / "yolov8n.pt", out)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------------
# Where users load weights.


def test_yolo_load_upgrades_a_stock_checkpoint_into_its_twin(checkpoints, caplog):
    stock = YOLO(str(checkpoints / "yolov8n.pt")).model.float().eval()
    model = YOLO("yolov8n-SPD.yaml")
    with caplog.at_level("INFO", logger="ultralytics"):
        model.load(str(checkpoints / "yolov8n.pt"))
    assert "SPD upgrade: yolov8n.pt -> yolov8n-SPD.yaml, exact: 7 layers re-indexed" in caplog.text
    record = getattr(model.model, RECORD_KEY)
    assert record["source"] == "yolov8n.pt" and len(record["new_weights"]) == 7
    x = letterboxed_bus()
    spd = model.model.eval()
    with torch.no_grad():  # boxes exact; the 80-class YAML keeps its own class layer (ultralytics' rule for nc)
        a, b = stock(x)[0], spd(x)[0]
    assert a.shape[1] == 4 + 3 and b.shape[1] == 4 + 80
    assert float((a[:, :4] - b[:, :4]).abs().max()) <= TOLERANCE * float(a[:, :4].abs().max())


def test_other_pairs_keep_ultralytics_transfer(checkpoints, caplog):
    model = YOLO("yolo11n-SPD.yaml")
    with caplog.at_level("INFO", logger="ultralytics"):
        model.load(str(checkpoints / "yolov8n.pt"))
    assert "SPD upgrade: not exact" in caplog.text and "Transferred" in caplog.text
    assert getattr(model.model, RECORD_KEY, None) is None


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from spd_yolo.data.synth import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("data") / "d", n_train=8, n_val=4, imgsz=64, video_frames=0,
                                 progress=False)


@pytest.mark.slow
# Own training: the upgrade and hold happen when training starts from stock weights.
def test_train_from_stock_weights_upgrades_then_holds_the_new_taps(checkpoints, tiny_data, tmp_path):
    """train.py --cfg twin --weights stock: exact upgrade in the log, SGD, the new taps zero through the hold (and
    trained after it), the rule recorded in the checkpoints."""
    from helpers import script_ok

    out = script_ok("train", "--cfg", "yolov8n-SPD", "--weights", checkpoints / "yolov8n.pt", "--data", tiny_data,
                    "--epochs", 2, "--img", 64, "--batch-size", 4, "--workers", 0, "--project", tmp_path, "--name",
                    "hold", "--noplots", "--hyp", _hyp(tmp_path, nbs=4), "--upgrade-rule", "sgd-hold")
    assert "SPD upgrade: yolov8n.pt -> yolov8n-SPD.yaml, exact: 7 layers re-indexed" in out
    assert "fine-tuning rule 'sgd-hold': optimizer SGD" in out and "held at zero for 1 of 2 epochs" in out
    assert "SGD(lr=0.01" in out
    ckpt = torch.load(tmp_path / "hold" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    rule = {"name": "sgd-hold", "optimizer": "SGD", "hold": 0.5, "hold_epochs": 1}
    assert checkpoint_record(ckpt, FINETUNE_KEY) == rule
    assert FINETUNE_KEY not in ckpt  # kept by the model, not as a key of ultralytics' checkpoint dict
    record = getattr(ckpt["model"], RECORD_KEY)
    assert record["finetune"]["name"] == "sgd-hold" and len(record["sha256"]) == 64
    state = ckpt["model"].state_dict()
    released = [float((state[k].float() * m).abs().max()) for k, m in record["new_weights"].items()]
    assert max(released) > 0  # trained in epoch 2, after the hold


def _hyp(folder, **values):
    path = folder / "hyp.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in {"warmup_epochs": 0, **values}.items()))
    return path


@pytest.mark.slow
# Own training: the taps must stay zero during a training under a hold rule.
def test_hold_keeps_the_new_taps_zero_for_the_whole_hold(checkpoints, tiny_data, tmp_path):
    """A rule holding the whole run: under AdamW (the optimizer that moves every weight from its first step), every
    zero-started tap of the upgraded model stays exactly zero while the stock taps train (Python API, YOLO.load)."""
    from spd_yolo.engine import SPDDetectionTrainer
    from spd_yolo.upgrade import FINETUNE_RULES, FinetuneRule

    FINETUNE_RULES["test-hold-all"] = FinetuneRule("AdamW", 1.0)
    try:
        model = YOLO("yolov8n-SPD.yaml").load(str(checkpoints / "yolov8n.pt"))
        before = {k: v.clone() for k, v in model.model.state_dict().items()}
        model.train(data=str(tiny_data), epochs=1, imgsz=64, batch=4, workers=0, project=str(tmp_path), name="all",
                    plots=False, warmup_epochs=0, nbs=4, val=False,
                    trainer=SPDDetectionTrainer.configured(finetune="test-hold-all"))
    finally:
        del FINETUNE_RULES["test-hold-all"]
    ckpt = torch.load(tmp_path / "all" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    record = getattr(ckpt["model"], RECORD_KEY)
    assert record["finetune"] == {"name": "test-hold-all", "optimizer": "AdamW", "hold": 1.0, "hold_epochs": 1}
    state = ckpt["model"].state_dict()
    for k, m in record["new_weights"].items():
        assert float((state[k].float() * m).abs().max()) == 0.0, k
    changed = [k for k, m in record["new_weights"].items() if not torch.equal(state[k].float() * ~m,
                                                                              before[k].half().float() * ~m)]
    assert changed  # the stock taps did train


@pytest.mark.slow
# Own training: the upgrade happens when `spd-yolo ... train pretrained=` starts.
def test_spd_yolo_cli_pretrained_upgrades(checkpoints, tiny_data, tmp_path):
    env = {**os.environ, "YOLO_VERBOSE": "true"}
    proc = run_module("spd_yolo.cli.yolo", ["detect", "train", "model=yolov8n-SPD.yaml",
                                            f"pretrained={checkpoints / 'yolov8n.pt'}", f"data={tiny_data}", "epochs=1",
                                            "imgsz=64", "batch=4", "workers=0", f"project={tmp_path}", "name=cli",
                                            "plots=False", "val=False"], cwd=REPO, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "SPD upgrade: yolov8n.pt -> yolov8n-SPD.yaml, exact: 7 layers re-indexed" in out
    ckpt = torch.load(tmp_path / "cli" / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert checkpoint_record(ckpt, FINETUNE_KEY) == {"name": "sgd", "optimizer": "SGD", "hold": 0.0,
                                                     "hold_epochs": 0}  # the default
    assert "trained from the first step" in out


@pytest.mark.slow
def test_upgraded_yolo26_exports_to_onnx_with_parity(tmp_path):
    """yolo26n (end-to-end head) -> its exact upgrade -> export.py: ONNX Runtime agrees with torch on a real image."""
    from helpers import script_ok

    stock_checkpoint(tmp_path / "yolo26n.pt", "yolo26n.yaml")
    assert main([str(tmp_path / "yolo26n.pt"), str(tmp_path / "spd.pt")]) == 0
    out = script_ok("export", "--weights", tmp_path / "spd.pt", "--include", "onnx", "--img", 64)
    assert "ONNX parity on bus.jpg" in out and (tmp_path / "spd.onnx").is_file()


@pytest.mark.slow
def test_upgraded_checkpoint_validates_to_the_stock_coco_numbers(tmp_path):
    """val.py on the same validation set: the upgraded checkpoint's predictions and COCO numbers equal the stock ones.
    The labels are the stock model's own confident predictions, so its AP is high and any difference would show."""
    import json
    import shutil
    from pathlib import Path

    from helpers import script_ok
    from spd_yolo.data.synth import generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "d", n_train=2, n_val=6, imgsz=64, video_frames=0, progress=False)
    root = data.parent
    stock_checkpoint(tmp_path / "stock.pt", "yolov8n.yaml", nc=4)
    for r in YOLO(str(tmp_path / "stock.pt")).predict(str(root / "images" / "val"), imgsz=64, conf=0.5, verbose=False):
        rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, (x, y, w, h) in zip(r.boxes.cls, r.boxes.xywhn)]
        (root / "labels" / "val" / f"{Path(r.path).stem}.txt").write_text("\n".join(rows) + "\n")
    shutil.rmtree(root / "annotations")  # the ground truth is then the YOLO labels just written
    assert main([str(tmp_path / "stock.pt"), str(tmp_path / "spd.pt")]) == 0
    stats, preds = {}, {}
    for name in ("stock", "spd"):
        script_ok("val", "--weights", tmp_path / f"{name}.pt", "--data", data, "--img", 64, "--project", tmp_path,
                  "--name", f"val-{name}")
        stats[name] = json.loads((tmp_path / f"val-{name}" / "coco_metrics.json").read_text())
        preds[name] = json.loads((tmp_path / f"val-{name}" / "predictions.json").read_text())
    assert stats["stock"]["AP"] > 0.3 and len(preds["stock"]) > 20  # not a comparison of empty results
    for key in ("AP", "AP50", "AP75", "AP_S", "AR1", "AR10", "AR100"):
        assert stats["spd"][key] == pytest.approx(stats["stock"][key], abs=1e-6), key
    assert len(preds["spd"]) == len(preds["stock"])
    for a, b in zip(preds["stock"], preds["spd"]):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert np.allclose(a["bbox"], b["bbox"], atol=1e-3) and abs(a["score"] - b["score"]) < 1e-5
