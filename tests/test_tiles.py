# SPD-YOLO, AGPL-3.0 license
"""The tiler (python -m spd_yolo.data.convert tile): tiles where sahi slices, labels that map back through the recorded
offsets onto the original boxes (clipped, visibility applied), untiled splits and small images copied as they are,
repeatable output, and one error line with nothing written for each bad input."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from sahi.slicing import get_slice_bboxes

from forkserver import run_script
from helpers import REPO
from spd_yolo.data import convert, tiles
from spd_yolo.engine import FITNESS_KEY, checkpoint_record

NAMES = ["a", "b", "c"]


def _make_dataset(root: Path, rng: np.random.Generator, sizes: dict[str, list[tuple[int, int]]]) -> Path:
    """A YOLO dataset of PNG images (lossless, so tiles can be compared pixel for pixel) with random boxes."""
    for split, shapes in sizes.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i, (h, w) in enumerate(shapes):
            cv2.imwrite(str(root / "images" / split / f"im{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            lines = []
            for _ in range(int(rng.integers(0, 12))):
                bw, bh = rng.uniform(2, 40), rng.uniform(2, 40)
                x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                lines.append(f"{rng.integers(0, 3)} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} "
                             f"{bh / h:.6f}\n")
            (root / "labels" / split / f"im{i}.txt").write_text("".join(lines))
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": NAMES}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


@pytest.fixture
def dataset(tmp_path):
    sizes = {"train": [(150, 200), (64, 96), (96, 64), (40, 50), (130, 129)], "val": [(150, 200), (70, 70)]}
    return _make_dataset(tmp_path / "src", np.random.default_rng(0), sizes)


def _reference(label_file: Path, width: int, height: int, tile: tuple, min_vis: float) -> list[tuple]:
    """Independent reference: each original box (pixels, clipped to the image) clipped to the tile, kept when
    visibility >= min_vis; in image pixels, rounded to 1e-2 px."""
    out = []
    tx1, ty1, tx2, ty2 = tile
    for line in label_file.read_text().splitlines():
        c, cx, cy, w, h = (float(v) for v in line.split())
        x1, y1 = max(0.0, (cx - w / 2) * width), max(0.0, (cy - h / 2) * height)
        x2, y2 = min(width, (cx + w / 2) * width), min(height, (cy + h / 2) * height)
        ix1, iy1, ix2, iy2 = max(x1, tx1), max(y1, ty1), min(x2, tx2), min(y2, ty2)
        inside = max(0.0, ix2 - ix1) * max(0.0, iy2 - iy1)
        if inside > 0 and inside >= min_vis * (x2 - x1) * (y2 - y1):
            out.append((int(c), round(ix1, 2), round(iy1, 2), round(ix2, 2), round(iy2, 2)))
    return sorted(out)


def _mapped_back(label_file: Path, rec: dict) -> list[tuple]:
    """A tile's labels in source-image pixels, through the offsets tiles.json records."""
    out = []
    for line in label_file.read_text().splitlines():
        c, cx, cy, w, h = (float(v) for v in line.split())
        tw, th, x, y = rec["width"], rec["height"], rec["x"], rec["y"]
        out.append((int(c), round((cx - w / 2) * tw + x, 2), round((cy - h / 2) * th + y, 2),
                    round((cx + w / 2) * tw + x, 2), round((cy + h / 2) * th + y, 2)))
    return sorted(out)


def _close(a: list[tuple], b: list[tuple], tol: float = 0.02) -> bool:
    return len(a) == len(b) and all(p[0] == q[0] and max(abs(u - v) for u, v in zip(p[1:], q[1:])) <= tol
                                    for p, q in zip(a, b))


def test_tiles_map_back_to_the_clipped_boxes(dataset, tmp_path):
    dst = tmp_path / "tiled"
    argv = ["tile", str(dataset), str(dst), "--size", "64", "--overlap", "0.25", "--min-visibility", "0.4",
            "--keep-empty", "1"]
    assert convert.main(argv) == 0
    record = json.loads((dst / "tiles.json").read_text())
    assert record["settings"]["size"] == [64, 64] and record["settings"]["min_visibility"] == 0.4
    src = dataset.parent
    by_source: dict[str, list[dict]] = {}
    for rec in record["splits"]["train"]:
        by_source.setdefault(rec["source"], []).append(rec)
    assert sorted(Path(s).name for s in by_source) == [f"im{i}.png" for i in range(5)]
    n_boxes = 0
    for source, recs in by_source.items():
        image = cv2.imread(source)
        h, w = image.shape[:2]
        label_file = src / "labels" / "train" / f"{Path(source).stem}.txt"
        if h <= 64 and w <= 64:  # not larger than a tile: copied as it is
            assert len(recs) == 1 and (recs[0]["x"], recs[0]["y"], recs[0]["width"], recs[0]["height"]) == (0, 0, w, h)
            assert (dst / recs[0]["tile"]).read_bytes() == Path(source).read_bytes()
            assert (dst / "labels" / "train" / label_file.name).read_text() == label_file.read_text()
            continue
        # every tile sahi cuts at inference, in its order (keep_empty=1: none dropped)
        expected = get_slice_bboxes(h, w, slice_height=64, slice_width=64, auto_slice_resolution=False,
                                    overlap_height_ratio=0.25, overlap_width_ratio=0.25)
        assert [[r["x"], r["y"], r["x"] + r["width"], r["y"] + r["height"]] for r in recs] == expected
        for rec in recs:
            tile = (rec["x"], rec["y"], rec["x"] + rec["width"], rec["y"] + rec["height"])
            tile_image = cv2.imread(str(dst / rec["tile"]))
            np.testing.assert_array_equal(tile_image, image[tile[1]:tile[3], tile[0]:tile[2]])
            tile_labels = dst / "labels" / "train" / f"{Path(rec['tile']).stem}.txt"
            got, want = _mapped_back(tile_labels, rec), _reference(label_file, w, h, tile, 0.4)
            assert _close(got, want), (rec, got, want)
            n_boxes += len(want)
    assert n_boxes > 10  # the random boxes did land in tiles
    # val is copied whole (the originals, for val.py --slice), with its labels
    for f in (src / "images" / "val").iterdir():
        assert (dst / "images" / "val" / f.name).read_bytes() == f.read_bytes()
        assert (dst / "labels" / "val" / f"{f.stem}.txt").read_text() == (src / "labels" / "val" / f"{f.stem}.txt"
                                                                          ).read_text()
    data = yaml.safe_load((dst / "data.yaml").read_text())
    assert data == {"path": str(dst.resolve()), "train": "images/train", "val": "images/val",
                    "names": dict(enumerate(NAMES))}
    assert json.loads((dst / ".complete").read_text())["settings"] == record["settings"]


def test_visibility_and_empty_tiles(dataset, tmp_path):
    dst = tmp_path / "tiled"
    assert convert.main(["tile", str(dataset), str(dst), "--size", "64", "--overlap", "0", "--min-visibility", "1",
                         "--keep-empty", "0", "--splits", "train", "val"]) == 0
    record = json.loads((dst / "tiles.json").read_text())
    assert set(record["splits"]) == {"train", "val"}  # val tiled too
    for split, recs in record["splits"].items():
        for rec in recs:
            label = (dst / "labels" / split / f"{Path(rec['tile']).stem}.txt").read_text()
            if rec["width"] > 64 or rec["height"] > 64:
                raise AssertionError(rec)
            big = max(cv2.imread(rec["source"]).shape[:2]) > 64
            if big:
                assert label.strip(), f"an empty tile was kept with --keep-empty 0: {rec}"
                for line in label.splitlines():  # min-visibility 1: only whole boxes, none cut by the tile border
                    _, cx, cy, w, h = map(float, line.split())
                    assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6 and cy - h / 2 >= -1e-6
    n_files = len(list((dst / "images" / "train").iterdir()))
    assert n_files == len(record["splits"]["train"])


def test_tiling_is_repeatable_and_guarded(dataset, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    argv = ["--size", "64", "--keep-empty", "0.5"]
    assert convert.main(["tile", str(dataset), str(a), *argv]) == 0
    assert convert.main(["tile", str(dataset), str(b), *argv]) == 0
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name not in ("data.yaml",))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name not in ("data.yaml",))
    for f in files:
        if f.suffix == ".txt":
            assert (a / f).read_bytes() == (b / f).read_bytes()
    before = sorted(p.name for p in a.rglob("*"))
    assert convert.main(["tile", str(dataset), str(a), *argv]) == 1  # not empty, no --overwrite
    assert convert.main(["tile", str(dataset), str(a), *argv, "--overwrite"]) == 0
    assert sorted(p.name for p in a.rglob("*")) == before


def _bad_label(root: Path) -> str:
    f = root / "labels" / "train" / "im1.txt"
    f.write_text("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    return f"{f}: line 2: class 7 out of range"


def _bad_box(root: Path) -> str:
    f = root / "labels" / "train" / "im0.txt"
    f.write_text("1 0.95 0.5 0.2 0.1\n2 1.5 0.5 0.2 0.1\n")  # the first reaches past the image: clipped
    return f"{f}: line 2: box 1.5 0.5 0.2 0.1 out of range"


def _no_labels(root: Path) -> str:
    for f in (root / "labels" / "val").iterdir():
        f.unlink()
    (root / "labels" / "val").rmdir()
    return f"{root / 'labels' / 'val'}: labels folder not found"


def _name_clash(root: Path) -> str:
    small = root / "images" / "train" / "im0_0_0.png"  # the name of im0.png's first tile
    cv2.imwrite(str(small), np.zeros((40, 50, 3), np.uint8))
    return f"{small}: im0_0_0.png is already the name of a tile of another image"


@pytest.mark.parametrize("case,argv,message", [
    (None, ["--size", "100"], "tile size 100 100: must be one value or H W, each a positive multiple of 32"),
    (None, ["--size", "64", "96", "32"], "--size 64 96 32: give one size or H W"),
    (None, ["--overlap", "1"], "tile overlap 1.0: must be in [0, 1)"),
    (None, ["--overlap", "-0.1"], "tile overlap -0.1: must be in [0, 1)"),
    (None, ["--min-visibility", "1.5"], "min visibility 1.5: must be in [0, 1]"),
    (None, ["--splits", "test"], "no split test to tile"),
    (_bad_label, [], None),
    (_bad_box, [], None),
    (_no_labels, [], None),
    (_name_clash, ["--keep-empty", "1"], None),
])
def test_bad_input_one_error_line_nothing_written(dataset, tmp_path, capsys, case, argv, message):
    if case is not None:
        message = case(dataset.parent)
    dst = tmp_path / "out"
    assert convert.main(["tile", str(dataset), str(dst), "--size", "64", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no temp folder left beside DST


def test_tile_labels_geometry():
    boxes = np.array([[0, 10, 10, 30, 30], [1, 60, 0, 80, 10], [2, 45, 45, 55, 55]], float)
    kept = tiles.tile_labels(boxes, [0, 0, 50, 50], 0.25)
    # box 0 whole, box 1 outside, box 2 a quarter inside (kept at 0.25)
    np.testing.assert_allclose(kept, [[0, 10, 10, 30, 30], [2, 45, 45, 50, 50]])
    assert len(tiles.tile_labels(boxes, [0, 0, 50, 50], 0.26)) == 1
    np.testing.assert_allclose(tiles.tile_labels(boxes, [40, 40, 90, 90], 0.2), [[2, 5, 5, 15, 15]])


# ---------------------------------------------------------------------------------------------------------------------
# train.py --tile (slow: trains).


@pytest.mark.slow
def test_train_tile_selects_best_by_sliced_ap_small(tmp_path):
    from helpers import script_ok
    from spd_yolo.data.synth import generate_demo_dataset
    from spd_yolo.tile_training import tiled_data

    frames = generate_demo_dataset(tmp_path / "frames", n_train=4, n_val=2, imgsz=256, video_frames=0,
                                   progress=False, large_frames=True)  # 256x192 frames, 4-16 px objects
    script_ok("train", "--cfg", "yolov5n-SPD", "--data", frames, "--tile", "128", "--tile-overlap", "0.25",
              "--epochs", "2", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--fitness", "ap_small",
              "--project", tmp_path / "runs", "--name", "tiled", "--noplots", cwd=tmp_path)
    run = tmp_path / "runs" / "tiled"
    cache = tmp_path / "frames-tiles" / "128x128-o0.25-v0.5-e0.1"
    record = json.loads((cache / "tiles.json").read_text())
    assert record["settings"]["size"] == [128, 128] and record["splits"]["train"]
    assert all(r["width"] == 128 for r in record["splits"]["train"])  # 256x192 frames cut into 128 px tiles
    stamp = (cache / ".complete").stat().st_mtime_ns
    assert tiled_data(frames, tiles.TileSettings(size=128, overlap=0.25), progress=False) == str(cache / "data.yaml")
    assert (cache / ".complete").stat().st_mtime_ns == stamp  # same settings, same files: reused, not rebuilt

    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["data"] == str(cache / "data.yaml") and args["imgsz"] == 128
    ckpt = torch.load(run / "weights" / "best.pt", map_location="cpu", weights_only=False)
    rows = [line.split(",") for line in (run / "results.csv").read_text().splitlines()]
    column = [float(r[rows[0].index("metrics/coco_AP_S")]) for r in rows[1:]]
    fitness = checkpoint_record(ckpt, FITNESS_KEY)
    assert fitness["name"] == "ap_small" and fitness["column"] == "metrics/coco_AP_S"
    assert fitness["best_value"] == pytest.approx(max(column), abs=1e-9)

    # the final validation of best.pt was val.py --slice on the whole frames: same predictions, same COCO numbers
    script_ok("val", "--weights", run / "weights" / "best.pt", "--data", frames, "--img", "128", "--slice",
              "--slice-overlap", "0.25", "--iou-thres", "0.7", "--project", tmp_path / "val", "--name", "s",
              cwd=tmp_path)
    ours = json.loads((run / "sliced_val" / "predictions.json").read_text())
    theirs = json.loads((tmp_path / "val" / "s" / "predictions.json").read_text())
    assert ours and any(p["bbox"][0] + p["bbox"][2] > 128 for p in ours)  # boxes in frame pixels, beyond one slice
    key = lambda p: (p["file_name"], p["category_id"], p["score"], p["bbox"])
    assert sorted(ours, key=key) == sorted(theirs, key=key)
    ours_stats = json.loads((run / "coco_metrics.json").read_text())
    theirs_stats = json.loads((tmp_path / "val" / "s" / "coco_metrics.json").read_text())
    assert ours_stats.pop("gt_source").endswith("frames-tiles/128x128-o0.25-v0.5-e0.1/annotations/instances_val.json")
    assert theirs_stats.pop("gt_source").endswith("frames/annotations/instances_val.json")  # the copy, same boxes
    assert ours_stats == theirs_stats


@pytest.mark.parametrize("argv,message", [
    (["--tile", "100"], "--tile 100: each size must be a positive multiple of 32"),
    (["--tile", "64", "64", "64"], "--tile 64 64 64: give one size or H W"),
    (["--tile", "64", "--tile-overlap", "1.2"], "--tile-overlap 1.2: must be in [0, 1)"),
    (["--tile-overlap", "0.2"], "--tile-overlap applies only with --tile"),
    (["--tile", "64", "--cfg", "resnet18-SPD"], "--tile: tiles are for detection"),
])
def test_train_tile_bad_flags(dataset, tmp_path, capsys, argv, message):
    from spd_yolo.cli import train

    base = ["--cfg", "yolov5n-SPD", "--data", str(dataset), "--project", str(tmp_path / "runs")]
    assert train.cli(base + argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "src-tiles").exists()


def test_train_tile_bad_dataset_names_the_file(dataset, tmp_path, capsys):
    from spd_yolo.cli import train

    message = _bad_label(dataset.parent)
    assert train.cli(["--cfg", "yolov5n-SPD", "--data", str(dataset), "--tile", "64", "--project",
                      str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --tile: ") and message in err, err
    assert not (tmp_path / "src-tiles" / "64x64-o0.2-v0.5-e0.1").exists()


# ---------------------------------------------------------------------------------------------------------------------
# benchmarks/bench_tiles.py


@pytest.mark.slow
def test_quick_tiles_benchmark(tmp_path):
    out = run_script(REPO / "benchmarks" / "bench_tiles.py", ["--quick", "--out", "r.json", "--project", "runs"],
                     cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "| yolov5n-SPD: tiles - whole, sliced |" in out.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    for label in ("yolov5n", "yolov5n-SPD"):
        for training in ("whole", "tiles"):
            for ev in ("plain", "sliced"):
                assert all(len(v) == 1 and -1 <= v[0] <= 1 for v in data["results"][label][training][ev].values())
    assert data["train_images"]["tiles"] > data["train_images"]["whole"] == 4 and data["epochs"]["whole"] == 1
    assert (tmp_path / "runs" / "train" / "yolov5n-tiles-seed0" / "sliced_val" / "coco_metrics.json").is_file()


def test_large_frame_demo_data(tmp_path):
    from spd_yolo.data.synth import MARKER, generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "frames", n_train=3, n_val=1, imgsz=640, video_frames=0, progress=False,
                                 large_frames=True)
    coco = json.loads((data.parent / "annotations" / "instances_train.json").read_text())
    assert {(im["width"], im["height"]) for im in coco["images"]} == {(640, 480)}
    sides = [max(a["bbox"][2:]) for a in coco["annotations"]]
    tiny = [s for s in sides if s <= 17]  # drawn 4-16 px shapes (tight boxes of rotated ones: up to ~17)
    assert len(tiny) / len(sides) > 0.9 and len(tiny) >= 3 * 35  # ~200 per 1280x960: 37-62 per 640x480 frame
    assert all(s <= 17 or s >= 90 for s in sides)  # no medium objects: tiny ones and a few large ones
    assert json.loads((data.parent / MARKER).read_text())["large_frames"] is True
    plain = generate_demo_dataset(tmp_path / "plain", n_train=1, n_val=1, imgsz=64, video_frames=0, progress=False)
    assert "large_frames" not in json.loads((plain.parent / MARKER).read_text())  # default sets' markers unchanged


def test_resumed_tile_run_finds_its_slices(dataset, tmp_path):
    """--resume of a --tile run validates sliced again: the slices come from the tiled set's tiles.json."""
    from spd_yolo.slicing import SliceSettings
    from spd_yolo.tile_training import tile_slices

    dst = tmp_path / "tiled"
    assert convert.main(["tile", str(dataset), str(dst), "--size", "64", "96", "--overlap", "0.3"]) == 0
    assert tile_slices(dst / "data.yaml") == SliceSettings(size=(64, 96), overlap=0.3)
    assert tile_slices(dataset) is None  # a plain dataset: plain validation
