# SPD-YOLO, AGPL-3.0 license
"""Sliced inference through SAHI (detect.py / val.py --slice): the slice grid, boxes mapped back to the frame, the
outputs of a plain run (labels, videos, COCO table), and bad input.

The slow tests train a tiny detector of bright squares on 64 px images (about a minute on CPU), then look for 8-16 px
squares in 1280x960 frames: at --img 320 the whole frame shrinks them to 2-4 px, sliced they keep their size.
"""

import json
import math

import cv2
import numpy as np
import pytest
import yaml

from helpers import REPO, build_once, ok, script
from spd_yolo.cli import detect, val
from spd_yolo.coco import STAT_NAMES

W, H = 1280, 960  # the large frames
N_SQUARES = 10


def squares_frame(seed: int, w: int = W, h: int = H, n: int = N_SQUARES, margin: int = 0):
    """A noisy dark frame with n bright 8-16 px squares (BGR) and their boxes [x1, y1, x2, y2]."""
    rng = np.random.default_rng(seed)
    im = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    boxes = []
    while len(boxes) < n:
        s = int(rng.integers(8, 17))
        x, y = int(rng.integers(margin, w - s - margin)), int(rng.integers(margin, h - s - margin))
        if any(x < b[2] + 4 and b[0] < x + s + 4 and y < b[3] + 4 and b[1] < y + s + 4 for b in boxes):
            continue  # keep squares apart
        im[y : y + s, x : x + s] = 255
        boxes.append([x, y, x + s, y + s])
    return im, np.array(boxes, np.float64)


def iou(a, b) -> np.ndarray:
    """IoU matrix of boxes a (n, 4) and b (m, 4), xyxy."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def expected_slices(size: int, overlap: float, length: int) -> int:
    """Slices along one side: a slice every size - overlap pixels, the last one flush with the edge."""
    if size >= length:
        return 1
    return math.ceil((length - size) / (size - int(overlap * size))) + 1


def labels_xyxy(path, w: int = W, h: int = H) -> np.ndarray:
    """A YOLO label file (cls xc yc w h [conf], normalised) as rows [cls, x1, y1, x2, y2, (conf)] in pixels."""
    rows = np.loadtxt(path, ndmin=2)
    cls, (xc, yc, bw, bh) = rows[:, :1], rows[:, 1:5].T
    xyxy = np.stack([(xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h], 1)
    return np.concatenate([cls, xyxy, rows[:, 5:]], 1)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Two large frames (PNG) with their square boxes, and a 5-frame MJPG video at 7 fps of such frames."""
    root = tmp_path_factory.mktemp("frames")
    (root / "images").mkdir()
    truth = {}
    for i in range(2):
        im, boxes = squares_frame(i)
        cv2.imwrite(str(root / "images" / f"f{i}.png"), im)
        truth[f"f{i}"] = boxes
    writer = cv2.VideoWriter(str(root / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 7.0, (W, H))
    for i in range(5):
        writer.write(squares_frame(10 + i)[0])
    writer.release()
    return {"root": root, "images": root / "images", "video": root / "clip.avi", "truth": truth}


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A real yolov5n-SPD checkpoint (untrained) and a classification checkpoint."""
    from spd_yolo import YOLO

    root = tmp_path_factory.mktemp("weights")
    YOLO("yolov5n-SPD").save(root / "det.pt")
    return {"det": root / "det.pt", "cls": str(REPO / "tests/data/old_spd_cls.pt")}


# --------------------------------------------------------------------------------------------------- fast


@pytest.mark.parametrize("name,module", [("detect", detect), ("val", val)])
def test_help_lists_the_slice_flags(name, module):
    text = module.build_parser().format_help()
    for flag in ("--slice ", "--slice-size", "--slice-overlap", "--slice-merge", "--slice-full", "--slice-batch"):
        assert flag in text, flag
    assert "GREEDYNMM, NMM, NMS, LSNMS" in text and "(default: 0.2)" in text


@pytest.mark.parametrize("size,overlap", [((320, 320), 0.2), ((384, 256), 0.5)])
def test_sahi_makes_the_expected_grid_of_slices(untrained, size, overlap):
    """The real model runs on every slice sahi cuts: as many as the grid of size / overlap over 1280x960."""
    from sahi.slicing import get_slice_bboxes

    from spd_yolo import YOLO
    from spd_yolo.slicing import SlicedDetector, SliceSettings

    im, _ = squares_frame(0)
    detector = SlicedDetector(YOLO(untrained["det"]), SliceSettings(size=size, overlap=overlap, batch=4), imgsz=320,
                              device="cpu")
    boxes, n_slices = detector(im)
    expected = expected_slices(size[0], overlap, H) * expected_slices(size[1], overlap, W)
    cut = get_slice_bboxes(H, W, slice_height=size[0], slice_width=size[1], auto_slice_resolution=False,
                           overlap_height_ratio=overlap, overlap_width_ratio=overlap)  # sahi's own grid
    assert n_slices == expected == len(cut)
    assert boxes.shape[1] == 6 and (boxes[:, :4] >= 0).all()
    assert (boxes[:, [0, 2]] <= W).all() and (boxes[:, [1, 3]] <= H).all()


def test_a_slice_larger_than_the_image_is_one_slice_with_a_note(untrained):
    from spd_yolo import YOLO
    from spd_yolo.slicing import SlicedDetector, SliceSettings

    notes = []
    detector = SlicedDetector(YOLO(untrained["det"]), SliceSettings(size=(320, 320)), imgsz=320, device="cpu",
                              note=notes.append)
    small = squares_frame(3, w=200, h=150, n=2)[0]
    assert detector(small)[1] == 1
    assert detector(small)[1] == 1
    assert notes == ["slice 320x320 is not smaller than the 200x150 image: one slice, the whole image"]  # said once


def test_a_low_confidence_threshold_merges_by_nms_unless_the_merge_is_given(untrained):
    from spd_yolo import YOLO
    from spd_yolo.slicing import SlicedDetector, SliceSettings

    notes = []
    model = YOLO(untrained["det"])
    assert SlicedDetector(model, SliceSettings(), conf=0.001, note=notes.append).merge == "NMS"
    assert "slices merged by NMS over IOU" in notes[0]
    kept = SlicedDetector(model, SliceSettings(keep_merge=True), conf=0.001, note=notes.append)
    assert (kept.merge, kept.metric) == ("GREEDYNMM", "IOS") and len(notes) == 1


BAD = [
    ("detect", ["--slice", "--slice-overlap", "1"], "--slice-overlap 1.0: must be in [0, 1)"),
    ("detect", ["--slice", "--slice-overlap", "-0.2"], "--slice-overlap -0.2: must be in [0, 1)"),
    ("detect", ["--slice", "--slice-size", "0"], "--slice-size 0: must be positive"),
    ("detect", ["--slice", "--slice-size", "320", "-5"], "--slice-size 320 -5: must be positive"),
    ("detect", ["--slice", "--slice-size", "1", "2", "3"], "--slice-size 1 2 3: give one size or H W"),
    ("detect", ["--slice-size", "320"], "--slice-size applies only with --slice"),
    ("detect", ["--slice-overlap", "0.3"], "--slice-overlap applies only with --slice"),
    ("detect", ["--slice-merge", "NMS"], "--slice-merge applies only with --slice"),
    ("detect", ["--slice-full"], "--slice-full applies only with --slice"),
    ("detect", ["--slice", "--slice-merge", "BOXES"], "--slice-merge BOXES: unknown merge 'BOXES'"),
    ("detect", ["--slice", "--slice-merge", "NMS", "IOS", "1.5"], "merge threshold must be in (0, 1], got 1.5"),
    ("detect", ["--slice", "--slice-batch", "0"], "--slice-batch 0: must be >= 1"),
    ("detect", ["--slice", "--weights", "{cls}"], "--slice: --weights {cls} is a 'classify' model; sliced inference"),
    ("val", ["--slice", "--slice-overlap", "1.5"], "--slice-overlap 1.5: must be in [0, 1)"),
    ("val", ["--slice-size", "640"], "--slice-size applies only with --slice"),
    ("val", ["--slice", "--slice-size", "-1"], "--slice-size -1: must be positive"),
    ("val", ["--slice", "--weights", "{cls}", "--data", "{images}"], "--slice: --weights {cls} is a 'classify' model"),
]


@pytest.mark.parametrize("name,argv,message", BAD, ids=[f"{b[0]}:{b[2][:40]}" for b in BAD])
def test_bad_slice_input_clear_error_nothing_written(name, argv, message, untrained, frames, tmp_path, capsys):
    fill = {"cls": untrained["cls"], "images": str(frames["images"])}
    argv = [a.format(**fill) for a in argv]
    base = {"detect": ["--weights", str(untrained["det"]), "--source", str(frames["images"])],
            "val": ["--weights", str(untrained["det"]), "--data", str(tmp_path / "data.yaml")]}[name]
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"path": str(frames["root"]), "train": "images",
                                                        "val": "images", "names": {0: "square"}}))
    before = sorted(p.name for p in frames["root"].rglob("*"))
    assert {"detect": detect, "val": val}[name].cli(base + argv + ["--project", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message.format(**fill) in err, err
    assert not (tmp_path / "runs").exists()
    assert sorted(p.name for p in frames["root"].rglob("*")) == before


# --------------------------------------------------------------------------------------------------- slow: trained


@pytest.fixture(scope="module")
# Over 30 s (about a minute on 2 cores): the 30-epoch training below, once per session (helpers.build_once).
# Own training: sliced detection needs a model that really finds tiny objects: 30 epochs on 96 frames of squares.
def trained(tmp_path_factory):
    """yolov5n-SPD trained to find bright 8-16 px squares in 64 px images (deterministic, about a minute on CPU)."""
    return build_once(tmp_path_factory, "squares", _train_on_squares) / "runs/sq/weights/best.pt"


def _train_on_squares(root):
    for split, n in (("train", 96), ("val", 4)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            im, boxes = squares_frame(1000 * (split == "val") + i, 64, 64, n=2 + i % 3)
            cv2.imwrite(str(root / "images" / split / f"{i:03d}.png"), im)
            xc, yc = (boxes[:, 0] + boxes[:, 2]) / 128, (boxes[:, 1] + boxes[:, 3]) / 128
            bw, bh = (boxes[:, 2] - boxes[:, 0]) / 64, (boxes[:, 3] - boxes[:, 1]) / 64
            (root / "labels" / split / f"{i:03d}.txt").write_text(
                "".join(f"0 {a:.6f} {b:.6f} {c:.6f} {d:.6f}\n" for a, b, c, d in zip(xc, yc, bw, bh)))
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": {0: "square"}}))
    hyp = root / "hyp.yaml"
    hyp.write_text("mosaic: 0.0\nwarmup_epochs: 0\nscale: 0.2\n")
    ok(script("train", "--cfg", "yolov5n-SPD", "--data", data, "--epochs", 30, "--img", 64, "--batch-size", 16,
              "--workers", 0, "--device", "cpu", "--project", root / "runs", "--name", "sq", "--noplots", "--noval",
              "--hyp", hyp))


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory):
    """A detection dataset of three 1280x960 frames of squares (YOLO labels; no annotation file)."""
    root = tmp_path_factory.mktemp("bigds")
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(3):
            im, b = squares_frame(100 + i)
            cv2.imwrite(str(root / "images" / split / f"{i:03d}.png"), im)
            xc, yc, bw, bh = (b[:, 0] + b[:, 2]) / 2 / W, (b[:, 1] + b[:, 3]) / 2 / H, (b[:, 2] - b[:, 0]) / W, \
                (b[:, 3] - b[:, 1]) / H
            (root / "labels" / split / f"{i:03d}.txt").write_text(
                "".join(f"0 {a:.6f} {c:.6f} {d:.6f} {e:.6f}\n" for a, c, d, e in zip(xc, yc, bw, bh)))
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": {0: "square"}}))
    return data


@pytest.mark.slow
def test_detect_slice_finds_tiny_objects_and_labels_map_to_the_frame(trained, frames, tmp_path, capsys):
    """--save-txt labels of a sliced run are normalised to the whole frame: each box lies where a full-resolution
    pass over the whole frame puts it, and the squares are found (a plain run at the same --img finds almost none)."""
    from spd_yolo import YOLO

    argv = ["--weights", str(trained), "--source", str(frames["images"]), "--img", "320", "--slice", "--save-txt",
            "--save-conf", "--save-crop", "--project", str(tmp_path), "--name", "sliced"]
    assert detect.cli(argv) == 0
    out = capsys.readouterr().out
    assert "Sliced inference (SAHI): 320x320 slices (W x H), overlap 0.2, merged by GREEDYNMM IOS 0.5" in out
    assert "2 images/frames" in out
    run = tmp_path / "sliced"
    model = YOLO(trained)
    for stem, truth in frames["truth"].items():
        assert cv2.imread(str(run / f"{stem}.jpg")).shape == (H, W, 3)  # annotated at the original size
        rows = np.loadtxt(run / "labels" / f"{stem}.txt", ndmin=2)
        assert rows.shape[1] == 6 and (rows[:, 1:] >= 0).all() and (rows[:, 1:] <= 1).all()
        boxes = labels_xyxy(run / "labels" / f"{stem}.txt")[:, 1:5]
        found = (iou(boxes, truth).max(0) > 0.5).sum()
        assert found >= N_SQUARES - 4  # most squares (the model misses some 8 px ones)
        im = cv2.imread(str(frames["images"] / f"{stem}.png"))
        full = model.predict(im, imgsz=W, conf=0.25, verbose=False)[0].boxes.xyxy.numpy()
        assert len(full) and (iou(boxes, full).max(1) > 0.5).all()  # same places as the whole frame at full size
        shrunk = model.predict(im, imgsz=320, conf=0.25, verbose=False)[0].boxes.xyxy.numpy()
        assert (iou(shrunk, truth).max(0) > 0.5).sum() < found / 2 if len(shrunk) else True
    crops = list((run / "crops" / "square").glob("*.jpg"))
    assert len(crops) == sum(len(np.loadtxt(f, ndmin=2)) for f in (run / "labels").glob("*.txt"))


@pytest.mark.slow
def test_slice_boxes_equal_the_models_boxes_on_each_slice(trained):
    """Two 320 px slices side by side, no overlap: the sliced boxes are exactly the model's boxes on each slice,
    the right one shifted by 320 px."""
    from spd_yolo import YOLO
    from spd_yolo.slicing import SlicedDetector, SliceSettings

    left, right = squares_frame(7, 320, 320, n=4, margin=20)[0], squares_frame(8, 320, 320, n=4, margin=20)[0]
    model = YOLO(trained)
    settings = SliceSettings(size=(320, 320), overlap=0.0, merge="NMS", metric="IOU", threshold=0.5, batch=1)
    boxes, n_slices = SlicedDetector(model, settings, imgsz=320, conf=0.25, device="cpu")(np.hstack([left, right]))
    assert n_slices == 2
    direct = []
    for im, dx in ((left, 0), (right, 320)):
        r = model.predict(im, imgsz=320, conf=0.25, verbose=False)[0].boxes
        direct += [[x1 + dx, y1, x2 + dx, y2, c, k] for (x1, y1, x2, y2), c, k in
                   zip(r.xyxy.tolist(), r.conf.tolist(), r.cls.tolist())]
    direct = np.array(direct)
    assert len(direct) >= 4 and boxes.shape == direct.shape
    order = lambda b: b[np.lexsort((b[:, 1], b[:, 0]))]
    np.testing.assert_allclose(order(boxes), order(direct), atol=1e-3)
    # --classes and --max-det reach every slice (and the merged frame)
    assert len(SlicedDetector(model, settings, imgsz=320, classes=[1], device="cpu")(np.hstack([left, right]))[0]) == 0
    assert len(SlicedDetector(model, settings, imgsz=320, max_det=2, device="cpu")(np.hstack([left, right]))[0]) == 2


@pytest.mark.slow
def test_detect_slice_video_keeps_frames_and_fps(trained, frames, tmp_path):
    out = ok(script("detect", "--weights", trained, "--source", frames["video"], "--img", 320, "--slice",
                    "--slice-size", 320, "--slice-overlap", 0.25, "--slice-full", "--save-txt",
                    "--project", tmp_path, "--name", "vid"))
    assert "5 images/frames" in out and "plus the whole frame" in out
    assert "Sliced inference | slices=20" in out  # the progress bar: 4 x 5 slices of 320 with a 80 px overlap
    src, dst = cv2.VideoCapture(str(frames["video"])), cv2.VideoCapture(str(tmp_path / "vid/clip.avi"))
    assert dst.get(cv2.CAP_PROP_FRAME_COUNT) == src.get(cv2.CAP_PROP_FRAME_COUNT) == 5
    assert dst.get(cv2.CAP_PROP_FPS) == pytest.approx(src.get(cv2.CAP_PROP_FPS)) == pytest.approx(7.0)
    assert (int(dst.get(cv2.CAP_PROP_FRAME_WIDTH)), int(dst.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (W, H)
    assert sorted(p.name for p in (tmp_path / "vid/labels").glob("*.txt")) == [f"clip_{i}.txt" for i in range(1, 6)]


@pytest.mark.slow
def test_val_slice_writes_coco_table_and_predictions_in_original_pixels(trained, big_dataset, tmp_path, capsys):
    """val.py --slice: the pycocotools table (AP_S first), predictions.json in original pixels, coco_metrics.json
    with the 12 numbers; the same numbers against the dataset's own annotation file; far above a plain run."""
    common = ["--weights", str(trained), "--img", "320", "--project", str(tmp_path)]
    assert val.cli([*common, "--data", str(big_dataset), "--slice", "--name", "sliced"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "note: confidence threshold 0.001 < 0.1: slices merged by NMS over IOU" in captured.err
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]" in out
    rows = [line.split() for line in out.splitlines()]
    assert [r[0] for r in rows if r and r[0] in STAT_NAMES][:3] == ["AP_S", "AP_M", "AP_L"]
    assert "best.pt --slice" in out and "ground truth: YOLO labels at original image sizes (3 images, 30 boxes)" in out
    run = tmp_path / "sliced"
    saved = json.loads((run / "coco_metrics.json").read_text())
    assert set(STAT_NAMES) <= set(saved) and all(isinstance(saved[k], float) for k in STAT_NAMES)
    assert saved["AP_S"] > 0.3 and saved["AP_M"] == -1
    assert (run / "coco_metrics.csv").is_file()
    preds = json.loads((run / "predictions.json").read_text())
    xywh = np.array([p["bbox"] for p in preds])
    assert (xywh[:, 0] >= 0).all() and (xywh[:, 0] + xywh[:, 2] <= W + 1e-3).all()
    assert (xywh[:, 1] >= 0).all() and (xywh[:, 1] + xywh[:, 3] <= H + 1e-3).all()
    assert xywh[:, 0].max() > 640 and xywh[:, 1].max() > 480  # original pixels, not the 320 px network input
    truth = labels_xyxy(big_dataset.parent / "labels/val/000.txt")[:, 1:]
    first = np.array([p["bbox"] for p in preds if p["image_id"] == 1 and p["score"] > 0.25])
    first[:, 2:] += first[:, :2]
    assert (iou(first, truth).max(1) > 0.5).all()  # the confident boxes of image 1 sit on its squares

    # the same boxes against an official-style annotation file shipped with the dataset: the same numbers
    images = [{"id": i + 1, "file_name": f"{i:03d}.png", "height": H, "width": W} for i in range(3)]
    anns = []
    for i in range(3):
        for x1, y1, x2, y2 in labels_xyxy(big_dataset.parent / f"labels/val/{i:03d}.txt")[:, 1:]:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    anno = big_dataset.parent / "annotations/instances_val.json"
    anno.parent.mkdir()
    anno.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "square"}]}))
    assert val.cli([*common, "--data", str(big_dataset), "--slice", "--name", "anno"]) == 0
    assert f"annotation file {anno}" in capsys.readouterr().out
    again = json.loads((tmp_path / "anno/coco_metrics.json").read_text())
    assert {k: round(again[k], 4) for k in STAT_NAMES} == {k: round(saved[k], 4) for k in STAT_NAMES}
    anno.unlink()

    assert val.cli([*common, "--data", str(big_dataset), "--name", "plain"]) == 0
    plain = json.loads((tmp_path / "plain/coco_metrics.json").read_text())
    assert plain["AP_S"] < saved["AP_S"] / 2


@pytest.mark.slow
def test_detect_slice_runs_an_onnx_export(trained, frames, tmp_path, capsys):
    """An exported .onnx is sliced like the .pt (its export size is each slice's inference size): the same labels."""
    import shutil

    from spd_yolo import YOLO

    shutil.copy(trained, tmp_path / "best.pt")
    onnx = YOLO(tmp_path / "best.pt").export(format="onnx", imgsz=320)
    source = frames["images"] / "f0.png"
    for weights, name in ((tmp_path / "best.pt", "pt"), (onnx, "onnx")):
        img = ["--img", "320"] if name == "pt" else []
        assert detect.cli(["--weights", str(weights), "--source", str(source), *img, "--slice", "--save-txt",
                           "--save-conf", "--project", str(tmp_path), "--name", name]) == 0
    assert "inference size 320" in capsys.readouterr().out
    pt, ox = (np.loadtxt(tmp_path / n / "labels/f0.txt", ndmin=2) for n in ("pt", "onnx"))
    assert len(pt) >= N_SQUARES - 4 and pt.shape == ox.shape
    np.testing.assert_allclose(ox[np.lexsort(ox.T[::-1])], pt[np.lexsort(pt.T[::-1])], atol=2e-3)
