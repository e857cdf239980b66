# SPD-YOLO, AGPL-3.0 license
"""Convert Tiny ImageNet and CIFAR-10 from their own layouts into image folders (train/<class>/, val/<class>/),
VisDrone2019-DET into a YOLO detection dataset, and tile a YOLO detection dataset of large frames for training.

Nothing is downloaded: point the converter at the extracted dataset.

- Tiny ImageNet (``tiny-imagenet-200/``: wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
  val/images/*.JPEG with val/val_annotations.txt): the 100,000 training and 10,000 validation images are copied into
  ``DST/train/<wnid>/`` and ``DST/val/<wnid>/`` (the unlabelled test/ split is skipped). ``DST/classes.txt`` lists
  ``wnid<TAB>words``. (ultralytics shows ImageNet wnids under their readable names.)
- CIFAR-10 (``cifar-10-batches-py/``: data_batch_1..5, test_batch, batches.meta, python pickles): the 50,000
  training images go to ``DST/train/<label>/`` and the 10,000 test images to ``DST/val/<label>/`` as PNG files
  named as in the batches. The pickles are read with an unpickler that accepts only numpy arrays, so a tampered file
  cannot run code.
- VisDrone2019-DET (the folder holding ``VisDrone2019-DET-train``, ``-val`` and optionally ``-test-dev``, or one of
  them with ``--split``): ``DST/images/{train,val,test}/``, ``DST/labels/{train,val,test}/`` and ``DST/data.yaml``
  with the 10 standard classes; see `spd_yolo.data.visdrone` for the rules.
- tile (a YOLO detection dataset: its data.yaml, or a folder with images/<split>/ and labels/<split>/): the training
  split cut into tiles at native resolution where ``--slice`` cuts at inference (sahi's slice geometry), the other
  splits copied whole; ``DST/data.yaml`` and ``DST/tiles.json`` (each tile's source image and offset). Options:
  --size, --overlap, --min-visibility, --keep-empty, --splits; see `spd_yolo.data.tiles` for the rules.

The output is written to a temporary folder beside DST and renamed when complete, so an interrupted conversion
leaves no half dataset. An existing non-empty DST is an error unless ``overwrite`` is set.

Usage:
    python -m spd_yolo.data.convert tiny-imagenet datasets/tiny-imagenet-200 datasets/tiny-imagenet
    python -m spd_yolo.data.convert cifar10 datasets/cifar-10-batches-py datasets/cifar10
    python -m spd_yolo.data.convert visdrone datasets/VisDrone datasets/visdrone
    python -m spd_yolo.data.convert visdrone datasets/VisDrone/VisDrone2019-DET-val datasets/visdrone-val
    python -m spd_yolo.data.convert tile datasets/visdrone/data.yaml datasets/visdrone-tiles640 --size 640
    python train.py --cfg resnet18-SPD --data datasets/tiny-imagenet --img 64
    python train.py --cfg yolov8n-SPD --data datasets/visdrone/data.yaml --img 640 --epochs 100 --batch-size 16 \\
        --device 0
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from spd_yolo.atomic import staged_folder
from spd_yolo.data import tiles, visdrone
from spd_yolo.errors import ConversionError

__all__ = ("ConversionError", "cifar10_to_folders", "main", "tile_yolo", "tiny_imagenet_to_folders", "visdrone_to_yolo")

CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_META = "batches.meta"


# ---------------------------------------------------------------------------------------------------------------------
# Output handling.


@contextmanager
def _staged_output(dst: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside dst that replaces dst on success and is removed on failure
    (`spd_yolo.atomic.staged_folder`), after checking that dst may be replaced."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise ConversionError(f"{dst}: destination exists and is a file")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise ConversionError(f"{dst}: destination folder exists and is not empty (use --overwrite to replace it)")
    with staged_folder(dst) as tmp:
        yield tmp


def _safe_name(name: str) -> str:
    """A class name usable as a folder name (no path separators)."""
    cleaned = name.strip().replace("/", "_").replace("\\", "_")
    if cleaned in ("", ".", ".."):
        raise ConversionError(f"class name {name!r} cannot be used as a folder name")
    return cleaned


# ---------------------------------------------------------------------------------------------------------------------
# Tiny ImageNet.


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ConversionError(f"{path}: not found ({what})")
    return path


def tiny_imagenet_to_folders(src: str | Path, dst: str | Path, overwrite: bool = False) -> dict[str, int]:
    """Copy Tiny ImageNet (tiny-imagenet-200/) into ``dst/train/<wnid>/`` and ``dst/val/<wnid>/``.

    Returns:
        {'classes': 200, 'train': 100000, 'val': 10000} for the full dataset (the numbers found).

    Raises:
        ConversionError: a missing file or folder (named), a val annotation naming an unknown wnid or a missing image.
    """
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: Tiny ImageNet folder not found (expected tiny-imagenet-200/ with wnids.txt, "
                              f"train/ and val/; nothing is downloaded)")
    if not (src / "wnids.txt").is_file() and (src / "tiny-imagenet-200" / "wnids.txt").is_file():
        src = src / "tiny-imagenet-200"  # the folder that holds the extracted archive
    wnids = [w.strip() for w in _require(src / "wnids.txt", "the list of class wnids").read_text().split() if w.strip()]
    if not wnids:
        raise ConversionError(f"{src / 'wnids.txt'}: lists no class")
    words = {}
    if (src / "words.txt").is_file():
        for line in (src / "words.txt").read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.strip()
    train_dir = _require(src / "train", "training images, train/<wnid>/images/*.JPEG")
    val_dir = _require(src / "val", "validation images, val/images/ and val/val_annotations.txt")
    annotations = _require(val_dir / "val_annotations.txt", "validation labels: file<TAB>wnid<TAB>box")
    val_images = _require(val_dir / "images", "validation images")

    known = set(wnids)
    val_labels: list[tuple[str, str]] = []
    for n, line in enumerate(annotations.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ConversionError(f"{annotations}: line {n}: expected 'file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1'")
        name, wnid = parts[0].strip(), parts[1].strip()
        if wnid not in known:
            raise ConversionError(f"{annotations}: line {n}: wnid {wnid} is not in {src / 'wnids.txt'}")
        if not (val_images / name).is_file():
            raise ConversionError(f"{annotations}: line {n}: image {val_images / name} not found")
        val_labels.append((name, wnid))

    counts = {"classes": len(wnids), "train": 0, "val": 0}
    with _staged_output(Path(dst), overwrite) as out:
        for wnid in wnids:
            folder = train_dir / wnid / "images"
            if not folder.is_dir():
                folder = train_dir / wnid  # tolerate images directly in the class folder
            if not folder.is_dir():
                raise ConversionError(f"{train_dir / wnid}: training folder of class {wnid} not found")
            files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in (".jpeg", ".jpg", ".png"))
            if not files:
                raise ConversionError(f"{folder}: no training image of class {wnid}")
            target = out / "train" / _safe_name(wnid)
            target.mkdir(parents=True)
            for f in files:
                shutil.copy2(f, target / f.name)
            counts["train"] += len(files)
            (out / "val" / _safe_name(wnid)).mkdir(parents=True)
        for name, wnid in val_labels:
            shutil.copy2(val_images / name, out / "val" / _safe_name(wnid) / name)
        counts["val"] = len(val_labels)
        empty = [w for w in wnids if not any((out / "val" / _safe_name(w)).iterdir())]
        if empty:
            raise ConversionError(f"{annotations}: no validation image for class(es) {', '.join(empty[:8])}")
        (out / "classes.txt").write_text("".join(f"{w}\t{words.get(w, '')}\n" for w in wnids), encoding="utf-8")
    return counts


# ---------------------------------------------------------------------------------------------------------------------
# CIFAR-10.


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only plain containers and numpy arrays (what CIFAR's batches hold); anything else is refused."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (only numpy arrays are expected)")


def _load_batch(path: Path) -> dict:
    """A CIFAR python batch as {str key: value} (the files are Python-2 pickles with bytes keys)."""
    if not path.is_file():
        raise ConversionError(f"{path}: not found (CIFAR-10 python batches: {', '.join(CIFAR_TRAIN)}, {CIFAR_TEST}, "
                              f"{CIFAR_META})")
    try:
        with path.open("rb") as f:
            raw = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a damaged pickle raises many types
        raise ConversionError(f"{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise ConversionError(f"{path}: not a CIFAR-10 python batch (expected a dict, got {type(raw).__name__})")
    return {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in raw.items()}


def _text(x) -> str:
    return x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x)


def cifar10_to_folders(src: str | Path, dst: str | Path, overwrite: bool = False) -> dict[str, int]:
    """Write CIFAR-10 (cifar-10-batches-py/) as PNGs into ``dst/train/<label>/`` (data batches) and
    ``dst/val/<label>/`` (test batch).

    Returns:
        {'classes': 10, 'train': 50000, 'val': 10000} for the full dataset (the numbers found).
    """
    import cv2

    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: CIFAR-10 folder not found (expected cifar-10-batches-py/ with data_batch_1..5, "
                              f"test_batch and batches.meta; nothing is downloaded)")
    if not (src / CIFAR_META).is_file() and (src / "cifar-10-batches-py" / CIFAR_META).is_file():
        src = src / "cifar-10-batches-py"  # the folder that holds the extracted archive
    meta = _load_batch(src / CIFAR_META)
    if "label_names" not in meta:
        raise ConversionError(f"{src / CIFAR_META}: no 'label_names' entry")
    names = [_safe_name(_text(n)) for n in meta["label_names"]]
    if len(set(names)) != len(names) or not names:
        raise ConversionError(f"{src / CIFAR_META}: label names must be unique and non-empty, got {names}")
    batches = {"train": [src / b for b in CIFAR_TRAIN], "val": [src / CIFAR_TEST]}
    for files in batches.values():
        for f in files:
            if not f.is_file():
                raise ConversionError(f"{f}: not found (CIFAR-10 python batches: {', '.join(CIFAR_TRAIN)}, "
                                      f"{CIFAR_TEST}, {CIFAR_META})")
    counts = {"classes": len(names), "train": 0, "val": 0}
    with _staged_output(Path(dst), overwrite) as out:
        for split, files in batches.items():
            for name in names:
                (out / split / name).mkdir(parents=True)
            used: set[tuple[int, str]] = set()
            for path in files:
                batch = _load_batch(path)
                data, labels = batch.get("data"), batch.get("labels")
                if data is None or labels is None:
                    raise ConversionError(f"{path}: expected 'data' and 'labels' entries, got {sorted(batch)}")
                data = np.asarray(data)
                if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(labels):
                    raise ConversionError(f"{path}: 'data' must be N x 3072 (32x32 RGB) with N labels, got "
                                          f"{data.shape} and {len(labels)} labels")
                files_ = [_text(f) for f in batch.get("filenames", [])] or [""] * len(labels)
                images = data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # RGB, HWC
                for i, (im, label, fname) in enumerate(zip(images, labels, files_)):
                    label = int(label)
                    if not 0 <= label < len(names):
                        raise ConversionError(f"{path}: image {i} has label {label}, expected 0..{len(names) - 1}")
                    stem = Path(fname).stem if fname else f"{path.name}_{i:05d}"
                    if (label, stem) in used:
                        stem = f"{stem}_{path.name}_{i:05d}"
                    used.add((label, stem))
                    if not cv2.imwrite(str(out / split / names[label] / f"{stem}.png"), im[..., ::-1]):
                        raise ConversionError(f"cannot write {out / split / names[label] / stem}.png")
                counts[split] += len(labels)
    return counts


# ---------------------------------------------------------------------------------------------------------------------
# VisDrone.


def visdrone_to_yolo(src: str | Path, dst: str | Path, overwrite: bool = False, split: str | None = None) -> dict:
    """Convert VisDrone2019-DET (the folder holding the split folders, or one split folder) into a YOLO detection
    dataset at dst: images/<split>/, labels/<split>/, data.yaml (rules in `spd_yolo.data.visdrone`).

    Returns:
        The counts `visdrone.summary` prints: images per split, objects per class, rows that are not objects,
        clipped and dropped boxes, images linked and copied.
    """
    if Path(dst).resolve() in (Path(src).resolve(), *Path(src).resolve().parents):
        raise ConversionError(f"{dst}: the destination must not be SRC or a folder holding it")
    pairs = {s: visdrone.pair_files(folder) for s, folder in visdrone.find_splits(src, split).items()}
    counts = visdrone.new_counts()
    with _staged_output(Path(dst), overwrite) as out:
        for s, files in pairs.items():
            visdrone.write_split(files, out, s, counts)
        (out / "data.yaml").write_text(visdrone.data_yaml(Path(dst), pairs), encoding="utf-8")
    return counts


# ---------------------------------------------------------------------------------------------------------------------
# Tiles.


def tile_yolo(src: str | Path, dst: str | Path, settings: tiles.TileSettings | None = None, overwrite: bool = False,
              progress: bool = True) -> dict:
    """Tile the YOLO detection dataset SRC into DST (rules in `spd_yolo.data.tiles`); returns the counts
    `tiles.summary` prints."""
    settings = settings or tiles.TileSettings()
    source = tiles.check_source(src, dst, settings)
    with _staged_output(Path(dst), overwrite) as out:
        return tiles.write_tiles(source, out, Path(dst), settings, progress)


# ---------------------------------------------------------------------------------------------------------------------
# Command line.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spd_yolo.data.convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", choices=("tiny-imagenet", "cifar10", "visdrone", "tile"),
                        help="which source layout SRC has (tile: a YOLO detection dataset to tile)")
    parser.add_argument(
        "src", type=Path,
        help="tiny-imagenet-200/, cifar-10-batches-py/ (extracted), or the VisDrone folder holding "
        "VisDrone2019-DET-train, -val (and -test-dev), or one of them; tile: a data YAML or a folder with "
        "images/<split>/ and labels/<split>/",
    )
    parser.add_argument(
        "dst", type=Path,
        help="output folder: DST/train/<class>/, DST/val/<class>/; visdrone: DST/images/, DST/labels/, DST/data.yaml",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists and is not empty")
    parser.add_argument(
        "--split", choices=("train", "val", "test"), default=None,
        help="visdrone, SRC one split folder: its split (default: from the folder name, e.g. VisDrone2019-DET-val)",
    )
    d = tiles.TileSettings()
    g = parser.add_argument_group("tile")
    g.add_argument("--size", type=int, nargs="+", default=None, metavar="PIXELS",
                   help=f"tile size: one value (square) or H W, multiples of 32 (default: {d.size[0]})")
    g.add_argument("--overlap", type=float, default=None,
                   help=f"fraction of a tile shared with each neighbour, in [0, 1) (default: {d.overlap})")
    g.add_argument("--min-visibility", type=float, default=None,
                   help=f"keep a box in a tile when at least this fraction of its area is inside it (default: "
                   f"{d.min_visibility})")
    g.add_argument("--keep-empty", type=float, default=None,
                   help=f"fraction of the tiles without a box to keep (default: {d.keep_empty})")
    g.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                   help="splits to tile; the others are copied whole (default: train, so val.py --slice measures on "
                   "the original frames)")
    args = parser.parse_args(argv)
    tile_flags = {"--size": args.size, "--overlap": args.overlap, "--min-visibility": args.min_visibility,
                  "--keep-empty": args.keep_empty, "--splits": args.splits}
    try:
        if args.dataset != "tile" and any(v is not None for v in tile_flags.values()):
            flag = next(f for f, v in tile_flags.items() if v is not None)
            raise ConversionError(f"{flag} is for tile only, not {args.dataset}")
        if args.dataset == "tile":
            if args.split is not None:
                raise ConversionError("--split is for visdrone; tile takes --splits (the splits to tile)")
            if args.size is not None and len(args.size) > 2:
                raise ConversionError(f"--size {' '.join(map(str, args.size))}: give one size or H W")
            given = {"size": args.size, "overlap": args.overlap, "min_visibility": args.min_visibility,
                     "keep_empty": args.keep_empty, "splits": args.splits}
            settings = tiles.TileSettings(**{k: v for k, v in given.items() if v is not None})
            counts = tile_yolo(args.src, args.dst, settings, overwrite=args.overwrite)
            print(tiles.summary(counts, args.dst, settings))
            return 0
        if args.dataset == "visdrone":
            counts = visdrone_to_yolo(args.src, args.dst, overwrite=args.overwrite, split=args.split)
        elif args.split is not None:
            raise ConversionError(f"--split is for visdrone only, not {args.dataset}")
        else:
            convert = tiny_imagenet_to_folders if args.dataset == "tiny-imagenet" else cifar10_to_folders
            counts = convert(args.src, args.dst, overwrite=args.overwrite)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.dataset == "visdrone":
        print(visdrone.summary(counts, args.dst))
        return 0
    print(f"{args.dst}: {counts['classes']} classes, {counts['train']} train and {counts['val']} val images "
          f"(train/<class>/, val/<class>/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
