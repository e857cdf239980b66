# SPD-YOLO, AGPL-3.0 license
"""`make demo`: the whole pipeline on the synthetic small-object dataset, on CPU, in about 15 minutes on 2 cores.

1. generate the demo dataset (seeded, same bytes every time; reused when already there),
2. train yolov5n-SPD and stock yolov5n from scratch with the same settings and seed,
3. validate both and print the COCO table side by side (AP_S first),
4. run detection on the demo video with yolov5n-SPD,
5. export yolov5n-SPD to ONNX with the onnxruntime parity check,
6. print where every output is.

Every step runs the same code as the scripts; the equivalent command is printed before each step.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import yaml

from spd_yolo import coco
from spd_yolo.cli import detect, export, train, val
from spd_yolo.cli.common import HelpFormatter, run_main
from spd_yolo.data.synth import generate_demo_dataset

# Settings for a from-scratch CPU run of a few minutes per model at 256 px (objects of a few pixels stay visible):
# short warmup, mosaic off for the last epochs, milder scale jitter.
DEMO_HYP = {"warmup_epochs": 1.0, "close_mosaic": 3, "scale": 0.3}
MODELS = {"yolov5n": "yolov5n.yaml", "yolov5n-SPD": "yolov5n-SPD"}  # label -> --cfg (stock first: diff = SPD - stock)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m spd_yolo.demo", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--root", default="datasets/spd-demo", help="where the demo dataset is generated")
    p.add_argument("--project", default="runs/demo", help="where all outputs go")
    p.add_argument("--epochs", type=int, default=12, help="training epochs per model")
    p.add_argument("--imgsz", type=int, default=256, help="train/val/detect/export size")
    p.add_argument("--batch-size", type=int, default=16, help="training batch size")
    p.add_argument("--n-train", type=int, default=240, help="training images to generate")
    p.add_argument("--n-val", type=int, default=60, help="validation images to generate")
    p.add_argument("--video-frames", type=int, default=60, help="frames of the demo video")
    p.add_argument("--workers", type=int, default=2, help="dataloader workers")
    p.add_argument("--seed", type=int, default=0, help="training seed (data is always generated with seed 0)")
    return p


def _step(title: str, script: str | None = None, argv: list | None = None) -> None:
    line = f"\n{'=' * 100}\n== {title}"
    if script:
        line += f"\n== $ python {script} {shlex.join(map(str, argv or []))}"
    print(line + f"\n{'=' * 100}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    t0 = time.time()
    project = Path(args.project).resolve()
    project.mkdir(parents=True, exist_ok=True)

    _step("1/6 demo dataset", "-m spd_yolo.data.synth", ["--root", args.root])
    data = generate_demo_dataset(
        args.root, n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz, video_frames=args.video_frames
    )
    root = data.parent
    hyp = project / "hyp.demo.yaml"
    hyp.write_text(yaml.safe_dump(DEMO_HYP))

    timings, best = {}, {}
    for i, (label, cfg) in enumerate(MODELS.items(), start=2):
        argv = ["--cfg", cfg, "--data", data, "--hyp", hyp, "--epochs", args.epochs, "--img", args.imgsz,
                "--batch-size", args.batch_size, "--workers", args.workers, "--device", "cpu", "--seed", args.seed,
                "--project", project / "train", "--name", label, "--exist-ok"]
        _step(f"{i}/6 train {label} ({i - 1} of 2)", "train.py", argv)
        start = time.time()
        train.main([str(a) for a in argv])
        timings[label] = time.time() - start
        best[label] = project / "train" / label / "weights" / "best.pt"

    _step("4/6 validate both: ultralytics metrics, then pycocotools' COCO metrics")
    results = {}
    for label, weights in best.items():
        argv = ["--weights", weights, "--data", data, "--img", args.imgsz, "--batch-size", 16,
                "--project", project / "val", "--name", label, "--exist-ok"]
        print(f"$ python val.py {shlex.join(map(str, argv))}", flush=True)
        val.main([str(a) for a in argv])
        results[label] = coco.load_stats(project / "val" / label)

    spd = best["yolov5n-SPD"]
    argv = ["--weights", spd, "--source", root / "video" / "demo.avi", "--img", args.imgsz,
            "--project", project / "detect", "--name", "yolov5n-SPD", "--exist-ok"]
    _step("5/6 detect on the demo video with yolov5n-SPD", "detect.py", argv)
    detect.main([str(a) for a in argv])

    argv = ["--weights", spd, "--include", "onnx", "--img", args.imgsz]
    _step("6/6 export yolov5n-SPD to ONNX, with the onnxruntime parity check", "export.py", argv)
    export.main([str(a) for a in argv])

    table = coco.format_table(results)
    (project / "coco_table.txt").write_text(table + "\n")
    minutes = (time.time() - t0) / 60
    print(f"\n{'=' * 100}\nSPD-YOLO demo done in {minutes:.1f} min (CPU, {args.epochs} epochs per model at "
          f"{args.imgsz} px)")
    print("\nCOCO metrics on the demo validation set (percent; diff = yolov5n-SPD - yolov5n):\n" + table)
    print("\ntraining time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()))
    print("\nOutputs:")
    print(f"  dataset (YOLO + COCO JSON, video): {root}")
    for label in MODELS:
        print(f"  {label:<12} weights, results.csv, plots: {project / 'train' / label}")
        print(f"  {label:<12} val (coco_metrics.json/.csv, predictions.json, PR curves): {project / 'val' / label}")
    print(f"  annotated video:  {project / 'detect' / 'yolov5n-SPD' / 'demo.avi'}")
    print(f"  ONNX model:       {spd.with_suffix('.onnx')}")
    print(f"  COCO table:       {project / 'coco_table.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
