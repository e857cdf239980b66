# SPD-YOLO, AGPL-3.0 license
"""Deterministic synthetic small-object detection dataset for SPD-YOLO demos and tests.

Each image shows a cluttered, textured background (smooth colour gradient, low-frequency noise, grey/desaturated
distractor lines and blobs) with about 8-15 objects of 4 classes that differ in shape and colour:

    0 disk (filled circle, reddish)   1 square (greenish)   2 triangle (blueish)   3 cross (plus sign, yellowish)

Most objects are small (3 to ~31 px), some are medium (36-88 px) and a few large (>= 104 px), so all three COCO
area buckets (< 32^2, 32^2..96^2, > 96^2) are populated. Boxes are the tight boxes of the drawn pixels; placements
whose box IoU with an earlier box exceeds 0.3 are rejected and larger objects are drawn first, so nothing is
fully occluded. About 20% of images are non-square and ~20% are "low resolution" (down- and up-sampled by 2-4x
and/or blurred); all get per-pixel Gaussian noise.

Layout under ``root`` (ultralytics YOLO format plus COCO ground truth and a demo video)::

    data.yaml                        path / train / val / names
    images/{train,val}/000000.jpg    JPEG quality 90
    labels/{train,val}/000000.txt    "cls xc yc w h", normalised, 6 decimals
    annotations/instances_{train,val}.json   COCO boxes in pixels, image ids 1..N in file order
    video/demo.avi                   MJPG, 10 fps, objects moving over a textured background
    .complete                        generation arguments (JSON); written last, marks the set as complete

Large-frame mode (``large_frames=True``, ``--large-frames``): landscape 4:3 frames ``imgsz`` wide (1280x960 for
``--imgsz 1280``) with 150-250 tiny objects (4-16 px) per 1280x960 of frame area and 0-2 large ones (96-160 px), no
low-resolution degradation: the case for tiling the training data and slicing at inference (benchmarks/bench_tiles.py).

Every image has its own random generator seeded by ``(seed, split, index)``, so the same arguments always give
byte-identical files, and image ``i`` of a split does not depend on the size of the other split.

Examples:
    >>> from spd_yolo.data import generate_demo_dataset
    >>> data_yaml = generate_demo_dataset("datasets/spd-demo")  # reused if already generated with these args

    $ python -m spd_yolo.data.synth --root datasets/spd-demo --n-train 240 --n-val 60
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import yaml

from spd_yolo.atomic import staged_folder

__all__ = ("CLASS_NAMES", "generate_demo_dataset", "main", "render_image")

CLASS_NAMES = ("disk", "square", "triangle", "cross")
CLASS_RGB = ((215, 55, 50), (55, 190, 70), (55, 85, 215), (225, 210, 45))  # base colour of each class
MAX_ROTATION = (0.0, 20.0, 20.0, 15.0)  # degrees of random rotation of each class's shape

GENERATOR_VERSION = 1  # bump when the output changes, so stale datasets are regenerated
MARKER = ".complete"
JPEG_QUALITY = 90
VIDEO_FPS = 10.0
MAX_IOU = 0.3
NONSQUARE_FRACTION = 0.2
LOWRES_FRACTION = 0.2
SPLITS = {"train": 0, "val": 1}  # split -> seed component; the video uses 2
VIDEO_SEED = 2


@dataclass(frozen=True)
class Box:
    """A labelled tight box in pixels: top-left corner (x, y) and size (w, h)."""

    cls: int
    x: int
    y: int
    w: int
    h: int


# --------------------------------------------------------------------------------------------------- validation


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an int, or raise ValueError naming the argument if it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _generation_args(n_train: int, n_val: int, imgsz: int, seed: int, video_frames: int,
                     large_frames: bool = False) -> dict:
    """Validated generation arguments, as stored in the marker file (``large_frames`` only when set, so the markers
    of the default sets stay as they were)."""
    args = {
        "generator": GENERATOR_VERSION,
        "n_train": _check_int("n_train", n_train, 1),
        "n_val": _check_int("n_val", n_val, 1),
        "imgsz": _check_int("imgsz", imgsz, 32),
        "seed": _check_int("seed", seed, 0),
        "video_frames": _check_int("video_frames", video_frames, 0),
    }
    if large_frames:
        args["large_frames"] = True
    return args


# ------------------------------------------------------------------------------------------------------ drawing


def _neutral_colour(rng: np.random.Generator, lo: int = 30, hi: int = 230, tint: int = 25) -> np.ndarray:
    """A grey or weakly tinted BGR colour: never as saturated as a class colour."""
    return np.clip(rng.integers(lo, hi) + rng.integers(-tint, tint + 1, 3), 0, 255).astype(np.float32)


def _class_colour(cls: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """The class's base colour with per-object jitter, as a BGR tuple for OpenCV."""
    rgb = np.asarray(CLASS_RGB[cls], np.float32) * rng.uniform(0.8, 1.15) + rng.integers(-30, 31, 3)
    r, g, b = np.clip(rgb, 0, 255).astype(int)
    return int(b), int(g), int(r)


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Textured, cluttered BGR background: gradient + low-frequency noise + distractor lines and blobs."""
    theta = rng.uniform(0, 2 * np.pi)
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    ramp = np.cos(theta) * xs[None] + np.sin(theta) * ys[:, None]
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    img = _neutral_colour(rng, 50, 200) * (1 - ramp[..., None]) + _neutral_colour(rng, 50, 200) * ramp[..., None]
    for cells, sigma in ((rng.integers(3, 8), 22.0), (rng.integers(12, 24), 8.0)):  # two octaves of smooth noise
        grid = rng.normal(0, sigma, (cells, cells, 1)) + rng.normal(0, sigma / 3, (cells, cells, 3))
        img += cv2.resize(grid.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img, 0, 255).astype(np.uint8)
    scale = max(h, w) / 256
    for _ in range(rng.integers(4, 13)):  # distractor lines
        p1, p2 = rng.integers(0, (w, h), (2, 2))
        thickness = int(rng.integers(1, 4))
        cv2.line(img, tuple(map(int, p1)), tuple(map(int, p2)), _neutral_colour(rng).tolist(), thickness, cv2.LINE_AA)
    for _ in range(rng.integers(4, 13)):  # distractor blobs (grey ellipses: hard negatives for the disks)
        centre = tuple(map(int, rng.integers(0, (w, h))))
        axes = tuple(int(a) for a in np.maximum(1, rng.integers(2, 20, 2) * scale))
        angle, colour = float(rng.uniform(0, 180)), _neutral_colour(rng).tolist()
        cv2.ellipse(img, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA)
    return img


def _shape_polygon(cls: int, half: float) -> np.ndarray:
    """Vertices (n, 2) of the square, triangle or cross of half-extent ``half`` around the origin."""
    if cls == 1:
        return np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    if cls == 2:
        return np.array([[0.0, -half], [half, half], [-half, half]])
    t = half / 3  # cross: arm half-thickness
    return np.array(
        [[t, -half], [t, -t], [half, -t], [half, t], [t, t], [t, half], [-t, half], [-t, t], [-half, t], [-half, -t],
         [-t, -t], [-t, -half]]
    )  # fmt: skip


def _shape_mask(cls: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """Binary mask of one object of class ``cls`` and extent ~``size`` px, cropped to its tight box (no AA)."""
    n = math.ceil(1.5 * size) + 6
    canvas = np.zeros((n, n), np.uint8)
    centre = n / 2 + rng.uniform(-0.5, 0.5, 2)  # sub-pixel jitter varies the rasterisation of tiny shapes
    half = (size - 1) / 2
    angle = math.radians(rng.uniform(-MAX_ROTATION[cls], MAX_ROTATION[cls]))
    if cls == 0:
        cv2.circle(canvas, tuple(int(v) for v in np.round(centre * 16)), round(half * 16), 1, -1, cv2.LINE_8, 4)
    else:
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        pts = np.round((_shape_polygon(cls, half) @ rot.T + centre) * 16).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1, cv2.LINE_8, 4)
    rows, cols = np.flatnonzero(canvas.any(1)), np.flatnonzero(canvas.any(0))
    return canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(bool)


def _object_sizes(h: int, w: int, rng: np.random.Generator) -> list[float]:
    """Extents (px) of the objects of one image, largest first: mostly small, some medium, sometimes one large."""
    scale = float(np.clip(h * w / 256**2, 0.25, 4.0))  # keep the density roughly constant across image sizes
    small = np.exp(rng.uniform(np.log(3), np.log(31), round(rng.integers(6, 15) * scale)))
    medium = rng.uniform(36, 88, round(rng.integers(0, 3) * scale))
    large = rng.uniform(104, 150, int(rng.random() < 0.25))
    cap = 0.7 * min(h, w)
    return sorted((float(s) for s in np.concatenate([large, medium, small]) if s <= cap), reverse=True)


def _large_frame_sizes(h: int, w: int, rng: np.random.Generator) -> list[float]:
    """Extents (px) of the objects of one large frame, largest first: tiny ones (4-16 px), 0-2 large ones."""
    scale = h * w / (1280 * 960)
    tiny = np.exp(rng.uniform(np.log(4), np.log(16), max(1, round(rng.integers(150, 251) * scale))))
    large = rng.uniform(96, 160, int(rng.integers(0, 3)))
    cap = 0.7 * min(h, w)
    return sorted((float(s) for s in np.concatenate([large, tiny]) if s <= cap), reverse=True)


def _iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    iw = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    ih = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = iw * ih
    return inter / (a.w * a.h + b.w * b.h - inter)


def _place(mask: np.ndarray, cls: int, h: int, w: int, boxes: list[Box], rng: np.random.Generator) -> Box | None:
    """A random position for ``mask`` inside the image whose box overlaps no earlier box by IoU > 0.3, or None."""
    mh, mw = mask.shape
    if mh > h or mw > w:
        return None
    for _ in range(30):
        box = Box(cls, int(rng.integers(0, w - mw + 1)), int(rng.integers(0, h - mh + 1)), mw, mh)
        if all(_iou(box, other) <= MAX_IOU for other in boxes):
            return box
    return None


def _paint(img: np.ndarray, mask: np.ndarray, x: int, y: int, colour: tuple[int, int, int]) -> None:
    """Fill the pixels of ``mask`` placed with its top-left corner at (x, y) with ``colour``."""
    img[y : y + mask.shape[0], x : x + mask.shape[1]][mask] = colour


def _degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Make an image 'low resolution': down-sample 2-4x and back up, and/or Gaussian-blur it."""
    h, w = img.shape[:2]
    mode = rng.integers(3)  # 0: resample, 1: blur, 2: both
    if mode != 1:
        f = int(rng.integers(2, 5))
        small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if mode != 0:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.8, 1.6)))
    return img


def _add_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-pixel Gaussian noise of a random strength."""
    noise = rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(2, 7)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _pick_height_width(imgsz: int, rng: np.random.Generator) -> tuple[int, int]:
    """(height, width): square ``imgsz`` mostly, else a 4:3 landscape or portrait image (320x240 for 256)."""
    if rng.random() >= NONSQUARE_FRACTION:
        return imgsz, imgsz
    long, short = round(imgsz * 1.25), round(imgsz * 0.9375)
    return (short, long) if rng.random() < 0.5 else (long, short)


def render_image(imgsz: int, rng: np.random.Generator, large_frames: bool = False) -> tuple[np.ndarray, list[Box]]:
    """Render one BGR image and its tight object boxes (``large_frames``: a 4:3 frame ``imgsz`` wide with tiny
    objects, see the module docstring)."""
    h, w = (2 * round(imgsz * 0.375), imgsz) if large_frames else _pick_height_width(imgsz, rng)
    img = _background(h, w, rng)
    boxes: list[Box] = []
    sizes = (_large_frame_sizes if large_frames else _object_sizes)(h, w, rng)
    for size in sizes:  # largest first: later (smaller) objects never hide earlier ones
        cls = int(rng.integers(len(CLASS_NAMES)))
        mask = _shape_mask(cls, size, rng)
        colour = _class_colour(cls, rng)
        box = _place(mask, cls, h, w, boxes, rng)
        if box is not None:
            _paint(img, mask, box.x, box.y, colour)
            boxes.append(box)
    if not large_frames and rng.random() < LOWRES_FRACTION:
        img = _degrade(img, rng)
    return _add_noise(img, rng), boxes


# ------------------------------------------------------------------------------------------------------ writing


def _yolo_lines(boxes: Sequence[Box], h: int, w: int) -> str:
    """YOLO label text: one 'cls xc yc w h' line per box, normalised to [0, 1] with 6 decimals."""
    return "".join(
        f"{b.cls} {(b.x + b.w / 2) / w:.6f} {(b.y + b.h / 2) / h:.6f} {b.w / w:.6f} {b.h / h:.6f}\n" for b in boxes
    )


def _coco_json(images: list[dict], annotations: list[dict]) -> str:
    """COCO detection ground truth (no dates, so reruns are byte-identical)."""
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASS_NAMES)]
    info = {"description": "SPD-YOLO synthetic small-object demo dataset", "version": str(GENERATOR_VERSION)}
    coco = {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": categories}
    return json.dumps(coco, separators=(",", ":"))


def _write_split(root: Path, split: str, n: int, args: dict, tick: Callable[[], None]) -> None:
    """Write the images, YOLO labels and COCO annotations of one split."""
    (root / "images" / split).mkdir(parents=True)
    (root / "labels" / split).mkdir(parents=True)
    images, annotations = [], []
    for i in range(n):
        rng = np.random.default_rng([args["seed"], SPLITS[split], i])
        img, boxes = render_image(args["imgsz"], rng, args.get("large_frames", False))
        h, w = img.shape[:2]
        name = f"{i:06d}"
        cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        (root / "labels" / split / f"{name}.txt").write_text(_yolo_lines(boxes, h, w))
        images.append({"id": i + 1, "file_name": f"{name}.jpg", "width": w, "height": h})
        for b in boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": b.cls + 1,
                 "bbox": [float(b.x), float(b.y), float(b.w), float(b.h)], "area": float(b.w * b.h), "iscrowd": 0}
            )  # fmt: skip
        tick()
    (root / "annotations" / f"instances_{split}.json").write_text(_coco_json(images, annotations))


def _bounce(start: float, velocity: float, t: int, limit: int) -> int:
    """Position at frame t of a point moving at ``velocity`` px/frame and bouncing between 0 and ``limit``."""
    if limit <= 0:
        return 0
    u = (start + velocity * t) % (2 * limit)
    return round(u if u <= limit else 2 * limit - u)


def _write_video(path: Path, frames: int, imgsz: int, seed: int, tick: Callable[[], None]) -> None:
    """A short MJPG clip of objects bouncing smoothly over a static textured background."""
    rng = np.random.default_rng([seed, VIDEO_SEED])
    h, w = 2 * round(imgsz / 2), 2 * round(imgsz * 1.25 / 2)
    background = _background(h, w, rng)
    sizes = sorted(np.concatenate([np.exp(rng.uniform(np.log(4), np.log(28), 10)), rng.uniform(36, 64, 2)]))[::-1]
    movers = []
    for size in (s for s in sizes if s <= 0.7 * h):
        cls = int(rng.integers(len(CLASS_NAMES)))
        mask = _shape_mask(cls, float(size), rng)
        start = rng.uniform(0, (w - mask.shape[1], h - mask.shape[0]))
        velocity = rng.uniform(0.7, 3.0, 2) * rng.choice((-1, 1), 2)
        movers.append((mask, _class_colour(cls, rng), start, velocity))
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an MJPG video to {path}")
    try:
        for t in range(frames):
            frame = background.copy()
            for mask, colour, start, velocity in movers:
                x = _bounce(start[0], velocity[0], t, w - mask.shape[1])
                y = _bounce(start[1], velocity[1], t, h - mask.shape[0])
                _paint(frame, mask, x, y, colour)
            writer.write(_add_noise(frame, rng))
            tick()
    finally:
        writer.release()


def _data_yaml(root: Path, args: dict) -> str:
    """Text of data.yaml (ultralytics dataset config) for the dataset at ``root``."""
    header = (
        "# SPD-YOLO synthetic small-object demo dataset, written by spd_yolo.data.synth\n"
        f"# n_train={args['n_train']} n_val={args['n_val']} imgsz={args['imgsz']} seed={args['seed']}"
        f"{' large_frames' if args.get('large_frames') else ''}\n"
    )
    cfg = {"path": str(root), "train": "images/train", "val": "images/val", "names": dict(enumerate(CLASS_NAMES))}
    return header + yaml.safe_dump(cfg, sort_keys=False)


def _write_dataset(out: Path, root: Path, args: dict, progress: bool) -> None:
    """Generate the whole dataset into the directory ``out``; data.yaml points to the final location ``root``."""
    from ultralytics.utils import TQDM

    (out / "annotations").mkdir(parents=True)
    total = args["n_train"] + args["n_val"] + args["video_frames"]
    with TQDM(total=total, desc=f"Generating {root.name}", unit="img", disable=not progress) as bar:
        for split in SPLITS:
            _write_split(out, split, args[f"n_{split}"], args, bar.update)
        if args["video_frames"]:
            (out / "video").mkdir()
            _write_video(out / "video" / "demo.avi", args["video_frames"], args["imgsz"], args["seed"], bar.update)
    (out / "data.yaml").write_text(_data_yaml(root, args))
    (out / MARKER).write_text(json.dumps(args, sort_keys=True) + "\n")  # last: marks the set as complete


# ---------------------------------------------------------------------------------------------------- public API


def _read_marker(root: Path) -> dict | None:
    """The generation arguments recorded in ``root``, or None if there are none (or they are unreadable)."""
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _check_replaceable(root: Path, maker: str = __name__, what: str = "the demo dataset") -> None:
    """Raise ValueError if ``root`` holds something `maker` did not generate (never delete user data)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise ValueError(f"root {root} exists and is not a directory; choose another root for {what}")
    if not (root / MARKER).is_file() and any(root.iterdir()):
        raise ValueError(
            f"root {root} is a non-empty directory that was not made by {maker} (no {MARKER} file); "
            "refusing to overwrite it: choose another root or empty it"
        )


def generate_demo_dataset(
    root: str | Path,
    n_train: int = 240,
    n_val: int = 60,
    imgsz: int = 256,
    seed: int = 0,
    video_frames: int = 60,
    progress: bool = True,
    large_frames: bool = False,
) -> Path:
    """Generate the synthetic small-object dataset under ``root`` (or reuse it) and return its data.yaml path.

    Args:
        root: dataset directory; created, or replaced if it holds a dataset made with other arguments.
        n_train: number of training images (>= 1).
        n_val: number of validation images (>= 1).
        imgsz: side of the square images in px (>= 32); non-square ones are 1.25 x 0.9375 of it.
        seed: non-negative random seed; the same arguments always give byte-identical files.
        video_frames: frames of video/demo.avi (10 fps); 0 writes no video.
        progress: show a progress bar and status messages.
        large_frames: 4:3 frames ``imgsz`` wide with 4-16 px objects and a few large ones (module docstring).

    Raises:
        ValueError: a bad argument, or ``root`` exists and is not a dataset made by this generator.
    """
    args = _generation_args(n_train, n_val, imgsz, seed, video_frames, large_frames)
    root = Path(root).expanduser().resolve()
    data_yaml = root / "data.yaml"
    if data_yaml.is_file() and _read_marker(root) == args:
        if yaml.safe_load(data_yaml.read_text()).get("path") != str(root):  # moved here: point data.yaml to it
            data_yaml.write_text(_data_yaml(root, args))
        if progress:
            print(f"Reusing the demo dataset in {root} (generated earlier with the same arguments)")
        return data_yaml
    _check_replaceable(root)
    with staged_folder(root) as tmp:  # an earlier dataset of ours is replaced only once the new one is complete
        _write_dataset(tmp, root, args, progress)
    if progress:
        print(f"Demo dataset written to {root}")
    return data_yaml


# ------------------------------------------------------------------------------------------------------------ CLI


def _summary(root: Path) -> str:
    """Per-split counts: images, objects per image and the share of small / medium / large objects."""
    lines = []
    for split in SPLITS:
        coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        areas = np.array([a["area"] for a in coco["annotations"]], dtype=float)
        n_img, n_obj = len(coco["images"]), max(len(areas), 1)
        small, large = (areas < 32**2).sum() / n_obj, (areas > 96**2).sum() / n_obj
        lines.append(
            f"  {split:5s}: {n_img} images, {len(areas) / n_img:.1f} objects/image, "
            f"small {small:.0%} / medium {1 - small - large:.0%} / large {large:.0%}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate (or reuse) the demo dataset and print where everything went."""
    parser = argparse.ArgumentParser(
        prog="python -m spd_yolo.data.synth",
        description="Generate the deterministic synthetic small-object detection demo dataset of SPD-YOLO "
        "(YOLO images/labels, COCO ground truth JSON and a demo video). An existing dataset made with the "
        "same arguments is reused.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--root", default="datasets/spd-demo", help="output directory of the dataset")
    parser.add_argument("--n-train", type=int, default=240, help="number of training images (>= 1)")
    parser.add_argument("--n-val", type=int, default=60, help="number of validation images (>= 1)")
    parser.add_argument("--imgsz", type=int, default=256, help="side of the square images in pixels (>= 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (>= 0); same arguments, same bytes")
    parser.add_argument("--video-frames", type=int, default=60, help="frames of the 10 fps demo video (0: no video)")
    parser.add_argument("--large-frames", action="store_true",
                        help="4:3 frames --imgsz wide (1280x960 for 1280) with 4-16 px objects and a few large ones")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or status messages")
    opt = parser.parse_args(argv)
    try:
        data_yaml = generate_demo_dataset(
            opt.root, opt.n_train, opt.n_val, opt.imgsz, opt.seed, opt.video_frames, progress=not opt.no_progress,
            large_frames=opt.large_frames,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = data_yaml.parent
    print(f"data config:  {data_yaml}")
    print(f"images:       {root / 'images'}/{{train,val}}")
    print(f"YOLO labels:  {root / 'labels'}/{{train,val}}")
    print(f"COCO JSON:    {root / 'annotations'}/instances_{{train,val}}.json")
    if opt.video_frames:
        print(f"demo video:   {root / 'video' / 'demo.avi'}")
    print(_summary(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
