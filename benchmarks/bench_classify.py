# SPD-YOLO, AGPL-3.0 license
"""ResNet18-SPD against stock ResNet18 on low-resolution classification, on CPU (#6).

Two parts, for each pair (default: resnet18-SPD vs resnet18, the paper's Tiny ImageNet pair):

- accuracy: both models trained from scratch with the ultralytics classification trainer (`SPDClassificationTrainer`,
  as train.py runs it) on the same synthetic low-resolution set (`spd_yolo.data.synth_cls`: classes that differ only
  by small shapes and 1-pixel textures; by default the first 4: checker, hstripes, vstripes, dot), same epochs, same
  hyperparameters (`TRAIN_SETTINGS`: no crop/erase/colour augmentation, no warm-up, a step every batch, SGD),
  for each of --seeds (default 0 1 2); top-1 / top-5 accuracy of the final weights on the val split, mean +- std over
  seeds, and the paired SPD - stock difference.
- speed: batch-1 latency and batch --batch-throughput inference throughput (eval mode, fused Conv+BN as predict
  runs it) and training-step throughput (forward, cross-entropy, backward, SGD step, batch --train-batch), all at
  --imgsz; SPD and stock run in turn within each round, medians over rounds, paired ratios; beside the GFLOPs ratio.

The run is small on purpose (CPU, minutes): read the accuracy as a smoke comparison, not as the paper's numbers.

Usage:
    .venv/bin/python benchmarks/bench_classify.py                     # defaults: about 10 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_classify.py --epochs 10 --n-train 200 --out runs/bench-cls.md
    .venv/bin/python benchmarks/bench_classify.py --quick             # smoke test, about 2 min
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

PAIRS = {"resnet18-SPD": "resnet18", "resnet50-SPD": "resnet50"}
SKIPPABLE = ("accuracy", "speed")
# Settings of the accuracy runs, the same for both models; the rest is ultralytics' default. Augmentations that can
# crop, erase or recolour a pattern of a few pixels are off (flips stay). Such short runs get no warm-up (ultralytics
# warms up for >= 100 iterations, longer than these whole runs) and an optimizer step every batch (nbs = batch instead
# of accumulating to 64 images). SGD (Nesterov, momentum 0.9) at lr0 = 0.001 decaying linearly to 0.1 x lr0: at
# lr0 = 0.01 without a decay to ~0 the SPD model's eval accuracy lags behind its train-mode accuracy (its BatchNorm
# running statistics trail the faster-moving SPD convs; see the README's classification section), which would measure
# the schedule, not the model.
TRAIN_SETTINGS = {
    "scale": 0.0, "erasing": 0.0, "auto_augment": None, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0,
    "warmup_epochs": 0, "optimizer": "SGD", "lr0": 0.001, "lrf": 0.1, "momentum": 0.9,
}


def parse_args(argv: list[str] | None = None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--models", nargs="+", default=["resnet18-SPD"], metavar="NAME",
                        help=f"SPD models, each against its stock counterpart ({', '.join(PAIRS)}; "
                        "default resnet18-SPD)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds (default 0 1 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per training run (default 6; --quick 1)")
    parser.add_argument("--n-classes", type=int, default=None,
                        help="synthetic classes, the first of checker, hstripes, vstripes, dot, hbar, ... (default 4; "
                        "--quick 3)")
    parser.add_argument("--n-train", type=int, default=None, help="training images per class (default 60; --quick 8)")
    parser.add_argument("--n-val", type=int, default=None, help="validation images per class (default 30; --quick 4)")
    parser.add_argument("--imgsz", type=int, default=32, help="image size (default 32, as CIFAR-10)")
    parser.add_argument("--batch", type=int, default=8, help="training batch size of the accuracy runs (default 8)")
    parser.add_argument("--train-batch", type=int, default=None, help="speed: training-step batch (default 32)")
    parser.add_argument("--batch-throughput", type=int, default=None, help="speed: inference batch (default 64)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="where the synthetic set goes (default: a temporary folder, removed afterwards)")
    parser.add_argument("--skip", nargs="+", default=[], choices=SKIPPABLE, help="parts to leave out")
    parser.add_argument("--plain-stem-init", action="store_true",
                        help="ablation: initialise the SPD stem's conv as PyTorch does (four independent output "
                        "phases) instead of as a full-resolution conv (spd_yolo.layers.full_res_conv_as_spd)")
    args = parser.parse_args(argv)
    common.check_common(parser, args)
    common.check_names(parser, "--models", args.models, list(PAIRS))
    common.check_size(parser, "--imgsz", args.imgsz)
    q = args.quick
    args.seeds = args.seeds if args.seeds is not None else ([0] if q else [0, 1, 2])
    args.epochs = args.epochs or (1 if q else 6)
    args.n_classes = args.n_classes or (3 if q else 4)
    args.n_train = args.n_train or (8 if q else 60)
    args.n_val = args.n_val or (4 if q else 30)
    args.train_batch = args.train_batch or (8 if q else 32)
    args.batch_throughput = args.batch_throughput or (8 if q else 64)
    args.repeats = args.repeats or (2 if q else 7)
    for flag in ("epochs", "n_train", "n_val", "batch", "train_batch", "batch_throughput"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be an integer >= 1, got {getattr(args, flag)}")
    if not 2 <= args.n_classes <= 10:
        parser.error(f"--n-classes must be in 2..10, got {args.n_classes}")
    if not args.seeds or any(s < 0 for s in args.seeds):
        parser.error(f"--seeds must be integers >= 0, got {args.seeds}")
    return parser, args


# ---------------------------------------------------------------------------------------------------------------------
# Accuracy.


def train_once(name: str, data: Path, project: Path, seed: int, args) -> dict:
    """Train `name` from scratch on `data` with the ultralytics classification trainer; top-1/top-5 of best.pt."""
    from spd_yolo import YOLO
    from spd_yolo.engine import SPDClassificationTrainer

    model = YOLO(name)
    if args.plain_stem_init:
        model.add_callback("on_pretrain_routine_end", _plain_stem_init)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        model.train(
            trainer=SPDClassificationTrainer, data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
            seed=seed, deterministic=True, workers=0, device="cpu", plots=False, val=False, verbose=False,
            project=str(project), name=f"{name}-seed{seed}", exist_ok=True, amp=False, nbs=args.batch,
            **TRAIN_SETTINGS,
        )
    seconds = time.perf_counter() - start
    metrics = model.trainer.metrics
    return {
        "top1": float(metrics["metrics/accuracy_top1"]),
        "top5": float(metrics["metrics/accuracy_top5"]),
        "train_s": seconds,
    }


def _plain_stem_init(trainer) -> None:
    """Re-initialise SPD stems with PyTorch's default conv init (the --plain-stem-init ablation)."""
    from spd_yolo.layers import ResNetStem

    for m in trainer.model.modules():
        if isinstance(m, ResNetStem) and m.spd:
            m.conv.reset_parameters()


def accuracy_part(pairs: list[tuple[str, str]], args, root: Path) -> dict:
    """{spd_name: {model: [per-seed results]}} with the SPD and stock runs of a seed one after the other."""
    from spd_yolo.data.synth_cls import generate_cls_dataset

    data = generate_cls_dataset(root / "synth-cls", args.n_train, args.n_val, args.imgsz, args.n_classes, seed=0)
    print(f"data: {data} ({args.n_classes} classes, {args.n_train} train / {args.n_val} val images per class, "
          f"{args.imgsz}x{args.imgsz})", file=sys.stderr)
    out = {}
    for spd, base in pairs:
        runs = {spd: [], base: []}
        for seed in args.seeds:
            for name in (spd, base) if seed % 2 == 0 else (base, spd):  # alternate who runs first
                r = train_once(name, data, root / "runs", seed, args)
                runs[name].append({"seed": seed, **r})
                print(f"  {name} seed {seed}: top-1 {r['top1']:.3f}, top-5 {r['top5']:.3f}, "
                      f"{r['train_s']:.0f} s", file=sys.stderr, flush=True)
        out[spd] = runs
    return out


def accuracy_table(results: dict, args) -> str:
    rows = []
    for spd, runs in results.items():
        base = PAIRS[spd]
        diffs = [a["top1"] - b["top1"] for a, b in zip(runs[spd], runs[base])]
        for name in (spd, base):
            r = runs[name]
            rows.append([
                name, common.spread([x["top1"] for x in r]), common.spread([x["top5"] for x in r]),
                " ".join(f"{100 * x['top1']:.1f}" for x in r),
                f"{statistics.fmean(x['train_s'] for x in r):.0f}",
                common.spread(diffs, signed=True) if name == spd else "",
            ])
    return common.markdown_table(
        ["model", "top-1 % (mean ± std)", "top-5 %", "top-1 % per seed", "train s/run", "top-1 SPD - stock (pp)"],
        rows,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Speed.


def speed_part(spd: str, args) -> dict:
    """Latency (batch 1), inference throughput and training-step throughput, SPD and stock interleaved."""
    import torch

    from spd_yolo import build_model, model_stats

    base = PAIRS[spd]
    models = {n: build_model(n, nc=args.n_classes) for n in (spd, base)}
    gflops = {n: model_stats(m, n, args.imgsz).gflops for n, m in models.items()}
    params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
    fused = {n: copy.deepcopy(m).eval().fuse(verbose=False) for n, m in models.items()}
    g = torch.Generator().manual_seed(0)
    x1 = torch.rand(1, 3, args.imgsz, args.imgsz, generator=g)
    xb = torch.rand(args.batch_throughput, 3, args.imgsz, args.imgsz, generator=g)
    xt = torch.rand(args.train_batch, 3, args.imgsz, args.imgsz, generator=g)
    yt = torch.randint(0, args.n_classes, (args.train_batch,), generator=g)

    def infer(model, x):
        def f():
            with torch.inference_mode():
                model(x)

        return f

    def train_step(model):
        model = copy.deepcopy(model).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def f():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xt), yt).backward()
            opt.step()

        return f

    lat = common.interleaved({n: infer(m, x1) for n, m in fused.items()}, args.repeats, warmup=2)
    thr = common.interleaved({n: infer(m, xb) for n, m in fused.items()}, args.repeats, warmup=1)
    trn = common.interleaved({n: train_step(m) for n, m in models.items()}, max(2, args.repeats // 2), warmup=1)

    def paired(times):
        return common.median([a / b for a, b in zip(times[spd], times[base])])

    return {
        "gflops": gflops,
        "params": params,
        "latency_ms": {n: 1e3 * common.median(t) for n, t in lat.items()},
        "infer_img_s": {n: args.batch_throughput / common.median(t) for n, t in thr.items()},
        "train_img_s": {n: args.train_batch / common.median(t) for n, t in trn.items()},
        "ratio": {
            "gflops": gflops[spd] / gflops[base],
            "latency": paired(lat),
            "infer_time": paired(thr),
            "train_time": paired(trn),
        },
    }


def speed_table(results: dict, args) -> str:
    rows = []
    for spd, r in results.items():
        base = PAIRS[spd]
        for n in (spd, base):
            rows.append([n, f"{r['params'][n] / 1e6:.2f}", f"{r['gflops'][n]:.2f}", f"{r['latency_ms'][n]:.1f}",
                         f"{r['infer_img_s'][n]:.0f}", f"{r['train_img_s'][n]:.1f}"])
        q = r["ratio"]
        rows.append([f"ratio {spd} / {base}", f"{r['params'][spd] / r['params'][base]:.2f}x", f"{q['gflops']:.2f}x",
                     f"{q['latency']:.2f}x", f"{1 / q['infer_time']:.2f}x ({q['infer_time']:.2f}x time)",
                     f"{1 / q['train_time']:.2f}x ({q['train_time']:.2f}x time)"])
    return common.markdown_table(
        ["model", "params (M)", f"GFLOPs {args.imgsz}", "latency ms (batch 1)",
         f"inference img/s (batch {args.batch_throughput})", f"train img/s (batch {args.train_batch})"],
        rows,
    )


# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    _, args = parse_args(argv)
    common.set_threads(args.threads)
    env = common.environment(args.threads)
    pairs = [(m, PAIRS[m]) for m in args.models]
    sections, data = [], {"environment": env, "args": {k: str(v) for k, v in vars(args).items()}}
    with contextlib.ExitStack() as stack:
        root = args.data_root or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cls-")))
        root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("YOLO_VERBOSE", "false")
        if "accuracy" not in args.skip:
            acc = accuracy_part(pairs, args, root)
            data["accuracy"] = acc
            sections.append(
                ("SPD stem initialised as PyTorch does (--plain-stem-init). " if args.plain_stem_init else "")
                + f"Accuracy after {args.epochs} epoch(s) from scratch, {args.n_classes} synthetic classes, "
                f"{args.n_train} train / {args.n_val} val images per class at {args.imgsz}x{args.imgsz}, batch "
                f"{args.batch}, seeds {' '.join(map(str, args.seeds))} (top-1/top-5 of the final weights on val):\n\n"
                + accuracy_table(acc, args)
            )
        if "speed" not in args.skip:
            speed = {spd: speed_part(spd, args) for spd, _ in pairs}
            data["speed"] = speed
            sections.append(
                f"Speed at {args.imgsz}x{args.imgsz}, CPU, {args.threads} threads, medians of {args.repeats} "
                f"interleaved rounds (ratios: paired per round; img/s ratios > 1 mean SPD is faster):\n\n"
                + speed_table(speed, args)
            )
    text = common.environment_lines(env) + "\n\n" + "\n\n".join(sections)
    print(text)
    common.write_results(args.out, data, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
