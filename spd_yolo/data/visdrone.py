# SPD-YOLO, AGPL-3.0 license
"""VisDrone2019-DET as distributed into a YOLO (ultralytics) detection dataset with the 10 standard classes.

Run it as ``python -m spd_yolo.data.convert visdrone SRC DST [--split NAME] [--overwrite]``; `spd_yolo.data.convert`
stages the output (a temporary folder beside DST, renamed when complete) and holds the command line. Nothing is
downloaded.

Source layouts:

- SRC holds the split folders ``VisDrone2019-DET-train`` and ``VisDrone2019-DET-val`` (both required) and optionally
  ``VisDrone2019-DET-test-dev``, each with ``images/*.jpg`` and ``annotations/*.txt``: they become the splits train,
  val and test. Other folders are ignored, e.g. ``VisDrone2019-DET-test-challenge`` (it has no annotations).
- SRC is one split folder (``SRC/images/``, ``SRC/annotations/``): it becomes the split named by ``--split`` (train,
  val or test) or else by the end of its folder name (``-train``, ``-val``, ``-test-dev``). data.yaml then lists that
  split only; ultralytics needs train and val to train or validate, so convert the folder holding the split folders
  for that.

Every image needs its annotation file and every annotation file its image (an error naming the file otherwise).
Annotation rows are ``x,y,w,h,score,category,truncation,occlusion`` (pixels, top-left corner; a trailing comma is
allowed). Category 0 (ignored regions), category 11 (others) and rows with score 0 are not objects; categories 1..10
become classes 0..9 (`NAMES`). Boxes are clipped to the image (its size read from the file header); a box with no width
or height left is dropped. A malformed row is an error naming the file and line.

Output:

    DST/images/{train,val,test}/*.jpg   hard links to the source images where SRC and DST share a filesystem, else
                                        copies (a hard link is the same file: editing one edits the other)
    DST/labels/{train,val,test}/*.txt   'cls cx cy w h' normalised, 6 decimals; empty for an image without objects
    DST/data.yaml                       path (absolute), train, val, test (when converted), names

Training on a GPU:

    python -m spd_yolo.data.convert visdrone datasets/VisDrone datasets/visdrone
    python train.py --cfg yolov8n-SPD --data datasets/visdrone/data.yaml --img 640 --epochs 100 --batch-size 16 \\
        --device 0
    python train.py --cfg yolov8n-SPD-p2 --data datasets/visdrone/data.yaml --img 640 --epochs 100 --batch-size 16 \\
        --device 0
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import yaml

from spd_yolo.data.images import image_size
from spd_yolo.errors import ConversionError

__all__ = (
    "NAMES",
    "data_yaml",
    "find_splits",
    "new_counts",
    "pair_files",
    "read_annotations",
    "summary",
    "write_split",
    "yolo_labels",
)

NAMES = ("pedestrian", "people", "bicycle", "car", "van", "truck", "tricycle", "awning-tricycle", "bus", "motor")
SPLIT_FOLDERS = {"train": "VisDrone2019-DET-train", "val": "VisDrone2019-DET-val", "test": "VisDrone2019-DET-test-dev"}
SPLIT_SUFFIXES = {"-train": "train", "-val": "val", "-test-dev": "test"}
COLUMNS = ("x", "y", "w", "h", "score", "category", "truncation", "occlusion")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_splits(src: str | Path, split: str | None = None) -> dict[str, Path]:
    """{split: split folder} of SRC, in either layout (see the module docstring)."""
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: VisDrone folder not found (expected a VisDrone2019-DET split folder with "
                              f"images/ and annotations/, or the folder holding the split folders; nothing is "
                              f"downloaded)")
    if (src / "images").exists() or (src / "annotations").exists():  # one split folder
        if split is None:
            split = next((s for end, s in SPLIT_SUFFIXES.items() if src.name.endswith(end)), None)
            if split is None:
                raise ConversionError(f"{src}: cannot tell the split from the folder name (it does not end in -train, "
                                      f"-val or -test-dev): give --split train, val or test")
        elif split not in SPLIT_FOLDERS:
            raise ConversionError(f"--split {split}: expected train, val or test")
        return {split: src}
    if split is not None:
        raise ConversionError(f"--split {split}: only for a single split folder, and {src} has no images/ or "
                              f"annotations/ folder")
    found = {s: src / name for s, name in SPLIT_FOLDERS.items() if (src / name).is_dir()}
    if not found:
        raise ConversionError(f"{src}: not a VisDrone2019-DET folder (expected images/ and annotations/, or the split "
                              f"folders {', '.join(SPLIT_FOLDERS.values())})")
    for s in ("train", "val"):
        if s not in found:
            raise ConversionError(f"{src / SPLIT_FOLDERS[s]}: not found (train and val are both needed; "
                                  f"{SPLIT_FOLDERS['test']} is optional)")
    return found


def pair_files(folder: Path) -> list[tuple[Path, Path]]:
    """(image, annotation file) pairs of one split folder, sorted by name."""
    images_dir, annotations_dir = folder / "images", folder / "annotations"
    for d, what in ((images_dir, "the images, *.jpg"), (annotations_dir, "the annotations, one .txt per image")):
        if not d.is_dir():
            raise ConversionError(f"{d}: not found ({what})")
    images: dict[str, Path] = {}
    for f in sorted(images_dir.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            if f.stem in images:
                raise ConversionError(f"{f}: a second image named {f.stem} (with {images[f.stem].name}); annotation "
                                      f"files are matched to images by name")
            images[f.stem] = f
    if not images:
        raise ConversionError(f"{images_dir}: no image (*.jpg)")
    annotations = {f.stem: f for f in sorted(annotations_dir.iterdir()) if f.is_file() and f.suffix.lower() == ".txt"}
    for stem, f in annotations.items():
        if stem not in images:
            raise ConversionError(f"{f}: annotation file without an image ({images_dir / stem}.jpg not found)")
    for stem, f in images.items():
        if stem not in annotations:
            raise ConversionError(f"{f}: image without an annotation file ({annotations_dir / stem}.txt not found)")
    return [(images[s], annotations[s]) for s in sorted(images)]


def read_annotations(path: Path) -> list[tuple[int, float, float, float, float, float]]:
    """(category, score, x, y, w, h) of each row of a VisDrone annotation file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read ({e})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        values = [v.strip() for v in line.removesuffix(",").split(",")]
        if len(values) != len(COLUMNS):
            raise ConversionError(f"{path}: line {n}: expected 8 comma-separated values ({','.join(COLUMNS)}), "
                                  f"got {len(values)}")
        numbers = []
        for name, v in zip(COLUMNS, values):
            try:
                number = float(v)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise ConversionError(f"{path}: line {n}: {name} is not a number: {v!r}")
            numbers.append(number)
        x, y, w, h, score, category = numbers[:6]
        if w < 0 or h < 0:
            raise ConversionError(f"{path}: line {n}: negative box size w={values[2]} h={values[3]}")
        if not category.is_integer() or not 0 <= category <= 11:
            raise ConversionError(f"{path}: line {n}: category {values[5]} is not one of 0..11")
        rows.append((int(category), score, x, y, w, h))
    return rows


def yolo_labels(rows: list, width: int, height: int, counts: dict) -> str:
    """YOLO label text ('cls cx cy w h', normalised, 6 decimals) of the object rows, clipped to the image; counts
    what is kept, skipped, clipped and dropped."""
    lines = []
    for category, score, x, y, w, h in rows:
        if category == 0:
            counts["ignored"] += 1
        elif category == 11:
            counts["others"] += 1
        elif score == 0:
            counts["score0"] += 1
        else:
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
            if x1 <= x0 or y1 <= y0:
                counts["dropped"] += 1
                continue
            if (x0, y0, x1, y1) != (x, y, x + w, y + h):
                counts["clipped"] += 1
            counts["objects"][NAMES[category - 1]] += 1
            lines.append(f"{category - 1} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                         f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}\n")
    return "".join(lines)


def _checked_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image (`image_size`: its header), or a ConversionError naming a file that is not one."""
    try:
        return image_size(path)
    except Exception as e:  # noqa: BLE001 - PIL raises several types for a file that is not an image
        raise ConversionError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link src to dst, or copy it where a link is impossible (another filesystem); True if linked."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copy2(src, dst)
        return False


def write_split(pairs: list[tuple[Path, Path]], out: Path, split: str, counts: dict) -> None:
    """Write one split's images and labels under out/images/<split>/ and out/labels/<split>/."""
    images_out, labels_out = out / "images" / split, out / "labels" / split
    images_out.mkdir(parents=True)
    labels_out.mkdir(parents=True)
    for image, annotation in pairs:
        rows = read_annotations(annotation)
        width, height = _checked_size(image)
        (labels_out / f"{image.stem}.txt").write_text(yolo_labels(rows, width, height, counts), encoding="utf-8")
        counts["linked" if _link_or_copy(image, images_out / image.name) else "copied"] += 1
    counts["images"][split] = len(pairs)


def data_yaml(root: Path, splits) -> str:
    """Text of data.yaml for the dataset at root with the given splits."""
    cfg = {"path": str(Path(root).resolve())}
    cfg.update({s: f"images/{s}" for s in SPLIT_FOLDERS if s in splits})
    cfg["names"] = dict(enumerate(NAMES))
    return "# VisDrone2019-DET, written by python -m spd_yolo.data.convert visdrone\n" + yaml.safe_dump(
        cfg, sort_keys=False)


def new_counts() -> dict:
    """Empty counts for `write_split` and `summary`."""
    return {"images": {}, "objects": dict.fromkeys(NAMES, 0), "ignored": 0, "others": 0, "score0": 0, "clipped": 0,
            "dropped": 0, "linked": 0, "copied": 0}


def summary(counts: dict, dst: Path) -> str:
    """A few lines on what the conversion wrote and skipped."""
    images = counts["images"]
    lines = [
        (f"{dst}: {sum(images.values())} images ({', '.join(f'{s} {n}' for s, n in images.items())}; "
         f"{counts['linked']} hard-linked, {counts['copied']} copied), {sum(counts['objects'].values())} objects"),
        "objects per class: " + ", ".join(f"{name} {n}" for name, n in counts["objects"].items()),
        (f"not objects: {counts['ignored']} ignored regions, {counts['others']} 'others', {counts['score0']} with "
         f"score 0"),
        f"boxes: {counts['clipped']} clipped to the image, {counts['dropped']} dropped (no width or height left)",
    ]
    if "train" not in images or "val" not in images:
        lines.append(f"note: data.yaml lists {', '.join(images)} only; ultralytics needs train and val to train or "
                     f"validate (convert the folder holding the split folders)")
    return "\n".join(lines)
