# SPD-YOLO, AGPL-3.0 license
"""The small-object benchmark: stock vs SPD trained alike, COCO AP per input resolution, over several seeds.

For each seed, trains the stock model and its SPD counterpart on the same data with the same settings and seed,
then validates each at several input sizes (lower sizes down-sample the images: the low-resolution case). Prints
AP, AP50, AP_S, AP_M, AP_L (mean and spread over seeds) per model and resolution with the SPD-minus-stock
difference (paired by seed), and plots AP_S against resolution.

    .venv/bin/python benchmarks/bench_small_objects.py                      # demo data, 3 seeds, CPU: ~30 min
    .venv/bin/python benchmarks/bench_small_objects.py --quick              # a smoke test
    .venv/bin/python benchmarks/bench_small_objects.py --data my.yaml --pair yolov5s --device 0 --epochs 100 \\
        --train-imgsz 640 --eval-imgsz 640 320 160                          # any data YAML, on a GPU
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from common import (
    base_parser, check_common, check_size, environment, environment_lines, markdown_table, spread, write_results,
)

PAIRS = {"yolov5n": ("yolov5n.yaml", "yolov5n-SPD"), "yolov5s": ("yolov5s.yaml", "yolov5s-SPD"),
         "yolo11n": ("yolo11n.yaml", "yolo11n-SPD"), "yolov8n": ("yolov8n.yaml", "yolov8n-SPD")}
METRICS = ("AP_S", "AP_M", "AP_L", "AP", "AP50")


def table_rows(results: dict, stock: str, spd: str, eval_sizes: list[int]) -> list[list]:
    """Per size: stock, SPD (seeds where pycocotools defined the metric, i.e. not -1) and SPD - stock paired by seed."""
    rows = []
    for size in eval_sizes:
        for cfg in (stock, spd):
            rows.append([Path(cfg).stem, size, *(spread([v for v in results[cfg][size][m] if v >= 0]) for m in METRICS)])
        pairs = {m: list(zip(results[stock][size][m], results[spd][size][m])) for m in METRICS}
        rows.append(["SPD - stock", size, *(spread([b - a for a, b in pairs[m] if a >= 0 and b >= 0]) for m in METRICS)])
    return rows


def plot(results: dict, eval_sizes: list[int], path: Path) -> None:
    """AP_S (mean ± std over seeds) against evaluation size, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for label, per_size in results.items():
        means = [100 * statistics.fmean(per_size[s]["AP_S"]) for s in eval_sizes]
        stds = [100 * statistics.stdev(per_size[s]["AP_S"]) if len(per_size[s]["AP_S"]) > 1 else 0 for s in eval_sizes]
        ax.errorbar(eval_sizes, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xlabel("evaluation input size (px)")
    ax.set_ylabel("AP_S (%)")
    ax.set_xticks(eval_sizes)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--data", default="", help="data YAML (default: the demo dataset, generated if missing)")
    parser.add_argument("--pair", default="yolov5n", help=f"stock/SPD pair: {', '.join(PAIRS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs per model")
    parser.add_argument("--train-imgsz", type=int, default=256, help="training size (multiple of 32)")
    parser.add_argument("--eval-imgsz", type=int, nargs="+", default=[256, 128, 64], help="evaluation sizes")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size")
    parser.add_argument("--workers", type=int, default=2, help="dataloader workers")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA index")
    parser.add_argument("--project", type=Path, default=Path("runs/bench-small"), help="where runs and the plot go")
    args = parser.parse_args(argv)
    check_common(parser, args)
    if args.pair not in PAIRS:
        parser.error(f"--pair {args.pair}: unknown; choose one of {', '.join(PAIRS)}")
    for size in (args.train_imgsz, *args.eval_imgsz):
        check_size(parser, "--train-imgsz/--eval-imgsz", size)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")
    if args.quick:
        args.seeds, args.epochs, args.train_imgsz, args.eval_imgsz = args.seeds[:2], 1, 64, [64, 32]
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")

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
            data = generate_demo_dataset(project / "data", n_train=16, n_val=8, imgsz=64, video_frames=0)
        else:  # the `make demo` dataset, with the demo's arguments so that either reuses the other's
            data = generate_demo_dataset("datasets/spd-demo")
    project.mkdir(parents=True, exist_ok=True)
    hyp = project / "hyp.yaml"
    hyp.write_text("".join(f"{k}: {v}\n" for k, v in DEMO_HYP.items()))

    labels = dict(zip(("stock", "SPD"), PAIRS[args.pair]))
    results = {cfg: {s: {m: [] for m in METRICS} for s in args.eval_imgsz} for cfg in labels.values()}
    for seed in args.seeds:
        for cfg in labels.values():
            name = f"{Path(cfg).stem}-seed{seed}"
            train.main([
                "--cfg", cfg, "--data", str(data), "--hyp", str(hyp), "--epochs", str(args.epochs),
                "--img", str(args.train_imgsz), "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                "--device", args.device, "--seed", str(seed), "--project", str(project / "train"), "--name", name,
                "--exist-ok", "--noplots",
            ])
            best = project / "train" / name / "weights" / "best.pt"
            for size in args.eval_imgsz:
                folder = project / "val" / f"{name}-{size}"
                val.main(["--weights", str(best), "--data", str(data), "--img", str(size), "--device", args.device,
                          "--project", str(folder.parent), "--name", folder.name, "--exist-ok"])
                stats = coco.load_stats(folder)
                for m in METRICS:
                    results[cfg][size][m].append(stats.values[m])

    stock, spd = labels["stock"], labels["SPD"]
    rows = table_rows(results, stock, spd, args.eval_imgsz)
    table = markdown_table(["model", "eval size", *(f"{m} (%)" for m in METRICS)], rows)
    plot_path = project / f"ap_s_vs_resolution_{args.pair}.png"
    plot({Path(c).stem: results[c] for c in (stock, spd)}, args.eval_imgsz, plot_path)
    env = environment(args.threads)
    text = (f"{environment_lines(env)}\ndata: {data}; seeds {args.seeds}; {args.epochs} epochs at {args.train_imgsz} px; "
            f"mean ± std over seeds (diff paired by seed)\n\n{table}\n\nplot: {plot_path}")
    print(text)
    write_results(args.out, {"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
                             "results": {Path(c).stem: results[c] for c in (stock, spd)}}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
