# SPD-YOLO, AGPL-3.0 license
"""spd_yolo.coco's optional faster-coco-eval backend: the same 12 numbers as pycocotools (the reference) on hand-made,
synthetic COCO-like, empty, undefined-metric and extra-category cases; val.py --coco-backend; the missing-package
error."""

import sys

import pytest

from spd_yolo import coco
from spd_yolo.cli import val
from spd_yolo.cli.common import CLIError
from spd_yolo.data.coco_like import build_gt, make_data

pytest.importorskip("faster_coco_eval")

TOL = 1e-6  # observed: at most a few 1e-16 (float summation order), see the report of benchmarks/bench_coco_eval.py


def both(gt, dets, **kw) -> tuple[coco.CocoStats, coco.CocoStats]:
    ref = coco.evaluate(gt, dets, backend="pycocotools", **kw)
    fast = coco.evaluate(gt, dets, backend="faster-coco-eval", **kw)
    assert list(fast.values) == list(coco.STAT_NAMES)  # same order
    for name in coco.STAT_NAMES:
        assert fast.values[name] == pytest.approx(ref.values[name], abs=TOL), name
        assert (fast.values[name] == -1) == (ref.values[name] == -1), name  # -1 (undefined) in the same places
    assert fast.gt_source == ref.gt_source
    assert len(fast.summary.splitlines()) == len(ref.summary.splitlines()) == 12
    return ref, fast


def hand_made():
    gt = {
        "images": [{"id": 1, "height": 100, "width": 100}, {"id": 2, "height": 200, "width": 300}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 10, 50, 60], "area": 3000},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [100, 50, 120, 110], "iscrowd": 0},
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 150, 40, 40], "iscrowd": 1},
        ],
    }
    dets = [
        {"image_id": 1, "category_id": 1, "bbox": [11, 10, 20, 21], "score": 0.9},
        {"image_id": 2, "category_id": 2, "bbox": [12, 10, 50, 60], "score": 0.8},
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.95},
        {"image_id": 2, "category_id": 1, "bbox": [2, 152, 38, 36], "score": 0.7},  # on the crowd region: ignored
        {"image_id": 2, "category_id": 1, "bbox": [98, 55, 118, 100], "score": 0.6},
    ]
    return gt, dets


def test_hand_made_case():
    gt, dets = hand_made()
    ref, _ = both(gt, dets)
    assert ref.values["AP_S"] > 0 and ref.values["AP_L"] > 0


def test_hand_made_case_with_image_subset():
    gt, dets = hand_made()
    _ref, fast = both(gt, dets, image_ids=[2])
    assert "evaluated on 1 of 2 images" in fast.gt_source


@pytest.mark.parametrize("seed,crowd", [(0, 0.0), (1, 0.05), (2, 0.3)])
def test_synthetic_coco_like_sets(seed, crowd):
    records, flags, dets = make_data(300, seed=seed, crowd=crowd)
    gt = build_gt(records, flags)
    assert {coco.count_objects(gt, a) > 0 for a in ("small", "medium", "large")} == {True}
    ref, _ = both(gt, dets)
    assert 0 < ref.values["AP"] < 1


def test_300_detections_per_image():
    records, flags, dets = make_data(50, seed=3, fp_per_image=400)  # capped at 300 per image
    gt = build_gt(records, flags)
    both(gt, dets)


def test_empty_detections():
    records, flags, _ = make_data(40, seed=4)
    ref, _ = both(build_gt(records, flags), [])
    assert all(v == 0 for v in ref.values.values())


def test_undefined_metrics_are_minus_one():
    gt, dets = hand_made()
    gt["annotations"] = [a for a in gt["annotations"] if a["bbox"][2] * a["bbox"][3] <= 96**2]  # no large objects
    dets = [d for d in dets if d["bbox"][2] * d["bbox"][3] <= 96**2]
    ref, fast = both(gt, dets)
    assert ref.values["AP_L"] == fast.values["AP_L"] == -1 and ref.values["AR_L"] == fast.values["AR_L"] == -1


def test_extra_categories_and_class_mismatch():
    gt, dets = hand_made()
    gt["categories"] += [{"id": 7, "name": "never annotated"}, {"id": 9, "name": "only predicted"}]
    dets += [{"image_id": 1, "category_id": 9, "bbox": [50, 50, 10, 10], "score": 0.99},  # no GT of that class
             {"image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20], "score": 0.97}]  # wrong class on a GT box
    both(gt, dets)
    with pytest.raises(ValueError, match="category ids not in the ground truth"):
        coco.evaluate(gt, [{**dets[0], "category_id": 42}], backend="faster-coco-eval")


def test_inputs_are_not_modified():
    gt, dets = hand_made()
    before = repr(gt), repr(dets)
    both(gt, dets)
    assert (repr(gt), repr(dets)) == before


def test_unknown_backend():
    gt, dets = hand_made()
    with pytest.raises(ValueError, match="unknown COCO evaluation backend 'fast'"):
        coco.evaluate(gt, dets, backend="fast")


def test_missing_package_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # `import faster_coco_eval` now raises ImportError
    gt, dets = hand_made()
    with pytest.raises(ImportError, match="pip install faster-coco-eval"):
        coco.evaluate(gt, dets, backend="faster-coco-eval")
    assert coco.evaluate(gt, dets).values["AP"] > 0  # the default backend does not need it
    with pytest.raises(CLIError, match="--coco-backend faster-coco-eval: .*pip install faster-coco-eval"):
        val.main(["--weights", str(tmp_path / "none.pt"), "--data", "x.yaml", "--coco-backend", "faster-coco-eval"])
    assert list(tmp_path.iterdir()) == []


def test_val_cli_same_table_with_both_backends(tmp_path, capsys):
    from spd_yolo import YOLO, build_model
    from spd_yolo.data.synth import generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "d", n_train=4, n_val=4, imgsz=64, video_frames=0, progress=False)
    weights = tmp_path / "yolov5n-SPD.pt"
    model = YOLO("yolov5n-SPD")  # untrained, with the demo dataset's 4 classes
    model.model = build_model("yolov5n-SPD", nc=4)
    model.model.names = {0: "disk", 1: "square", 2: "triangle", 3: "cross"}
    model.save(weights)
    tables = {}
    for backend in coco.BACKENDS:
        capsys.readouterr()
        assert val.main(["--weights", str(weights), "--data", str(data), "--img", "64", "--batch-size", "4",
                         "--workers", "0", "--device", "cpu", "--project", str(tmp_path / "runs"), "--name", backend,
                         "--coco-backend", backend]) == 0
        out = capsys.readouterr().out
        tables[backend] = out[out.index("Ground truth:"):out.index("Results saved to")]
        assert "AP_S" in tables[backend]
    assert tables["faster-coco-eval"] == tables["pycocotools"]
    saved = {b: coco.load_stats(tmp_path / "runs" / b).values for b in coco.BACKENDS}
    assert saved["faster-coco-eval"] == pytest.approx(saved["pycocotools"], abs=TOL)
