# SPD-YOLO, AGPL-3.0 license
"""COCO detection metrics (AP, AP50, AP75, AP_S/M/L, AR1/10/100, AR_S/M/L) computed by pycocotools.

Every number reported here is exactly ``COCOeval('bbox').stats`` from pycocotools: nothing is re-implemented, so the
values match any other pycocotools-based evaluation of the same boxes (``-1`` where pycocotools leaves a metric
undefined, e.g. AP_L on a set without large objects).

pycocotools is the default and the reference. ``evaluate(..., backend="faster-coco-eval")`` runs the same
evaluation with the optional package faster-coco-eval (``pip install faster-coco-eval``, the ``fast-eval`` extra):
its C++ matching and accumulation give the same 12 numbers (tests/test_coco_backend.py) several times faster on
COCO-sized sets (benchmarks/bench_coco_eval.py).

The size buckets (small < 32², medium 32²..96², large > 96² pixels of area) are only meaningful at the ORIGINAL image
size, so ground truth built from YOLO labels (:func:`gt_from_labels`; :func:`split_ground_truth` feeds it the labels
ultralytics' dataset read and verified) is scaled to the original image size, never to the letterboxed network input.
With an official COCO annotation file (:func:`find_annotation_file`), the file's own ``area`` field (the
segmentation-mask area) decides the bucket, as in every published COCO number.

Examples:
    >>> records = [{"file_name": "0001.jpg", "height": 480, "width": 640, "cls": [0], "bboxes": [[0.5, 0.5, 0.1, 0.2]]}]
    >>> gt = gt_from_labels(records, {0: "person"})
    >>> stats = evaluate(gt, detections)  # detections: COCO result dicts in original-image pixels
    >>> print(format_table({"yolov5s-SPD": stats}))
    >>> save_stats(stats, "runs/val")
"""

from __future__ import annotations

import contextlib
import copy
import csv
import importlib
import io
import json
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from ultralytics.utils import LOGGER, TQDM

from spd_yolo.atomic import atomic_write
from spd_yolo.data.images import image_size

__all__ = (
    "AREA_RANGES",
    "BACKENDS",
    "STAT_NAMES",
    "CocoStats",
    "SplitGroundTruth",
    "category_map",
    "check_backend",
    "count_objects",
    "evaluate",
    "find_annotation_file",
    "format_table",
    "gt_from_labels",
    "load_stats",
    "read_annotation_file",
    "save_stats",
    "split_ground_truth",
)

STAT_NAMES = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L", "AR1", "AR10", "AR100", "AR_S", "AR_M", "AR_L")
"""Names of ``COCOeval.stats``, in its order."""

TABLE_ORDER = ("AP_S", "AP_M", "AP_L", "AP", "AP50", "AP75", "AR1", "AR10", "AR100", "AR_S", "AR_M", "AR_L")
"""Row order of :func:`format_table`: small-object AP (our headline metric) first."""

AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}
"""pycocotools' ``Params.areaRng`` (bounds inclusive, pixels²) of AP/AR, AP_S/AR_S, AP_M/AR_M and AP_L/AR_L."""

BACKENDS = ("pycocotools", "faster-coco-eval")
"""COCOeval implementations `evaluate` can use; the first (pycocotools) is the default and the reference."""

_YOLO_GT_DESCRIPTION = "YOLO labels"


@dataclass(frozen=True)
class CocoStats:
    """The 12 COCO numbers of one evaluation, the ground truth they were measured against, and pycocotools' printout."""

    values: dict[str, float]  # STAT_NAMES -> COCOeval.stats value (-1 where undefined)
    gt_source: str  # which ground truth was used, human-readable
    summary: str  # the text printed by COCOeval.summarize() (its 12 lines)

    def as_dict(self) -> dict[str, Any]:
        """``{"gt_source": ..., "AP": ..., ...}`` (metrics in STAT_NAMES order)."""
        return {"gt_source": self.gt_source, **{k: self.values[k] for k in STAT_NAMES}}


# --------------------------------------------------------------------------------------------------- ground truth


def gt_from_labels(records: Iterable[dict], names: dict[int, str]) -> dict:
    """COCO ground-truth dict from YOLO labels, in ORIGINAL-image pixels.

    Args:
        records: dicts ``{"file_name", "height", "width", "cls" (n,), "bboxes" (n, 4) normalized xc, yc, w, h}``.
        names: model/dataset class names; class ``c`` becomes category id ``c + 1``.

    Returns:
        A COCO dict: image ids 1..N in the given order, annotation ids 1..M, bbox ``[x, y, w, h]`` and
        ``area = w * h`` in original pixels (so COCO's 32²/96² size thresholds apply to the original image).
    """
    names = {int(k): str(v) for k, v in names.items()}
    images, annotations = [], []
    for image_id, rec in enumerate(records, start=1):
        file_name = str(rec["file_name"])
        height, width = int(rec["height"]), int(rec["width"])
        if height <= 0 or width <= 0:
            raise ValueError(f"{file_name}: image size must be positive, got height={height}, width={width}")
        cls = np.asarray(rec["cls"], dtype=np.float64).reshape(-1)
        boxes = np.asarray(rec["bboxes"], dtype=np.float64).reshape(-1, 4)
        if len(cls) != len(boxes):
            raise ValueError(f"{file_name}: {len(cls)} class ids but {len(boxes)} boxes")
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
        for c, (xc, yc, w, h) in zip(cls, boxes):
            if c % 1 or int(c) not in names:
                raise ValueError(f"{file_name}: class {c:g} is not in the class names (valid: {sorted(names)})")
            bw, bh = w * width, h * height
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(c) + 1,
                    "bbox": [float((xc - w / 2) * width), float((yc - h / 2) * height), float(bw), float(bh)],
                    "area": float(bw * bh),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": _YOLO_GT_DESCRIPTION},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": names[c]} for c in sorted(names)],
    }


def find_annotation_file(dataset_root: str | os.PathLike, split_dir_name: str) -> Path | None:
    """The official COCO annotation file of a split, ``dataset_root/annotations/instances_{split}.json``, or None.

    ``split_dir_name`` is the image folder's name (``val2017`` for ``images/val2017``); a path is reduced to its name.
    """
    split = Path(split_dir_name).name
    path = Path(dataset_root) / "annotations" / f"instances_{split}.json"
    return path if path.is_file() else None


@dataclass(frozen=True)
class SplitGroundTruth:
    """The COCO ground truth of a validation split, as val.py evaluates it (`split_ground_truth`)."""

    gt: dict  # the COCO dataset dict
    anno: Path | None  # the official annotation file it was read from; None when built from the YOLO labels
    image_ids: dict[str, int]  # image file of the split -> its GT image id (files the annotation file lacks: absent)
    categories: dict[int, int]  # model class index -> GT category id

    @property
    def evaluated(self) -> list[int] | None:
        """The GT image ids to evaluate: the split's (official file), or None for all of them (built from labels)."""
        return None if self.anno is None else sorted(set(self.image_ids.values()))

    @property
    def source(self) -> dict | Path:
        """What `evaluate` takes: the annotation file (so its output names it), else the dict."""
        return self.gt if self.anno is None else self.anno


def split_ground_truth(labels: list[dict], names: dict[int, str], dataset_root: str | os.PathLike,
                       anno_json: str | os.PathLike | None = None) -> SplitGroundTruth:
    """The COCO ground truth of a YOLO validation split (ultralytics' verified labels, in dataset order).

    The official annotation file if given or shipped (``dataset_root/annotations/instances_<image folder>.json``: its
    crowd regions, mask areas and category ids; images matched by file name, a warning for those it lacks), else the
    YOLO labels at original image sizes (dataset image i has id i + 1, class c has id c + 1).

    Raises:
        FileNotFoundError: `anno_json` does not exist. ValueError: no image of the split is in the annotation file.
    """
    files = [lb["im_file"] for lb in labels]
    anno = anno_json or find_annotation_file(dataset_root, Path(files[0]).parent.name)
    if anno is None:
        records = []
        for lb in labels:  # rect validation reorders labels and drops "shape": read the size from the header
            h, w = lb["shape"] if "shape" in lb else image_size(lb["im_file"])[::-1]  # (w, h) -> (h, w)
            records.append(
                {"file_name": lb["im_file"], "height": h, "width": w, "cls": lb["cls"], "bboxes": lb["bboxes"]}
            )
        gt = gt_from_labels(records, names)
        gt["info"] = {"description": "YOLO labels at original image sizes"}
        return SplitGroundTruth(gt, None, {f: i + 1 for i, f in enumerate(files)}, {c: c + 1 for c in names})
    anno = Path(anno)
    if not anno.is_file():
        raise FileNotFoundError(f"COCO annotation file {anno} does not exist")
    gt = read_annotation_file(anno, files)
    by_name = {Path(im["file_name"]).name: im["id"] for im in gt["images"]}
    ids = {f: by_name[Path(f).name] for f in files if Path(f).name in by_name}
    if len(ids) < len(files):
        missing = next(Path(f).name for f in files if f not in ids)
        LOGGER.warning(
            f"{len(files) - len(ids)} validation images are not in {anno} and are not evaluated, e.g. {missing}"
        )
    return SplitGroundTruth(gt, anno, ids, category_map(names, gt["categories"]))


def read_annotation_file(anno: str | os.PathLike, image_files: Iterable[str | os.PathLike]) -> dict:
    """The COCO dataset dict of the annotation file `anno`, checked as far as it can be before any inference: JSON,
    a mapping with 'images' and 'categories' lists (each image with 'file_name' and 'id'), and at least one of
    `image_files` (matched by file name) among its images.

    Raises:
        ValueError: naming the file and, for JSON errors, the line and column.
    """
    anno = Path(anno)
    try:
        gt = json.loads(anno.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{anno}: not valid JSON ({e.msg}: line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{anno}: not a JSON text file (not UTF-8)") from None
    if not isinstance(gt, dict) or not all(isinstance(gt.get(k), list) for k in ("images", "categories")):
        raise ValueError(f"{anno}: not a COCO annotation file (expected a JSON object with 'images' and "
                         f"'categories' lists)")
    if not all(isinstance(im, dict) and "file_name" in im and "id" in im for im in gt["images"]):
        raise ValueError(f"{anno}: every entry of 'images' needs a 'file_name' and an 'id'")
    files = [Path(f).name for f in image_files]
    names = {Path(im["file_name"]).name for im in gt["images"]}
    if files and not names.intersection(files):
        raise ValueError(f"{anno}: none of the {len(files)} validation images is in this annotation file "
                         f"(e.g. {files[0]}; it lists e.g. {next(iter(sorted(names)), 'no image')})")
    return gt


def category_map(model_names: dict[int, str], gt_categories: list[dict]) -> dict[int, int]:
    """Model class index -> GT category id.

    Matches by name (case-insensitive, stripped). If some model class has no namesake but the GT has exactly as many
    categories as the model has classes, maps by order (i-th model index -> i-th smallest GT id) with a warning.
    Otherwise raises ValueError listing the unmatched model names and the GT names.
    """
    model_names = {int(k): str(v) for k, v in model_names.items()}
    gt_sorted = sorted(gt_categories, key=lambda c: c["id"])
    by_name: dict[str, list[int]] = {}
    for cat in gt_sorted:
        by_name.setdefault(str(cat["name"]).strip().lower(), []).append(int(cat["id"]))
    mapping, unmatched = {}, []
    for idx in sorted(model_names):
        ids = by_name.get(model_names[idx].strip().lower(), [])
        if len(ids) > 1:
            raise ValueError(f"model class {idx} {model_names[idx]!r} matches several GT categories (ids {ids})")
        if ids:
            mapping[idx] = ids[0]
        else:
            unmatched.append(model_names[idx])
    if not unmatched:
        return mapping
    gt_names = [str(c["name"]) for c in gt_sorted]
    if len(gt_sorted) == len(model_names):
        mapping = {idx: int(cat["id"]) for idx, cat in zip(sorted(model_names), gt_sorted)}
        warnings.warn(
            f"model classes {unmatched} not found by name among the GT categories {gt_names}; both have "
            f"{len(gt_sorted)} classes, so mapping by order (model index i -> i-th smallest GT id)",
            stacklevel=2,
        )
        return mapping
    raise ValueError(
        f"cannot map model classes to GT categories: model classes {unmatched} are not GT category names and the "
        f"model has {len(model_names)} classes but the GT has {len(gt_sorted)} categories. GT names: {gt_names}"
    )


def count_objects(gt: dict, area: str = "all", image_ids=None) -> int:
    """Ground-truth boxes of a COCO dict that count for the metrics of an area range (an `AREA_RANGES` key): not crowd,
    area within the range (``area`` field, else the box's w * h, as `evaluate` does), in ``image_ids`` (default all).

    Zero means pycocotools reports -1 (undefined) for that range's AP and AR.
    """
    lo, hi = AREA_RANGES[area]
    ids = None if image_ids is None else set(image_ids)
    return sum(
        1
        for a in gt.get("annotations", [])
        if not a.get("iscrowd", 0)
        and (ids is None or a["image_id"] in ids)
        and lo <= float(a["area"] if "area" in a else a["bbox"][2] * a["bbox"][3]) <= hi
    )


# --------------------------------------------------------------------------------------------------- evaluation


def _gt_dataset(gt: dict | str | os.PathLike | COCO) -> tuple[dict, str]:
    """(COCO dataset dict, description of its source) of a dict, a JSON path or a COCO object."""
    if isinstance(gt, COCO):
        dataset, source = gt.dataset, None
    elif isinstance(gt, dict):
        dataset, source = gt, None
    elif isinstance(gt, (str, os.PathLike)):
        path = Path(gt).resolve()
        with open(path, encoding="utf-8") as f:
            dataset = json.load(f)
        source = f"annotation file {path}"
    else:
        raise TypeError(f"gt must be a COCO dict, a path to a COCO JSON or a pycocotools COCO, not {type(gt).__name__}")
    for key in ("images", "categories"):
        if not isinstance(dataset, dict) or key not in dataset:
            raise ValueError(f"ground truth {source or 'dict'} is not a COCO dataset: it has no {key!r} list")
    if source is None:
        info = dataset.get("info") or {}
        desc = info.get("description") if isinstance(info, dict) else None
        n_img, n_ann = len(dataset["images"]), len(dataset.get("annotations", []))
        source = f"{desc or 'COCO ground truth'} ({_plural(n_img, 'image')}, {_plural(n_ann, 'box')})"
    return dataset, source


def _plural(n: int, word: str) -> str:
    """'1 image', '2 images', '3 boxes'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('x') else 's'}"


def _coco(dataset: dict) -> COCO:
    """A pycocotools COCO indexing ``dataset`` (its index messages swallowed)."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _clean_detections(detections: list[dict], img_ids: set, cat_ids: set) -> list[dict]:
    """Fresh result dicts (plain Python numbers) after checking ids and boxes; the caller's dicts stay untouched."""
    out, bad_img, bad_cat = [], set(), set()
    for i, d in enumerate(detections):
        try:
            image_id, category_id, bbox, score = d["image_id"], d["category_id"], d["bbox"], d["score"]
        except (KeyError, TypeError):
            raise ValueError(f"detection {i} is not a dict with image_id, category_id, bbox, score: {d!r}") from None
        try:
            bbox = [float(v) for v in np.asarray(bbox, dtype=np.float64).reshape(-1)]
            score = float(score)
        except (TypeError, ValueError):
            bbox = []
        if len(bbox) != 4 or not all(map(math.isfinite, bbox)) or bbox[2] < 0 or bbox[3] < 0:
            raise ValueError(
                f"detection {i}: expected bbox = 4 finite numbers [x, y, w, h] with w, h >= 0 and a numeric score, "
                f"got {d!r}"
            )
        image_id = int(image_id) if isinstance(image_id, (int, np.integer)) else image_id
        category_id = int(category_id) if isinstance(category_id, (int, np.integer)) else category_id
        if image_id not in img_ids:
            bad_img.add(image_id)
        if category_id not in cat_ids:
            bad_cat.add(category_id)
        out.append({"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score})
    if bad_img:
        raise ValueError(
            f"detections refer to image ids not in the ground truth: {sorted(bad_img, key=str)[:20]} "
            f"(GT image ids: {len(img_ids)} ids, e.g. {sorted(img_ids, key=str)[:5]})"
        )
    if bad_cat:
        raise ValueError(
            f"detections refer to category ids not in the ground truth: {sorted(bad_cat, key=str)} "
            f"(GT category ids: {sorted(cat_ids, key=str)}); map model classes with category_map()"
        )
    return out


def _load_results(coco_gt: COCO, detections: list[dict]) -> COCO:
    """``coco_gt.loadRes(detections)``, also for zero detections (where loadRes itself raises IndexError)."""
    if detections:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(detections)
    return _coco(
        {
            "info": copy.deepcopy(coco_gt.dataset.get("info", {})),
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
    )


def check_backend(backend: str):
    """The faster_coco_eval module for ``"faster-coco-eval"``, None for ``"pycocotools"``.

    Raises:
        ValueError: an unknown backend name.
        ImportError: faster-coco-eval is asked for but not installed (the message says how to install it).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown COCO evaluation backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "pycocotools":
        return None
    try:
        return importlib.import_module("faster_coco_eval")
    except ImportError as e:
        raise ImportError(
            f"COCO evaluation backend 'faster-coco-eval' needs the faster-coco-eval package, which is not installed "
            f"({e}): pip install faster-coco-eval (or pip install 'spd-yolo[fast-eval]'), or use the default "
            f"backend 'pycocotools'"
        ) from e


def _faster_eval(fce, dataset: dict, detections: list[dict]):
    """faster-coco-eval's ``COCOeval_faster('bbox')`` of clean detections against an indexed copy of ``dataset``;
    its messages go to stdout (print), where `evaluate` swallows them."""
    coco_gt = fce.COCO(dataset, print_function=print)
    coco_dt = coco_gt.loadRes(detections)  # handles zero detections itself; adds ids/areas to our fresh dicts
    return fce.COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=print)


def evaluate(
    gt: dict | str | os.PathLike | COCO,
    detections: list[dict],
    image_ids=None,
    progress: bool = False,
    backend: str = "pycocotools",
) -> CocoStats:
    """COCOeval('bbox') of COCO result dicts against a ground truth, by pycocotools (default) or faster-coco-eval.

    Args:
        gt: a COCO dict, a path to a COCO JSON, or a pycocotools COCO (never modified).
        detections: dicts ``{"image_id", "category_id", "bbox": [x, y, w, h] original pixels, "score"}``.
        image_ids: evaluate only these GT images (e.g. the ones actually validated); default all.
        progress: show a progress bar over the three phases (evaluate, accumulate, summarize).
        backend: ``"pycocotools"`` (the reference) or ``"faster-coco-eval"`` (optional package, same numbers).

    Returns:
        CocoStats with exactly ``COCOeval.stats`` (the 12 standard numbers, in STAT_NAMES order, -1 where undefined).
        Zero detections give AP 0 for every bucket that has objects.

    Raises:
        ImportError: backend "faster-coco-eval" without the package installed. ValueError: bad input (see below).
    """
    fce = check_backend(backend)
    dataset, source = _gt_dataset(gt)
    # COCOeval writes an 'ignore' flag into each GT annotation: give it copies (fills 'iscrowd'/'area' if absent).
    anns = []
    for a in dataset.get("annotations", []):
        a = dict(a)
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            a["area"] = float(a["bbox"][2]) * float(a["bbox"][3])
        anns.append(a)
    images = dataset["images"]
    if not images:
        raise ValueError(f"ground truth {source} has no images")
    all_img_ids = {im["id"] for im in images}
    if image_ids is not None:
        image_ids = [int(i) if isinstance(i, (int, np.integer)) else i for i in image_ids]
        if not image_ids:
            raise ValueError("image_ids is empty: nothing to evaluate")
        unknown = sorted({i for i in image_ids if i not in all_img_ids}, key=str)
        if unknown:
            raise ValueError(f"image_ids not in the ground truth {source}: {unknown[:20]}")
        n_eval = len(set(image_ids))
        if n_eval < len(all_img_ids):
            source += f", evaluated on {n_eval} of {len(all_img_ids)} images"
    dets = _clean_detections(detections, all_img_ids, {c["id"] for c in dataset["categories"]})
    gt_copy = {**dataset, "annotations": anns}
    if fce is None:
        coco_gt = _coco(gt_copy)
        ev = COCOeval(coco_gt, _load_results(coco_gt, dets), "bbox")
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = _faster_eval(fce, gt_copy, dets)
    if image_ids is not None:
        ev.params.imgIds = sorted(set(image_ids))
    summary = io.StringIO()
    phases = {"evaluate": ev.evaluate, "accumulate": ev.accumulate, "summarize": ev.summarize}
    bar = TQDM(phases.items(), desc=f"COCO eval ({backend})", total=len(phases), disable=not progress)
    for name, phase in bar:
        bar.set_description(f"COCO eval ({backend}): {name}")
        with contextlib.redirect_stdout(summary if name == "summarize" else io.StringIO()):
            phase()
    stats = np.asarray(ev.stats, dtype=np.float64)[: len(STAT_NAMES)]  # faster-coco-eval: same first 12
    if len(stats) != len(STAT_NAMES):
        raise RuntimeError(f"COCO evaluation ({backend}) returned {len(stats)} stats, expected {len(STAT_NAMES)}")
    values = {name: float(v) for name, v in zip(STAT_NAMES, stats)}
    # faster-coco-eval also prints AR@0.5 and AR@0.75: keep the 12 lines pycocotools prints
    text = "".join(summary.getvalue().splitlines(keepends=True)[: len(STAT_NAMES)])
    return CocoStats(values=values, gt_source=source, summary=text)


# --------------------------------------------------------------------------------------------------- reporting


def _pct(v: float) -> str:
    """A COCO value as a percentage with 1 decimal; pycocotools' -1 (undefined) as '-'."""
    return "-" if v < 0 else f"{100 * v:.1f}"


def format_table(results: dict[str, CocoStats]) -> str:
    """Side-by-side table: one column per model, one row per metric (AP_S first), in percent; with exactly two
    models a 'diff' column (second minus first, in points). The first line names the ground truth."""
    if not results:
        raise ValueError("format_table needs at least one result")
    labels = list(results)
    sources = {s.gt_source for s in results.values()}
    if len(sources) == 1:
        head = f"Ground truth: {next(iter(sources))}"
    else:
        head = "Ground truth (differs between models!): " + "; ".join(f"{k}: {results[k].gt_source}" for k in labels)
    header = ["metric", *labels]
    rows = []
    for name in TABLE_ORDER:
        vals = [results[k].values[name] for k in labels]
        row = [name, *map(_pct, vals)]
        if len(labels) == 2:
            a, b = vals
            row.append("-" if a < 0 or b < 0 else f"{100 * (b - a):+.1f}")
        rows.append(row)
    if len(labels) == 2:
        header.append("diff")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

    return "\n".join([head, line(header), *(line(r) for r in rows)])


def load_stats(folder: str | os.PathLike) -> CocoStats:
    """Read back the ``coco_metrics.json`` that `save_stats` wrote in ``folder``."""
    path = Path(folder) / "coco_metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run val.py on this model first")
    d = json.loads(path.read_text(encoding="utf-8"))
    return CocoStats(values={k: float(d[k]) for k in STAT_NAMES}, gt_source=d["gt_source"], summary=d["summary"])


def save_stats(stats: CocoStats, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``folder/coco_metrics.json`` (as_dict + summary) and ``folder/coco_metrics.csv`` (metric,value rows in
    STAT_NAMES order, then gt_source), atomically; creates ``folder``. Returns (json_path, csv_path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = folder / "coco_metrics.json", folder / "coco_metrics.csv"
    atomic_write(json_path, json.dumps({**stats.as_dict(), "summary": stats.summary}, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "value"])
    writer.writerows([name, repr(stats.values[name])] for name in STAT_NAMES)
    writer.writerow(["gt_source", stats.gt_source])
    atomic_write(csv_path, buf.getvalue())
    return json_path, csv_path
