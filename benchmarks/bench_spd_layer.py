# SPD-YOLO, AGPL-3.0 license
"""The SPD layer against a memory copy, and its share of a whole model's time.

Part A: space-to-depth (s=2) forward, and forward plus backward, at (1, 64, 160, 160) and (16, 32, 320, 320) by
default: the package's layer (`spd_yolo.layers.space_to_depth.space_to_depth`: a view, a permute and one copy),
the former slicing form (four strided slices + cat, `slicing_spd`, checked equal to the layer before timing) and
``pixel_unshuffle`` (another channel order, for comparison), each as a ratio to one contiguous copy of the input
(``x.clone()``; forward plus backward: two copies, of the input and of the output gradient; "autograd floor" is
``x.clone()`` forward and backward through autograd, what any autograd op of that size pays). All variants run in
turn within each round (rotating order; a fast variant runs back to back for at least 50 ms per round and counts
its mean time per call); medians over rounds, and the median of the per-round ratios ("paired").

Part B (CPU): yolov5n-SPD in a training step's forward and backward (batch 8, 320x320, output summed) and in fused
batch-1 640x640 inference. Timed interleaved: the whole model with the layer, the whole model with its SPD layers
swapped to the slicing form, the SPD layers alone on the exact shapes the model feeds them (both forms), and the
stock yolov5n in the same setting. Targets: the SPD layers take at most 5% of the training step and 4% of fused
inference, and yolov5n-SPD's time ratio to yolov5n stays at most their GFLOPs ratio (1.56x at 640).

Allocation: by default (``--alloc steady``, Linux/glibc) the script restarts itself with malloc thresholds that
keep freed buffers mapped, so that neither the copy nor any variant pays fresh page faults for its output (which
otherwise dominate at these sizes and vary with the allocator's history); ``--alloc system`` measures with the
allocator's defaults.

Usage:
    .venv/bin/python benchmarks/bench_spd_layer.py                  # defaults: 2 threads, a few minutes
    .venv/bin/python benchmarks/bench_spd_layer.py --quick          # smoke test (seconds)
    .venv/bin/python benchmarks/bench_spd_layer.py --device cuda    # GPU: part A against a device-to-device copy
    .venv/bin/python benchmarks/bench_spd_layer.py --no-model --shape 1,64,160,160 --variants layer   # layer vs copy
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

DEFAULT_SHAPES = ("1,64,160,160", "16,32,320,320")
QUICK_SHAPES = ("2,16,64,64",)  # --quick: a smoke test of the script, not a measurement
VARIANTS = ("layer", "slicing", "pixel_unshuffle", "autograd floor")
# Part B targets: the SPD layers' largest share of a training step and of fused inference.
SHARE_TARGETS = {"train": 0.05, "inference": 0.04}


def parse_args(argv: list[str] | None = None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--shape", action="append", default=None, metavar="B,C,H,W",
                        help=f"tensor shape, repeatable (default: {' and '.join(DEFAULT_SHAPES)}; --quick "
                             f"{' and '.join(QUICK_SHAPES)})")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]; part B runs on the CPU only")
    parser.add_argument("--no-model", action="store_true", help="skip part B (the share of a whole model)")
    parser.add_argument("--variants", nargs="+", default=None, choices=VARIANTS, metavar="NAME",
                        help="time only these variants against the copy (default: all): "
                             + ", ".join(f"'{v}'" for v in VARIANTS))
    parser.add_argument("--alloc", choices=("steady", "system"), default="steady",
                        help="steady (default, Linux/glibc): malloc keeps freed buffers, so no variant pays fresh "
                             "page faults and the ratios compare memory traffic; system: the allocator's defaults")
    args = parser.parse_args(argv)
    common.check_common(parser, args)
    args.shapes = [_parse_shape(parser, s) for s in (args.shape or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES))]
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device must be cpu or cuda[:i], got '{args.device}'")
    args.repeats = args.repeats or (3 if args.quick else 16)  # the order of the variants rotates from round to round
    return parser, args


def _parse_shape(parser, text: str) -> tuple[int, int, int, int]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        parser.error(f"--shape must be four positive integers B,C,H,W, got '{text}'")
    common.check_size(parser, f"--shape {text}: H", shape[2])
    common.check_size(parser, f"--shape {text}: W", shape[3])
    return shape


# ---------------------------------------------------------------------------------------------------------------------
# Part A: the layer alone.


def slicing_spd(x, s: int = 2):
    """Space-to-depth as strided slices + cat (the former reference), in the layer's channel order.

    For s=2: ``cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1)``.
    """
    import torch

    return torch.cat([x[..., i::s, j::s] for j in range(s) for i in range(s)], 1)


def layer_variants(x, g, device: str) -> tuple[dict, dict]:
    """({name: forward fn}, {name: forward+backward fn}); 'copy' first. x: (B, C, H, W), g: (B, 4C, H/2, W/2)."""
    import torch
    import torch.nn.functional as F

    from spd_yolo.layers.space_to_depth import space_to_depth

    if not torch.equal(space_to_depth(x.detach()), slicing_spd(x.detach())):
        raise AssertionError("the layer's space_to_depth differs from slicing_spd")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(fn):
        def run():
            fn()
            sync()

        return run

    def fwd_bwd(op):
        def run():
            x.grad = None
            op(x).backward(g)

        return timed(run)

    ops = {"layer": space_to_depth, "slicing": slicing_spd, "pixel_unshuffle": lambda t: F.pixel_unshuffle(t, 2)}
    fwd = {"copy": timed(lambda: x.detach().clone())}
    both = {"copy": timed(lambda: (x.detach().clone(), g.clone()))}
    # The floor of any autograd op of this size: a copy through autograd (clone forward, clone backward), with the
    # same graph, engine and AccumulateGrad work as the SPD variants.
    g_flat = g.reshape(x.shape)
    both["autograd floor"] = timed(lambda: (setattr(x, "grad", None), x.clone().backward(g_flat)))
    for name, op in ops.items():
        fwd[name] = timed(lambda op=op: op(x.detach()))
        both[name] = fwd_bwd(op)
    return fwd, both


def bench_layer(shape, device: str, repeats: int, only: list[str] | None = None, min_sample_s: float = 0.05,
                ) -> list[dict]:
    """Rows {shape, pass, variant, ms, x_copy, x_copy_paired} for one shape; `only`: these variants (and the copy);
    each variant runs at least `min_sample_s` per round."""
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device).requires_grad_()
    g = torch.randn(shape[0], 4 * shape[1], shape[2] // 2, shape[3] // 2, generator=gen).to(device)
    fwd, both = layer_variants(x, g, device)
    if only:
        fwd, both = ({k: v for k, v in d.items() if k == "copy" or k in only} for d in (fwd, both))
    rows = []
    for label, variants in (("forward", fwd), ("forward+backward", both)):
        times = common.interleaved(variants, repeats, warmup=2, min_sample_s=min_sample_s)
        for name, t in times.items():
            by_medians, paired = common.ratio_of_medians_and_median_ratio(t, times["copy"])
            rows.append({"shape": list(shape), "pass": label, "variant": name, "ms": 1e3 * common.median(t),
                         "x_copy": by_medians, "x_copy_paired": paired})
    return rows


def layer_table(rows: list[dict]) -> str:
    body = [("x".join(map(str, r["shape"])), r["pass"], r["variant"], f"{r['ms']:.2f}", f"{r['x_copy']:.2f}x",
             f"{r['x_copy_paired']:.2f}x") for r in rows]
    return common.markdown_table(("shape", "pass", "variant", "median ms", "/ copy", "/ copy (paired)"), body)


# ---------------------------------------------------------------------------------------------------------------------
# Part B: the share of a whole model.


def _spd_inputs(model, im) -> list[tuple[tuple, bool, int]]:
    """(shape, requires_grad, s) of the input of every SpaceToDepth layer during one forward of `model` on `im`."""
    import torch

    from spd_yolo.layers import SpaceToDepth

    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.append((tuple(a[0].shape), a[0].requires_grad, m.s)))
             for m in model.modules() if isinstance(m, SpaceToDepth)]
    with torch.set_grad_enabled(model.training):
        model(im)
    for h in hooks:
        h.remove()
    return seen


def _spd_layers_fn(inputs: list[tuple[tuple, bool, int]], backward: bool, op):
    """A function that runs `op(x, s)` (forward, and backward where the model needs it) on those shapes."""
    import torch

    xs = [torch.randn(shape).requires_grad_(rg and backward) for shape, rg, _ in inputs]
    gs = [torch.randn(b, s * s * c, h // s, w // s) for (b, c, h, w), _, s in inputs]
    scales = [s for *_, s in inputs]

    def run():
        for x, g, s in zip(xs, gs, scales):
            if x.requires_grad:
                x.grad = None
                op(x, s).backward(g)
            else:
                with torch.no_grad():
                    op(x, s)

    return run


@contextlib.contextmanager
def swapped_layer(op):
    """Inside the block, every SpaceToDepth layer computes `op(x, s)` (the module attribute it calls is swapped)."""
    module = importlib.import_module("spd_yolo.layers.space_to_depth")  # the package attribute is the function
    saved = module.space_to_depth
    module.space_to_depth = op
    try:
        yield
    finally:
        module.space_to_depth = saved


def _sum_outputs(y):
    """Sum of every tensor in a (nested) model output: a scalar to back-propagate."""
    import torch

    if torch.is_tensor(y):
        return y.float().sum()
    items = y.values() if isinstance(y, dict) else y
    return sum(_sum_outputs(v) for v in items)


def _model_step(model, im, train: bool):
    """One forward (inference mode) or forward + backward of the summed output (training) of `model` on `im`."""
    import torch

    def step():
        if train:
            model.zero_grad(set_to_none=True)
            _sum_outputs(model(im)).backward()
        else:
            with torch.inference_mode():
                model(im)

    return step


def _prepared(built, train: bool):
    """A copy of the built model `built`, in training mode or fused for inference; its parameters need grads only for
    training."""
    model = copy.deepcopy(built)
    model = model.train() if train else model.fuse(verbose=False).eval()
    for p in model.parameters():
        p.requires_grad_(train)
    return model


def bench_model_share(repeats: int, quick: bool) -> list[dict]:
    """Rows {setting, path, model_ms, spd_ms, share, stock_ms, ratio_to_stock, gflops_ratio, ...} for yolov5n-SPD
    with the layer ("layer") and with its SPD layers swapped to `slicing_spd` ("slicing"), against stock yolov5n."""
    import torch

    from spd_yolo import build_model, model_stats
    from spd_yolo.layers.space_to_depth import space_to_depth

    spd_name, stock_name = "yolov5n-SPD", "yolov5n.yaml"
    spd_built, stock_built = build_model(spd_name, nc=80), build_model(stock_name, nc=80)  # each built once
    gflops_ratio = (model_stats(spd_built, spd_name, imgsz=640).gflops
                    / model_stats(stock_built, stock_name, imgsz=640).gflops)
    settings = (("train fwd+bwd, batch 8, 320", 8, 320, True), ("inference fwd (fused), batch 1, 640", 1, 640, False))
    if quick:
        settings = (("train fwd+bwd, batch 1, 64", 1, 64, True), ("inference fwd (fused), batch 1, 64", 1, 64, False))
    rows = []
    for label, batch, size, train in settings:
        model, stock_model = _prepared(spd_built, train), _prepared(stock_built, train)
        im = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        inputs = _spd_inputs(model, im)
        step = _model_step(model, im, train)

        def sliced(fn):
            def run():
                with swapped_layer(slicing_spd):
                    fn()

            return run

        variants = {"model layer": step, "model slicing": sliced(step),
                    "spd layer": _spd_layers_fn(inputs, train, space_to_depth),
                    "spd slicing": _spd_layers_fn(inputs, train, slicing_spd),
                    "stock": _model_step(stock_model, im, train)}
        times = common.interleaved(variants, 2 if quick else max(3, repeats // 2), warmup=1)
        med = {k: 1e3 * common.median(v) for k, v in times.items()}
        target = SHARE_TARGETS["train" if train else "inference"]
        for path in ("layer", "slicing"):
            model_t = times[f"model {path}"]
            rows.append({"setting": label, "spd_layers": len(inputs), "path": path, "model_ms": med[f"model {path}"],
                         "spd_ms": med[f"spd {path}"], "share": med[f"spd {path}"] / med[f"model {path}"],
                         "share_target": target, "stock_ms": med["stock"],
                         "ratio_to_stock": common.median([a / b for a, b in zip(model_t, times["stock"])]),
                         "gflops_ratio": gflops_ratio})
    return rows


def share_table(rows: list[dict]) -> str:
    body = [(r["setting"], r["path"], f"{r['model_ms']:.1f}", f"{r['spd_ms']:.2f}", f"{100 * r['share']:.1f}%",
             f"<= {100 * r['share_target']:.0f}%", f"{r['stock_ms']:.1f}", f"{r['ratio_to_stock']:.2f}x",
             f"{r['gflops_ratio']:.2f}x") for r in rows]
    return common.markdown_table(("yolov5n-SPD", "SPD path", "model ms", "SPD layers ms", "SPD share", "target",
                                  "yolov5n ms", "SPD/stock", "GFLOPs ratio"), body)


# glibc reads these at start-up: buffers of any size come from the heap and stay mapped once freed.
_STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**40), "MALLOC_TRIM_THRESHOLD_": str(2**40), "MALLOC_TOP_PAD_": "0"}


def _reexec_with_steady_malloc() -> None:
    """Restart this script with `_STEADY_MALLOC` in the environment (glibc only; a no-op once they are set)."""
    import platform

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return
    if all(os.environ.get(k) == v for k, v in _STEADY_MALLOC.items()):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **_STEADY_MALLOC})


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    if args.alloc == "steady" and argv is None:
        _reexec_with_steady_malloc()
    common.set_threads(args.threads)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    env = common.environment(args.threads)
    print(common.environment_lines(env) + "\n", flush=True)

    rows = []
    for shape in args.shapes:
        rows += bench_layer(shape, args.device, args.repeats, args.variants, 0.005 if args.quick else 0.05)
        print(f"measured {shape}", file=sys.stderr, flush=True)
    text = (f"SPD layer vs a contiguous copy ({args.device}, fp32, median of {args.repeats} interleaved rounds of at "
            f"least {5 if args.quick else 50} ms per variant; allocation: {args.alloc}):\n\n")
    text += layer_table(rows)
    print(text, flush=True)
    share = []
    if not args.no_model and args.device == "cpu":
        share = bench_model_share(args.repeats, args.quick)
        part_b = ("\n\nSPD layers' share of yolov5n-SPD, with the layer and with the slicing form, and its time ratio "
                  "to yolov5n (CPU, fp32; model, SPD layers alone and yolov5n timed interleaved; SPD/stock = median "
                  "of per-round ratios; GFLOPs ratio at 640):\n\n")
        part_b += share_table(share)
        print(part_b, flush=True)
        text += part_b
    env["load_average_at_end"] = common.load_average()
    text += f"\n\nload average at end: {env['load_average_at_end']}"
    print(f"\nload average at end: {env['load_average_at_end']}", flush=True)
    data = {"environment": env, "alloc": args.alloc, "layer": rows, "model_share": share}
    common.write_results(args.out, data, common.environment_lines(env) + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
