# SPD-YOLO, AGPL-3.0 license
"""True layers, parameters and GFLOPs of a model, and the README table of our models beside stock ultralytics.

Usage:
    python -m spd_yolo.models.summary                 # every SPD model beside its stock counterpart: detectors at
                                                      # 640 (nc=80), ResNet classifiers at 32 and 64 (nc=10)
    python -m spd_yolo.models.summary yolov5s-SPD yolov5s.yaml --imgsz 320
    python -m spd_yolo.models.summary yolov8n-SPD-p2 yolov5n-SPD-p2       # P2 models beside yolov8n-p2, yolov5n-p2
    python -m spd_yolo.models.summary yolov8n-SPD-lite yolo11n-SPD-lite   # stock-cost SPD beside yolov8n, yolo11n
    python -m spd_yolo.models.summary yolo26n-SPD yolo26n-SPD-p2          # beside ultralytics' yolo26n, yolo26n-p2
    python -m spd_yolo.models.summary resnet18-SPD --imgsz 32 64 --nc 200
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass

from ultralytics.nn.tasks import guess_model_task
from ultralytics.utils import LOGGER, torch_utils

from spd_yolo.models.configs import available_models, build_model, load_model_yaml

__all__ = ("ModelStats", "main", "model_stats", "stock_counterpart")


@dataclass(frozen=True)
class ModelStats:
    """What `model.info()` reports, computed right for SPD models too (GFLOPs at `imgsz` x `imgsz`)."""

    name: str
    layers: int
    params: int
    gflops: float


def model_stats(model, name: str = "", imgsz: int = 640) -> ModelStats:
    """Layers (leaf modules, as ultralytics counts them), parameters and GFLOPs of a built model (SPD stems counted
    right: `spd_yolo` registers its GFLOPs counter in ultralytics before this module runs)."""
    layers = OrderedDict((n, m) for n, m in model.named_modules() if len(m._modules) == 0)
    params = sum(p.numel() for p in model.parameters())
    return ModelStats(name, len(layers), params, torch_utils.get_flops(model, imgsz))


def stock_counterpart(name: str) -> str:
    """'yolov5s-SPD' -> 'yolov5s.yaml', 'yolov8s-SPD-p2' -> 'yolov8s-p2.yaml', 'yolov8s-SPD-lite' -> 'yolov8s.yaml',
    'yolo26s-SPD-p2' -> 'yolo26s-p2.yaml': the stock model the SPD one modifies, ultralytics' YAML or, where it has
    none (yolov5s-p2, yolo11s-p2), our baseline (`build_model` finds both)."""
    return re.sub(r"-SPD(-lite)?(?=-|$)", "", re.sub(r"\.ya?ml$", "", name), count=1) + ".yaml"


def _table(rows: list[tuple[ModelStats, ModelStats | None]]) -> str:
    lines = [
        "| model | layers | params (M) | GFLOPs | stock model | layers | params (M) | GFLOPs | GFLOPs ratio |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for ours, stock in rows:
        left = f"| {ours.name} | {ours.layers} | {ours.params / 1e6:.2f} | {ours.gflops:.1f} |"
        if stock is None:
            lines.append(left + " | | | | |")
        else:
            ratio = ours.gflops / stock.gflops if stock.gflops else float("nan")
            lines.append(
                f"{left} {stock.name} | {stock.layers} | {stock.params / 1e6:.2f} | {stock.gflops:.1f} | {ratio:.2f}x |"
            )
    return "\n".join(lines)


def _multi_size_table(rows: list[tuple[list[ModelStats], list[ModelStats] | None]], sizes: list[int]) -> str:
    """Like `_table` with one GFLOPs column per input size (each row: the model's stats at every size)."""
    g = " | ".join(f"GFLOPs {s}" for s in sizes)
    lines = [
        f"| model | layers | params (M) | {g} | stock model | layers | params (M) | {g} | GFLOPs ratio |",
        "|---|---:|---:|" + "---:|" * len(sizes) + "---|---:|---:|" + "---:|" * len(sizes) + "---:|",
    ]
    for ours, stock in rows:
        o = ours[0]
        left = f"| {o.name} | {o.layers} | {o.params / 1e6:.2f} | " + " | ".join(f"{x.gflops:.2f}" for x in ours)
        if stock is None:
            lines.append(left + " |" + " |" * (3 + len(sizes)) + " |")
            continue
        st = stock[0]
        ratios = [f"{a.gflops / b.gflops:.2f}x" if b.gflops else "nan" for a, b in zip(ours, stock)]
        ratio = ratios[0] if len(set(ratios)) == 1 else " / ".join(ratios)
        lines.append(
            f"{left} | {st.name} | {st.layers} | {st.params / 1e6:.2f} | "
            + " | ".join(f"{x.gflops:.2f}" for x in stock)
            + f" | {ratio} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet():
    """Hold back ultralytics' INFO lines while building (ClassificationModel prints its summary unasked)."""
    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Print the markdown tables of models (default: all of ours) beside their stock counterparts."""
    parser = argparse.ArgumentParser(prog="python -m spd_yolo.models.summary", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="model names or YAML paths (default: every SPD model)")
    parser.add_argument(
        "--imgsz", type=int, nargs="+", default=None,
        help="square input size(s) for GFLOPs (default 640 for detectors, 32 and 64 for classifiers)",
    )
    parser.add_argument("--nc", type=int, default=None, help="number of classes (default 80 detectors, 10 classifiers)")
    parser.add_argument("--no-stock", action="store_true", help="do not add the stock counterpart of SPD models")
    args = parser.parse_args(argv)
    for size in args.imgsz or []:
        if size < 32 or size % 32:
            parser.error(f"--imgsz must be a positive multiple of 32, got {size}")
    names = args.models or [*available_models("detect"), *(n for n in available_models("classify") if "-SPD" in n)]
    detect_rows, cls_rows = [], []
    det_sizes, cls_sizes = args.imgsz or [640], args.imgsz or [32, 64]
    det_nc, cls_nc = args.nc or 80, args.nc or 10
    for name in names:
        classifier = guess_model_task(load_model_yaml(name)) == "classify"
        nc, sizes = (cls_nc, cls_sizes) if classifier else (det_nc, det_sizes)
        with _quiet():
            model = build_model(name, nc=nc)
        ours = [model_stats(model, name, s) for s in sizes]
        stock = None
        if not args.no_stock and "-SPD" in name:
            stock_name = stock_counterpart(name)
            with _quiet():
                stock_model = build_model(stock_name, nc=nc)
            stock = [model_stats(stock_model, stock_name.removesuffix(".yaml"), s) for s in sizes]
        (cls_rows if classifier else detect_rows).append((ours, stock))
        print(f"built {name}", file=sys.stderr, flush=True)
    if detect_rows:
        for i, size in enumerate(det_sizes):
            print(f"\nModels at {size}x{size}, nc={det_nc} (GFLOPs = 2 x multiply-adds, thop):\n")
            print(_table([(ours[i], stock[i] if stock else None) for ours, stock in detect_rows]))
    if cls_rows:
        at = " and ".join(f"{s}x{s}" for s in cls_sizes)
        print(f"\nClassification models at {at}, nc={cls_nc} (GFLOPs = 2 x multiply-adds, thop):\n")
        print(_multi_size_table(cls_rows, cls_sizes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
