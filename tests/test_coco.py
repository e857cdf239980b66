# SPD-YOLO, AGPL-3.0 license
"""spd_yolo.coco: hand-computed pycocotools numbers, original-size area buckets, ground truth from the dataset's labels
and reports."""

import csv
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from spd_yolo.coco import (
    STAT_NAMES,
    CocoStats,
    category_map,
    evaluate,
    find_annotation_file,
    format_table,
    gt_from_labels,
    save_stats,
    split_ground_truth,
)
from spd_yolo.data.images import image_size

NAMES = {0: "object"}
RECALL_THRESHOLDS = [i / 100 for i in range(101)]  # COCO's 101 recall points 0.00, 0.01, ..., 1.00


def ap101(tp_flags, n_gt):
    """Independent COCO-style AP of one ranked detection list: 101-point interpolated precision (precision envelope
    from the right, first rank reaching each recall threshold; 0 beyond the last recall)."""
    tp = np.cumsum(tp_flags)
    fp = np.cumsum(1 - np.asarray(tp_flags))
    recall, precision = tp / n_gt, tp / (tp + fp)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    total = 0.0
    for r in RECALL_THRESHOLDS:
        reached = np.nonzero(recall >= r - 1e-12)[0]
        total += envelope[reached[0]] if len(reached) else 0.0
    return total / len(RECALL_THRESHOLDS)


def one_image_gt(boxes_px, size=1000, cls=None):
    """GT of one size x size image from pixel boxes [x, y, w, h] (converted to YOLO-normalized labels)."""
    boxes = np.asarray(boxes_px, dtype=float)
    xywhn = np.c_[(boxes[:, 0] + boxes[:, 2] / 2) / size, (boxes[:, 1] + boxes[:, 3] / 2) / size, boxes[:, 2:] / size]
    cls = np.zeros(len(boxes)) if cls is None else cls
    return gt_from_labels([{"file_name": "a.jpg", "height": size, "width": size, "cls": cls, "bboxes": xywhn}], NAMES)


def dets_from_gt(gt, score=1.0, skip=()):
    """Perfect detections: every GT box except the annotation ids in `skip`."""
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
        for a in gt["annotations"]
        if a["id"] not in skip
    ]


# 2 small (20x20 = 400 px²), 1 medium (50x50 = 2500 px²), 1 large (200x200 = 40000 px²) in a 1000x1000 image
MIXED = [[90, 90, 20, 20], [290, 290, 20, 20], [475, 475, 50, 50], [700, 700, 200, 200]]


# --------------------------------------------------------------------------------------------------- evaluate


def test_perfect_predictions():
    gt = one_image_gt(MIXED)
    assert [a["area"] for a in gt["annotations"]] == pytest.approx([400, 400, 2500, 40000])
    s = evaluate(gt, dets_from_gt(gt))
    v = s.values
    assert list(v) == list(STAT_NAMES)
    for k in ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR10", "AR100", "AR_S", "AR_M", "AR_L"):
        assert v[k] == pytest.approx(1.0, abs=1e-9), k
    assert v["AR1"] == pytest.approx(0.25)  # maxDets=1: one of the four objects per image
    assert "Average Precision" in s.summary and s.summary.count("\n") == 12
    assert s.gt_source == "YOLO labels (1 image, 4 boxes)"


def test_empty_buckets_are_minus_one():
    gt = one_image_gt([[10, 10, 20, 20], [100, 100, 25, 25]])  # small objects only
    v = evaluate(gt, dets_from_gt(gt)).values
    assert v["AP"] == v["AP_S"] == v["AR_S"] == pytest.approx(1.0)
    assert v["AP_M"] == v["AP_L"] == v["AR_M"] == v["AR_L"] == -1.0


def test_one_small_box_missed():
    gt = one_image_gt(MIXED)
    v = evaluate(gt, dets_from_gt(gt, skip={1})).values
    # small: 2 GT, 1 found at precision 1 -> recall 0.5 -> 51 of the 101 recall points (0.00..0.50) have precision 1
    assert v["AP_S"] == pytest.approx(51 / 101, abs=1e-6)
    assert v["AP_S"] == pytest.approx(ap101([1], 2), abs=1e-9)
    assert v["AR_S"] == pytest.approx(0.5)
    assert v["AP_M"] == pytest.approx(1.0) and v["AP_L"] == pytest.approx(1.0)
    # all sizes: 3 of 4 found -> recall 0.75 -> 76 of 101 points, at every IoU threshold
    assert v["AP"] == v["AP50"] == v["AP75"] == pytest.approx(76 / 101, abs=1e-6)
    assert v["AR100"] == pytest.approx(0.75)


def test_false_positive_ranked_first():
    gt = one_image_gt([[100, 100, 20, 20]])
    tp = {"image_id": 1, "category_id": 1, "bbox": [100, 100, 20, 20], "score": 0.8}
    fp = {"image_id": 1, "category_id": 1, "bbox": [500, 500, 20, 20], "score": 0.9}  # no overlap, same size bucket
    assert evaluate(gt, [tp]).values["AP"] == pytest.approx(1.0)
    v = evaluate(gt, [tp, fp]).values
    # ranked FP, TP: precision 1/2 at recall 1 -> envelope 0.5 at all 101 recall points
    assert v["AP"] == v["AP50"] == v["AP_S"] == pytest.approx(0.5, abs=1e-9)
    assert v["AR100"] == pytest.approx(1.0)
    # two GT, ranked TP (0.9), FP (0.8), TP (0.7): precision 1 up to recall 0.5, then 2/3 up to recall 1
    gt2 = one_image_gt([[100, 100, 20, 20], [300, 300, 20, 20]])
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [100, 100, 20, 20], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [600, 600, 20, 20], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [300, 300, 20, 20], "score": 0.7},
    ]
    expected = (51 * 1.0 + 50 * 2 / 3) / 101
    assert ap101([1, 0, 1], 2) == pytest.approx(expected)
    assert evaluate(gt2, dets).values["AP"] == pytest.approx(expected, abs=1e-6)


def test_zero_detections():
    gt = one_image_gt([[10, 10, 20, 20], [500, 500, 200, 200]])  # small + large, no medium
    v = evaluate(gt, []).values
    for k in ("AP", "AP50", "AP75", "AP_S", "AP_L", "AR1", "AR10", "AR100", "AR_S", "AR_L"):
        assert v[k] == 0.0, k
    assert v["AP_M"] == v["AR_M"] == -1.0


def test_area_buckets_at_original_size():
    # the same normalized 0.31 x 0.31 box: 31x31 = 961 px² (small) at 100x100, 62x62 = 3844 px² (medium) at 200x200.
    # (At a 640 letterboxed network input it would be 198x198 = large in both.)
    label = {"file_name": "a.jpg", "cls": [0], "bboxes": [[0.5, 0.5, 0.31, 0.31]]}
    small = gt_from_labels([{**label, "height": 100, "width": 100}], NAMES)
    medium = gt_from_labels([{**label, "height": 200, "width": 200}], NAMES)
    assert small["annotations"][0]["area"] == pytest.approx(961)
    assert medium["annotations"][0]["area"] == pytest.approx(3844)
    v = evaluate(small, dets_from_gt(small)).values
    assert (v["AP_S"], v["AP_M"], v["AP_L"]) == (pytest.approx(1.0), -1.0, -1.0)
    v = evaluate(medium, dets_from_gt(medium)).values
    assert (v["AP_S"], v["AP_M"], v["AP_L"]) == (-1.0, pytest.approx(1.0), -1.0)


def test_image_ids_restriction():
    recs = [
        {"file_name": "a.jpg", "height": 100, "width": 100, "cls": [0], "bboxes": [[0.5, 0.5, 0.2, 0.2]]},
        {"file_name": "b.jpg", "height": 100, "width": 100, "cls": [0], "bboxes": [[0.3, 0.3, 0.2, 0.2]]},
    ]
    gt = gt_from_labels(recs, NAMES)
    dets = dets_from_gt(gt, skip={2})  # image 2's object is missed
    full = evaluate(gt, dets)
    assert full.values["AP"] == pytest.approx(51 / 101, abs=1e-6)
    only1 = evaluate(gt, dets, image_ids=[1])
    assert only1.values["AP"] == pytest.approx(1.0)
    assert only1.gt_source == "YOLO labels (2 images, 2 boxes), evaluated on 1 of 2 images"
    assert evaluate(gt, dets, image_ids=[2]).values["AP"] == 0.0
    assert evaluate(gt, dets, image_ids=np.array([1, 2])).values == full.values
    with pytest.raises(ValueError, match=r"image_ids not in the ground truth.*\[7\]"):
        evaluate(gt, dets, image_ids=[1, 7])


def test_unknown_ids_in_detections():
    gt = one_image_gt([[10, 10, 20, 20]])
    det = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 1.0}
    with pytest.raises(ValueError, match=r"image ids not in the ground truth: \[5\]"):
        evaluate(gt, [det, {**det, "image_id": 5}])
    with pytest.raises(ValueError, match=r"category ids not in the ground truth: \[0\].*category_map"):
        evaluate(gt, [{**det, "category_id": 0}])
    with pytest.raises(ValueError, match=r"detection 0: expected bbox"):
        evaluate(gt, [{**det, "bbox": [1, 2, 3]}])


def test_gt_forms_agree_and_inputs_untouched(tmp_path):
    gt = one_image_gt(MIXED)
    dets = dets_from_gt(gt, skip={1})
    gt_before, dets_before = json.dumps(gt), json.dumps(dets)
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(gt))
    coco = COCO()
    coco.dataset = json.loads(json.dumps(gt))
    coco.createIndex()

    from_dict, from_file, from_coco = evaluate(gt, dets), evaluate(path, dets), evaluate(coco, dets)
    assert from_dict.values == from_file.values == from_coco.values
    assert from_file.gt_source == f"annotation file {path.resolve()}"
    assert json.dumps(gt) == gt_before and json.dumps(dets) == dets_before  # pycocotools writes into its inputs
    assert all("ignore" not in a for a in coco.dataset["annotations"])


# --------------------------------------------------------------------------------------------------- ground truth


def test_gt_from_labels_pixels():
    names = {2: "c", 0: "a", 1: "b"}
    recs = [
        {"file_name": "x.jpg", "height": 480, "width": 640, "cls": np.array([[1], [2]]),
         "bboxes": np.array([[0.5, 0.5, 0.25, 0.5], [0.25, 0.75, 0.125, 0.0625]])},
        {"file_name": "y.jpg", "height": 10, "width": 20, "cls": [], "bboxes": np.zeros((0, 4))},
        {"file_name": "z.jpg", "height": 100, "width": 200, "cls": [0], "bboxes": [[0.5, 0.5, 1.0, 1.0]]},
    ]
    gt = gt_from_labels(recs, names)
    assert gt["categories"] == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    assert gt["images"] == [
        {"id": 1, "file_name": "x.jpg", "height": 480, "width": 640},
        {"id": 2, "file_name": "y.jpg", "height": 10, "width": 20},
        {"id": 3, "file_name": "z.jpg", "height": 100, "width": 200},
    ]
    assert gt["annotations"] == [
        # x = (0.5 - 0.125) * 640 = 240, y = (0.5 - 0.25) * 480 = 120, w = 160, h = 240
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [240.0, 120.0, 160.0, 240.0], "area": 38400.0, "iscrowd": 0},
        # x = (0.25 - 0.0625) * 640 = 120, y = (0.75 - 0.03125) * 480 = 345, w = 80, h = 30
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [120.0, 345.0, 80.0, 30.0], "area": 2400.0, "iscrowd": 0},
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [0.0, 0.0, 200.0, 100.0], "area": 20000.0, "iscrowd": 0},
    ]
    with pytest.raises(ValueError, match=r"x\.jpg: class 5 is not in the class names"):
        gt_from_labels([{**recs[0], "cls": [5, 1]}], names)
    with pytest.raises(ValueError, match=r"2 class ids but 1 boxes"):
        gt_from_labels([{**recs[2], "cls": [0, 0]}], names)


def _write_image(path, width, height, with_pil=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if with_pil:
        Image.new("RGB", (width, height), (10, 20, 30)).save(path)
    else:
        assert cv2.imwrite(str(path), np.full((height, width, 3), 50, np.uint8))
    return path


def _dataset_labels(folder, names, rect):
    """The labels of an image folder as ultralytics' validation dataset reads and verifies them (the one YOLO label
    reader: val.py's ground truth comes from these)."""
    from ultralytics.data.dataset import YOLODataset

    data = {"names": names, "nc": len(names), "channels": 3}
    return YOLODataset(img_path=str(folder), data=data, imgsz=64, augment=False, rect=rect, batch_size=2).labels


@pytest.mark.parametrize("rect", [False, True], ids=["labels-with-shapes", "rect-reordered-no-shapes"])
def test_split_ground_truth_from_the_datasets_labels(tmp_path, rect):
    root = tmp_path / "data"
    a = _write_image(root / "images" / "val" / "a.jpg", 64, 48)  # cv2, non-square
    b = _write_image(root / "images" / "val" / "b.png", 30, 70, with_pil=True)
    c = _write_image(root / "images" / "val" / "c.png", 16, 16)  # no label file: a background image
    labels = root / "labels" / "val"
    labels.mkdir(parents=True)
    (labels / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n\n2 0.25 0.75 0.125 0.0625\n")
    # b.txt: polygon row (bounding box x 0.1..0.5, y 0.2..0.6) as in ultralytics' segment labels
    (labels / "b.txt").write_text("1 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n")
    names = {0: "a", 1: "b", 2: "c"}
    dataset = _dataset_labels(root / "images" / "val", names, rect)
    assert ("shape" in dataset[0]) is not rect  # rect validation drops it: the size is then read from the header

    truth = split_ground_truth(dataset, names, root)
    assert truth.anno is None and truth.evaluated is None and truth.source is truth.gt
    assert truth.categories == {0: 1, 1: 2, 2: 3}
    files = [lb["im_file"] for lb in dataset]
    assert truth.image_ids == {f: i + 1 for i, f in enumerate(files)}
    images = {im["id"]: im for im in truth.gt["images"]}
    assert {Path(images[i]["file_name"]).name: (images[i]["width"], images[i]["height"]) for i in images} == {
        "a.jpg": (64, 48), "b.png": (30, 70), "c.png": (16, 16)}
    boxes = sorted((Path(images[g["image_id"]]["file_name"]).name, g["category_id"], g["bbox"], g["area"])
                   for g in truth.gt["annotations"])
    expected = [  # original pixels: (0.375*64, 0.25*48, 0.25*64, 0.5*48) ...
        ("a.jpg", 1, [24.0, 12.0, 16.0, 24.0], 384.0),
        ("a.jpg", 3, [12.0, 34.5, 8.0, 3.0], 24.0),
        ("b.png", 2, [3.0, 14.0, 12.0, 28.0], 336.0),
    ]
    assert [(f, c) for f, c, _, _ in boxes] == [(f, c) for f, c, _, _ in expected]
    for (_, _, box, area), (_, _, want, want_area) in zip(boxes, expected):
        assert box == pytest.approx(want, abs=1e-4) and area == pytest.approx(want_area, abs=1e-3)
    assert {a, b, c} == {Path(f) for f in files}


def test_image_size_is_the_decoded_size(tmp_path):
    """A JPEG stored 40x20 with EXIF orientation 6 is decoded (cv2, ultralytics) as 20 wide x 40 high."""
    path = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(path, exif=exif)
    assert image_size(path) == cv2.imread(str(path)).shape[1::-1] == (20, 40)
    assert image_size(_write_image(tmp_path / "plain.png", 30, 70, with_pil=True)) == (30, 70)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    with pytest.raises(OSError, match="cannot identify image file"):
        image_size(notes)


def test_find_annotation_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    ann = tmp_path / "annotations" / "instances_val2017.json"
    ann.write_text("{}")
    assert find_annotation_file(tmp_path, "val2017") == ann
    assert find_annotation_file(str(tmp_path), "images/val2017") == ann
    assert find_annotation_file(tmp_path, "train2017") is None
    assert find_annotation_file(tmp_path / "missing", "val2017") is None


# --------------------------------------------------------------------------------------------------- category map


def test_category_map_by_name():
    gt_cats = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 7, "name": "dog"}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert category_map({0: " Person", 1: "CAR"}, gt_cats) == {0: 1, 1: 3}


def test_category_map_fallback_by_order():
    gt_cats = [{"id": 5, "name": "a"}, {"id": 2, "name": "b"}]
    with pytest.warns(UserWarning, match=r"\['x', 'y'\] not found by name.*mapping by order"):
        assert category_map({1: "y", 0: "x"}, gt_cats) == {0: 2, 1: 5}


def test_category_map_error():
    gt_cats = [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}, {"id": 3, "name": "dog"}]
    with pytest.raises(ValueError, match=r"\['bus'\] are not GT category names.*GT names: \['person', 'car', 'dog'\]"):
        category_map({0: "person", 1: "bus"}, gt_cats)


# --------------------------------------------------------------------------------------------------- reports


def _stats(ap_s, ap_m, gt_source="YOLO labels (2 images, 3 boxes)"):
    values = dict.fromkeys(STAT_NAMES, 0.5)
    values.update(AP_S=ap_s, AP_M=ap_m, AP_L=-1.0, AR_L=-1.0)
    return CocoStats(values=values, gt_source=gt_source, summary="summary text\n")


def test_format_table_two_models():
    table = format_table({"yolov5s": _stats(0.2, 0.4), "yolov5s-SPD": _stats(0.2345, 0.3)})
    lines = table.splitlines()
    assert lines[0] == "Ground truth: YOLO labels (2 images, 3 boxes)"
    assert lines[1].split() == ["metric", "yolov5s", "yolov5s-SPD", "diff"]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["AP_S", "AP_M", "AP_L", "AP", "AP50", "AP75", "AR1", "AR10", "AR100", "AR_S",
                                    "AR_M", "AR_L"]
    assert rows[0] == ["AP_S", "20.0", "23.4", "+3.4"]  # 23.45 - 20.0 = 3.45 points -> +3.4 (float 0.2345)
    assert rows[1] == ["AP_M", "40.0", "30.0", "-10.0"]
    assert rows[2] == ["AP_L", "-", "-", "-"]
    assert rows[3] == ["AP", "50.0", "50.0", "+0.0"]


def test_format_table_one_and_three_models():
    one = format_table({"m": _stats(0.2, 0.4)}).splitlines()
    assert one[1].split() == ["metric", "m"] and one[2].split() == ["AP_S", "20.0"]
    three = format_table({"a": _stats(0.1, 0.1), "b": _stats(0.2, 0.2, "x"), "c": _stats(0.3, 0.3)}).splitlines()
    assert three[0].startswith("Ground truth (differs between models!): a: YOLO labels") and "b: x" in three[0]
    assert three[1].split() == ["metric", "a", "b", "c"]
    with pytest.raises(ValueError):
        format_table({})


def test_save_stats_roundtrip(tmp_path):
    gt = one_image_gt(MIXED)
    stats = evaluate(gt, dets_from_gt(gt, skip={1}))
    folder = tmp_path / "runs" / "val"
    save_stats(_stats(0.9, 0.9), folder)  # overwritten below
    json_path, csv_path = save_stats(stats, folder)
    assert (json_path, csv_path) == (folder / "coco_metrics.json", folder / "coco_metrics.csv")
    assert sorted(p.name for p in folder.iterdir()) == ["coco_metrics.csv", "coco_metrics.json"]  # no temp files

    data = json.loads(json_path.read_text())
    assert data == {**stats.as_dict(), "summary": stats.summary}
    assert data["AP_S"] == stats.values["AP_S"] == pytest.approx(51 / 101)

    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["metric", "value"]
    assert [r[0] for r in rows[1:-1]] == list(STAT_NAMES)
    assert {r[0]: float(r[1]) for r in rows[1:-1]} == stats.values  # exact round trip
    assert rows[-1] == ["gt_source", stats.gt_source]


def test_save_stats_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    old = _stats(0.1, 0.1)
    json_path, _ = save_stats(old, tmp_path)
    before = json_path.read_text()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("spd_yolo.atomic.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        save_stats(_stats(0.9, 0.9), tmp_path)
    assert json_path.read_text() == before  # the previous complete file, not a truncated one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco_metrics.csv", "coco_metrics.json"]
