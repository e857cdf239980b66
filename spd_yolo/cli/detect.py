# SPD-YOLO, AGPL-3.0 license
"""detect.py: run a detector (or a classifier) on images, folders, globs, videos, .txt lists, webcams or streams.

Annotated images and videos go to PROJECT/NAME (default runs/detect/exp, exp2, ...); videos keep the input's fps
and frame count (with --vid-stride 1). Frames are processed as a stream, so memory stays flat on long inputs.

A classification checkpoint (e.g. resnet18-SPD) classifies instead: the top-5 classes are drawn on each image
(--save-txt writes them as 'probability name' lines) and the summary counts the top-1 classes. Detection-only flags
(--conf-thres, --iou-thres, --max-det, --classes, --agnostic-nms, --save-crop) do not apply to it.

--slice runs the detector on overlapping slices of each image/frame, each at the inference size (--imgsz), and
merges the boxes (SAHI), for objects too small to survive shrinking the whole frame; the outputs are the same as
without it (annotated images/videos, --save-txt labels normalised to the original frame, --save-crop).

Examples:
    python detect.py --weights runs/train/exp/weights/best.pt --source datasets/spd-demo/video/demo.avi --img 256
    python detect.py --weights best.onnx --source 'images/*.jpg' --conf-thres 0.4 --save-txt
    python detect.py --weights best.pt --source 0                         # webcam 0
    python detect.py --weights best.pt --source rtsp://host/stream        # stream URL
    python detect.py --weights best.pt --source rtsp://host/cam --stream-timeout 5   # end if silent for 5 s
    python detect.py --weights best.pt --source images/ --strided-spd     # SPD + conv run as strided convs (exact)
    python detect.py --weights best.pt --source 4k.mp4 --slice --slice-size 640 --slice-overlap 0.2   # sliced (SAHI)
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from ultralytics.utils import TQDM

from spd_yolo.cli.common import (
    CLIError,
    HelpFormatter,
    NewFolder,
    add_device,
    add_imgsz,
    add_run_dir,
    add_strided_spd,
    check_classes,
    check_device,
    check_imgsz,
    check_settings,
    check_weights,
    load_model,
    note_fixed_size,
    run_main,
    script_name,
    strided_spd,
    trained_imgsz,
)
from spd_yolo.cli.sources import check_source, stream_read_timeout
from spd_yolo.slicing import MATCH_METRICS, MERGE_TYPES, SlicedDetector, SlicedPredictor, SliceSettings

SLICE_DEFAULTS = SliceSettings()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=script_name("detect.py"), description=__doc__, formatter_class=HelpFormatter)
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
    p.add_argument(
        "--stream-buffer", action="store_true",
        help="streams: queue the frames (up to 30) so that none is dropped, though latency grows when inference is "
        "slower than the stream; without it each step takes the latest frame and drops the others, as a live view does",
    )
    p.add_argument(
        "--stream-timeout", type=float, default=None, metavar="SECONDS",
        help="streams: end the run when the stream sends nothing for this long (after one reconnect attempt, as "
        "ultralytics does); default: OpenCV's own 30 s, also the most it allows",
    )
    add_strided_spd(p, "run")
    add_slice_args(p)
    return p


class _SliceOption(argparse.Action):
    """Stores a slice option (nargs=0: a switch). Its default is SUPPRESS, so the namespace holds it only if given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


SLICE_OPTIONS = {"slice_size": "--slice-size", "slice_overlap": "--slice-overlap", "slice_merge": "--slice-merge",
                 "slice_full": "--slice-full", "slice_batch": "--slice-batch"}


def add_slice_args(parser: argparse.ArgumentParser) -> None:
    """--slice and its options (detect.py and val.py)."""
    d = SLICE_DEFAULTS
    g = parser.add_argument_group("sliced inference (SAHI)")
    g.add_argument(
        "--slice", action="store_true",
        help="detect on overlapping slices of each image/frame, each at the inference size (--imgsz), and merge the "
        "boxes (SAHI): finds objects too small to survive shrinking the whole frame",
    )
    kw = {"action": _SliceOption, "default": argparse.SUPPRESS}
    g.add_argument(
        "--slice-size", type=int, nargs="+", metavar="PIXELS", **kw,
        help="slice size: one value (square) or H W (default: the inference size, so each slice is seen at full "
        "resolution; a slice not smaller than the image is the whole image)",
    )
    g.add_argument(
        "--slice-overlap", type=float, metavar="RATIO", **kw,
        help=f"fraction of a slice shared with each neighbour, in [0, 1) (default: {d.overlap})",
    )
    g.add_argument(
        "--slice-merge", nargs="+", metavar=("TYPE", "METRIC [THRESHOLD]"), **kw,
        help=f"how the boxes of overlapping slices are merged: TYPE ({', '.join(MERGE_TYPES)}; LSNMS needs the lsnms "
        f"package) [METRIC ({' or '.join(MATCH_METRICS)}: intersection over union / over the smaller box) "
        f"[THRESHOLD in (0, 1]]] (default: {d.merge} {d.metric} {d.threshold}; with --conf-thres below 0.1, NMS IOU "
        f"{d.threshold} unless given)",
    )
    g.add_argument(
        "--slice-full", nargs=0, **kw,
        help="also detect on the whole frame at the inference size and merge its boxes (large objects)",
    )
    g.add_argument(
        "--slice-batch", type=int, metavar="N", **kw, help=f"slices per forward pass (default: {d.batch})"
    )


def slice_settings(args) -> SliceSettings | None:
    """The SliceSettings of --slice and its options (None without --slice); a bad value is a CLIError naming it."""
    given = [flag for dest, flag in SLICE_OPTIONS.items() if hasattr(args, dest)]
    if not args.slice:
        if given:
            raise CLIError(f"{given[0]} applies only with --slice (sliced inference)")
        return None
    d = SLICE_DEFAULTS
    size = getattr(args, "slice_size", None)
    if size is not None:
        text = " ".join(map(str, size))
        if len(size) > 2:
            raise CLIError(f"--slice-size {text}: give one size or H W")
        if min(size) < 1:
            raise CLIError(f"--slice-size {text}: must be positive")
        size = (size[0], size[-1])
    overlap = getattr(args, "slice_overlap", d.overlap)
    if not 0 <= overlap < 1:
        raise CLIError(f"--slice-overlap {overlap}: must be in [0, 1) (a fraction of the slice size)")
    batch = getattr(args, "slice_batch", d.batch)
    if batch < 1:
        raise CLIError(f"--slice-batch {batch}: must be >= 1")
    merge = getattr(args, "slice_merge", None)
    kind, metric, threshold = d.merge, d.metric, d.threshold
    if merge is not None:
        text = " ".join(merge)
        if len(merge) > 3:
            raise CLIError(f"--slice-merge {text}: give TYPE [METRIC [THRESHOLD]], e.g. GREEDYNMM IOS 0.5")
        kind = merge[0].upper()
        metric = merge[1] if len(merge) > 1 else "IOU" if kind == "LSNMS" else d.metric
        if len(merge) > 2:
            try:
                threshold = float(merge[2])
            except ValueError:
                raise CLIError(f"--slice-merge {text}: the threshold {merge[2]!r} is not a number") from None
    try:
        return SliceSettings(size=size, overlap=overlap, merge=kind, metric=metric, threshold=threshold,
                             keep_merge=merge is not None, full_frame=hasattr(args, "slice_full"), batch=batch)
    except ValueError as e:
        raise CLIError(f"--slice-merge {' '.join(merge or [])}: {e}") from None


def slice_note(message: str) -> None:
    """A note for the user during sliced inference, beside the progress bar."""
    TQDM.write(f"note: {message}", file=sys.stderr)


def inference_size(args_imgsz, model, weights: str):
    """Each slice's inference size: an export's fixed size (a note if --imgsz asked for another), else --imgsz, else
    an export's own size, else 640."""
    fixed = note_fixed_size(args_imgsz, weights)
    if fixed is not None:
        return fixed
    if args_imgsz is not None:
        return args_imgsz
    return (None if weights.endswith(".pt") else trained_imgsz(model, weights)) or 640


def sliced_detector(model, weights: str, settings: SliceSettings, args, imgsz, **kw) -> SlicedDetector:
    """A SlicedDetector for the loaded `model` (detect.py and val.py); a model it cannot slice is a CLIError."""
    if model.task != "detect":
        raise CLIError(f"--slice: --weights {weights} is a '{model.task}' model; sliced inference needs a detector")
    detector = SlicedDetector(model, settings, imgsz=imgsz, conf=args.conf_thres, iou=args.iou_thres,
                              max_det=args.max_det, device=args.device, half=args.half, note=slice_note, **kw)
    h, w = detector.size
    print(
        f"Sliced inference (SAHI): {w}x{h} slices (W x H), overlap {settings.overlap:g}, merged by {detector.merge} "
        f"{detector.metric} {settings.threshold:g}{', plus the whole frame' if settings.full_frame else ''}, "
        f"{settings.batch} per batch, inference size {imgsz}"
    )
    return detector


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with stream_read_timeout(args.stream_timeout):  # checked first; covers the reconnects of LoadStreams' thread
        return _detect(args)


def _detect(args: argparse.Namespace) -> int:
    if args.imgsz is not None:
        check_imgsz(args.imgsz)
    settings = slice_settings(args)
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
    model = load_model(weights)
    if args.strided_spd:
        strided_spd(model)
    if model.task == "detect":
        check_classes(args.classes, model.names, weights)
    if settings is not None:
        return _detect_sliced(model, weights, source, settings, args)
    if model.task == "classify":
        return _classify(model, weights, source, args)
    imgsz = note_fixed_size(args.imgsz, weights) or args.imgsz or 640
    results = model.predict(
        source=source,
        imgsz=imgsz,
        conf=args.conf_thres,
        iou=args.iou_thres,
        max_det=args.max_det,
        save_crop=args.save_crop,
        classes=args.classes,
        agnostic_nms=args.agnostic_nms,
        **_common_options(args),
    )
    n_items = n_boxes = 0
    with _first_result(model.predictor, source) as count:
        for r in results:  # a generator: one result at a time, nothing accumulated
            n_items = count()
            n_boxes += len(r.boxes) if r.boxes is not None else 0
    save_dir = _save_dir(model.predictor)
    print(f"{n_items} images/frames, {n_boxes} detections" + (f"; results saved to {save_dir}" if save_dir else ""))
    return 0


def _detect_sliced(model, weights: str, source: str, settings: SliceSettings, args) -> int:
    """detect.py --slice: the same outputs as a plain run, from sliced inference (spd_yolo.slicing)."""
    imgsz = inference_size(args.imgsz, model, weights)
    detector = sliced_detector(model, weights, settings, args, imgsz, classes=args.classes,
                               agnostic_nms=args.agnostic_nms)
    options = {k: v for k, v in _common_options(args).items() if k != "stream"}
    predictor = SlicedPredictor(detector, overrides={**options, "imgsz": imgsz, "conf": args.conf_thres,
                                                     "save_crop": args.save_crop})
    n_items = n_boxes = 0
    with _first_result(predictor, source) as count:
        for r in predictor.stream(source, model.model):  # one frame at a time, nothing accumulated
            n_items = count()
            n_boxes += len(r.boxes)
    save_dir = _save_dir(predictor)
    print(f"{n_items} images/frames, {n_boxes} detections (sliced)" +
          (f"; results saved to {save_dir}" if save_dir else ""))
    return 0


def _save_dir(predictor):
    return predictor.save_dir if predictor else None


@contextmanager
def _first_result(predictor, source: str):
    """Around a run's loop over its results (the block calls the yielded counter once per result): a run that fails,
    is interrupted or reads no image or frame before its first result removes the folders it made (its run folder,
    and its project folder if new). A source of which nothing could be read is an error (ultralytics has warned for
    each unreadable file); `check_source` has found a file that reads before the run, so that is left to a source that
    changed meanwhile or a stream that sent nothing."""
    made = NewFolder(predictor.save_dir)
    n = 0

    def count() -> int:
        nonlocal n
        n += 1
        return n

    try:
        yield count
    except BaseException:
        if n == 0:
            made.remove()
        raise
    if n == 0:
        made.remove()
        raise CLIError(f"--source {source}: no readable image or video frame (files that are not images or videos, "
                       f"or damaged ones, are skipped)")


def _common_options(args) -> dict:
    """predict() options shared by detectors and classifiers (streamed: one result at a time)."""
    return {
        "stream": True,
        "device": args.device or None,
        "show": args.view_img,
        "save": not args.nosave,
        "save_txt": args.save_txt,
        "save_conf": args.save_conf,
        "project": str(Path(args.project).resolve()),
        "name": args.name,
        "exist_ok": args.exist_ok,
        "line_width": args.line_thickness,
        "show_labels": not args.hide_labels,
        "show_conf": not args.hide_conf,
        "quantize": 16 if args.half else None,
        "vid_stride": args.vid_stride,
        "stream_buffer": args.stream_buffer,
    }


def _classify(model, weights: str, source: str, args) -> int:
    """Classify every image/frame; print how many and the most frequent top-1 classes."""
    imgsz = note_fixed_size(args.imgsz, weights) or args.imgsz or trained_imgsz(model, weights) or 224
    results = model.predict(source=source, imgsz=imgsz, **_common_options(args))
    top1 = Counter()
    with _first_result(model.predictor, source) as count:
        for r in results:  # a generator: one result at a time, only the counts are kept
            count()
            top1[r.names[r.probs.top1]] += 1
    n_items = sum(top1.values())
    common = ", ".join(f"{name} {n}" for name, n in top1.most_common(5))
    save_dir = _save_dir(model.predictor)
    print(
        f"{n_items} images/frames classified" + (f", top-1: {common}" if common else "")
        + (f"; results saved to {save_dir}" if save_dir else "")
    )
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, argv)
