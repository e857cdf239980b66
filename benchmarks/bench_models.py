# SPD-YOLO, AGPL-3.0 license
"""Whole SPD models against their stock counterparts: arithmetic, latency, training throughput, memory (#4, part 2).

For each pair (default: yolov5n-SPD vs yolov5n, yolov5s-SPD vs yolov5s, yolo11n-SPD vs yolo11n; untrained, nc=80):

- params and GFLOPs (`spd_yolo.model_stats`, thop) and their SPD/stock ratios;
- batch-1 latency at --imgsz (640) in torch, fused Conv+BN (what detect.py runs) and unfused, and in ONNX Runtime
  (models exported by the ultralytics exporter, as export.py does, into a temp folder); the SPD model also with
  the exact strided rewrite (`spd_yolo.rewrite`);
- training throughput: forward, the real ultralytics detection loss (``model.loss(batch)`` on random images and 4
  random boxes per image), backward and an SGD step, batch --train-batch (8) at --train-imgsz (320);
- peak memory of a training step: peak RSS of a fresh subprocess per model over two steps (Linux VmHWM), above
  its RSS before the first step.

The SPD and stock variants run in turn within each round (ratios measured side by side); medians over rounds.
`--profile` adds a per-layer time table (unfused and fused) and torch.profiler's top operators for the first pair.

Usage:
    .venv/bin/python benchmarks/bench_models.py                       # defaults: 2 threads, ~5 min on an idle machine
    .venv/bin/python benchmarks/bench_models.py --models yolov5n-SPD --profile
    .venv/bin/python benchmarks/bench_models.py --quick               # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

DEFAULT_MODELS = ("yolov5n-SPD", "yolov5s-SPD", "yolo11n-SPD")
SKIPPABLE = ("onnx", "train", "memory", "unfused", "rewrite")


def parse_args(argv: list[str] | None = None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help="SPD models (also -SPD-lite, -SPD-p2), each against its stock counterpart "
                        f"(default: {' '.join(DEFAULT_MODELS)})")
    parser.add_argument("--imgsz", type=int, default=None, help="latency input size (default 640; --quick 64)")
    parser.add_argument("--train-imgsz", type=int, default=None, help="training input size (default 320; --quick 64)")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch size (default 8; --quick 2)")
    parser.add_argument("--skip", nargs="+", default=[], choices=SKIPPABLE, help="parts to leave out")
    parser.add_argument("--profile", action="store_true", help="per-layer times and top operators, first pair")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: one model, fresh process
    args = parser.parse_args(argv)
    common.check_common(parser, args)
    from spd_yolo import available_models

    known = [m for m in available_models() if m.startswith("yolo") and m.endswith(("-SPD", "-SPD-lite", "-SPD-p2"))]
    args.models = args.models or (["yolov5n-SPD"] if args.quick else list(DEFAULT_MODELS))
    common.check_names(parser, "--models", args.models, known)
    if args.memory_probe is not None:
        common.check_names(parser, "--memory-probe", [args.memory_probe.removesuffix(".yaml")],
                           known + [stock(m).removesuffix(".yaml") for m in known])
    defaults = {"imgsz": (64, 640), "train_imgsz": (64, 320), "train_batch": (2, 8)}  # (--quick, normal)
    for key, (quick, normal) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else normal)
    common.check_size(parser, "--imgsz", args.imgsz)
    common.check_size(parser, "--train-imgsz", args.train_imgsz)
    if args.train_batch < 1:
        parser.error(f"--train-batch must be an integer >= 1, got {args.train_batch}")
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.train_repeats = max(2 if args.quick else 3, args.repeats // 2)
    return parser, args


def stock(name: str) -> str:
    from spd_yolo.models.summary import stock_counterpart

    return stock_counterpart(name)


@functools.cache
def _built(name: str):
    from spd_yolo import build_model

    return build_model(name, nc=80)


def build(name: str):
    """`name` untrained (nc=80), in eval mode: a copy of the one model built per name in this process (building runs
    a forward pass; copying does not)."""
    return copy.deepcopy(_built(name)).eval()


# ---------------------------------------------------------------------------------------------------------------------
# Inference latency.


def torch_variants(spd_name: str, skip: list[str], imgsz: int) -> dict:
    """{label: fn} for batch-1 torch inference: fused (+ rewrite) and unfused, SPD and stock."""
    import torch

    from spd_yolo.rewrite import rewrite_spd

    spd, base = build(spd_name), build(stock(spd_name))
    im = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    fused = {"SPD": copy.deepcopy(spd).fuse(verbose=False), "stock": copy.deepcopy(base).fuse(verbose=False)}

    def run(model):
        def f():
            with torch.inference_mode():
                model(im)

        return f

    out = {"fused SPD": run(fused["SPD"]), "fused stock": run(fused["stock"])}
    if "rewrite" not in skip:
        out["fused SPD, strided rewrite"] = run(rewrite_spd(fused["SPD"])[0])
    if "unfused" not in skip:
        out.update({"unfused SPD": run(spd), "unfused stock": run(base)})
    return out


def export_onnx(name: str, folder: Path, imgsz: int, rewrite: bool = False) -> Path:
    """Export an untrained `name` with the ultralytics exporter (fused, onnxslim) into `folder`; the .onnx path."""
    from spd_yolo import YOLO
    from spd_yolo.rewrite import rewrite_spd

    yolo = YOLO(name)
    stem = Path(name).stem + ("-strided" if rewrite else "")
    if rewrite:
        yolo.model = rewrite_spd(yolo.model.fuse(verbose=False))[0]
    yolo.model.pt_path = str(folder / f"{stem}.pt")  # the exporter writes beside it
    with contextlib.redirect_stdout(sys.stderr):
        path = yolo.export(format="onnx", imgsz=imgsz, batch=1, device="cpu", simplify=True, verbose=False)
    return Path(path)


def onnx_variants(spd_name: str, skip: list[str], imgsz: int, threads: int, folder: Path) -> dict:
    """{label: fn} running ONNX Runtime sessions (intra-op threads = --threads) on a batch-1 input."""
    import numpy as np
    import onnxruntime as ort

    files = {"ORT SPD": export_onnx(spd_name, folder, imgsz), "ORT stock": export_onnx(stock(spd_name), folder, imgsz)}
    if "rewrite" not in skip:
        files["ORT SPD, strided rewrite"] = export_onnx(spd_name, folder, imgsz, rewrite=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    im = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    out = {}
    for label, path in files.items():
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        out[label] = lambda s=session, n=name: s.run(None, {n: im})
    return out


def latency_rows(label_times: dict) -> dict:
    """{label: median ms} and the per-round paired ratios against the matching stock variant."""
    rows = {}
    for label, t in label_times.items():
        kind = label.split(" ")[0]  # fused / unfused / ORT
        ref = label_times.get(f"{kind} stock")
        paired = common.median([a / b for a, b in zip(t, ref)]) if ref else float("nan")
        rows[label] = {"ms": 1e3 * common.median(t), "ratio_to_stock": paired}
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Training.


def training_setup(name: str, batch: int, imgsz: int, device: str = "cpu", amp: bool = False):
    """A function running one training step of `name` (train mode, the trainer's loss gains, SGD) on a random batch.

    `amp` (CUDA): fp16 autocast and a GradScaler around the step, as the ultralytics trainer does. The step
    synchronises the device before returning, so wall-clock timing counts its GPU work.
    """
    import torch
    from ultralytics.cfg import get_cfg

    model = build(name).to(device).train()
    model.args = get_cfg()  # loss gains (box, cls, dfl) as the ultralytics trainer sets them
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=amp)
    g, n = torch.Generator().manual_seed(0), 4
    data = {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g),
        "batch_idx": torch.arange(batch).repeat_interleave(n).float(),
        "cls": torch.randint(0, 80, (batch * n, 1), generator=g).float(),
        "bboxes": torch.rand(batch * n, 4, generator=g) * 0.4 + 0.3,  # normalised xywh
    }
    data = {k: v.to(device) for k, v in data.items()}
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(torch.device(device).type, dtype=torch.float16, enabled=amp):
            loss, _ = model.loss(data)
        scaler.scale(loss.sum()).backward()
        scaler.step(opt)
        scaler.update()
        sync()

    return step


def _proc_status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB; None where there is no such file."""
    with contextlib.suppress(OSError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return None


def memory_probe(name: str, batch: int, imgsz: int) -> dict:
    """In this (fresh) process: RSS before the first training step and peak RSS over two steps, in MiB.

    Linux: VmHWM (the peak RSS of this process image; not inherited through fork+exec as ru_maxrss is), reset just
    before the steps through /proc/self/clear_refs where allowed. Elsewhere: ru_maxrss.
    """
    import gc

    step = training_setup(name, batch, imgsz)
    gc.collect()
    before = _proc_status_mib("VmRSS")
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    step()
    step()
    peak = _proc_status_mib("VmHWM")
    if before is None or peak is None:  # no /proc: ru_maxrss (bytes on macOS, KiB elsewhere)
        scale = 1 if sys.platform == "darwin" else 1024
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20
        before = before or 0.0
    return {"rss_before_mib": before, "peak_rss_mib": peak, "step_mib": peak - before}


def run_memory_probes(names: list[str], args) -> list[dict]:
    """Run `memory_probe` for each name in its own fresh interpreter (so peaks of other models do not count), all at
    once: each measures only its own process's memory, and the start-up (imports) is most of their time."""
    procs = []
    for name in names:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", name, "--threads", str(args.threads),
               "--train-batch", str(args.train_batch), "--train-imgsz", str(args.train_imgsz)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for name, proc in zip(names, procs):
        try:
            out, err = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        if proc.returncode != 0:
            for p in procs:
                p.kill()
            raise RuntimeError(f"memory probe for {name} failed:\n{err[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Profile.


def layer_times(model, im, repeats: int) -> list[tuple[int, str, float]]:
    """(index, type, median ms) of every top-level layer over `repeats` forwards (hooks around each layer)."""
    import time

    import torch

    acc: dict[int, list[float]] = {}

    def start(i):
        return lambda *_: acc.setdefault(i, []).append(-time.perf_counter())

    def stop(i):
        return lambda *_: acc[i].__setitem__(-1, acc[i][-1] + time.perf_counter())

    hooks = []
    for i, layer in enumerate(model.model):
        hooks += [layer.register_forward_pre_hook(start(i)), layer.register_forward_hook(stop(i))]
    with torch.inference_mode():
        for _ in range(repeats + 1):
            model(im)
    for h in hooks:
        h.remove()
    return [(i, type(model.model[i]).__name__, 1e3 * common.median(acc[i][1:])) for i in sorted(acc)]


def profile_pair(spd_name: str, imgsz: int, repeats: int) -> str:
    """Markdown: per-layer medians of the SPD and stock models (unfused, fused) and the top operators."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    im = torch.rand(1, 3, imgsz, imgsz)
    parts = []
    for fused in (False, True):
        for name in (spd_name, stock(spd_name)):
            model = build(name)
            model = model.fuse(verbose=False) if fused else model
            rows = layer_times(model, im, max(3, repeats // 2))
            total = sum(r[2] for r in rows)
            body = [(i, t, f"{ms:.2f}", f"{100 * ms / total:.1f}%") for i, t, ms in rows]
            parts.append(f"{name} ({'fused' if fused else 'unfused'}), batch 1, {imgsz}: {total:.1f} ms in layers\n\n"
                         + common.markdown_table(("layer", "type", "median ms", "share"), body))
            with profile(activities=[ProfilerActivity.CPU]) as prof, torch.inference_mode():
                model(im)
            ops = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8)
            parts.append(f"top operators ({name}, {'fused' if fused else 'unfused'}):\n\n```\n{ops}\n```")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# Main.


def bench_pair(spd_name: str, args, folder: Path) -> dict:
    """Everything measured for one SPD model and its stock counterpart."""
    from spd_yolo import model_stats

    stock_name = stock(spd_name)
    s_spd = model_stats(build(spd_name), spd_name, args.imgsz)
    s_stock = model_stats(build(stock_name), stock_name, args.imgsz)
    res = {"spd": spd_name, "stock": stock_name.removesuffix(".yaml"),
           "params": [s_spd.params, s_stock.params], "gflops": [s_spd.gflops, s_stock.gflops],
           "gflops_ratio": s_spd.gflops / s_stock.gflops if s_stock.gflops else float("nan")}
    start = time.perf_counter()

    def done(part: str) -> None:
        print(f"  {part} done ({spd_name}, {time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    variants = torch_variants(spd_name, args.skip, args.imgsz)
    res["latency"] = latency_rows(common.interleaved(variants, args.repeats, warmup=1))
    done("torch latency")
    if "onnx" not in args.skip:
        variants = onnx_variants(spd_name, args.skip, args.imgsz, args.threads, folder)
        res["latency"].update(latency_rows(common.interleaved(variants, args.repeats, warmup=1)))
        done("ONNX Runtime latency")
    if "train" not in args.skip:
        steps = {"SPD": training_setup(spd_name, args.train_batch, args.train_imgsz),
                 "stock": training_setup(stock_name, args.train_batch, args.train_imgsz)}
        t = common.interleaved(steps, args.train_repeats, warmup=1)
        res["train"] = {"images_per_s": [args.train_batch / common.median(t["SPD"]),
                                         args.train_batch / common.median(t["stock"])],
                        "time_ratio": common.median([a / b for a, b in zip(t["SPD"], t["stock"])])}
        done("training throughput")
    if "memory" not in args.skip:
        res["memory"] = run_memory_probes([spd_name, stock_name], args)
        done("memory")
    return res


def tables(results: list[dict], args) -> str:
    """The markdown tables of all pairs."""
    out = [f"Arithmetic (nc=80, {args.imgsz}x{args.imgsz}):\n\n" + common.markdown_table(
        ("SPD model", "params (M)", "GFLOPs", "stock", "params (M)", "GFLOPs", "params ratio", "GFLOPs ratio"),
        [(r["spd"], f"{r['params'][0] / 1e6:.2f}", f"{r['gflops'][0]:.1f}", r["stock"], f"{r['params'][1] / 1e6:.2f}",
          f"{r['gflops'][1]:.1f}", f"{r['params'][0] / r['params'][1]:.2f}x", f"{r['gflops_ratio']:.2f}x")
         for r in results])]
    rows = []
    for r in results:
        for label, v in r["latency"].items():
            if "stock" in label:
                continue
            kind = label.split(" ")[0]
            stock_ms = r["latency"][f"{kind} stock"]["ms"]
            rows.append((r["spd"], label, f"{v['ms']:.1f}", f"{stock_ms:.1f}", f"{v['ratio_to_stock']:.2f}x",
                         f"{r['gflops_ratio']:.2f}x", "yes" if v["ratio_to_stock"] <= r["gflops_ratio"] else "no"))
    out.append(f"Batch-1 latency at {args.imgsz}x{args.imgsz} (median of {args.repeats} interleaved rounds; ratio = "
               "median of per-round SPD/stock ratios):\n\n" + common.markdown_table(
                   ("SPD model", "variant", "SPD ms", "stock ms", "SPD/stock", "GFLOPs ratio", "<= GFLOPs ratio"),
                   rows))
    if all("train" in r for r in results):
        out.append(f"Training step (forward, ultralytics loss, backward, SGD step), batch {args.train_batch} at "
                   f"{args.train_imgsz}x{args.train_imgsz}, median of {args.train_repeats} interleaved rounds:\n\n"
                   + common.markdown_table(
                       ("SPD model", "SPD img/s", "stock img/s", "time ratio SPD/stock", "GFLOPs ratio",
                        "<= GFLOPs ratio"),
                       [(r["spd"], f"{r['train']['images_per_s'][0]:.2f}", f"{r['train']['images_per_s'][1]:.2f}",
                         f"{r['train']['time_ratio']:.2f}x", f"{r['gflops_ratio']:.2f}x",
                         "yes" if r["train"]["time_ratio"] <= r["gflops_ratio"] else "no") for r in results]))
    if all("memory" in r for r in results):
        out.append(f"Peak memory of a training step (batch {args.train_batch}, {args.train_imgsz}x{args.train_imgsz}; "
                   "max RSS of a fresh process above its RSS before the first step, MiB):\n\n" + common.markdown_table(
                       ("SPD model", "SPD step MiB", "stock step MiB", "ratio", "SPD peak RSS", "stock peak RSS"),
                       [(r["spd"], f"{r['memory'][0]['step_mib']:.0f}", f"{r['memory'][1]['step_mib']:.0f}",
                         f"{r['memory'][0]['step_mib'] / r['memory'][1]['step_mib']:.2f}x",
                         f"{r['memory'][0]['peak_rss_mib']:.0f}", f"{r['memory'][1]['peak_rss_mib']:.0f}")
                        for r in results]))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    common.set_threads(args.threads)
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(args.memory_probe, args.train_batch, args.train_imgsz)))
        return 0
    if "onnx" not in args.skip:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            parser.error("onnxruntime is not installed: install the project's [export] extra, or pass --skip onnx")
    env = common.environment(args.threads)
    print(common.environment_lines(env) + "\n", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="spd-bench-") as tmp:
        for name in args.models:
            print(f"benchmarking {name} vs {stock(name)}", file=sys.stderr, flush=True)
            results.append(bench_pair(name, args, Path(tmp)))
    text = tables(results, args)
    if args.profile:
        text += "\n\nWhere the time goes (first pair):\n\n" + profile_pair(args.models[0], args.imgsz, args.repeats)
    print(text, flush=True)
    env["load_average_at_end"] = common.load_average()
    text += f"\n\nload average at end: {env['load_average_at_end']}"
    print(f"\nload average at end: {env['load_average_at_end']}", flush=True)
    common.write_results(args.out, {"environment": env, "pairs": results},
                         common.environment_lines(env) + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
