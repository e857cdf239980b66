# SPD-YOLO, AGPL-3.0 license
"""SPD models against stock on a GPU (issue #4, part 4): AMP training, fp16 inference, the SPD layer vs a copy.

For each pair (default: yolov5s-SPD vs yolov5s; untrained, nc=80), on --device (default cuda:0):

- training throughput: forward, the ultralytics detection loss, backward and an SGD step with AMP (fp16 autocast
  and a GradScaler, as the ultralytics trainer runs it), batch --train-batch (64) at --train-imgsz (640); images/s,
  the SPD/stock time ratio, and the peak GPU memory a step allocates (``torch.cuda.max_memory_allocated`` over two
  steps, above what was allocated before them);
- inference latency of the fused model (Conv+BN, what detect.py runs) in fp16, at each of --batches (1 and 32) and
  --imgsz (640), also with the exact strided rewrite (`spd_yolo.rewrite`, what ``export.py --strided-spd`` exports);
- the SPD layer against a device-to-device copy (`bench_spd_layer.py`'s table on this device, fp32).

Variants run in turn within each round (ratios measured side by side), with the device synchronised after each call;
medians over rounds. ``--device cpu`` runs the same in fp32 without AMP: a smoke test (CPU numbers are
bench_models.py's business).

Usage:
    .venv/bin/python benchmarks/bench_gpu.py                                   # cuda:0, ~2 min on an H100
    .venv/bin/python benchmarks/bench_gpu.py --models yolov5n-SPD yolov5s-SPD --batches 1 32 64
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --quick              # smoke test (CPU, fp32)
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

DEFAULT_MODELS = ("yolov5s-SPD",)
QUICK_MODELS = ("yolov5n-SPD",)  # --quick: a smoke test of the script
SKIPPABLE = ("train", "latency", "layer", "rewrite")


def parse_args(argv: list[str] | None = None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help=f"SPD models, each against its stock counterpart (default: {' '.join(DEFAULT_MODELS)}; "
                             f"--quick {' '.join(QUICK_MODELS)})")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:i, i, or cpu (a smoke test)")
    parser.add_argument("--imgsz", type=int, default=None, help="inference input size (default 640; --quick 64)")
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="inference batch sizes (default 1 32; --quick 1 2)")
    parser.add_argument("--train-imgsz", type=int, default=None, help="training input size (default 640; --quick 64)")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch size (default 64; --quick 2)")
    parser.add_argument("--fp32", action="store_true", help="no AMP in training and fp32 inference (default on CUDA: "
                                                            "AMP and fp16)")
    parser.add_argument("--skip", nargs="+", default=[], choices=SKIPPABLE, help="parts to leave out")
    args = parser.parse_args(argv)
    common.check_common(parser, args)
    from spd_yolo import available_models

    known = [m for m in available_models() if m.startswith("yolo") and m.endswith("-SPD")]  # detectors
    args.models = args.models or list(QUICK_MODELS if args.quick else DEFAULT_MODELS)
    common.check_names(parser, "--models", args.models, known)
    defaults = {"imgsz": (64, 640), "train_imgsz": (64, 640), "train_batch": (2, 64), "batches": ([1, 2], [1, 32])}
    for key, (quick, normal) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else normal)
    common.check_size(parser, "--imgsz", args.imgsz)
    common.check_size(parser, "--train-imgsz", args.train_imgsz)
    for flag, values in (("--batches", args.batches), ("--train-batch", [args.train_batch])):
        if min(values) < 1:
            parser.error(f"{flag} must be integers >= 1, got {' '.join(map(str, values))}")
    args.device = check_device(parser, args.device)
    args.lowp = args.device != "cpu" and not args.fp32  # AMP training and fp16 inference
    args.repeats = args.repeats or (2 if args.quick else 10)
    return parser, args


def check_device(parser, text: str) -> str:
    """'cpu' or 'cuda:i' for a device that exists here; exit 2 naming what is there otherwise."""
    import torch

    text = text.strip().lower()
    if text == "cpu":
        return "cpu"
    index = text.removeprefix("cuda").removeprefix(":") or "0"
    if not index.isdigit():
        parser.error(f"--device must be cuda, cuda:i, i or cpu, got '{text}'")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(index) >= count:
        there = f"{count} CUDA device(s) (0..{count - 1})"
        if not count:
            there = "no CUDA device (torch.cuda.is_available() is False)"
        parser.error(f"--device {text}: this machine has {there}; use --device cpu for a CPU smoke run")
    return f"cuda:{index}"


def stock(name: str) -> str:
    from bench_models import stock as stock_of

    return stock_of(name)


def synchronizer(device: str):
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


# ---------------------------------------------------------------------------------------------------------------------
# Inference.


def inference_rows(spd_name: str, args) -> list[dict]:
    """Fused SPD, its strided rewrite and fused stock at each batch size: median ms, images/s, paired SPD/stock."""
    import torch

    from bench_models import build
    from spd_yolo.rewrite import rewrite_spd

    dtype = torch.float16 if args.lowp else torch.float32
    models = {"SPD": build(spd_name).fuse(verbose=False)}
    if "rewrite" not in args.skip:
        models["SPD, strided rewrite"] = rewrite_spd(models["SPD"])[0]
    models["stock"] = build(stock(spd_name)).fuse(verbose=False)
    models = {k: m.to(args.device, dtype) for k, m in models.items()}
    sync, rows = synchronizer(args.device), []
    for batch in args.batches:
        im = torch.rand(batch, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(0))
        im = im.to(args.device, dtype)

        def run(model, im=im):
            def f():
                with torch.inference_mode():
                    model(im)
                sync()

            return f

        times = common.interleaved({k: run(m) for k, m in models.items()}, args.repeats, warmup=2)
        for label, t in times.items():
            rows.append({"spd": spd_name, "batch": batch, "variant": label, "dtype": str(dtype).removeprefix("torch."),
                         "ms": 1e3 * common.median(t), "images_per_s": batch / common.median(t),
                         "ratio_to_stock": common.median([a / b for a, b in zip(t, times["stock"])])})
    del models
    gc.collect()
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Training.


def peak_step_memory_mib(step, device: str) -> float | None:
    """Peak memory two calls of `step` allocate on a CUDA device above what was allocated before, MiB (None on CPU)."""
    import torch

    if not device.startswith("cuda"):
        return None
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    step()
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def training_row(spd_name: str, args) -> dict:
    """Images/s of both models (interleaved steps), the paired time ratio, and each step's peak memory."""
    from bench_models import training_setup

    names = {"SPD": spd_name, "stock": stock(spd_name)}
    steps = {k: training_setup(n, args.train_batch, args.train_imgsz, args.device, amp=args.lowp)
             for k, n in names.items()}
    t = common.interleaved(steps, args.repeats, warmup=2)
    memory = {k: peak_step_memory_mib(step, args.device) for k, step in steps.items()}
    del steps
    gc.collect()
    return {"spd": spd_name, "images_per_s": [args.train_batch / common.median(t[k]) for k in names],
            "time_ratio": common.median([a / b for a, b in zip(t["SPD"], t["stock"])]),
            "peak_step_mib": [memory[k] for k in names]}


# ---------------------------------------------------------------------------------------------------------------------
# Main.


def gflops_ratio(spd_name: str, imgsz: int) -> float:
    from bench_models import build
    from spd_yolo import model_stats

    a = model_stats(build(spd_name), spd_name, imgsz).gflops
    b = model_stats(build(stock(spd_name)), stock(spd_name), imgsz).gflops
    return a / b if b else float("nan")


def tables(args, ratios: dict, latency: list[dict], train: list[dict], layer: list[dict]) -> str:
    from bench_spd_layer import layer_table

    out = []
    mode = "AMP (fp16 autocast + GradScaler)" if args.lowp else "fp32"
    if latency:
        body = [(r["spd"], r["batch"], r["variant"], r["dtype"], f"{r['ms']:.2f}", f"{r['images_per_s']:.0f}",
                 "-" if r["variant"] == "stock" else f"{r['ratio_to_stock']:.2f}x", f"{ratios[r['spd']]:.2f}x")
                for r in latency]
        out.append(f"Inference latency, fused, {args.imgsz}x{args.imgsz} ({args.device}; median of {args.repeats} "
                   "interleaved rounds; ratio = median of per-round SPD/stock ratios):\n\n" + common.markdown_table(
                       ("SPD model", "batch", "variant", "dtype", "ms", "img/s", "SPD/stock", "GFLOPs ratio"), body,
                       align="lrllrrrr"))
    if train:
        def mib(v):
            return "-" if v is None else f"{v:.0f}"

        body = [(r["spd"], f"{r['images_per_s'][0]:.1f}", f"{r['images_per_s'][1]:.1f}", f"{r['time_ratio']:.2f}x",
                 f"{ratios[r['spd']]:.2f}x", mib(r["peak_step_mib"][0]), mib(r["peak_step_mib"][1])) for r in train]
        out.append(f"Training step (forward, ultralytics loss, backward, SGD step; {mode}), batch {args.train_batch} "
                   f"at {args.train_imgsz}x{args.train_imgsz} ({args.device}; median of {args.repeats} interleaved "
                   "rounds):\n\n" + common.markdown_table(
                       ("SPD model", "SPD img/s", "stock img/s", "time ratio SPD/stock", "GFLOPs ratio",
                        "SPD step peak MiB", "stock step peak MiB"), body))
    if layer:
        out.append(f"SPD layer vs a device-to-device copy ({args.device}, fp32):\n\n" + layer_table(layer))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    _parser, args = parse_args(argv)
    common.set_threads(args.threads)
    import torch

    from bench_spd_layer import DEFAULT_SHAPES, bench_layer

    env = common.environment(args.threads)
    env["device"] = torch.cuda.get_device_name(args.device) if args.device != "cpu" else "cpu"
    env["cuda"] = torch.version.cuda if args.device != "cpu" else None
    cuda = f" (CUDA {env['cuda']})" if env["cuda"] else ""
    print(common.environment_lines(env) + f"\ndevice: {env['device']}{cuda}\n", flush=True)
    ratios = {name: gflops_ratio(name, args.imgsz) for name in args.models}
    latency, train, layer = [], [], []
    start = time.perf_counter()
    for name in args.models:
        if "latency" not in args.skip:
            latency += inference_rows(name, args)
            print(f"  inference done ({name}, {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        if "train" not in args.skip:
            train.append(training_row(name, args))
            print(f"  training done ({name}, {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    if "layer" not in args.skip:
        shapes = ["1,16,64,64"] if args.quick else DEFAULT_SHAPES
        for shape in shapes:
            layer += bench_layer(tuple(int(v) for v in shape.split(",")), args.device, max(4, args.repeats))
    text = tables(args, ratios, latency, train, layer)
    print(text, flush=True)
    common.write_results(args.out, {"environment": env, "gflops_ratio": ratios, "latency": latency, "train": train,
                                    "layer": layer}, common.environment_lines(env) + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
