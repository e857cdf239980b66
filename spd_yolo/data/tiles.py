# SPD-YOLO, AGPL-3.0 license
"""Tile a YOLO detection dataset at native resolution: training tiles cut exactly where sliced inference cuts.

``python -m spd_yolo.data.convert tile SRC DST [--size 640 | --size H W] [--overlap 0.2] [--min-visibility 0.5]
[--keep-empty 0.1] [--splits train] [--overwrite]`` (`spd_yolo.data.convert` holds the command line).

SRC is a data YAML (ultralytics format: path, train, val, ..., names; split entries are image folders), a folder
holding one (data.yaml), or a folder with ``images/<split>/`` and ``labels/<split>/`` (class names then from
classes.txt, one a line, else the class ids).

Tiles are the slices of sahi's ``get_slice_bboxes``, which sahi's ``slice_image`` cuts ``--slice``'s slices with
at inference, so a model trained on the tiles sees objects at the scale and with the borders it meets in
``detect.py --slice`` / ``val.py --slice``. For each tile a box is clipped to it and kept when at least
``min_visibility`` of its area lies inside the tile (and something of it does). A tile left without a box is kept
with probability ``keep_empty`` (a fixed, repeatable draw per image). An image not larger than a tile on either side
is copied as it is (hard link where possible), with its labels. Splits not in ``splits`` (default: val and test)
are copied whole, so that ``val.py --slice`` measures on the original frames; their COCO annotation file
(annotations/instances_<split>.json), if the source has one, comes along.

Output (written to a temporary folder beside DST and renamed into place when complete)::

    DST/images/<split>/<stem>_<x>_<y><suffix>   tiles (x, y: the tile's top-left corner in the source image; JPEG
                                                 tiles at quality 95) or the untiled images
    DST/labels/<split>/<stem>_<x>_<y>.txt       'cls cx cy w h', normalised to the tile, 6 decimals
    DST/data.yaml                               path, the splits, names
    DST/tiles.json                              the settings and, per split, each tile: source image, x, y, width,
                                                height (pixels; an untiled image: x = y = 0 and its own size)
    DST/.complete                               settings and source fingerprint (JSON), written last

Every bad input is a `ConversionError` naming the file (and line): a label row out of range, a size that is not a
multiple of 32, an overlap outside [0, 1), a missing labels folder.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from sahi.slicing import get_slice_bboxes
from ultralytics.data.utils import IMG_FORMATS, img2label_paths
from ultralytics.utils import DATASETS_DIR, TQDM
from ultralytics.utils.patches import imread

from spd_yolo.errors import ConversionError

__all__ = (
    "MARKER",
    "RECORD",
    "TileSettings",
    "cache_folder",
    "check_source",
    "marker",
    "read_labels",
    "read_marker",
    "read_record",
    "read_source",
    "summary",
    "tile_labels",
    "write_tiles",
)

MARKER = ".complete"
RECORD = "tiles.json"
VERSION = 1  # bump when the output changes, so cached tile sets are rebuilt
JPEG_QUALITY = 95
EMPTY_SEED = 0  # seed of the repeatable draw of the empty tiles kept


@dataclass(frozen=True)
class TileSettings:
    """How a dataset is tiled.

    Args:
        size: (height, width) of a tile in pixels, multiples of 32.
        overlap: fraction of a tile shared with its neighbour on both axes, in [0, 1) (as ``--slice-overlap``).
        min_visibility: a box is kept in a tile when at least this fraction of its area lies inside it, in [0, 1].
        keep_empty: fraction of the tiles without a box that are kept, in [0, 1].
        splits: the splits that are tiled; the others are copied whole.
    """

    size: tuple[int, int] = (640, 640)
    overlap: float = 0.2
    min_visibility: float = 0.5
    keep_empty: float = 0.1
    splits: tuple[str, ...] = ("train",)

    def __post_init__(self):
        size = tuple(int(v) for v in (self.size if isinstance(self.size, (tuple, list)) else (self.size,) * 2))
        if len(size) == 1:
            size = size * 2
        if len(size) != 2 or min(size) < 32 or any(v % 32 for v in size):
            raise ConversionError(f"tile size {' '.join(map(str, size))}: must be one value or H W, each a positive "
                                  f"multiple of 32")
        object.__setattr__(self, "size", size)
        if not 0 <= self.overlap < 1:
            raise ConversionError(f"tile overlap {self.overlap}: must be in [0, 1) (a fraction of the tile size)")
        if not 0 <= self.min_visibility <= 1:
            raise ConversionError(f"min visibility {self.min_visibility}: must be in [0, 1] (a fraction of a box)")
        if not 0 <= self.keep_empty <= 1:
            raise ConversionError(f"keep empty {self.keep_empty}: must be in [0, 1] (a fraction of the empty tiles)")
        splits = tuple(self.splits)
        if not splits or len(set(splits)) != len(splits):
            raise ConversionError(f"splits {' '.join(splits)}: give one or more distinct split names")
        object.__setattr__(self, "splits", splits)
        object.__setattr__(self, "overlap", float(self.overlap))
        object.__setattr__(self, "min_visibility", float(self.min_visibility))
        object.__setattr__(self, "keep_empty", float(self.keep_empty))

    def record(self) -> dict:
        """The settings as JSON-ready values."""
        return {**asdict(self), "size": list(self.size), "splits": list(self.splits)}


# ---------------------------------------------------------------------------------------------------------------------
# The source dataset.


@dataclass(frozen=True)
class _Source:
    root: Path  # the dataset root (data.yaml's path)
    splits: dict[str, list[Path]]  # split -> its image folders
    names: dict[int, str]
    yaml_file: Path | None


def _split_folders(root: Path, entry, where: str, split: str) -> list[Path]:
    folders = []
    for item in map(str, entry if isinstance(entry, list) else [entry]):
        folder = Path(item) if Path(item).is_absolute() else (root / item).resolve()
        if folder.suffix == ".txt":
            raise ConversionError(f"{where}: '{split}: {item}' is a .txt list of images; the tiler reads image folders")
        if not folder.is_dir():
            raise ConversionError(f"{where}: '{split}' folder {folder} not found")
        folders.append(folder)
    return folders


def _names(value, where: str) -> dict[int, str]:
    if isinstance(value, list):
        return {i: str(n) for i, n in enumerate(value)}
    if isinstance(value, dict):
        try:
            return {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise ConversionError(f"{where}: 'names' keys must be class ids 0..nc-1") from None
    raise ConversionError(f"{where}: expected 'names' (a list or a mapping of class id: name)")


def read_source(src: str | Path) -> _Source:
    """The splits, image folders and class names of SRC (a data YAML, a folder holding data.yaml, or a folder with
    images/<split>/ and labels/<split>/)."""
    src = Path(src)
    if src.is_dir() and (src / "data.yaml").is_file():
        src = src / "data.yaml"
    if src.is_file():
        try:
            data = yaml.safe_load(src.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConversionError(f"{src}: not a readable YAML file ({e})") from None
        if not isinstance(data, dict):
            raise ConversionError(f"{src}: expected a mapping with path, train, val and names")
        root = Path(data.get("path") or src.parent)
        if not root.is_absolute():
            root = root.resolve() if root.exists() else (DATASETS_DIR / root).resolve()
        splits = {s: _split_folders(root, data[s], str(src), s) for s in ("train", "val", "test") if data.get(s)}
        if not splits:
            raise ConversionError(f"{src}: names no split (train, val, test)")
        return _Source(root, splits, _names(data.get("names"), str(src)), src.resolve())
    if not src.is_dir():
        raise ConversionError(f"{src}: not found (a data YAML, or a folder with images/<split>/ and labels/<split>/)")
    images = src / "images"
    splits = {d.name: [d.resolve()] for d in sorted(images.iterdir()) if d.is_dir()} if images.is_dir() else {}
    if not splits:
        raise ConversionError(f"{src}: no data.yaml and no images/<split>/ folder (a YOLO dataset: images/train/, "
                              f"labels/train/, ...)")
    classes = src / "classes.txt"
    names = None
    if classes.is_file():
        names = {i: n.strip() for i, n in enumerate(classes.read_text(encoding="utf-8").splitlines()) if n.strip()}
    return _Source(src.resolve(), splits, names, None)


def _images(folder: Path) -> list[Path]:
    """The images under `folder`, recursively, sorted (ultralytics' order)."""
    return sorted(p for p in folder.rglob("*.*") if p.is_file() and p.suffix[1:].lower() in IMG_FORMATS)


def _label_file(image: Path) -> Path:
    return Path(img2label_paths([str(image)])[0])


def _check_labels_folder(folder: Path, images: list[Path]) -> None:
    """The labels folder of an image folder must exist (one .txt per image; a missing file is a background)."""
    if images and not _label_file(images[0]).parent.is_dir():
        raise ConversionError(f"{_label_file(images[0]).parent}: labels folder not found (YOLO labels of the images "
                              f"in {folder}: images/.../a.jpg -> labels/.../a.txt)")


def read_labels(path: Path, nc: int | None) -> np.ndarray:
    """A YOLO label file as an (n, 5) float64 array [cls, cx, cy, w, h] (normalised); no file: no boxes.

    Raises:
        ConversionError: "<file>: line <n>: ..." for a row that is not 5 numbers, a class outside 0..nc-1, a
            value outside [0, 1] or a box without width or height (as ultralytics checks labels; a box reaching past
            the image is clipped to it).
    """
    if not path.is_file():
        return np.zeros((0, 5))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: cannot read ({e})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        values = line.split()
        if not values:
            continue
        if len(values) != 5:
            raise ConversionError(f"{path}: line {n}: expected 5 values 'class cx cy w h', got {len(values)} (the "
                                  f"tiler reads boxes, not segments)")
        try:
            row = [float(v) for v in values]
        except ValueError:
            raise ConversionError(f"{path}: line {n}: not a number in {line.strip()!r}") from None
        c, _, _, w, h = row
        if not all(np.isfinite(row)) or not c.is_integer() or c < 0 or nc is not None and c >= nc:
            raise ConversionError(f"{path}: line {n}: class {values[0]} out of range (expected an integer in "
                                  f"0..{'nc-1' if nc is None else nc - 1})")
        if not (w > 0 and h > 0 and all(0 <= v <= 1 for v in row[1:])):  # ultralytics' rule; edges are clipped
            raise ConversionError(f"{path}: line {n}: box {' '.join(values[1:])} out of range (cx cy w h normalised "
                                  f"to [0, 1], w and h > 0)")
        rows.append(row)
    return np.array(rows, np.float64).reshape(-1, 5)


def _fingerprint(source: _Source) -> dict:
    """What identifies the source's contents cheaply: each image and label file's path, size and mtime, hashed."""
    crc, count = 0, 0
    for split in sorted(source.splits):
        for folder in source.splits[split]:
            for image in _images(folder):
                for f in (image, _label_file(image)):
                    st = f.stat() if f.exists() else None
                    item = f"{split}|{f}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n"
                    crc = zlib.crc32(item.encode(), crc)
                count += 1
    yaml_text = source.yaml_file.read_text(encoding="utf-8") if source.yaml_file else ""
    return {"root": str(source.root), "images": count, "files_crc32": crc,
            "yaml_crc32": zlib.crc32(yaml_text.encode())}


# ---------------------------------------------------------------------------------------------------------------------
# Geometry.


def tile_labels(boxes: np.ndarray, tile: list[int] | tuple[int, ...], min_visibility: float) -> np.ndarray:
    """The boxes a tile keeps, in tile pixels.

    Args:
        boxes: (n, 5) [cls, x1, y1, x2, y2] in image pixels.
        tile: [x1, y1, x2, y2] of the tile in image pixels.
        min_visibility: least fraction of a box's area inside the tile for the box to be kept.

    Returns:
        (m, 5) [cls, x1, y1, x2, y2] clipped to the tile, relative to its top-left corner.
    """
    tx1, ty1, tx2, ty2 = tile
    x1, y1 = np.maximum(boxes[:, 1], tx1), np.maximum(boxes[:, 2], ty1)
    x2, y2 = np.minimum(boxes[:, 3], tx2), np.minimum(boxes[:, 4], ty2)
    inside = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2])
    keep = (inside > 0) & (inside >= min_visibility * area)
    return np.stack([boxes[keep, 0], x1[keep] - tx1, y1[keep] - ty1, x2[keep] - tx1, y2[keep] - ty1], 1)


def _to_pixels(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """(n, 5) [cls, cx, cy, w, h] normalised -> [cls, x1, y1, x2, y2] pixels, clipped to the image."""
    c, cx, cy, w, h = labels.T
    x1, x2 = np.clip((cx - w / 2) * width, 0, width), np.clip((cx + w / 2) * width, 0, width)
    y1, y2 = np.clip((cy - h / 2) * height, 0, height), np.clip((cy + h / 2) * height, 0, height)
    return np.stack([c, x1, y1, x2, y2], 1)


def _label_text(boxes: np.ndarray, width: int, height: int) -> str:
    """YOLO label text of (n, 5) [cls, x1, y1, x2, y2] pixel boxes in a width x height tile."""
    return "".join(f"{int(c)} {(a + b) / 2 / width:.6f} {(t + u) / 2 / height:.6f} {(b - a) / width:.6f} "
                   f"{(u - t) / height:.6f}\n" for c, a, t, b, u in boxes.tolist())


# ---------------------------------------------------------------------------------------------------------------------
# Writing.


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _copy_whole(image: Path, image_out: Path, label_out: Path) -> None:
    """An image as it is (hard link or copy) and its label file (checked by the caller; none: an empty one)."""
    if image_out.exists():
        raise ConversionError(f"{image}: {image_out.name} is already the name of a tile of another image; rename one "
                              f"of them")
    _link_or_copy(image, image_out)
    label_out.parent.mkdir(parents=True, exist_ok=True)
    if _label_file(image).is_file():
        shutil.copyfile(_label_file(image), label_out)
    else:
        label_out.write_text("")


def _read_image(path: Path) -> np.ndarray:
    im = imread(str(path))
    if im is None:
        raise ConversionError(f"{path}: not a readable image")
    return im


def _write_image(path: Path, im: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(path.suffix, im, params)
    if not ok:
        raise ConversionError(f"cannot encode {path}")
    path.write_bytes(buf.tobytes())


def _tile_split(split: str, folders: list[Path], out: Path, settings: TileSettings, nc: int | None, counts: dict,
                progress: bool) -> list[dict]:
    """Tile (or copy) one split into out/images/<split>/ and out/labels/<split>/; its tile records."""
    images_out, labels_out = out / "images" / split, out / "labels" / split
    images_out.mkdir(parents=True, exist_ok=True)
    labels_out.mkdir(parents=True, exist_ok=True)
    tiled = split in settings.splits
    records = []
    files = [(folder, image) for folder in folders for image in _images(folder)]
    for folder in folders:
        _check_labels_folder(folder, _images(folder))
    bar = TQDM(files, desc=f"{'Tiling' if tiled else 'Copying'} {split}", unit="image", disable=not progress)
    for folder, image in bar:
        rel = image.relative_to(folder)
        labels = read_labels(_label_file(image), nc)
        if not tiled:
            _copy_whole(image, images_out / rel, labels_out / rel.with_suffix(".txt"))
            counts["copied"] += 1
            continue
        im = _read_image(image)
        height, width = im.shape[:2]
        th, tw = settings.size
        if height <= th and width <= tw:
            _copy_whole(image, images_out / rel, labels_out / rel.with_suffix(".txt"))
            records.append({"tile": str((images_out / rel).relative_to(out)), "source": str(image), "x": 0, "y": 0,
                            "width": width, "height": height})
            counts["small"] += 1
            counts["boxes"] += len(labels)
            continue
        boxes = _to_pixels(labels, width, height)
        rng = np.random.default_rng([EMPTY_SEED, zlib.crc32(str(rel).encode())])
        for tile in get_slice_bboxes(height, width, slice_height=settings.size[0], slice_width=settings.size[1],
                                     overlap_height_ratio=settings.overlap, overlap_width_ratio=settings.overlap):
            x1, y1, x2, y2 = tile
            kept = tile_labels(boxes, tile, settings.min_visibility)
            draw = rng.random()  # drawn for every tile, so which empty tiles are kept does not depend on the others
            if not len(kept) and draw >= settings.keep_empty:
                counts["empty_dropped"] += 1
                continue
            name = rel.with_name(f"{rel.stem}_{x1}_{y1}{rel.suffix}")
            if (images_out / name).exists():
                raise ConversionError(f"{image}: its tile {name} has the name of another image's file in {split}; "
                                      f"rename one of them")
            _write_image(images_out / name, im[y1:y2, x1:x2])
            (labels_out / name.with_suffix(".txt")).write_text(_label_text(kept, x2 - x1, y2 - y1))
            records.append({"tile": str((images_out / name).relative_to(out)), "source": str(image), "x": x1, "y": y1,
                            "width": x2 - x1, "height": y2 - y1})
            counts["tiles"] += 1
            counts["empty_kept"] += not len(kept)
            counts["boxes"] += len(kept)
        counts["tiled"] += 1
    return records


def _data_yaml(dst: Path, splits, names: dict[int, str]) -> str:
    cfg = {"path": str(Path(dst).resolve()), **{s: f"images/{s}" for s in splits}, "names": names}
    return "# tiled by python -m spd_yolo.data.convert tile\n" + yaml.safe_dump(cfg, sort_keys=False)


def new_counts() -> dict:
    return dict.fromkeys(("tiled", "small", "copied", "tiles", "empty_kept", "empty_dropped", "boxes"), 0)


def check_source(src: str | Path, dst: str | Path, settings: TileSettings) -> _Source:
    """SRC read (`read_source`) and checked against DST and the settings, before anything is written."""
    source = read_source(src)
    dst = Path(dst).resolve()
    if dst in (source.root, *source.root.parents) or source.root in dst.parents:
        raise ConversionError(f"{dst}: the destination must not be the dataset {source.root}, inside it, or hold it")
    missing = [s for s in settings.splits if s not in source.splits]
    if missing:
        raise ConversionError(f"{src}: no split {', '.join(missing)} to tile (the dataset has "
                              f"{', '.join(source.splits)})")
    return source


def write_tiles(source: _Source, out: Path, dst: Path, settings: TileSettings, progress: bool = True) -> dict:
    """Tile `source` into the folder `out` (a staging folder that becomes `dst`; see the module docstring).

    Returns:
        Counts: images tiled, small images copied as they are, images of untiled splits copied, tiles written,
        empty tiles kept and dropped, boxes written into tiled splits.
    """
    nc = len(source.names) if source.names else None
    fingerprint = _fingerprint(source)
    counts = new_counts()
    records = {s: _tile_split(s, folders, out, settings, nc, counts, progress) for s, folders in source.splits.items()}
    names = source.names
    if names is None:
        top = max((int(line.split()[0]) for f in (out / "labels").rglob("*.txt")
                   for line in f.read_text().splitlines() if line.strip()), default=0)
        names = {i: str(i) for i in range(top + 1)}
    for s, folders in source.splits.items():
        anno = source.root / "annotations" / f"instances_{folders[0].name}.json"
        if s not in settings.splits and len(folders) == 1 and anno.is_file():
            (out / "annotations").mkdir(exist_ok=True)
            shutil.copy2(anno, out / "annotations" / f"instances_{s}.json")
    (out / "data.yaml").write_text(_data_yaml(dst, source.splits, names), encoding="utf-8")
    record = {"version": VERSION, "settings": settings.record(), "source": str(source.yaml_file or source.root),
              "splits": records}
    (out / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    (out / MARKER).write_text(json.dumps(marker(source, settings, fingerprint)), encoding="utf-8")
    return counts


def marker(source: _Source, settings: TileSettings, fingerprint: dict | None = None) -> dict:
    """What .complete records: the tiler version, the settings and the source's fingerprint (`cache_key`; taken
    before tiling by `write_tiles`, so a source changed meanwhile does not match its tiles)."""
    return {"version": VERSION, "settings": settings.record(), "source": fingerprint or _fingerprint(source)}


def cache_folder(source: _Source, settings: TileSettings) -> Path:
    """Where `train.py --tile` keeps the tiled set: ``<root>-tiles/<H>x<W>-o<overlap>-v<visibility>-e<empty>`` beside
    the dataset root."""
    h, w = settings.size
    key = f"{h}x{w}-o{settings.overlap:g}-v{settings.min_visibility:g}-e{settings.keep_empty:g}"
    if settings.splits != ("train",):
        key += "-" + "+".join(settings.splits)
    return source.root.parent / f"{source.root.name}-tiles" / key


def read_marker(dst: str | Path) -> dict | None:
    """The .complete record of a finished tile set, or None."""
    try:
        return json.loads((Path(dst) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_record(dst: str | Path) -> dict | None:
    """The tile record (tiles.json) of a finished tile set, or None where DST holds none."""
    dst = Path(dst)
    if not (dst / MARKER).is_file() or not (dst / RECORD).is_file():
        return None
    try:
        return json.loads((dst / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def summary(counts: dict, dst: Path, settings: TileSettings) -> str:
    """One paragraph on what the tiler wrote."""
    h, w = settings.size
    return (f"{dst}: {counts['tiles']} tiles of {w}x{h} (W x H, overlap {settings.overlap:g}) from {counts['tiled']} "
            f"images, {counts['small']} images not larger than a tile copied as they are, {counts['boxes']} boxes "
            f"(kept when >= {settings.min_visibility:g} of their area is inside); empty tiles: {counts['empty_kept']} "
            f"kept, {counts['empty_dropped']} dropped; {counts['copied']} images of the untiled splits copied whole")
