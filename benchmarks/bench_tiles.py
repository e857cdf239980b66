# SPD-YOLO, AGPL-3.0 license
"""The tiling benchmark: large frames with tiny objects, trained whole (down-scaled to the training size) or as tiles
at native resolution (train.py --tile), each evaluated plain (the whole frame down-scaled) and sliced (val.py --slice,
slices of the training size at full resolution), for stock, SPD and the P2 variants, over several seeds.

Data (default): the demo generator's large-frame mode (python -m spd_yolo.data.synth --large-frames): 4:3 frames of
--frame-width px with 4-16 px objects (about 200 per 1280x960 of area) and 0-2 large ones. With --frame-width 2x the
training size (--imgsz) this is the 1280x960-at-640 case scaled down: "whole" sees every object at half size, "tiles"
at full size.

Per seed and variant, two trainings on the same frames with the same settings and seed, for the same compute:
  whole   train.py --img IMGSZ on the whole frames, --epochs E; best.pt by plain COCO AP_S (--fitness ap_small)
  tiles   train.py --tile IMGSZ --tile-overlap O on the same frames; best.pt by sliced AP_S (--fitness ap_small),
          for E x frames / tiles epochs (rounded, >= 1): as many training images of the same size as "whole" sees
          (a tile epoch holds every tile of every frame, empty ones mostly dropped); --tile-epochs sets it instead
then val.py on the whole validation frames at IMGSZ: plain, and --slice (slice = IMGSZ, overlap O). The table lists
each training's images per epoch, epochs and time.

Prints AP_S, AP, AP50 (mean ± std over seeds) per variant, training and evaluation mode, then paired differences
(same seed): tiles - whole (same variant and evaluation), each variant - stock (same training and evaluation), and
sliced - plain (same training), with the verdict rule of bench_small_objects.py: "no difference shown" unless
|mean| > std of the paired differences; "1 seed: no spread" with one seed.

    .venv/bin/python benchmarks/bench_tiles.py                  # 4 variants x 2 trainings x 3 seeds, CPU (see docs)
    .venv/bin/python benchmarks/bench_tiles.py --quick          # smoke test: stock and SPD, 1 seed, tiny frames
    .venv/bin/python benchmarks/bench_tiles.py --reuse          # resume, or add a variant / seed
    .venv/bin/python benchmarks/bench_tiles.py --data datasets/visdrone/data.yaml --pair yolov8n --imgsz 640 \\
        --epochs 100 --batch-size 16 --device 0                 # VisDrone on a GPU
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from bench_small_objects import (
    PAIRS,
    VERDICT_METRICS,
    available_variants,
    eval_record,
    finished_eval,
    variant_cfg,
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

METRICS = ("AP_S", "AP", "AP50")
VARIANTS = ("stock", "spd", "spd-p2", "stock-p2")
TRAININGS = ("whole", "tiles")
EVALS = ("plain", "sliced")
RECORD = "bench_train.json"  # in each training folder: its settings and training time, for --reuse


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__)
    parser.add_argument("--data", default="", help="data YAML of large frames (default: generated large-frame demo)")
    parser.add_argument("--frame-width", type=int, default=256, help="generated frames' width (4:3)")
    parser.add_argument("--n-train", type=int, default=32, help="generated training frames")
    parser.add_argument("--n-val", type=int, default=12, help="generated validation frames")
    parser.add_argument("--pair", default="yolov5n", help=f"stock/SPD pair: {', '.join(PAIRS)}")
    parser.add_argument("--variants", nargs="+", default=None, metavar="VARIANT",
                        help=f"of {', '.join(VARIANTS)} (stock always; default: all four)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--epochs", type=int, default=24, help="training epochs on whole frames")
    parser.add_argument("--tile-epochs", type=int, default=None,
                        help="training epochs on tiles (default: the same number of training images as --epochs on "
                        "whole frames)")
    parser.add_argument("--imgsz", type=int, default=128, help="training size = tile size = slice size")
    parser.add_argument("--tile-overlap", type=float, default=0.2, help="tile and slice overlap")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size")
    parser.add_argument("--workers", type=int, default=2, help="dataloader workers")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA index")
    parser.add_argument("--project", type=Path, default=Path("runs/bench-tiles"), help="where runs go")
    parser.add_argument("--reuse", action="store_true", help="reuse trainings and evaluations made with the same "
                        "settings in --project")
    args = parser.parse_args(argv)
    check_common(parser, args)
    if args.pair not in PAIRS:
        parser.error(f"--pair {args.pair}: unknown; choose one of {', '.join(PAIRS)}")
    check_size(parser, "--imgsz", args.imgsz)
    if args.frame_width < 32 or args.n_train < 1 or args.n_val < 1:
        parser.error("--frame-width must be >= 32, --n-train and --n-val >= 1")
    if args.epochs < 1 or args.batch_size < 1 or args.tile_epochs is not None and args.tile_epochs < 1:
        parser.error("--epochs, --tile-epochs and --batch-size must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    if not 0 <= args.tile_overlap < 1:
        parser.error(f"--tile-overlap must be in [0, 1), got {args.tile_overlap}")
    for v in args.variants or ():
        if v not in VARIANTS:
            parser.error(f"--variants {v}: unknown; choose from {', '.join(VARIANTS)}")
        if v not in available_variants(args.pair):
            parser.error(f"--variants {v}: no {variant_cfg(args.pair, v)} model for --pair {args.pair}")
    if args.quick:
        args.seeds, args.epochs, args.imgsz, args.frame_width = args.seeds[:1], 1, 64, 128
        args.n_train, args.n_val, args.batch_size = 4, 2, 4
        args.variants = args.variants or ["stock", "spd"]
    args.variants = [v for v in VARIANTS if v == "stock" or v in (args.variants or VARIANTS)]
    return args


def _paired(a: list[float], b: list[float]) -> list[float]:
    """b - a per seed, where pycocotools defined both (not -1)."""
    return [y - x for x, y in zip(a, b) if x >= 0 and y >= 0]


def _diff(label: str, a: dict, b: dict) -> list:
    return [label, "", "", *(spread(_paired(a[m], b[m]), signed=True) for m in METRICS),
            *(verdict(_paired(a[m], b[m])) for m in VERDICT_METRICS)]


def table_rows(results: dict, labels: list[str], info: dict) -> list[list]:
    """`results`: {label: {training: {eval: {metric: [per seed]}}}}; labels[0] is stock. Models first, then the
    paired differences: tiles - whole, each variant - stock, sliced - plain."""
    blank = [""] * len(VERDICT_METRICS)
    rows = []
    for lab in labels:
        for t in TRAININGS:
            for e in EVALS:
                rows.append([lab, t, e, *(spread([v for v in results[lab][t][e][m] if v >= 0]) for m in METRICS),
                             *blank, info[lab][t]])
    for lab in labels:
        for e in EVALS:
            rows.append([*_diff(f"{lab}: tiles - whole, {e}", results[lab]["whole"][e], results[lab]["tiles"][e]), ""])
    for lab in labels[1:]:
        for t in TRAININGS:
            for e in EVALS:
                a, b = results[labels[0]][t][e], results[lab][t][e]
                rows.append([*_diff(f"{lab} - {labels[0]}: {t}, {e}", a, b), ""])
    for lab in labels:
        for t in TRAININGS:
            rows.append([*_diff(f"{lab}, {t}: sliced - plain", results[lab][t]["plain"], results[lab][t]["sliced"]),
                         ""])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    from spd_yolo import coco
    from spd_yolo.cli import train, val
    from spd_yolo.data.synth import generate_demo_dataset
    from spd_yolo.data.tiles import TileSettings
    from spd_yolo.demo import DEMO_HYP
    from spd_yolo.tile_training import tiled_data

    torch.set_num_threads(args.threads)
    project = args.project.resolve()
    project.mkdir(parents=True, exist_ok=True)
    if args.data:
        data = Path(args.data)
        if not data.is_file():
            sys.exit(f"error: --data {data}: file not found")
    else:
        data = generate_demo_dataset(project / f"frames{args.frame_width}", n_train=args.n_train, n_val=args.n_val,
                                     imgsz=args.frame_width, video_frames=0, large_frames=True)
    hyp = project / "hyp.yaml"
    hyp.write_text("".join(f"{k}: {v}\n" for k, v in DEMO_HYP.items()))
    cfgs = {v: variant_cfg(args.pair, v) for v in args.variants}
    labels = [Path(c).stem for c in cfgs.values()]
    results = {lab: {t: {e: {m: [] for m in METRICS} for e in EVALS} for t in TRAININGS} for lab in labels}
    seconds = {lab: {t: [] for t in TRAININGS} for lab in labels}
    reused = 0
    tiled = tiled_data(data, TileSettings(size=args.imgsz, overlap=args.tile_overlap), progress=True)
    n_images = {"whole": _count_images(str(data)), "tiles": _count_images(tiled)}
    epochs = {"whole": args.epochs,
              "tiles": args.tile_epochs or max(1, round(args.epochs * n_images["whole"] / n_images["tiles"]))}
    for seed in args.seeds:
        for label, cfg in zip(labels, cfgs.values()):
            for t in TRAININGS:
                name = f"{label}-{t}-seed{seed}"
                run = project / "train" / name
                tile = ["--tile", str(args.imgsz), "--tile-overlap", str(args.tile_overlap)] if t == "tiles" else []
                argv_train = [
                    "--cfg", cfg, "--data", str(data), "--hyp", str(hyp), "--epochs", str(epochs[t]), "--img",
                    str(args.imgsz), "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--device",
                    args.device, "--seed", str(seed), "--fitness", "ap_small", *tile, "--project",
                    str(project / "train"), "--name", name, "--exist-ok", "--noplots",
                ]
                record_file = run / RECORD
                saved = json.loads(record_file.read_text()) if record_file.is_file() else None
                if args.reuse and saved and saved["argv"] == argv_train and (run / "weights" / "best.pt").is_file():
                    reused += 1
                else:
                    t0 = time.perf_counter()
                    if train.main(argv_train) != 0:
                        sys.exit(f"error: training {name} failed")
                    saved = {"argv": argv_train, "seconds": time.perf_counter() - t0}
                    record_file.write_text(json.dumps(saved))
                seconds[label][t].append(saved["seconds"])
                best = run / "weights" / "best.pt"
                for e in EVALS:
                    folder = project / "val" / f"{name}-{e}"
                    record = eval_record(best, data, args.imgsz, args.tile_overlap if e == "sliced" else None)
                    if args.reuse and finished_eval(folder, record):
                        reused += 1
                    else:
                        extra = ["--slice", "--slice-overlap", str(args.tile_overlap)] if e == "sliced" else []
                        val.main(["--weights", str(best), "--data", str(data), "--img", str(args.imgsz), "--device",
                                  args.device, "--project", str(folder.parent), "--name", folder.name, "--exist-ok",
                                  *extra])
                        (folder / "bench_eval.json").write_text(json.dumps(record))
                    stats = coco.load_stats(folder)
                    for m in METRICS:
                        results[label][t][e][m].append(stats.values[m])

    info = {lab: {t: f"{n_images[t]} img x {epochs[t]} ep, {statistics.fmean(seconds[lab][t]):.0f} s"
                  for t in TRAININGS} for lab in labels}
    rows = table_rows(results, labels, info)
    table = markdown_table(["model / difference", "trained on", "eval", *(f"{m} (%)" for m in METRICS),
                            *(f"{m} verdict" for m in VERDICT_METRICS), "training"], rows)
    env = environment(args.threads)
    text = (f"{environment_lines(env)}\ndata: {data}; seeds {args.seeds}; epochs: whole {epochs['whole']} x "
            f"{n_images['whole']} frames, tiles {epochs['tiles']} x {n_images['tiles']} tiles; training size = tile = "
            f"slice = {args.imgsz} px, overlap {args.tile_overlap:g}; evaluation on the whole validation frames at "
            f"{args.imgsz} px, plain and sliced; best.pt by AP_S (whole: plain, tiles: sliced); mean ± std over "
            f"seeds, differences paired by seed{f'; {reused} reused (--reuse)' if reused else ''}\n\n{table}")
    print(text)
    write_results(args.out, {
        "environment": env, "args": {k: str(v) for k, v in vars(args).items()}, "results": results,
        "train_seconds": seconds, "train_images": n_images, "epochs": epochs, "reused": reused,
    }, text)
    return 0


def _count_images(data_yaml: str) -> int:
    """Training images (frames or tiles) one epoch of the run saw."""
    from spd_yolo.data.tiles import read_source

    exts = {".jpg", ".jpeg", ".png", ".bmp"}
    return sum(1 for folder in read_source(data_yaml).splits["train"] for f in folder.rglob("*")
               if f.suffix.lower() in exts)


if __name__ == "__main__":
    sys.exit(main())
