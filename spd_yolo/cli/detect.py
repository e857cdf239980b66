# SPD-YOLO, AGPL-3.0 license
"""detect.py: run a detector (or a classifier) on images, folders, globs, videos, .txt lists, webcams or streams.

Annotated images and videos go to PROJECT/NAME (default runs/detect/exp, exp2, ...); videos keep the input's fps
and frame count (with --vid-stride 1). Frames are processed as a stream, so memory stays flat on long inputs.

A classification checkpoint (e.g. resnet18-SPD) classifies instead: the top-5 classes are drawn on each image
(--save-txt writes them as 'probability name' lines) and the summary counts the top-1 classes. Detection-only flags
(--conf-thres, --iou-thres, --max-det, --classes, --agnostic-nms, --save-crop) do not apply to it.

Examples:
    python detect.py --weights runs/train/exp/weights/best.pt --source datasets/spd-demo/video/demo.avi --img 256
    python detect.py --weights best.onnx --source 'images/*.jpg' --conf-thres 0.4 --save-txt
    python detect.py --weights best.pt --source 0                         # webcam 0
    python detect.py --weights best.pt --source rtsp://host/stream        # stream URL
    python detect.py --weights best.pt --source images/ --strided-spd     # SPD + conv run as strided convs (exact)
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from spd_yolo.cli.common import (
    CLIError,
    HelpFormatter,
    add_device,
    add_imgsz,
    add_run_dir,
    add_strided_spd,
    check_device,
    check_imgsz,
    check_settings,
    check_source,
    check_weights,
    load_model,
    remove_if_empty,
    run_main,
    strided_spd,
    trained_imgsz,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="detect.py", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--weights", default="", help="model: a .pt checkpoint or an exported .onnx")
    p.add_argument(
        "--source", default="", help="image, folder, glob, video, .txt list of paths, webcam index or stream URL"
    )
    add_imgsz(p, default=None, help_extra=" (default: 640 for detectors; a classifier's training size)")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    add_device(p)
    p.add_argument("--view-img", action="store_true", help="show results in a window")
    p.add_argument("--save-txt", action="store_true", help="save results as YOLO .txt labels")
    p.add_argument("--save-conf", action="store_true", help="with --save-txt, add the confidence")
    p.add_argument("--save-crop", action="store_true", help="save a crop of every detection")
    p.add_argument("--nosave", action="store_true", help="do not save annotated images/videos")
    p.add_argument("--classes", type=int, nargs="+", default=None, help="keep only these class ids")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    add_run_dir(p, "runs/detect")
    p.add_argument("--line-thickness", type=int, default=3, help="box line width in pixels")
    p.add_argument("--hide-labels", action="store_true", help="do not draw class names")
    p.add_argument("--hide-conf", action="store_true", help="do not draw confidences")
    p.add_argument("--half", action="store_true", help="FP16 inference (GPU)")
    p.add_argument("--vid-stride", type=int, default=1, help="process every Nth video frame")
    add_strided_spd(p, "run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    if args.imgsz is not None:
        check_imgsz(args.imgsz)
    weights = check_weights(args.weights)
    if not args.source:
        raise CLIError("--source is required: an image, folder, glob, video, .txt list, webcam index or stream URL")
    source = check_source(args.source)
    if args.vid_stride < 1:
        raise CLIError(f"--vid-stride {args.vid_stride}: must be >= 1")
    if args.max_det < 1:
        raise CLIError(f"--max-det {args.max_det}: must be >= 1")
    check_settings({"conf": args.conf_thres, "iou": args.iou_thres, "line_width": args.line_thickness})
    check_device(args.device)
    if args.strided_spd and not weights.endswith(".pt"):
        raise CLIError(f"--strided-spd rewrites a .pt model; {weights} is already exported (export it with "
                       "export.py --strided-spd instead)")
    new_project = not Path(args.project).exists()  # removed again if the run reads nothing
    model = load_model(weights)
    if args.strided_spd:
        strided_spd(model)
    if model.task == "classify":
        return _classify(model, weights, source, args, new_project)
    results = model.predict(
        source=source,
        imgsz=640 if args.imgsz is None else args.imgsz,
        conf=args.conf_thres,
        iou=args.iou_thres,
        max_det=args.max_det,
        save_crop=args.save_crop,
        classes=args.classes,
        agnostic_nms=args.agnostic_nms,
        **_common_options(args),
    )
    n_items = n_boxes = 0
    for r in results:  # a generator: one result at a time, nothing accumulated
        n_items += 1
        n_boxes += len(r.boxes) if r.boxes is not None else 0
    save_dir = _check_any_read(n_items, source, model, args.project if new_project else None)
    print(f"{n_items} images/frames, {n_boxes} detections" + (f"; results saved to {save_dir}" if save_dir else ""))
    return 0


def _check_any_read(n_items: int, source: str, model, new_project: str | None):
    """The run's output folder; a source of which no image or frame could be read is an error (ultralytics has warned
    for each unreadable file), and the empty folders the run made (its own, and `new_project`) are removed."""
    save_dir = model.predictor.save_dir if model.predictor else None
    if n_items == 0:
        remove_if_empty(save_dir)
        remove_if_empty(new_project)
        raise CLIError(f"--source {source}: no readable image or video frame (files that are not images or videos, "
                       f"or damaged ones, are skipped)")
    return save_dir


def _common_options(args) -> dict:
    """predict() options shared by detectors and classifiers (streamed: one result at a time)."""
    return dict(
        stream=True,
        device=args.device or None,
        show=args.view_img,
        save=not args.nosave,
        save_txt=args.save_txt,
        save_conf=args.save_conf,
        project=str(Path(args.project).resolve()),
        name=args.name,
        exist_ok=args.exist_ok,
        line_width=args.line_thickness,
        show_labels=not args.hide_labels,
        show_conf=not args.hide_conf,
        quantize=16 if args.half else None,
        vid_stride=args.vid_stride,
    )


def _classify(model, weights: str, source: str, args, new_project: bool) -> int:
    """Classify every image/frame; print how many and the most frequent top-1 classes."""
    results = model.predict(
        source=source, imgsz=args.imgsz or trained_imgsz(model, weights) or 224, **_common_options(args)
    )
    top1 = Counter()
    for r in results:  # a generator: one result at a time, only the counts are kept
        top1[r.names[r.probs.top1]] += 1
    n_items = sum(top1.values())
    common = ", ".join(f"{name} {n}" for name, n in top1.most_common(5))
    save_dir = _check_any_read(n_items, source, model, args.project if new_project else None)
    print(
        f"{n_items} images/frames classified" + (f", top-1: {common}" if common else "")
        + (f"; results saved to {save_dir}" if save_dir else "")
    )
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, argv)
