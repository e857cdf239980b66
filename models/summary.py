# SPD-YOLO, AGPL-3.0 license
"""True layers, parameters and GFLOPs of a model, and the README table of our models beside stock ultralytics.

Usage:
    python -m spd_yolo.models.summary                 # every SPD model beside its stock counterpart, nc=80, 640
    python -m spd_yolo.models.summary yolov5s-SPD yolov5s.yaml --imgsz 320
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ("ModelStats", "model_stats", "stock_counterpart", "main")


@dataclass(frozen=True)
class ModelStats:
    """What `model.info()` reports, computed right for SPD models too (GFLOPs at `imgsz` x `imgsz`)."""

    name: str
    layers: int
    params: int
    gflops: float


def model_stats(model, name: str = "", imgsz: int = 640) -> ModelStats:
    """Layers (leaf modules, as ultralytics counts them), parameters and GFLOPs of a built model."""
    import spd_modules  # noqa: F401  (the GFLOPs counter knows SPD stems once registered)
    from ultralytics.utils import torch_utils

    layers = OrderedDict((n, m) for n, m in model.named_modules() if len(m._modules) == 0)
    params = sum(p.numel() for p in model.parameters())
    return ModelStats(name, len(layers), params, torch_utils.get_flops(model, imgsz))


def stock_counterpart(name: str) -> str:
    """'yolov5s-SPD' -> 'yolov5s.yaml' (the stock ultralytics model the SPD one modifies)."""
    return re.sub(r"-SPD(\.ya?ml)?$", "", name) + ".yaml"


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


def main(argv: list[str] | None = None) -> int:
    """Print the markdown table of models (default: all of ours) beside their stock counterparts."""
    from spd_yolo.models.configs import available_models, build_model

    parser = argparse.ArgumentParser(prog="python -m spd_yolo.models.summary", description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", help="model names or YAML paths (default: every SPD model)")
    parser.add_argument("--imgsz", type=int, default=640, help="square input size for GFLOPs (default 640)")
    parser.add_argument("--nc", type=int, default=80, help="number of classes (default 80)")
    parser.add_argument("--no-stock", action="store_true", help="do not add the stock counterpart of SPD models")
    args = parser.parse_args(argv)
    if args.imgsz < 32 or args.imgsz % 32:
        parser.error(f"--imgsz must be a positive multiple of 32, got {args.imgsz}")
    names = args.models or list(available_models())
    rows = []
    for name in names:
        ours = model_stats(build_model(name, nc=args.nc), name, args.imgsz)
        stock = None
        if not args.no_stock and "-SPD" in name:
            stock_name = stock_counterpart(name)
            stock = model_stats(build_model(stock_name, nc=args.nc), stock_name.removesuffix(".yaml"), args.imgsz)
        rows.append((ours, stock))
        print(f"built {name}", file=sys.stderr, flush=True)
    print(f"\nModels at {args.imgsz}x{args.imgsz}, nc={args.nc} (GFLOPs = 2 x multiply-adds, thop):\n")
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
