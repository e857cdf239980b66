# SPD-YOLO, AGPL-3.0 license
"""End to end on CPU, tiny self-made data: train -> val (COCO table) -> detect (folder, video) -> export ONNX ->
ONNX in detect and val."""

import csv
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from forkserver import run_module
from helpers import ok, script

pytestmark = pytest.mark.slow


@pytest.fixture
def dataset(demo_data):
    """The session's demo detection set (conftest), which `trained_detector` was trained on."""
    return demo_data


@pytest.fixture
def run_dir(trained_detector):
    """The session's trained yolov5n-SPD (conftest): train.py, 2 epochs on `dataset`."""
    return trained_detector.folder


def test_train_writes_run_folder(run_dir, trained_detector):
    assert "Results saved to" in trained_detector.output
    for f in ("weights/best.pt", "weights/last.pt", "results.csv", "args.yaml", "results.png"):
        assert (run_dir / f).is_file(), f
    rows = list(csv.DictReader((run_dir / "results.csv").open()))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2]
    ckpt = torch.load(run_dir / "weights/best.pt", weights_only=False)
    assert type(ckpt["model"].model[0]).__name__ == "SPDConv"


def test_val_prints_and_saves_coco_table(run_dir, dataset, tmp_path):
    out = ok(script("val", "--weights", run_dir / "weights/best.pt", "--data", dataset, "--img", 64,
                    "--project", tmp_path, "--name", "v", "--verbose"))
    assert "mAP50-95" in out  # ultralytics' metrics
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]" in out  # pycocotools' table
    lines = [line.split() for line in out.splitlines()]
    metric_rows = [row[0] for row in lines if row and row[0] in ("AP_S", "AP_M", "AP_L", "AP", "AP50")]
    assert metric_rows[:3] == ["AP_S", "AP_M", "AP_L"]
    assert "annotation file" in out and "instances_val.json" in out  # the dataset ships one: it is used and named
    saved = json.loads((tmp_path / "v/coco_metrics.json").read_text())
    assert set(saved) >= {"AP", "AP_S", "AR_L", "gt_source"}
    rows = {r["metric"]: r["value"] for r in csv.DictReader((tmp_path / "v/coco_metrics.csv").open())}
    assert float(rows["AP_S"]) == saved["AP_S"]
    assert (tmp_path / "v/predictions.json").is_file()


# Over 30 s on a busy 2-core machine: two script runs (val twice).
def test_val_from_yolo_labels_matches_annotation_file(run_dir, dataset, tmp_path):
    """Without the shipped COCO JSON the ground truth is built from the YOLO labels: same numbers."""
    copy = tmp_path / "copy"
    shutil.copytree(dataset.parent, copy, ignore=shutil.ignore_patterns("annotations", "*.cache"))
    data = copy / "data.yaml"
    data.write_text(data.read_text().replace(str(dataset.parent), str(copy)))
    args = ("--weights", run_dir / "weights/best.pt", "--img", 64, "--project", tmp_path, "--conf-thres", 0.0001)
    out_labels = ok(script("val", "--data", data, "--name", "labels", *args))
    assert "YOLO labels at original image sizes (4 images" in out_labels, out_labels[-2000:]
    ok(script("val", "--data", dataset, "--name", "file", *args))
    a = json.loads((tmp_path / "labels/coco_metrics.json").read_text())
    b = json.loads((tmp_path / "file/coco_metrics.json").read_text())
    for k in ("AP", "AP50", "AP_S", "AP_M", "AP_L", "AR100", "AR_S"):
        assert a[k] == pytest.approx(b[k], abs=1e-9), k


# Over 30 s on a busy 2-core machine: two script runs (detect on images, on a video).
def test_detect_folder_and_video(run_dir, dataset, tmp_path):
    root = dataset.parent
    out = ok(script("detect", "--weights", run_dir / "weights/best.pt", "--source", root / "images/val", "--img", 64,
                    "--project", tmp_path, "--name", "imgs", "--save-txt", "--conf-thres", 0.001))
    assert "4 images/frames" in out
    assert sorted(p.name for p in (tmp_path / "imgs").glob("*.jpg")) == sorted(
        p.name for p in (root / "images/val").glob("*.jpg"))
    ok(script("detect", "--weights", run_dir / "weights/best.pt", "--source", root / "video/demo.avi", "--img", 64,
              "--project", tmp_path, "--name", "vid"))
    src, dst = cv2.VideoCapture(str(root / "video/demo.avi")), cv2.VideoCapture(str(tmp_path / "vid/demo.avi"))
    assert dst.isOpened()
    assert dst.get(cv2.CAP_PROP_FRAME_COUNT) == src.get(cv2.CAP_PROP_FRAME_COUNT) == 7
    assert dst.get(cv2.CAP_PROP_FPS) == pytest.approx(src.get(cv2.CAP_PROP_FPS))
    n = 0
    while dst.read()[0]:
        n += 1
    assert n == 7


# Over 30 s on a busy 2-core machine: three script runs (export, detect, val), each a fresh interpreter.
def test_export_onnx_parity_and_onnx_in_detect_and_val(run_dir, dataset, tmp_path):
    weights = tmp_path / "best.pt"
    shutil.copy(run_dir / "weights/best.pt", weights)
    out = ok(script("export", "--weights", weights, "--include", "onnx", "torchscript", "--img", 64))
    assert "ONNX parity on bus.jpg" in out
    diff = float(out.split("max abs diff ")[1].split()[0])
    assert diff < 1e-3
    onnx = tmp_path / "best.onnx"
    assert onnx.is_file() and (tmp_path / "best.torchscript").is_file()
    out = ok(script("detect", "--weights", onnx, "--source", dataset.parent / "images/val", "--img", 64,
                    "--project", tmp_path, "--name", "onnx-detect"))
    assert "4 images/frames" in out
    out = ok(script("val", "--weights", onnx, "--data", dataset, "--img", 64, "--project", tmp_path, "--name", "ov"))
    assert "AP_S" in out and (tmp_path / "ov/coco_metrics.json").is_file()


# Over 30 s on a busy 2-core machine: three script runs (export twice, val).
def test_export_strided_spd_is_exact_and_has_no_spd(run_dir, dataset, tmp_path):
    """By default (and with the old flag --strided-spd) export folds SPD + conv into strided convs and writes the two
    neck SPDs in 4-D form: the parity check (against the unrewritten torch model) passes, the ONNX graph has the 6x6
    stride-2 stem, no Transpose of an SPD layer and no tensor above 4-D, and the file validates. --keep-spd writes
    the layers as they are (one 6-D reshape and permute each)."""
    import onnx

    from spd_yolo.export_check import graph_rank

    weights = tmp_path / "best.pt"
    shutil.copy(run_dir / "weights/best.pt", weights)
    plain = ok(script("export", "--weights", weights, "--include", "onnx", "--img", 64, "--keep-spd"))
    plain_graph = onnx.load(tmp_path / "best.onnx").graph
    assert graph_rank("onnx", tmp_path / "best.onnx")[0] == 6
    out = ok(script("export", "--weights", weights, "--include", "onnx", "--img", 64, "--strided-spd"))
    assert "SPD layers: 5 folded into strided convolutions, 2 in 4-D form" in out  # stem + 4 backbone; 2 neck
    assert "onnx: no tensor above 4-D in the graph" in out and graph_rank("onnx", tmp_path / "best.onnx")[0] == 4
    for text in (plain, out):
        assert float(text.split("max abs diff ")[1].split()[0]) < 1e-3
    graph = onnx.load(tmp_path / "best.onnx").graph
    kernels = {tuple(a.ints) for n in graph.node if n.op_type == "Conv"
               for a in n.attribute if a.name == "kernel_shape"}
    assert (6, 6) in kernels
    transposes = lambda g: sum(n.op_type == "Transpose" for n in g.node)
    assert transposes(plain_graph) - transposes(graph) == 7  # the 7 SPD layers' permutes are gone
    val = ok(script("val", "--weights", tmp_path / "best.onnx", "--data", dataset, "--img", 64, "--project", tmp_path,
                    "--name", "strided"))
    assert "AP_S" in val


# Over 30 s on a busy 2-core machine: three script runs (detect three times).
def test_detect_strided_spd_gives_the_same_detections(run_dir, dataset, tmp_path):
    """detect.py --strided-spd runs SPD + conv as strided convs: the same boxes and scores as the model as built
    (to the 6 decimals of the label files), and an exported model is refused with a pointer to export.py."""
    weights, images = run_dir / "weights/best.pt", dataset.parent / "images/val"
    runs = {}
    for name, extra in (("built", ()), ("strided", ("--strided-spd",))):
        out = ok(script("detect", "--weights", weights, "--source", images, "--img", 64, "--conf-thres", 0.001,
                        "--save-txt", "--save-conf", "--nosave", "--project", tmp_path, "--name", name, *extra))
        runs[name] = {f.name: np.loadtxt(f, ndmin=2) for f in (tmp_path / name / "labels").glob("*.txt")}
    assert "--strided-spd: 5 SPD layer(s) rewritten as strided convolutions" in out
    assert runs["built"] and sorted(runs["built"]) == sorted(runs["strided"])
    for f, boxes in runs["built"].items():
        assert boxes.shape == runs["strided"][f].shape and len(boxes) > 0
        np.testing.assert_allclose(runs["strided"][f], boxes, atol=1e-5)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"not read")
    bad = script("detect", "--weights", onnx, "--source", images, "--strided-spd")
    assert bad.returncode != 0 and "--strided-spd rewrites a .pt model" in bad.stderr + bad.stdout


# Own training: the weight transfer happens when training starts from a stock checkpoint.
def test_transfer_from_stock_checkpoint(dataset, tmp_path):
    """--cfg with --weights transfers every tensor whose name and shape match, and says how many."""
    from ultralytics import YOLO

    stock = tmp_path / "yolov5n-stock.pt"
    YOLO("yolov5n.yaml").save(stock)
    out = ok(script("train", "--cfg", "yolov5n-SPD", "--weights", stock, "--data", dataset, "--epochs", 1, "--img", 64,
                    "--batch-size", 4, "--workers", 0, "--device", "cpu", "--project", tmp_path, "--noplots"))
    line = next(x for x in out.splitlines() if "Transferred" in x)
    done, total = map(int, line.split("Transferred ")[1].split()[0].split("/"))
    assert 0 < done < total


# Own training: the skipping happens while training reads the corrupt set.
def test_corrupt_image_and_label_are_skipped_with_warning(dataset, tmp_path):
    """A corrupt JPEG and a malformed label line are skipped with a warning naming the file; training goes on."""
    copy = tmp_path / "data"
    shutil.copytree(dataset.parent, copy, ignore=shutil.ignore_patterns("annotations", "*.cache", "video"))
    data = copy / "data.yaml"
    data.write_text(data.read_text().replace(str(dataset.parent), str(copy)))
    (copy / "images/train/000000.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (copy / "labels/train/000001.txt").write_text("0 0.5 0.5 0.1\n")  # 4 columns
    out = ok(script("train", "--cfg", "yolov5n-SPD", "--data", data, "--epochs", 1, "--img", 64, "--batch-size", 4,
                    "--workers", 0, "--device", "cpu", "--project", tmp_path / "runs", "--noplots"))
    assert f"{copy}/images/train/000000.jpg: ignoring corrupt image/label: cannot identify image file" in out
    assert f"{copy}/images/train/000001.jpg: ignoring corrupt image/label: labels require 5 columns" in out
    assert "0 backgrounds, 2 corrupt" in out
    assert "pi-heif" not in out  # no attempt to install an image plugin
    assert (tmp_path / "runs/exp/weights/last.pt").is_file()


# Over 30 s on a busy 2-core machine: two trainings, evaluation, export and detect, as `make demo` runs them.
# Own training: `make demo` trains both models itself.
def test_make_demo_end_to_end_small(tmp_path):
    """The `make demo` pipeline at toy size: both models, the side-by-side COCO table, video, ONNX, output list."""
    env = {**os.environ, "YOLO_VERBOSE": "true"}
    out = run_module("spd_yolo.demo", ["--root", tmp_path / "data", "--project", tmp_path / "runs", "--epochs", 1,
                                       "--imgsz", 64, "--n-train", 8, "--n-val", 4, "--video-frames", 5,
                                       "--batch-size", 4, "--workers", 0], cwd=tmp_path, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    table = (tmp_path / "runs/coco_table.txt").read_text().splitlines()
    assert table[1].split() == ["metric", "yolov5n", "yolov5n-SPD", "diff"]
    assert table[2].split()[0] == "AP_S"
    assert "\n".join(table) in text
    assert (tmp_path / "runs/train/yolov5n-SPD/weights/best.onnx").is_file()
    assert "ONNX parity on bus.jpg" in text
    assert cv2.VideoCapture(str(tmp_path / "runs/detect/yolov5n-SPD/demo.avi")).get(cv2.CAP_PROP_FRAME_COUNT) == 5
    assert "Outputs:" in text and str(tmp_path / "runs/train/yolov5n") in text


# Own training: fine-tuning with plain ultralytics is part of what is checked.
def test_plain_ultralytics_uses_our_checkpoint_in_a_fresh_process(run_dir, dataset, tmp_path):
    """Predict, val, export and fine-tune from best.pt with plain ultralytics, in another folder, no import of ours."""
    weights = tmp_path / "best.pt"
    shutil.copy(run_dir / "weights/best.pt", weights)
    code = f"""
import sys
from ultralytics import YOLO
assert "spd_yolo" not in sys.modules
m = YOLO({str(weights)!r})
assert "spd_yolo" in sys.modules  # the checkpoint imported (and registered) our layers itself
r = m.predict({str(dataset.parent / "images/val")!r}, imgsz=64, verbose=False)
print("predicted", len(r))
print("val mAP50-95", m.val(data={str(dataset)!r}, imgsz=64, batch=4, verbose=False).box.map)
print("exported", m.export(format="onnx", imgsz=64))
m.train(data={str(dataset)!r}, epochs=1, imgsz=64, batch=4, workers=0, device="cpu", project={str(tmp_path)!r},
        name="ft", plots=False)
print("fine-tuned", (m.trainer.save_dir / "weights" / "last.pt").is_file())
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "predicted 4" in out.stdout and "val mAP50-95" in out.stdout
    assert f"exported {tmp_path / 'best.onnx'}" in out.stdout and "fine-tuned True" in out.stdout
