# SPD-YOLO, AGPL-3.0 license
"""The fine-tuning benchmark: does an exact SPD upgrade of a pretrained stock model keep its start, and which
fine-tuning rule keeps it best? The protocol of bench_small_objects.py, starting from pretrained weights.

1. Pretrain the stock model (default yolov8n) from scratch on a *source* set: the demo generator with another seed and
   larger frames (384 px instead of 256, trained at 256, so objects are 2/3 the size they have in the target set).
2. Upgrade it exactly to its SPD twin (spd_yolo.upgrade; the script asserts the largest output difference).
3. Fine-tune on the *target* set (the demo data, as bench_small_objects.py) with the same seeds, epochs and schedule:
     stock, auto        the stock checkpoint, ultralytics' defaults (optimizer=auto)
     stock, SGD         the stock checkpoint, --optimizer SGD
     SPD, <rule>        the upgraded checkpoint under each rule of spd_yolo.upgrade.FINETUNE_RULES (--upgrade-rule):
                        none (= ultralytics' defaults), sgd, sgd-hold, auto-hold
     stock, SGD, xR     the stock checkpoint, SGD, for the SPD model's compute (epochs x GFLOPs ratio, rounded)
4. Evaluate each plain at the training size and sliced (val --slice, SAHI) with slices of half that size.
Prints AP_S, AP_M, AP_L, AP, AP50 (mean ± std over seeds), each row minus "stock, SGD" paired by seed with the AP_S
and AP verdicts (bench_small_objects.py's rule: "no difference shown" unless |mean| > std of the paired differences).

    .venv/bin/python benchmarks/bench_finetune.py --out docs/results/bench_finetune.json   # CPU, 3 seeds (~80 min)
    .venv/bin/python benchmarks/bench_finetune.py --quick                                   # smoke test (~2 min)
    .venv/bin/python benchmarks/bench_finetune.py --reuse                                   # resume / add a seed

On a GPU, the real case (COCO-pretrained weights, VisDrone target; commands in docs/benchmarks.md):
    python benchmarks/bench_finetune.py --pretrained yolo11n.pt --data datasets/visdrone/data.yaml --device 0 \\
        --epochs 50 --train-imgsz 640 --seeds 0 1 2
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench_small_objects import (
    METRICS,
    NO_DIFFERENCE,
    VERDICT_METRICS,
    _gflops,
    _num_classes,
    _paired,
    compute_matched_epochs,
    finished_run,
    verdict,
)
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

STOCK = {"yolov8n": "yolov8n.yaml", "yolo11n": "yolo11n.yaml", "yolov5n": "yolov5nu.yaml", "yolo26n": "yolo26n.yaml"}
REFERENCE = "stock, SGD"  # the row every other is compared with


def rows_to_train(compute: int, ratio: float, rules: list[str]) -> list[tuple[str, str, dict]]:
    """(label, which checkpoint: 'stock' or 'spd', train.py flags) of every fine-tuning run of one seed; `compute`:
    the stock epochs of the SPD model's compute (GFLOPs `ratio`)."""
    rows = [("stock, auto", "stock", {"--optimizer": "auto"}), (REFERENCE, "stock", {"--optimizer": "SGD"})]
    rows += [(f"SPD, {r}", "spd", {"--upgrade-rule": r}) for r in rules]
    rows.append((f"stock, SGD, x{ratio:.2f} epochs", "stock", {"--optimizer": "SGD", "--epochs": str(compute)}))
    return rows


def main(argv: list[str] | None = None) -> int:
    from spd_yolo.engine import FINETUNE_KEY, checkpoint_record
    from spd_yolo.upgrade import FINETUNE_RULES

    parser = base_parser(__doc__)
    parser.add_argument("--pair", default="yolov8n", choices=tuple(STOCK), help="stock model to pretrain and upgrade")
    parser.add_argument("--pretrained", default="", help="a stock checkpoint to start from instead of pretraining one "
                        "(e.g. COCO-pretrained yolo11n.pt on a GPU machine)")
    parser.add_argument("--data", default="", help="target data YAML (default: the demo data)")
    parser.add_argument("--pretrain-epochs", type=int, default=20, help="epochs of the stock pretraining on the source")
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs")
    parser.add_argument("--rules", nargs="+", default=list(FINETUNE_RULES), choices=tuple(FINETUNE_RULES),
                        help="fine-tuning rules of the upgraded model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--train-imgsz", type=int, default=256, help="training and plain evaluation size")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size")
    parser.add_argument("--workers", type=int, default=2, help="dataloader workers")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA index")
    parser.add_argument("--project", type=Path, default=Path("runs/bench-finetune"), help="where runs go")
    parser.add_argument("--reuse", action="store_true", help="reuse finished trainings and evaluations in --project")
    args = parser.parse_args(argv)
    check_common(parser, args)
    check_size(parser, "--train-imgsz", args.train_imgsz)
    if min(args.epochs, args.pretrain_epochs, args.batch_size) < 1:
        parser.error("--epochs, --pretrain-epochs and --batch-size must be >= 1")
    if args.pretrained and not Path(args.pretrained).is_file():
        parser.error(f"--pretrained {args.pretrained}: file not found")
    if args.quick:
        args.seeds, args.epochs, args.pretrain_epochs, args.train_imgsz = args.seeds[:1], 2, 1, 64
        args.rules = ["none", "sgd-hold"]

    import torch

    from spd_yolo import coco
    from spd_yolo.cli import train, val
    from spd_yolo.data.synth import generate_demo_dataset
    from spd_yolo.demo import DEMO_HYP
    from spd_yolo.upgrade import upgrade_checkpoint

    torch.set_num_threads(args.threads)
    project = args.project.resolve()
    project.mkdir(parents=True, exist_ok=True)
    small = {"n_train": 8, "n_val": 4, "imgsz": 64, "video_frames": 0} if args.quick else {}
    if args.data:
        data = Path(args.data)
    else:
        data = generate_demo_dataset(project / "target" if args.quick else "datasets/spd-demo", **small)
    hyp = project / "hyp.yaml"
    hyp.write_text("".join(f"{k}: {v}\n" for k, v in DEMO_HYP.items()))
    common = ["--data", str(data), "--hyp", str(hyp), "--img", str(args.train_imgsz), "--batch-size",
              str(args.batch_size), "--workers", str(args.workers), "--device", args.device, "--noplots",
              "--project", str(project / "train"), "--exist-ok"]

    # 1-2: the pretrained stock checkpoint and its exact upgrade
    if args.pretrained:
        stock_pt = Path(args.pretrained).resolve()
    else:
        source_args = {"n_train": 8, "n_val": 4, "imgsz": 96, "video_frames": 0} if args.quick else \
            {"n_train": 240, "n_val": 60, "imgsz": 384, "video_frames": 0}
        source = generate_demo_dataset(project / "source", seed=1, **source_args)
        run = project / "train" / "pretrain"
        settings = {"model": STOCK[args.pair], "data": source, "epochs": args.pretrain_epochs,
                    "imgsz": args.train_imgsz, "seed": 0}
        if not (args.reuse and finished_run(run, settings)):
            train.main(["--cfg", STOCK[args.pair], *common, "--data", str(source), "--epochs",
                        str(args.pretrain_epochs), "--seed", "0", "--name", "pretrain"])
        stock_pt = run / "weights" / "best.pt"
    spd_pt = project / "upgraded.pt"
    up = upgrade_checkpoint(stock_pt, spd_pt, overwrite=True)
    print(up.upgrade.summary(stock_pt.name, up.target))

    nc = _num_classes(data)
    compute, ratio = compute_matched_epochs(args.epochs, _gflops(up.target, nc, args.train_imgsz),
                                            _gflops(STOCK[args.pair], nc, args.train_imgsz))
    plan = rows_to_train(compute, ratio, args.rules)
    results = {label: {mode: {m: [] for m in METRICS} for mode in ("plain", "sliced")} for label, _, _ in plan}
    for seed in args.seeds:
        for label, start, flags in plan:
            name = f"{label.replace(', ', '-').replace(' ', '')}-seed{seed}"
            run = project / "train" / name
            epochs = int(flags.get("--epochs", args.epochs))
            weights = stock_pt if start == "stock" else spd_pt
            settings = {"model": weights, "data": data, "epochs": epochs, "imgsz": args.train_imgsz, "seed": seed}
            if not (args.reuse and finished_run(run, settings)):
                extra = [x for k, v in {**flags, "--epochs": str(epochs)}.items() for x in (k, v)]
                train.main(["--weights", str(weights), *common, *extra, "--seed", str(seed), "--name", name])
            best = run / "weights" / "best.pt"
            if start == "spd":  # the rule asked for is the rule the run used (recorded in its checkpoint)
                used = checkpoint_record(torch.load(best, map_location="cpu", weights_only=False), FINETUNE_KEY) or {}
                if used.get("name") != flags["--upgrade-rule"]:
                    raise SystemExit(f"{best}: trained with fine-tuning rule {used.get('name')!r}, expected "
                                     f"{flags['--upgrade-rule']!r}")
            for mode in ("plain", "sliced"):
                folder = project / "val" / f"{name}-{mode}"
                if not (args.reuse and (folder / "coco_metrics.json").is_file()
                        and (folder / "coco_metrics.json").stat().st_mtime > best.stat().st_mtime):
                    sliced = ["--slice", "--slice-size", str(args.train_imgsz // 2)] if mode == "sliced" else []
                    val.main(["--weights", str(best), "--data", str(data), "--img", str(args.train_imgsz),
                              "--device", args.device, "--project", str(folder.parent), "--name", folder.name,
                              "--exist-ok", *sliced])
                stats = coco.load_stats(folder)
                for m in METRICS:
                    results[label][mode][m].append(stats.values[m])

    rows = []
    for mode in ("plain", "sliced"):
        for label, _, _ in plan:
            rows.append([label, mode, *(spread([v for v in results[label][mode][m] if v >= 0]) for m in METRICS),
                         "", ""])
        ref = results[REFERENCE][mode]
        for label, _, _ in plan:
            if label == REFERENCE:
                continue
            diffs = {m: _paired(ref, results[label][mode], m) for m in METRICS}
            rows.append([f"{label} - {REFERENCE}", mode, *(spread(diffs[m], signed=True) for m in METRICS),
                         *(verdict(diffs[m]) for m in VERDICT_METRICS)])
    table = markdown_table(["fine-tuned", "eval", *(f"{m} (%)" for m in METRICS),
                            *(f"{m} verdict" for m in VERDICT_METRICS)], rows)
    env = environment(args.threads)
    summary = up.upgrade.summary(stock_pt.name, up.target)
    text = (f"{environment_lines(env)}\nstock {args.pair}: {stock_pt}; upgraded: {summary}"
            f"\ntarget data {data}; seeds {args.seeds}; {args.epochs} fine-tuning epochs at {args.train_imgsz} px "
            f"(stock at SPD's compute: x{ratio:.2f}); sliced: val --slice with {args.train_imgsz // 2} px slices; "
            f"mean ± std over seeds, differences paired by seed; verdict: '{NO_DIFFERENCE}' unless |mean diff| > "
            f"std of the paired diffs\n\n{table}")
    print(text)
    write_results(args.out, {
        "environment": env, "args": {k: str(v) for k, v in vars(args).items()},
        "upgrade": {"max_diff": up.upgrade.max_diff, "tolerance": up.upgrade.tolerance, "target": up.target},
        "gflops_ratio": ratio, "results": results,  # {label: {plain|sliced: {metric: [per seed, fraction]}}}
    }, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
