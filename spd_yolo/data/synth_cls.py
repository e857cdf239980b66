# SPD-YOLO, AGPL-3.0 license
"""Deterministic synthetic low-resolution classification set: classes that differ only by small shapes and 1-pixel
textures, as image folders (root/train/<class>/*.png, root/val/<class>/*.png).

Each image (default 32x32) has a smooth random background with noise and a few grey distractor pixels, and 3 to 6
copies of the small pattern of its class (1 to 6 px wide) at random places, in one random contrasting colour:

    checker (6x6, period 2)   hstripes (6x6, period 2)   vstripes (6x6, period 2)
    dot (2x2)   hbar (1x5)   vbar (5x1)   plus (5x5)   xcross (5x5)   ring (5x5)   corner (L, 5x5)

The first three (and the first classes are used when n_classes < 10) differ only in 1-pixel detail, the detail that
a strided convolution sees only one position in four of. Images are lossless PNGs; image i of a class and split has
its own generator seeded by (seed, split, class, i), so the same arguments give byte-identical files. Used by the
tests and by benchmarks/bench_classify.py.

Usage:
    python -m spd_yolo.data.synth_cls --root datasets/spd-cls --n-train 100 --n-val 30
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from spd_yolo.atomic import staged_folder
from spd_yolo.data.synth import MARKER, _check_replaceable, _read_marker  # one marker, one replace rule

__all__ = ("CLASS_NAMES", "generate_cls_dataset")

CLASS_NAMES = ("checker", "hstripes", "vstripes", "dot", "hbar", "vbar", "plus", "xcross", "ring", "corner")
SPLITS = {"train": 0, "val": 1}


def _pattern(name: str) -> np.ndarray:
    """The binary mask of a class (1 = pattern pixel)."""
    if name == "dot":
        return np.ones((2, 2), bool)
    if name == "hbar":
        return np.ones((1, 5), bool)
    if name == "vbar":
        return np.ones((5, 1), bool)
    if name == "plus":
        m = np.zeros((5, 5), bool)
        m[2, :] = m[:, 2] = True
        return m
    if name == "xcross":
        m = np.eye(5, dtype=bool)
        return m | m[:, ::-1]
    if name == "ring":
        m = np.ones((5, 5), bool)
        m[1:-1, 1:-1] = False
        return m
    if name == "checker":
        return (np.add.outer(np.arange(6), np.arange(6)) % 2).astype(bool)
    if name == "hstripes":
        return np.repeat((np.arange(6) % 2 == 0)[:, None], 6, 1)
    if name == "vstripes":
        return np.repeat((np.arange(6) % 2 == 0)[None, :], 6, 0)
    if name == "corner":
        m = np.zeros((5, 5), bool)
        m[:, 0] = m[-1, :] = True
        return m
    raise ValueError(f"unknown class {name}")


def render(cls: int, imgsz: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image (imgsz x imgsz) of class `cls`: 3 to 6 copies of its pattern on a noisy background."""
    h = w = imgsz
    yy, xx = np.mgrid[0:h, 0:w] / max(h - 1, 1)
    base = rng.uniform(60, 190, 3)
    slope = rng.uniform(-40, 40, (2, 3))
    im = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]
    im += rng.normal(0, 6, (h, w, 3))  # sensor-like noise
    for _ in range(int(rng.integers(0, 4))):  # grey distractor pixels
        y, x = rng.integers(0, (h, w))
        im[y, x] = rng.uniform(0, 255)
    name = CLASS_NAMES[cls]
    sign = 1.0 if base.mean() < 128 else -1.0  # brighter on dark backgrounds, darker on bright ones
    colour = np.clip(base + sign * rng.uniform(60, 110, 3), 0, 255)
    taken = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(3, 7))):
        mask = _pattern(name)
        if rng.random() < 0.5 and name not in ("hstripes", "vstripes", "hbar", "vbar"):
            mask = mask[::-1] if rng.random() < 0.5 else mask[:, ::-1]  # mirrored variants (orientation kept)
        ph, pw = mask.shape
        for _attempt in range(20):  # a free place, one pixel apart from the other copies
            y0, x0 = int(rng.integers(1, h - ph)), int(rng.integers(1, w - pw))
            if not taken[y0 - 1 : y0 + ph + 1, x0 - 1 : x0 + pw + 1].any():
                break
        else:
            continue
        taken[y0 : y0 + ph, x0 : x0 + pw] = True
        im[y0 : y0 + ph, x0 : x0 + pw][mask] = colour
    return np.clip(im, 0, 255).astype(np.uint8)


def _check_args(n_train: int, n_val: int, imgsz: int, n_classes: int, seed: int) -> dict:
    for name, value, low in (("n_train", n_train, 1), ("n_val", n_val, 1), ("imgsz", imgsz, 16), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or not 2 <= n_classes <= len(CLASS_NAMES):
        raise ValueError(f"n_classes must be an integer in 2..{len(CLASS_NAMES)}, got {n_classes!r}")
    return {"n_train": n_train, "n_val": n_val, "imgsz": imgsz, "n_classes": n_classes, "seed": seed}


def generate_cls_dataset(
    root: str | Path, n_train: int = 100, n_val: int = 30, imgsz: int = 32, n_classes: int = 10, seed: int = 0
) -> Path:
    """Write (or reuse) the synthetic set under root and return root.

    Args:
        root: output folder; replaced only if it holds a set written by this generator with other arguments.
        n_train: training images per class.
        n_val: validation images per class.
        imgsz: image side in pixels.
        n_classes: the first n_classes of `CLASS_NAMES`.
        seed: random seed; the same arguments give byte-identical files.
    """
    import cv2

    args = _check_args(n_train, n_val, imgsz, n_classes, seed)
    root = Path(root).expanduser().resolve()
    if _read_marker(root) == args:
        return root
    _check_replaceable(root, __name__, "the synthetic classification set")
    with staged_folder(root) as tmp:  # the old set is removed only once the new one is in place
        for split, split_id in SPLITS.items():
            for cls in range(n_classes):
                folder = tmp / split / CLASS_NAMES[cls]
                folder.mkdir(parents=True)
                for i in range(args[f"n_{split}"]):
                    rng = np.random.default_rng([seed, split_id, cls, i])
                    cv2.imwrite(str(folder / f"{i:05d}.png"), render(cls, imgsz, rng)[..., ::-1])
        (tmp / MARKER).write_text(json.dumps(args, sort_keys=True) + "\n")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spd_yolo.data.synth_cls", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--root", default="datasets/spd-cls", help="output folder")
    parser.add_argument("--n-train", type=int, default=100, help="training images per class")
    parser.add_argument("--n-val", type=int, default=30, help="validation images per class")
    parser.add_argument("--imgsz", type=int, default=32, help="image side in pixels")
    parser.add_argument("--n-classes", type=int, default=10, help=f"number of classes (2..{len(CLASS_NAMES)})")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    a = parser.parse_args(argv)
    try:
        root = generate_cls_dataset(a.root, a.n_train, a.n_val, a.imgsz, a.n_classes, a.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{root}: {a.n_classes} classes, {a.n_train} train and {a.n_val} val images per class")
    return 0


if __name__ == "__main__":
    sys.exit(main())
