# SPD-YOLO, AGPL-3.0 license
"""The small-object benchmark: stock vs SPD variants trained alike, COCO AP per input resolution, plain and sliced
evaluation, over several seeds, against a compute-matched stock baseline.

For each seed, trains every variant on the same data with the same settings and seed (spd_yolo.cli.train), then
validates each at several input sizes (spd_yolo.cli.val). A smaller evaluation size down-samples the whole image to
that size (the paper's low-resolution case). With sliced evaluation (``val --slice``, SAHI) the same model also sees
the original image cut into overlapping slices of the evaluation size, each at full resolution (overlap 0.2), so the
table shows whether SPD recovers what down-sampling loses better or worse than slicing does, which costs more
forward passes instead. (At an evaluation size not smaller than the images, a slice is the whole image.)

Variants (--variants; default: every one the pair has, in this order):
  stock          the stock model (e.g. yolov5n)
  spd            its SPD counterpart (yolov5n-SPD)
  spd-p2         the SPD model with a P2 (stride 4) head (yolov5n-SPD-p2)
  stock-p2       the stock model with the same P2 head (yolov5n-p2): separates what P2 gives from what SPD gives
  spd-lite       the SPD model of stock cost (yolov8n-SPD-lite; yolov8 and yolo11 only)
  stock-compute  the stock model trained for as much compute as SPD: epochs x GFLOPs(SPD)/GFLOPs(stock) at the
                 training size, rounded (row "yolov5n (x1.56 epochs)"), so "SPD wins" is not "SPD computed more"
Prints AP_S, AP_M, AP_L, AP, AP50 (mean ± std over seeds) per variant, evaluation size and mode (plain / sliced), and
each variant minus stock (same seed, same size, same mode; "stock, sliced - plain" for slicing alone) with a verdict
for AP_S and AP. The rule: "no difference shown" unless |mean of the paired differences| > their standard deviation
(so a tie, such as 0.0 ± 0.0, shows none); otherwise "higher" or "lower"; "1 seed: no spread" with one seed. It is a
deliberately plain screen, not a significance test. Also plots AP_S against resolution (sliced dashed).

    .venv/bin/python benchmarks/bench_small_objects.py                      # demo data, 3 seeds, CPU: ~65 min (below)
    .venv/bin/python benchmarks/bench_small_objects.py --variants stock spd --no-slice-eval   # the former run: ~30 min
    .venv/bin/python benchmarks/bench_small_objects.py --quick              # smoke test: stock, SPD, 1 seed (~1 min)
    .venv/bin/python benchmarks/bench_small_objects.py --reuse              # resume, or add a variant / seed
    .venv/bin/python benchmarks/bench_small_objects.py --data my.yaml --pair yolov5s --device 0 --epochs 100 \\
        --train-imgsz 640 --eval-imgsz 640 320 160                          # any data YAML, on a GPU

The default run: pair yolov5n (variants stock, spd, spd-p2, stock-p2, stock-compute; no spd-lite for yolov5), seeds
0 1 2, 12 epochs at 256 px on the demo data (stock-compute: 19 epochs), each model evaluated at 256, 128, 64 px plain
and sliced: 51 min on 2 CPU cores without stock-p2, then 18 min to add it with --reuse (measured, the machine partly
shared; results in docs/benchmarks.md), so ~65 min in one go. On a loaded machine expect up to twice as long.

VisDrone on a GPU (data from ``python -m spd_yolo.data.convert visdrone SRC datasets/visdrone``), all six variants:

    python benchmarks/bench_small_objects.py --data datasets/visdrone/data.yaml --pair yolov8n --device 0 \\
        --epochs 100 --train-imgsz 640 --eval-imgsz 640 320 --seeds 0 1 2 --out runs/bench-small/visdrone.json

From scratch only. The fine-tuning protocol (pretrained stock weights, their exact SPD upgrade, the fine-tuning rules)
is benchmarks/bench_finetune.py, which uses this script's training reuse, paired differences and verdict.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import (
    base_parser,
    check_common,
    check_size,
    environment,
    environment_lines,
    markdown_table,
    spread,
    write_results,
)

PAIRS = {"yolov5n": ("yolov5n.yaml", "yolov5n-SPD"), "yolov5s": ("yolov5s.yaml", "yolov5s-SPD"),
         "yolo11n": ("yolo11n.yaml", "yolo11n-SPD"), "yolov8n": ("yolov8n.yaml", "yolov8n-SPD")}
METRICS = ("AP_S", "AP_M", "AP_L", "AP", "AP50")
VERDICT_METRICS = ("AP_S", "AP")
VARIANTS = ("stock", "spd", "spd-p2", "stock-p2", "spd-lite", "stock-compute")
NO_DIFFERENCE = "no difference shown"
EVAL_RECORD = "bench_eval.json"  # in each evaluation folder: what it was made from (`eval_record`), for --reuse


def variant_cfg(pair: str, variant: str) -> str:
    """The model a variant trains: stock and stock-compute the pair's stock YAML, stock-p2 its P2 YAML (ultralytics'
    yolov8-p2 or our yolov5-p2 / yolo11-p2 baselines), the others an SPD model name."""
    stock, spd = PAIRS[pair]
    cfgs = {"stock": stock, "stock-compute": stock, "stock-p2": f"{Path(stock).stem}-p2.yaml", "spd": spd,
            "spd-p2": f"{spd}-p2", "spd-lite": f"{spd}-lite"}
    return cfgs[variant]


def available_variants(pair: str) -> list[str]:
    """The variants whose model exists for `pair` (spd-lite: yolov8 and yolo11 only), in VARIANTS order."""
    from spd_yolo import available_models

    known = set(available_models())
    return [v for v in VARIANTS if not v.startswith("spd") or variant_cfg(pair, v) in known]


def compute_matched_epochs(epochs: int, spd_gflops: float, stock_gflops: float) -> tuple[int, float]:
    """(epochs, ratio): the stock epochs of the compute of `epochs` SPD epochs, round(epochs x SPD/stock), >= 1."""
    ratio = spd_gflops / stock_gflops
    return max(1, round(epochs * ratio)), ratio


def finished_run(run: Path, settings: dict) -> bool:
    """Whether `run` (a train.py run folder) holds a finished training with these settings (--reuse): weights/best.pt,
    one results.csv row per epoch, and an args.yaml that agrees on every key of `settings` (model by name, data by
    resolved path)."""
    args_file, csv_file = run / "args.yaml", run / "results.csv"
    if not ((run / "weights" / "best.pt").is_file() and args_file.is_file() and csv_file.is_file()):
        return False
    import yaml

    saved = yaml.safe_load(args_file.read_text())
    want = dict(settings)
    if Path(str(saved.get("model"))).stem != Path(str(want.pop("model"))).stem:
        return False
    if Path(str(saved.get("data"))).resolve() != Path(str(want.pop("data"))).resolve():
        return False
    rows = len(csv_file.read_text().splitlines()) - 1
    return rows == settings["epochs"] and all(saved.get(k) == v for k, v in want.items())


def eval_record(best: Path, data: Path, size: int, overlap: float | None) -> dict:
    """What an evaluation folder was made from, saved beside its COCO metrics (EVAL_RECORD) for --reuse: the weights
    (path and modification time), the data, the size and the slice overlap (None: plain)."""
    return {"weights": str(best.resolve()), "weights_mtime_ns": best.stat().st_mtime_ns,
            "data": str(Path(data).resolve()), "imgsz": size, "slice_overlap": overlap}


def finished_eval(folder: Path, record: dict) -> bool:
    """Whether `folder` holds an evaluation made from `record` (--reuse): its COCO metrics and an equal EVAL_RECORD."""
    saved = folder / EVAL_RECORD
    return (folder / "coco_metrics.json").is_file() and saved.is_file() and json.loads(saved.read_text()) == record


def compute_label(stock_cfg: str, ratio: float) -> str:
    """'yolov5n (x1.56 epochs)': the row of the compute-matched stock model."""
    return f"{Path(stock_cfg).stem} (x{ratio:.2f} epochs)"


def verdict(diffs: list[float]) -> str:
    """The plain rule on paired differences: NO_DIFFERENCE unless |mean| > sample std, else 'higher' / 'lower'."""
    if not diffs:
        return "-"
    if len(diffs) < 2:
        return "1 seed: no spread"
    mean = statistics.fmean(diffs)
    if abs(mean) <= statistics.stdev(diffs):
        return NO_DIFFERENCE
    return "higher" if mean > 0 else "lower"


def _paired(a: dict, b: dict, metric: str) -> list[float]:
    """b - a per seed, over the seeds where pycocotools defined both (not -1)."""
    return [y - x for x, y in zip(a[metric], b[metric]) if x >= 0 and y >= 0]


def _diff_row(label: str, size, mode: str, a: dict, b: dict) -> list:
    return [label, size, mode, *(spread(_paired(a, b, m), signed=True) for m in METRICS),
            *(verdict(_paired(a, b, m)) for m in VERDICT_METRICS)]


def table_rows(results: dict, labels: list[str], eval_sizes: list[int], sliced: dict | None = None) -> list[list]:
    """Per size and mode (plain, then sliced where `sliced` has the size): every model (seeds where pycocotools
    defined the metric, i.e. not -1), then each model minus the first (stock), paired by seed, with the AP_S and AP
    verdicts; after the sliced block, "stock, sliced - plain" (slicing alone). `results` / `sliced`:
    {label: {size: {metric: [value per seed]}}}; labels[0] is stock; labels ending in '.yaml' are shown without it."""
    stock, short = labels[0], {lab: Path(lab).stem if lab.endswith((".yaml", ".yml")) else lab for lab in labels}
    blank = [""] * len(VERDICT_METRICS)
    rows = []
    for size in eval_sizes:
        modes = [("plain", results)] + ([("sliced", sliced)] if sliced and size in sliced.get(stock, {}) else [])
        for mode, res in modes:
            for lab in labels:
                rows.append([short[lab], size, mode,
                             *(spread([v for v in res[lab][size][m] if v >= 0]) for m in METRICS), *blank])
            for lab in labels[1:]:
                rows.append(_diff_row(f"{short[lab]} - stock", size, mode, res[stock][size], res[lab][size]))
        if len(modes) > 1:
            base, tiled = results[stock][size], sliced[stock][size]
            rows.append(_diff_row(f"{short[stock]}, sliced - plain", size, "", base, tiled))
    return rows


def plot(results: dict, eval_sizes: list[int], path: Path, sliced: dict | None = None) -> None:
    """AP_S (mean ± std over seeds) against evaluation size, one colour per model (sliced evaluation dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    colour = {label: f"C{i}" for i, label in enumerate(results)}
    curves = [(label, label, per_size, "-") for label, per_size in results.items()]
    curves += [(f"{label}, sliced", label, per_size, "--") for label, per_size in (sliced or {}).items()]
    for label, model, per_size, style in curves:
        sizes = [s for s in eval_sizes if s in per_size]
        values = [[v for v in per_size[s]["AP_S"] if v >= 0] or [0.0] for s in sizes]
        means = [100 * statistics.fmean(v) for v in values]
        stds = [100 * statistics.stdev(v) if len(v) > 1 else 0 for v in values]
        ax.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, linestyle=style, color=colour[model], label=label)
    ax.set_xlabel("evaluation input size (px)")
    ax.set_ylabel("AP_S (%)")
    ax.set_xticks(eval_sizes)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def _gflops(cfg: str, nc: int, imgsz: int) -> float:
    """GFLOPs of the untrained `cfg` for `nc` classes at `imgsz` x `imgsz` (spd_yolo.model_stats)."""
    from spd_yolo import build_model, model_stats

    return model_stats(build_model(cfg, nc=nc), Path(cfg).stem, imgsz).gflops


def _num_classes(data: Path) -> int:
    import yaml

    return len(yaml.safe_load(Path(data).read_text())["names"])


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--data", default="", help="data YAML (default: the demo dataset, generated if missing)")
    parser.add_argument("--pair", default="yolov5n", help=f"stock/SPD pair: {', '.join(PAIRS)}")
    parser.add_argument("--variants", nargs="+", default=None, metavar="VARIANT",
                        help=f"what to train, of {', '.join(VARIANTS)} (stock is always included; default: every one "
                        "the pair has)")
    parser.add_argument("--slice-eval", action=argparse.BooleanOptionalAction, default=True,
                        help="also evaluate each model with sliced inference (val --slice) at every evaluation size "
                        "(default: on; --quick: the smallest size only)")
    parser.add_argument("--slice-overlap", type=float, default=0.2, help="slice overlap for the sliced evaluation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs per model")
    parser.add_argument("--train-imgsz", type=int, default=256, help="training size (multiple of 32)")
    parser.add_argument("--eval-imgsz", type=int, nargs="+", default=[256, 128, 64], help="evaluation sizes")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size")
    parser.add_argument("--workers", type=int, default=2, help="dataloader workers")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA index")
    parser.add_argument("--project", type=Path, default=Path("runs/bench-small"), help="where runs and the plot go")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse trainings and evaluations already in --project that were made with the same "
                        "settings (an interrupted run resumes; an added variant or seed trains only itself)")
    args = parser.parse_args(argv)
    check_common(parser, args)
    if args.pair not in PAIRS:
        parser.error(f"--pair {args.pair}: unknown; choose one of {', '.join(PAIRS)}")
    for size in (args.train_imgsz, *args.eval_imgsz):
        check_size(parser, "--train-imgsz/--eval-imgsz", size)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    if not 0 <= args.slice_overlap < 1:
        parser.error(f"--slice-overlap must be in [0, 1), got {args.slice_overlap}")
    if args.variants is not None:
        for v in args.variants:
            if v not in VARIANTS:
                parser.error(f"--variants {v}: unknown; choose from {', '.join(VARIANTS)}")
        missing = [v for v in args.variants if v not in available_variants(args.pair)]
        if missing:
            cfg = variant_cfg(args.pair, missing[0])
            parser.error(f"--variants {missing[0]}: no {cfg} model for --pair {args.pair}")
    if args.quick:
        args.seeds, args.epochs, args.train_imgsz, args.eval_imgsz = args.seeds[:1], 1, 64, [64, 32]
        args.variants = args.variants or ["stock", "spd"]
    variants = [v for v in VARIANTS if v == "stock" or v in (args.variants or available_variants(args.pair))]
    args.variants = variants
    slice_sizes = (args.eval_imgsz[-1:] if args.quick else args.eval_imgsz) if args.slice_eval else []

    import torch

    from spd_yolo import coco
    from spd_yolo.cli import train, val
    from spd_yolo.data.synth import generate_demo_dataset
    from spd_yolo.demo import DEMO_HYP

    torch.set_num_threads(args.threads)
    project = args.project.resolve()
    if args.data:
        data = Path(args.data)
        if not data.is_file():
            parser.error(f"--data {data}: file not found")
    else:
        if args.quick:
            data = generate_demo_dataset(project / "data", n_train=8, n_val=4, imgsz=64, video_frames=0)
        else:  # the `make demo` dataset, with the demo's arguments so that either reuses the other's
            data = generate_demo_dataset("datasets/spd-demo")
    project.mkdir(parents=True, exist_ok=True)
    hyp = project / "hyp.yaml"
    hyp.write_text("".join(f"{k}: {v}\n" for k, v in DEMO_HYP.items()))

    # What each row trains: (label, cfg, epochs); GFLOPs at the training size for the record and the compute match.
    nc = _num_classes(data)
    cfgs = {v: variant_cfg(args.pair, v) for v in variants}
    gflops = {v: _gflops(cfg, nc, args.train_imgsz) for v, cfg in cfgs.items()}
    runs = {}
    for v in variants:
        if v == "stock-compute":
            epochs, ratio = compute_matched_epochs(args.epochs, _gflops(cfgs.get("spd") or PAIRS[args.pair][1], nc,
                                                   args.train_imgsz), gflops["stock"])
            runs[v] = (compute_label(cfgs[v], ratio), cfgs[v], epochs)
        else:
            runs[v] = (Path(cfgs[v]).stem, cfgs[v], args.epochs)
    labels = [label for label, _, _ in runs.values()]
    results = {lab: {s: {m: [] for m in METRICS} for s in args.eval_imgsz} for lab in labels}
    sliced = {lab: {s: {m: [] for m in METRICS} for s in slice_sizes} for lab in labels}
    reused = 0
    for seed in args.seeds:
        for label, cfg, epochs in runs.values():
            name = f"{Path(cfg).stem}{'' if epochs == args.epochs else f'-{epochs}ep'}-seed{seed}"
            run = project / "train" / name
            settings = {"model": cfg, "data": data, "epochs": epochs, "imgsz": args.train_imgsz,
                        "batch": args.batch_size, "seed": seed, **DEMO_HYP}
            if args.reuse and finished_run(run, settings):
                print(f"reusing the training in {run}")
                reused += 1
            else:
                train.main([
                    "--cfg", cfg, "--data", str(data), "--hyp", str(hyp), "--epochs", str(epochs),
                    "--img", str(args.train_imgsz), "--batch-size", str(args.batch_size), "--workers",
                    str(args.workers), "--device", args.device, "--seed", str(seed),
                    "--project", str(project / "train"), "--name", name, "--exist-ok", "--noplots",
                ])
            best = run / "weights" / "best.pt"
            for size in args.eval_imgsz:
                for mode, store in (("plain", results), ("sliced", sliced)):
                    if mode == "sliced" and size not in slice_sizes:
                        continue
                    folder = project / "val" / f"{name}-{size}{'-sliced' if mode == 'sliced' else ''}"
                    record = eval_record(best, data, size, args.slice_overlap if mode == "sliced" else None)
                    if args.reuse and finished_eval(folder, record):
                        reused += 1
                    else:
                        extra = ["--slice", "--slice-overlap", str(args.slice_overlap)] if mode == "sliced" else []
                        val.main(["--weights", str(best), "--data", str(data), "--img", str(size), "--device",
                                  args.device, "--project", str(folder.parent), "--name", folder.name, "--exist-ok",
                                  *extra])
                        (folder / EVAL_RECORD).write_text(json.dumps(record))
                    stats = coco.load_stats(folder)
                    for m in METRICS:
                        store[label][size][m].append(stats.values[m])

    rows = table_rows(results, labels, args.eval_imgsz, sliced if slice_sizes else None)
    table = markdown_table(["model", "eval size", "eval", *(f"{m} (%)" for m in METRICS),
                            *(f"{m} verdict" for m in VERDICT_METRICS)], rows)
    plot_path = project / f"ap_s_vs_resolution_{args.pair}.png"
    plot(results, args.eval_imgsz, plot_path, sliced if slice_sizes else None)
    env = environment(args.threads)
    trained = "; ".join(f"{label}: {epochs} epochs, {gflops[v]:.2f} GFLOPs" for v, (label, _, epochs) in runs.items())
    text = (f"{environment_lines(env)}\ndata: {data}; seeds {args.seeds}; trained at {args.train_imgsz} px "
            f"(GFLOPs at that size): {trained}\nsliced evaluation (val --slice, overlap {args.slice_overlap:g}) at: "
            f"{', '.join(map(str, slice_sizes)) or 'none'}; mean ± std over seeds, differences paired by seed; "
            f"verdict: '{NO_DIFFERENCE}' unless |mean diff| > std of the paired diffs"
            f"{f'; {reused} trainings/evaluations reused (--reuse)' if reused else ''}\n\n{table}\n\nplot: {plot_path}")
    print(text)
    write_results(args.out, {
        "environment": env, "args": {k: str(v) for k, v in vars(args).items()},
        "results": results,  # plain evaluation, {label: {size: {metric: [per seed]}}}, as before
        "sliced": sliced if slice_sizes else {},  # the same for val --slice, at the sizes sliced
        "runs": {v: {"label": label, "cfg": cfg, "epochs": epochs, "gflops": gflops[v]}
                 for v, (label, cfg, epochs) in runs.items()},
        "reused": reused,  # trainings and evaluations taken from --project (--reuse) instead of run again
    }, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
