# SPD-YOLO, AGPL-3.0 license
"""The synthetic demo dataset: layout, determinism, YOLO/COCO agreement, size mix, video, reuse and bad input."""

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from spd_yolo.data import synth
from spd_yolo.data.synth import CLASS_NAMES, generate_demo_dataset, main

SMALL = {"n_train": 6, "n_val": 4, "imgsz": 256, "seed": 0, "video_frames": 5, "progress": False}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    """A small dataset with a video (shared, read-only)."""
    return generate_demo_dataset(tmp_path_factory.mktemp("small") / "demo", **SMALL).parent


@pytest.fixture(scope="module")
def large_val(tmp_path_factory) -> Path:
    """A dataset with 40 val images, enough for every COCO size bucket (shared, read-only)."""
    root = tmp_path_factory.mktemp("large") / "demo"
    return generate_demo_dataset(root, n_train=1, n_val=40, video_frames=0, progress=False).parent


def file_hashes(root: Path) -> dict:
    """sha256 of every file under root, by relative path; data.yaml with its (run-specific) root path blanked."""
    hashes = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name == "data.yaml":
            data = data.replace(str(root).encode(), b"ROOT")
        hashes[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return hashes


def read_yolo(path: Path) -> np.ndarray:
    """YOLO label rows (n, 5) of one file."""
    return np.loadtxt(path, ndmin=2).reshape(-1, 5)


def load_coco(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}.json").read_text())


def test_layout_and_data_yaml(small_set):
    for split, n in (("train", 6), ("val", 4)):
        images = sorted((small_set / "images" / split).glob("*.jpg"))
        labels = sorted((small_set / "labels" / split).glob("*.txt"))
        assert [p.name for p in images] == [f"{i:06d}.jpg" for i in range(n)]
        assert [p.stem for p in labels] == [p.stem for p in images]
        assert (small_set / "annotations" / f"instances_{split}.json").is_file()
    assert (small_set / "video" / "demo.avi").is_file()
    cfg = yaml.safe_load((small_set / "data.yaml").read_text())
    assert cfg == {
        "path": str(small_set),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(CLASS_NAMES)),
    }
    assert Path(cfg["path"]).is_absolute()
    assert json.loads((small_set / ".complete").read_text())["n_train"] == 6


def test_ultralytics_accepts_data_yaml(small_set):
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(small_set / "data.yaml"), autodownload=False)
    assert data["nc"] == len(CLASS_NAMES)
    assert Path(data["val"]) == small_set / "images" / "val"


def test_reruns_are_byte_identical(tmp_path, small_set):
    other = generate_demo_dataset(tmp_path / "again", **SMALL).parent
    assert file_hashes(other) == file_hashes(small_set)


def test_images_do_not_depend_on_split_sizes(tmp_path, small_set):
    other = generate_demo_dataset(tmp_path / "d", n_train=2, n_val=1, video_frames=0, progress=False).parent
    for rel in ("images/train/000001.jpg", "labels/train/000001.txt", "images/val/000000.jpg"):
        assert (other / rel).read_bytes() == (small_set / rel).read_bytes()


def test_yolo_labels_are_valid(small_set):
    for path in (small_set / "labels").rglob("*.txt"):
        for line in path.read_text().splitlines():
            cls, *coords = line.split()
            assert cls.isdigit() and len(coords) == 4 and all(len(v.split(".")[1]) == 6 for v in coords)
        rows = read_yolo(path)
        assert len(rows) >= 1
        assert set(rows[:, 0]) <= set(range(len(CLASS_NAMES)))
        xc, yc, w, h = rows[:, 1:].T
        assert np.all((w > 0) & (h > 0))
        assert np.all((xc - w / 2 >= -1e-6) & (xc + w / 2 <= 1 + 1e-6))  # boxes lie inside the image
        assert np.all((yc - h / 2 >= -1e-6) & (yc + h / 2 <= 1 + 1e-6))


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_agrees_with_yolo_labels(small_set, split):
    coco = load_coco(small_set, split)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
    assert [c["name"] for c in coco["categories"]] == list(CLASS_NAMES)
    assert [im["id"] for im in coco["images"]] == list(range(1, len(coco["images"]) + 1))
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    for im in coco["images"]:
        h, w = cv2.imread(str(small_set / "images" / split / im["file_name"])).shape[:2]
        assert (im["width"], im["height"]) == (w, h)
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        rows = read_yolo(small_set / "labels" / split / im["file_name"].replace(".jpg", ".txt"))
        assert [a["category_id"] - 1 for a in anns] == rows[:, 0].astype(int).tolist()
        xc, yc, bw, bh = rows[:, 1:].T * np.array([w, h, w, h])[:, None]
        bbox = np.array([a["bbox"] for a in anns])
        np.testing.assert_allclose(bbox, np.stack([xc - bw / 2, yc - bh / 2, bw, bh], 1), atol=0.01)
        np.testing.assert_allclose([a["area"] for a in anns], bbox[:, 2] * bbox[:, 3], atol=0.01)
        assert all(a["iscrowd"] == 0 for a in anns)


def test_pycocotools_loads_ground_truth(small_set):
    coco_api = pytest.importorskip("pycocotools.coco")
    gt = coco_api.COCO(str(small_set / "annotations" / "instances_val.json"))
    assert len(gt.getImgIds()) == 4 and len(gt.getCatIds()) == 4


def test_size_mix_and_shapes(large_val):
    coco = load_coco(large_val, "val")
    areas = np.array([a["area"] for a in coco["annotations"]])
    small, large = areas < 32**2, areas > 96**2
    assert small.sum() and (~small & ~large).sum() and large.sum()  # every COCO area bucket is populated
    assert small.mean() > 0.5
    assert 8 <= len(areas) / len(coco["images"]) <= 15
    assert any(im["width"] != im["height"] for im in coco["images"])
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 3, 4}


@pytest.mark.parametrize("cls", range(len(CLASS_NAMES)))
def test_shape_masks_are_tight(cls):
    rng = np.random.default_rng(cls)
    for size in (3, 4, 7, 16, 31, 60, 120):
        mask = synth._shape_mask(cls, float(size), rng)
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
        assert size - 2 <= max(mask.shape) <= 1.5 * size + 2


def test_rendered_boxes_are_inside_and_barely_overlap():
    for i in range(10):
        img, boxes = synth.render_image(256, np.random.default_rng([1, i]))
        h, w = img.shape[:2]
        assert img.dtype == np.uint8 and boxes
        assert all(0 <= b.x and 0 <= b.y and b.x + b.w <= w and b.y + b.h <= h for b in boxes)
        assert all(synth._iou(a, b) <= synth.MAX_IOU for j, a in enumerate(boxes) for b in boxes[j + 1 :])


def test_video(small_set):
    cap = cv2.VideoCapture(str(small_set / "video" / "demo.avi"))
    try:
        assert cap.isOpened()
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    assert len(frames) == 5
    assert frames[0].shape == (256, 320, 3)
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 1  # things move


def test_no_video(tmp_path):
    root = generate_demo_dataset(tmp_path / "d", n_train=1, n_val=1, imgsz=32, video_frames=0, progress=False).parent
    assert not (root / "video").exists()
    assert cv2.imread(str(root / "images" / "val" / "000000.jpg")) is not None


def test_reuse_and_regenerate(tmp_path, capsys):
    args = {"n_train": 2, "n_val": 1, "video_frames": 2}
    data_yaml = generate_demo_dataset(tmp_path / "d", **args, progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in data_yaml.parent.rglob("*")}
    assert generate_demo_dataset(tmp_path / "d", **args) == data_yaml
    assert "Reusing" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in data_yaml.parent.rglob("*")} == mtimes

    generate_demo_dataset(tmp_path / "d", **{**args, "n_val": 3}, progress=False)  # other args: regenerated
    assert len(list((tmp_path / "d" / "images" / "val").glob("*.jpg"))) == 3
    assert json.loads((tmp_path / "d" / ".complete").read_text())["n_val"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no temporary or old directories left


def test_moved_dataset_is_reused_with_new_path(tmp_path):
    generate_demo_dataset(tmp_path / "a", n_train=1, n_val=1, video_frames=0, progress=False)
    (tmp_path / "a").rename(tmp_path / "b")
    data_yaml = generate_demo_dataset(tmp_path / "b", n_train=1, n_val=1, video_frames=0, progress=False)
    assert yaml.safe_load(data_yaml.read_text())["path"] == str(tmp_path / "b")


def test_incomplete_dataset_is_replaced(tmp_path):
    root = tmp_path / "d"
    generate_demo_dataset(root, n_train=1, n_val=1, video_frames=0, progress=False)
    (root / "data.yaml").unlink()  # e.g. damaged by hand; the marker says it is ours
    generate_demo_dataset(root, n_train=1, n_val=1, video_frames=0, progress=False)
    assert (root / "data.yaml").is_file()


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_video", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_dataset(tmp_path / "d", n_train=1, n_val=1, video_frames=2, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_directory(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not made by spd_yolo.data.synth"):
        generate_demo_dataset(root, n_train=1, n_val=1, video_frames=0, progress=False)
    assert (root / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        generate_demo_dataset(tmp_path / "file", n_train=1, n_val=1, video_frames=0, progress=False)

    (tmp_path / "empty").mkdir()  # an empty directory is fine
    assert generate_demo_dataset(tmp_path / "empty", n_train=1, n_val=1, video_frames=0, progress=False).is_file()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_train": 0}, "n_train"),
        ({"n_val": 0}, "n_val"),
        ({"n_val": 2.5}, "n_val"),
        ({"imgsz": 31}, "imgsz"),
        ({"imgsz": True}, "imgsz"),
        ({"video_frames": -1}, "video_frames"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must be an integer >= \d+, got "):
        generate_demo_dataset(tmp_path / "d", **kwargs, progress=False)
    assert not (tmp_path / "d").exists()


def test_cli(tmp_path, capsys):
    root = tmp_path / "d"
    argv = ["--root", str(root), "--n-train", "2", "--n-val", "1", "--video-frames", "2", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert str(root / "data.yaml") in out and "demo.avi" in out and "objects/image" in out

    assert main(["--root", str(tmp_path / "e"), "--n-train", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "n_train must be an integer >= 1" in err
    assert not (tmp_path / "e").exists()


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--root", "--n-train", "--n-val", "--imgsz", "--seed", "--video-frames"))
