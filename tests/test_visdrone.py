# SPD-YOLO, AGPL-3.0 license
"""VisDrone2019-DET converter (#12): a tiny fake VisDrone folder in both layouts, exact label files against
hand-computed numbers, data.yaml that ultralytics loads, atomic output and --overwrite, and an error naming file and
line for each malformed row."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from spd_yolo.data import convert, visdrone
from spd_yolo.errors import ConversionError

# Image a is 100 x 50 (w x h). Expected label line (or why none) after each row.
ROWS_A = (
    "10,20,30,10,1,4,0,0\n"  # car: x 10..40, y 20..30
    "90,40,20,20,1,1,0,1,\n"  # pedestrian, trailing comma; clipped to x 90..100, y 40..50
    "-5,-5,10,15,1,10,0,0\n"  # motor, clipped to x 0..5, y 0..10
    "0,0,40,40,0,0,0,0\n"  # ignored region
    "5,5,10,10,1,11,0,0\n"  # others
    "5,5,10,10,0,2,0,0\n"  # people with score 0
    "100,10,10,10,1,6,0,0\n"  # truck entirely right of the image: nothing left after clipping, dropped
    "1,2,3,1,1,9,1,2\n"  # bus: x 1..4, y 2..3
    "\n"
)
LABELS_A = (
    "3 0.250000 0.500000 0.300000 0.200000\n"
    "0 0.950000 0.900000 0.100000 0.200000\n"
    "9 0.025000 0.100000 0.050000 0.200000\n"
    "8 0.025000 0.050000 0.030000 0.020000\n"
)
ROWS_C = "0,0,32,32,1,3,0,0\r\n"  # bicycle covering the whole 32 x 32 image, Windows line ending
LABELS_C = "2 0.500000 0.500000 1.000000 1.000000\n"
ROWS_D = "10,5,20,10,1,5,0,0,\n"  # van in a 40 x 20 image
LABELS_D = "4 0.500000 0.500000 0.500000 0.500000\n"


def _split(folder, images, annotations=None):
    """A VisDrone split folder: {stem: (w, h)} images, {stem: text} annotation files (default: all empty)."""
    (folder / "images").mkdir(parents=True)
    (folder / "annotations").mkdir()
    for stem, (w, h) in images.items():
        cv2.imwrite(str(folder / "images" / f"{stem}.jpg"), np.full((h, w, 3), 128, np.uint8))
    for stem, text in (annotations if annotations is not None else dict.fromkeys(images, "")).items():
        (folder / "annotations" / f"{stem}.txt").write_text(text, newline="")
    return folder


def _fake_visdrone(root, test=True):
    _split(root / "VisDrone2019-DET-train", {"a": (100, 50), "c": (32, 32)}, {"a": ROWS_A, "c": ROWS_C})
    _split(root / "VisDrone2019-DET-val", {"b": (64, 48)})  # an image without objects
    if test:
        _split(root / "VisDrone2019-DET-test-dev", {"d": (40, 20)}, {"d": ROWS_D})
    (root / "VisDrone2019-DET-test-challenge" / "images").mkdir(parents=True)  # no annotations: ignored
    return root


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_labels_counts_and_data_yaml(tmp_path, capsys):
    from ultralytics.data.utils import check_det_dataset

    src = _fake_visdrone(tmp_path / "VisDrone")
    dst = tmp_path / "visdrone"
    assert convert.main(["visdrone", str(src), str(dst)]) == 0
    assert _tree(dst) == ["data.yaml", "images/test/d.jpg", "images/train/a.jpg", "images/train/c.jpg",
                          "images/val/b.jpg", "labels/test/d.txt", "labels/train/a.txt", "labels/train/c.txt",
                          "labels/val/b.txt"]
    assert (dst / "labels/train/a.txt").read_text() == LABELS_A
    assert (dst / "labels/train/c.txt").read_text() == LABELS_C
    assert (dst / "labels/val/b.txt").read_text() == ""
    assert (dst / "labels/test/d.txt").read_text() == LABELS_D
    assert yaml.safe_load((dst / "data.yaml").read_text()) == {
        "path": str(dst.resolve()), "train": "images/train", "val": "images/val", "test": "images/test",
        "names": dict(enumerate(visdrone.NAMES)),
    }
    assert visdrone.NAMES == ("pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle",
                              "bus", "motor")
    src_a = src / "VisDrone2019-DET-train/images/a.jpg"
    assert os.stat(dst / "images/train/a.jpg").st_ino == os.stat(src_a).st_ino  # hard link: same filesystem
    assert capsys.readouterr().out.splitlines() == [
        f"{dst}: 4 images (train 2, val 1, test 1; 4 hard-linked, 0 copied), 6 objects",
        ("objects per class: pedestrian 1, people 0, bicycle 1, car 1, van 1, truck 0, tricycle 0, awning-tricycle 0, "
        "bus 1, motor 1"),
        "not objects: 1 ignored regions, 1 'others', 1 with score 0",
        "boxes: 2 clipped to the image, 1 dropped (no width or height left)",
    ]
    data = check_det_dataset(str(dst / "data.yaml"))
    assert data["nc"] == 10 and data["names"][9] == "motor"
    assert data["val"] == str((dst / "images/val").resolve()) and data["test"] == str((dst / "images/test").resolve())


def test_copies_where_it_cannot_link(tmp_path, monkeypatch):
    src = _fake_visdrone(tmp_path / "VisDrone", test=False)

    def no_link(a, b):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    counts = convert.visdrone_to_yolo(src, tmp_path / "out")
    assert counts["copied"] == 3 and counts["linked"] == 0 and counts["images"] == {"train": 2, "val": 1}
    copy, original = tmp_path / "out/images/train/a.jpg", src / "VisDrone2019-DET-train/images/a.jpg"
    assert copy.read_bytes() == original.read_bytes() and os.stat(copy).st_ino != os.stat(original).st_ino
    assert "test" not in yaml.safe_load((tmp_path / "out/data.yaml").read_text())


def test_one_split_folder(tmp_path, capsys):
    src = _split(tmp_path / "VisDrone2019-DET-val", {"a": (100, 50)}, {"a": ROWS_A})
    assert convert.main(["visdrone", str(src), str(tmp_path / "v")]) == 0  # the split from the folder name
    assert _tree(tmp_path / "v") == ["data.yaml", "images/val/a.jpg", "labels/val/a.txt"]
    assert (tmp_path / "v/labels/val/a.txt").read_text() == LABELS_A
    cfg = yaml.safe_load((tmp_path / "v/data.yaml").read_text())
    assert cfg["val"] == "images/val" and "train" not in cfg and "test" not in cfg
    assert "note: data.yaml lists val only; ultralytics needs train and val" in capsys.readouterr().out

    other = _split(tmp_path / "mine", {"x": (32, 32)}, {"x": ROWS_C})
    assert convert.main(["visdrone", str(other), str(tmp_path / "m")]) == 1
    assert capsys.readouterr().err == (f"error: {other}: cannot tell the split from the folder name (it does not end "
                                       f"in -train, -val or -test-dev): give --split train, val or test\n")
    assert convert.main(["visdrone", str(other), str(tmp_path / "m"), "--split", "train"]) == 0
    assert (tmp_path / "m/labels/train/x.txt").read_text() == LABELS_C
    counts = convert.visdrone_to_yolo(tmp_path / "VisDrone2019-DET-val", tmp_path / "t", split="test")  # overrides
    assert counts["images"] == {"test": 1}

    parent = _fake_visdrone(tmp_path / "VisDrone")
    with pytest.raises(ConversionError, match=rf"^--split val: only for a single split folder, and {parent} has"):
        convert.visdrone_to_yolo(parent, tmp_path / "p", split="val")
    assert convert.main(["cifar10", str(parent), str(tmp_path / "p"), "--split", "val"]) == 1
    assert capsys.readouterr().err == "error: --split is for visdrone only, not cifar10\n"


ANN = "VisDrone2019-DET-val/annotations/b.txt"


@pytest.mark.parametrize("row, message", [
    ("1,2,3,4,1,1,0", "expected 8 comma-separated values (x,y,w,h,score,category,truncation,occlusion), got 7"),
    ("1,2,3,4,1,1,0,0,5", "expected 8 comma-separated values (x,y,w,h,score,category,truncation,occlusion), got 9"),
    ("1,2,3,4,1,1,0,0,,", "expected 8 comma-separated values (x,y,w,h,score,category,truncation,occlusion), got 9"),
    ("1,2,abc,4,1,1,0,0", "w is not a number: 'abc'"),
    ("1,,3,4,1,1,0,0", "y is not a number: ''"),
    ("1,2,3,4,1,1,0,nan", "occlusion is not a number: 'nan'"),
    ("1,2,-3,4,1,1,0,0", "negative box size w=-3 h=4"),
    ("1,2,3,-4,1,1,0,0,", "negative box size w=3 h=-4"),
    ("1,2,3,4,1,12,0,0", "category 12 is not one of 0..11"),
    ("1,2,3,4,1,-1,0,0", "category -1 is not one of 0..11"),
    ("1,2,3,4,1,2.5,0,0", "category 2.5 is not one of 0..11"),
])
def test_malformed_row_names_file_and_line(row, message, tmp_path, capsys):
    src = _fake_visdrone(tmp_path / "VisDrone")
    (src / ANN).write_text(f"1,2,3,4,1,1,0,0\n\n{row}\n")  # the bad row is line 3 (line 2 is blank)
    with pytest.raises(ConversionError) as e:
        convert.visdrone_to_yolo(src, tmp_path / "out")
    assert str(e.value) == f"{src / ANN}: line 3: {message}"
    assert convert.main(["visdrone", str(src), str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert captured.err == f"error: {src / ANN}: line 3: {message}\n" and captured.out == ""
    assert [p.name for p in tmp_path.iterdir()] == ["VisDrone"]  # the failure came after train: no DST, no temp folder


def _remove(path):
    path.unlink() if path.is_file() else path.rename(path.with_name(path.name + "-gone"))


@pytest.mark.parametrize("remove, message", [
    ("VisDrone2019-DET-val/annotations",
     "{src}/VisDrone2019-DET-val/annotations: not found (the annotations, one .txt per image)"),
    ("VisDrone2019-DET-train/images", "{src}/VisDrone2019-DET-train/images: not found (the images, *.jpg)"),
    ("VisDrone2019-DET-train/images/c.jpg", ("{src}/VisDrone2019-DET-train/annotations/c.txt: annotation file without "
                                            "an image ({src}/VisDrone2019-DET-train/images/c.jpg not found)")),
    ("VisDrone2019-DET-train/annotations/c.txt", ("{src}/VisDrone2019-DET-train/images/c.jpg: image without an "
                                                 "annotation file ({src}/VisDrone2019-DET-train/annotations/c.txt not "
                                                 "found)")),
    ("VisDrone2019-DET-val", ("{src}/VisDrone2019-DET-val: not found (train and val are both needed; "
                             "VisDrone2019-DET-test-dev is optional)")),
])
def test_missing_folders_and_files(remove, message, tmp_path, capsys):
    src = _fake_visdrone(tmp_path / "VisDrone")
    _remove(src / remove)
    assert convert.main(["visdrone", str(src), str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"error: {message.format(src=src)}\n"
    assert not (tmp_path / "out").exists()


def test_bad_sources(tmp_path):
    with pytest.raises(ConversionError, match=rf"^{tmp_path / 'none'}: VisDrone folder not found"):
        convert.visdrone_to_yolo(tmp_path / "none", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match=rf"^{tmp_path / 'empty'}: not a VisDrone2019-DET folder"):
        convert.visdrone_to_yolo(tmp_path / "empty", tmp_path / "out")
    src = _fake_visdrone(tmp_path / "VisDrone")
    (src / "VisDrone2019-DET-val/images/b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ConversionError, match=rf"^{src / 'VisDrone2019-DET-val/images/b.jpg'}: not a readable image"):
        convert.visdrone_to_yolo(src, tmp_path / "out")
    for dst in (src, tmp_path):  # replacing SRC or a folder holding it would delete the source
        with pytest.raises(ConversionError, match="the destination must not be SRC or a folder holding it"):
            convert.visdrone_to_yolo(src, dst, overwrite=True)
    assert (src / "VisDrone2019-DET-train/images/a.jpg").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["VisDrone", "empty"]


def test_overwrite_replaces_only_after_success(tmp_path, capsys):
    src = _fake_visdrone(tmp_path / "VisDrone")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old dataset")
    assert convert.main(["visdrone", str(src), str(out)]) == 1
    assert capsys.readouterr().err == (f"error: {out}: destination folder exists and is not empty (use --overwrite to "
                                       f"replace it)\n")
    (src / ANN).write_text("1,2,3,4,1,99,0,0\n")  # fails half way: after train, at val
    with pytest.raises(ConversionError, match="line 1: category 99 is not one of 0..11"):
        convert.visdrone_to_yolo(src, out, overwrite=True)
    assert _tree(out) == ["keep.txt"]  # the old folder is untouched
    (src / ANN).write_text("")
    assert convert.main(["visdrone", str(src), str(out), "--overwrite"]) == 0
    assert "data.yaml" in _tree(out) and "keep.txt" not in _tree(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp or backup folder left


@pytest.mark.slow  # starts fresh interpreters
def test_module_command_line(tmp_path):
    src = _fake_visdrone(tmp_path / "VisDrone", test=False)
    proc = subprocess.run([sys.executable, "-m", "spd_yolo.data.convert", "visdrone", str(src), str(tmp_path / "v")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "3 images (train 2, val 1; 3 hard-linked, 0 copied), 5 objects" in proc.stdout
    assert (tmp_path / "v/labels/train/a.txt").read_text() == LABELS_A
