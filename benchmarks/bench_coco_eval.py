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
from spd_yolo.data.coco_like import build_gt, make_data

BACKENDS = ("pycocotools", "faster-coco-eval")
STAGES = ("gt_build", "load", "evaluate", "accumulate", "summarize")


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
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
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
