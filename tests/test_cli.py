# SPD-YOLO, AGPL-3.0 license
"""The four scripts' flags, help and what they share (their bad-input table: tests/test_preflight.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from helpers import REPO, ok, script
from spd_yolo.cli import detect, export, train, val
from spd_yolo.cli.common import script_name
from spd_yolo.export_check import Parity

SCRIPTS = {"train": train, "val": val, "detect": detect, "export": export}
FLAGS = {
    "train": "--cfg --weights --data --hyp --epochs --batch-size --imgsz --img --device --workers --project --name "
    "--exist-ok --resume --seed --optimizer --cos-lr --patience --freeze --save-period --cache --single-cls --rect "
    "--noval --noplots --label-smoothing",
    "val": "--data --weights --batch-size --imgsz --img --conf-thres --iou-thres --max-det --task --device --workers "
    "--single-cls --verbose --save-txt --save-conf --save-json --half --project --name --anno-json",
    "detect": "--weights --source --imgsz --img --conf-thres --iou-thres --max-det --device --view-img --save-txt "
    "--save-conf --save-crop --nosave --classes --agnostic-nms --project --name --exist-ok --line-thickness "
    "--hide-labels --hide-conf --half --vid-stride",
    "export": "--weights --include --imgsz --img --batch-size --device --dynamic --simplify --opset --half --keep-spd "
    "--strided-spd --int8 --data --no-parity --parity-tol",
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_lists_every_flag(name):
    text = SCRIPTS[name].build_parser().format_help()
    for flag in FLAGS[name].split():
        assert flag in text, flag


@pytest.mark.slow  # starts fresh interpreters
def test_scripts_run_as_files_with_help_and_reject_unknown_flags(tmp_path):
    for name in SCRIPTS:
        out = subprocess.run([sys.executable, str(REPO / f"{name}.py"), "--help"], cwd=tmp_path, capture_output=True,
                             text=True, check=False)
        assert out.returncode == 0 and out.stdout.startswith(f"usage: {name}.py "), out.stderr
    out = subprocess.run([sys.executable, str(REPO / "train.py"), "--epochz", "3"], cwd=tmp_path, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 2 and "unrecognized arguments: --epochz" in out.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A valid-looking data YAML, a real (untrained) checkpoint and a folder of unreadable images. The bad-input table
    of the four scripts is tests/test_preflight.py."""
    root = tmp_path_factory.mktemp("cli")
    (root / "images/train").mkdir(parents=True)
    (root / "images/val").mkdir(parents=True)
    for split in ("train", "val"):
        (root / f"images/{split}/a.jpg").write_bytes(b"")  # the folders must hold images
    good = root / "data.yaml"
    good.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": {0: "a"}}))
    from spd_yolo import YOLO

    weights = root / "m.pt"
    YOLO("yolov5n-SPD").save(weights)
    (root / "unreadable").mkdir()
    (root / "unreadable/a.jpg").write_text("not an image")
    (root / "unreadable/b.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    return {"root": root, "good": good, "weights": weights}


def test_a_folder_with_some_unreadable_files_warns_for_each_and_goes_on(files, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(files["root"] / "unreadable", folder)
    assert cv2.imwrite(str(folder / "good.jpg"), np.full((64, 64, 3), 127, np.uint8))
    out = script("detect", "--weights", files["weights"], "--source", folder, "--img", "64", "--project",
                 tmp_path / "runs")
    text = ok(out)
    for bad in ("a.jpg", "b.png"):
        assert sum(str(folder / bad) in line for line in text.splitlines()) == 1, bad  # one warning per bad file
    assert "1 images/frames" in out.stdout
    assert (tmp_path / "runs/exp/good.jpg").is_file()


@pytest.mark.slow  # starts fresh interpreters
def test_ddp_workers_import_our_registration(files, tmp_path):
    """ultralytics' DDP launcher pickles the trainer class and model: a fresh worker process must get our layers."""
    from ultralytics.utils.dist import generate_ddp_file

    from spd_yolo import build_model
    from spd_yolo.engine import SPDDetectionTrainer

    trainer = SPDDetectionTrainer(overrides={"model": "yolov5n-SPD.yaml", "data": str(files["good"]),
                                             "device": "cpu", "project": str(tmp_path), "name": "ddp"})
    trainer.model = build_model("yolov5n-SPD", nc=1)
    script = generate_ddp_file(trainer)
    text = Path(script).read_text()
    assert "trainer.train()" in text
    probe = text.replace(
        "trainer.train()",
        "from ultralytics.nn import tasks\n"
        "    print('registered', tasks.parse_model.__module__, type(trainer).__module__)\n"
        "    print('spd layers', sum(type(m).__name__ == 'SpaceToDepth' for m in trainer.model.modules()))",
    )
    check = tmp_path / "probe.py"
    check.write_text(probe)
    out = subprocess.run([sys.executable, str(check)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "registered spd_yolo.models.registry spd_yolo.engine" in out.stdout
    assert "spd layers 7" in out.stdout


def test_label_smoothing_targets():
    from spd_yolo.engine import SmoothBCEWithLogits, label_smoothing

    pred, target = torch.randn(4, 10), (torch.rand(4, 10) > 0.5).float()
    smooth = SmoothBCEWithLogits(0.1)(pred, target)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(pred, target * 0.9 + 0.05, reduction="none")
    assert torch.allclose(smooth, ref)
    assert not torch.allclose(smooth, SmoothBCEWithLogits(0.0)(pred, target))
    with pytest.raises(ValueError, match="label smoothing must be in"):
        label_smoothing(1.5)


def test_usage_and_resume_hint_name_the_command_typed(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/spd-train", "--help"])
    assert train.build_parser().prog == "spd-train" and script_name("python train.py") == "spd-train"
    monkeypatch.setattr(sys, "argv", [str(REPO / "train.py")])
    assert train.build_parser().prog == "train.py" and script_name("python train.py") == "python train.py"


def test_onnx_parity_tolerance_scales_boxes_by_the_input_size():
    p = Parity(1.59e-3, 1.59e-3, 2e-6, (1, 84, 2100), size=320)  # float32 rounding of a trained model's boxes at 320
    assert p.diff == pytest.approx(1.59e-3 / 320) and p.ok(1e-3)
    assert not Parity(0.5, 0.5, 1e-6, (1, 84, 2100), size=320).ok(1e-3)  # half a pixel at 320: 1.6e-3 of the input
    assert not Parity(2e-3, 1e-4, 2e-3, (1, 84, 2100), size=640).ok(1e-3)  # scores are compared as they are
    assert Parity(3e-4, 0.0, 3e-4, (1, 10), "classify").ok(1e-3)


def test_export_parity_failure_is_one_error_line_and_keeps_the_file(files, tmp_path, monkeypatch, capsys):
    weights = shutil.copy(files["weights"], tmp_path / "m.pt")
    monkeypatch.setattr(export, "onnx_parity", lambda *a, **k: Parity(0.5, 0.5, 1e-6, (1, 6, 84), size=64))
    assert export.cli(["--weights", str(weights), "--include", "onnx", "--img", "64"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"error: ONNX parity failed: the outputs differ by 0.00781 > --parity-tol 0.001 (boxes 0.5 px = "
                   f"0.00781 of 64 px, scores 1e-06); {tmp_path / 'm.onnx'} was written")], err
    assert (tmp_path / "m.onnx").stat().st_size > 0
