# SPD-YOLO, AGPL-3.0 license
"""COCO metrics at COCO scale: `spd_yolo.coco.evaluate` with pycocotools (the reference) and with faster-coco-eval.

A synthetic, COCO-sized ground truth (default 5,000 images, ~36,000 boxes in 80 categories, log-normal areas: about
41% small / 34% medium / 24% large as in COCO val2017; iscrowd=0 unless --crowd) and detections made from it (boxes
jittered, some missed or given a wrong class, plus low-scoring false positives; at most 300 per image) are evaluated
end to end by each backend, each in a fresh process: ground-truth build (`gt_from_labels`), loading (checks, COCO
index, loadRes), evaluate, accumulate, summarize. Reports seconds per stage, the process's peak resident memory
(VmHWM) and its resident memory before the evaluation (the data alone), and checks that both backends give the same
12 numbers (max abs difference).

    .venv/bin/python benchmarks/bench_coco_eval.py                   # 5,000 images
    .venv/bin/python benchmarks/bench_coco_eval.py --quick           # 200 images: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import base_parser, check_common, environment, environment_lines, markdown_table, write_results

BACKENDS = ("pycocotools", "faster-coco-eval")
STAGES = ("gt_build", "load", "evaluate", "accumulate", "summarize")
IMAGE_SIZES = ((640, 480), (480, 640), (640, 427), (500, 375), (640, 512), (427, 640), (640, 360))
# ln(area): P(area < 32^2) ~ 0.41, P(area > 96^2) ~ 0.24 (COCO val2017: 41% small, 34% medium, 24% large)
LOG_AREA_MEAN, LOG_AREA_STD = 7.47, 2.36


def make_data(n_images: int, seed: int = 0, crowd: float = 0.0, n_classes: int = 80, boxes_per_image: float = 7.3,
              fp_per_image: int = 80, max_det: int = 300) -> tuple[list[dict], list[int], list[dict]]:
    """(records for `gt_from_labels`, crowd flag per annotation in order, detections): deterministic for a seed.

    Image ids are 1..n_images and category ids 1..n_classes, as `gt_from_labels` assigns them. Detections: each
    non-crowd box is found with probability 0.85 (jittered by ~10% of its size; class wrong with probability 0.05,
    score ~U(0.3, 1)), plus U{0..fp_per_image} random boxes (score ~U(0, 0.6)); at most max_det per image (best kept).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, n_classes + 1) ** 0.8  # a long tail of class frequencies, like COCO's
    freq /= freq.sum()
    records, crowd_flags, detections = [], [], []
    for image_id in range(1, n_images + 1):
        width, height = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
        n = int(rng.poisson(boxes_per_image))
        area = np.exp(rng.normal(LOG_AREA_MEAN, LOG_AREA_STD, n)).clip(4.0, 0.9 * width * height)
        aspect = np.exp(rng.normal(0.0, 0.5, n))  # w / h
        w = np.minimum(np.sqrt(area * aspect), width * 0.98)
        h = np.minimum(area / w, height * 0.98)
        x = rng.uniform(0, 1, n) * (width - w)
        y = rng.uniform(0, 1, n) * (height - h)
        cls = rng.choice(n_classes, n, p=freq)
        is_crowd = rng.uniform(size=n) < crowd
        records.append({
            "file_name": f"{image_id:012d}.jpg", "height": height, "width": width, "cls": cls,
            "bboxes": np.stack([(x + w / 2) / width, (y + h / 2) / height, w / width, h / height], 1),
        })
        crowd_flags += [int(c) for c in is_crowd]
        # true positives (some missed, some with the wrong class)
        found = ~is_crowd & (rng.uniform(size=n) < 0.85)
        k = int(found.sum())
        jitter = rng.normal(0, 0.1, (k, 4)) * np.stack([w[found], h[found], w[found], h[found]], 1)
        dx, dy = x[found] + jitter[:, 0], y[found] + jitter[:, 1]
        dw, dh = np.maximum(w[found] + jitter[:, 2], 1.0), np.maximum(h[found] + jitter[:, 3], 1.0)
        dcls = np.where(rng.uniform(size=k) < 0.05, rng.integers(0, n_classes, k), cls[found])
        dscore = rng.uniform(0.3, 1.0, k)
        # false positives
        m = int(rng.integers(0, fp_per_image + 1))
        fw = np.exp(rng.normal(3.5, 1.0, m)).clip(2, width)
        fh = np.exp(rng.normal(3.5, 1.0, m)).clip(2, height)
        fx, fy = rng.uniform(0, 1, m) * (width - fw), rng.uniform(0, 1, m) * (height - fh)
        boxes = np.concatenate([np.stack([dx, dy, dw, dh], 1), np.stack([fx, fy, fw, fh], 1)])
        classes = np.concatenate([dcls, rng.choice(n_classes, m, p=freq)])
        scores = np.concatenate([dscore, rng.uniform(0.0, 0.6, m)])
        keep = np.argsort(-scores, kind="stable")[:max_det]
        detections += [
            {"image_id": image_id, "category_id": int(classes[i]) + 1, "bbox": [float(v) for v in boxes[i]],
             "score": float(scores[i])}
            for i in keep
        ]
    return records, crowd_flags, detections


def build_gt(records: list[dict], crowd_flags: list[int], n_classes: int = 80) -> dict:
    """The COCO ground truth of `make_data`'s records, by `spd_yolo.coco.gt_from_labels`, with the crowd flags set."""
    from spd_yolo.coco import gt_from_labels

    gt = gt_from_labels(records, {c: f"class{c}" for c in range(n_classes)})
    for ann, flag in zip(gt["annotations"], crowd_flags):
        ann["iscrowd"] = flag
    gt["info"] = {"description": "synthetic COCO-sized ground truth"}
    return gt


def _memory() -> dict[str, float]:
    """VmRSS and VmHWM (peak) of this process, MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) / 1024
    return out


def child(backend: str, n_images: int, seed: int, crowd: float) -> dict:
    """Run one backend end to end in this (fresh) process; stage seconds, memory and the 12 numbers."""
    import pycocotools.cocoeval

    from spd_yolo import coco

    records, flags, detections = make_data(n_images, seed, crowd)
    mem_data = _memory()["VmRSS"]
    t0 = time.perf_counter()
    gt = build_gt(records, flags)
    seconds = {"gt_build": time.perf_counter() - t0}

    # time the three COCOeval phases that coco.evaluate runs (wrapping the class methods of the backend in use)
    cls = pycocotools.cocoeval.COCOeval
    if backend == "faster-coco-eval":
        cls = coco.check_backend(backend).COCOeval_faster
    marks = {}

    def timed(name, fn):
        def wrapper(self, *a, **k):
            start = time.perf_counter()
            try:
                return fn(self, *a, **k)
            finally:
                marks[name] = (start, time.perf_counter())
        return wrapper

    for name in ("evaluate", "accumulate", "summarize"):
        setattr(cls, name, timed(name, getattr(cls, name)))
    t0 = time.perf_counter()
    stats = coco.evaluate(gt, detections, backend=backend)
    total = time.perf_counter() - t0
    seconds["load"] = marks["evaluate"][0] - t0  # checks, copies, COCO index, loadRes
    for name in ("evaluate", "accumulate", "summarize"):
        seconds[name] = marks[name][1] - marks[name][0]
    seconds["total"] = seconds["gt_build"] + total
    mem = _memory()
    return {
        "backend": backend, "images": len(records), "boxes": len(flags), "detections": len(detections),
        "seconds": seconds, "rss_data_mib": mem_data, "peak_rss_mib": mem["VmHWM"], "stats": stats.values,
        "area_counts": {a: coco.count_objects(gt, a) for a in ("small", "medium", "large")},
    }


def run_child(backend: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", backend, "--images", str(args.images),
           "--seed", str(args.seed), "--crowd", str(args.crowd)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{backend} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__)
    parser.add_argument("--images", type=int, default=5000, help="images of the synthetic ground truth")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--crowd", type=float, default=0.0, help="fraction of ground-truth boxes marked iscrowd=1")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS, help="backends to run")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_common(parser, args)
    if args.quick:
        args.images = 200
    if args.images < 1:
        parser.error(f"--images must be an integer >= 1, got {args.images}")
    if not 0 <= args.crowd < 1:
        parser.error(f"--crowd must be in [0, 1), got {args.crowd}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.images, args.seed, args.crowd)))
        return 0
    env = environment(args.threads)
    import importlib.metadata as md

    for pkg in ("pycocotools", "faster-coco-eval"):
        try:
            env["versions"][pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env["versions"][pkg] = "not installed"
    runs = [run_child(b, args) for b in args.backends]
    first = runs[0]
    rows = []
    for r in runs:
        s = r["seconds"]
        rows.append([r["backend"], *(f"{s[k]:.2f}" for k in STAGES), f"{s['total']:.2f}",
                     f"{first['seconds']['total'] / s['total']:.1f}x", f"{r['rss_data_mib']:.0f}",
                     f"{r['peak_rss_mib']:.0f}", f"{r['peak_rss_mib'] - r['rss_data_mib']:+.0f}"])
    table = markdown_table(["backend", "GT build (s)", "load (s)", "evaluate (s)", "accumulate (s)", "summarize (s)",
                            "total (s)", "speed-up", "RSS with data (MiB)", "peak RSS (MiB)", "peak - data (MiB)"],
                           rows)
    counts = first["area_counts"]
    n_boxes = sum(counts.values())
    data_line = (f"data: {first['images']} images, {first['boxes']} boxes ("
                 + ", ".join(f"{k} {100 * v / max(n_boxes, 1):.0f}%" for k, v in counts.items())
                 + f"; crowd fraction {args.crowd}), 80 categories, {first['detections']} detections "
                 f"(seed {args.seed})")
    stat_rows = [[k, *(f"{r['stats'][k]:.6f}" for r in runs)] for k in first["stats"]]
    stats_table = markdown_table(["metric", *(r["backend"] for r in runs)], stat_rows)
    diff = max((abs(r["stats"][k] - first["stats"][k]) for r in runs for k in first["stats"]), default=0.0)
    same = f"max abs difference of the 12 numbers between backends: {diff:.3g}"
    text = f"{environment_lines(env)}\n{data_line}\n\n{table}\n\n{stats_table}\n\n{same}"
    print(text)
    write_results(args.out, {"environment": env, "runs": runs, "max_abs_difference": diff}, text)
    return 0 if diff <= 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
