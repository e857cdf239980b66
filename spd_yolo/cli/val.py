# SPD-YOLO, AGPL-3.0 license
"""val.py: validate a detector: ultralytics' metrics AND pycocotools' COCO metrics (AP_S, AP_M, AP_L, AR ...).

The COCO ground truth is the dataset's official annotation file when there is one (``--anno-json``, or
``<path>/annotations/instances_<split folder>.json``, e.g. instances_val2017.json for COCO: crowd regions, mask-based
areas, COCO's 91 category ids), otherwise it is built from the YOLO labels at original image sizes, so small /
medium / large follow COCO's 32^2 / 96^2 pixel thresholds for any dataset. The output says which was used. The table
is saved as coco_metrics.json and coco_metrics.csv in the run folder, beside predictions.json.

Classifiers (the task follows from --weights): --data is the image folder (val/<class>/ or, with --task test,
test/<class>/); top-1 and top-5 accuracy are printed, per class with --verbose, and the confusion matrix is plotted
in the run folder (confusion_matrix.png, confusion_matrix_normalized.png). Detection-only flags are ignored.

--slice evaluates sliced inference (SAHI, the options of detect.py --slice) on the same images and ground truth: the
same table, predictions.json (original pixels) and coco_metrics.json/.csv, so AP_S can be compared with and without
slicing. Only the COCO metrics are computed then (not ultralytics' own).

Examples:
    python val.py --weights runs/train/exp/weights/best.pt --data datasets/spd-demo/data.yaml --img 256
    python val.py --weights best.onnx --data coco.yaml --anno-json datasets/coco/annotations/instances_val2017.json
    python val.py --weights runs/train/exp2/weights/best.pt --data datasets/cifar10 --verbose   # a classifier
    python val.py --weights best.pt --data visdrone.yaml --img 640 --slice --slice-size 640 --slice-overlap 0.2
"""

from __future__ import annotations

import argparse
import functools
import sys
from contextlib import contextmanager
from pathlib import Path

from spd_yolo.cli.common import (
    EXPORTED_WEIGHTS,
    CLIError,
    HelpFormatter,
    NewFolder,
    add_device,
    add_imgsz,
    add_run_dir,
    check_annotation_json,
    check_categories,
    check_cls_data,
    check_data_yaml,
    check_device,
    check_imgsz,
    check_weights,
    data_names,
    load_model,
    note_fixed_size,
    run_folder,
    run_main,
    script_name,
    split_annotation_file,
    trained_imgsz,
)
from spd_yolo.cli.detect import add_slice_args, inference_size, slice_settings, sliced_detector
from spd_yolo.coco import BACKENDS, check_backend, format_table
from spd_yolo.engine import SPDClassificationValidator, SPDDetectionValidator
from spd_yolo.slicing import sliced_coco_eval


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=script_name("val.py"), description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", default="", help="dataset YAML (ultralytics format); for a classifier the image folder")
    p.add_argument("--weights", default="", help="model to validate: a .pt checkpoint or an export that runs here "
                   "(.onnx, .torchscript, .tflite, .mnn, an _openvino_model or _ncnn_model folder)")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    add_imgsz(p, default=None, help_extra=" (default: 640 for detectors; a classifier's training size)")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    p.add_argument("--task", default="val", choices=("val", "test"), help="dataset split to evaluate")
    add_device(p)
    p.add_argument("--workers", type=int, default=8, help="dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat the dataset as one class")
    p.add_argument("--verbose", action="store_true", help="per-class metrics (classifiers: per-class accuracy)")
    p.add_argument("--save-txt", action="store_true", help="save predictions as YOLO .txt labels")
    p.add_argument("--save-conf", action="store_true", help="with --save-txt, add the confidence")
    p.add_argument(
        "--save-json", action="store_true",
        help="kept for YOLOv5 users: predictions.json is always saved, as the COCO metrics need it",
    )
    p.add_argument("--half", action="store_true", help="FP16 inference (GPU)")
    p.add_argument("--anno-json", default="", help="official COCO annotation file to evaluate against")
    p.add_argument(
        "--coco-backend", default="pycocotools", choices=BACKENDS,
        help="COCO metrics by pycocotools (the reference) or faster-coco-eval (same numbers, faster on large sets; "
        "pip install faster-coco-eval)",
    )
    add_run_dir(p, "runs/val")
    add_slice_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.imgsz is not None:
        check_imgsz(args.imgsz)
    settings = slice_settings(args)
    try:
        check_backend(args.coco_backend)
    except ImportError as e:
        raise CLIError(f"--coco-backend {args.coco_backend}: {e}") from e
    if settings is not None and args.coco_backend != "pycocotools":
        raise CLIError(f"--coco-backend {args.coco_backend} is not supported with --slice (sliced evaluation uses "
                       f"pycocotools); drop one of the two flags")
    weights = check_weights(args.weights, EXPORTED_WEIGHTS)
    check_device(args.device)
    if args.data and Path(args.data).is_dir():  # an image folder: only a classifier can use it
        model = load_model(weights)
        if model.task == "classify" and settings is not None:
            raise CLIError(f"--slice: --weights {weights} is a 'classify' model; sliced inference needs a detector")
        if model.task == "classify":
            return _val_classifier(model, weights, args)
        raise CLIError(f"--data {args.data}: a folder, but --weights {weights} is a '{model.task}' model, which "
                       f"needs a dataset YAML (path, train, val, names)")
    if args.anno_json and not Path(args.anno_json).is_file():
        raise CLIError(f"--anno-json {args.anno_json}: file not found")
    anno = split_annotation_file(args.data, args.task, args.anno_json)
    data = check_data_yaml(args.data, (args.task,), labels=False)
    imgsz_given = args.imgsz
    args.imgsz = 640 if args.imgsz is None else args.imgsz
    if not 0 <= args.conf_thres <= 1 or not 0 <= args.iou_thres <= 1:
        raise CLIError("--conf-thres and --iou-thres must be between 0 and 1")
    gt = check_annotation_json(anno[0], anno[1], anno[2]) if anno else None
    model = load_model(weights)
    if model.task == "classify":
        raise CLIError(
            f"--weights {weights} is a classifier: --data must be an image folder (val/<class>/...), not {data}"
        )
    if anno is None:  # a detector's ground truth: the YOLO labels (else the official annotation file)
        check_data_yaml(data, (args.task,))
    names = data_names(data)
    if not args.single_cls and len(model.names) != len(names):
        raise CLIError(
            f"--weights {weights} predicts {len(model.names)} classes but --data {data} has {len(names)}: "
            f"validate on the data it was trained for (or use --single-cls)"
        )
    if gt is not None and not args.single_cls:
        check_categories(gt, model.names, f"{anno[2]} {anno[0]}")
    if settings is not None:
        return _val_sliced(model, weights, data, settings, args, inference_size(imgsz_given, model, weights))
    imgsz = note_fixed_size(imgsz_given, weights)
    if imgsz is not None:
        args.imgsz = imgsz
    with _evaluation_in(run_folder(args.project, args.name, args.exist_ok)):
        metrics = _val(model, args, data)
    result = getattr(metrics, "coco", None)
    if result is None:
        raise CLIError("COCO evaluation did not run")

    print(format_table({Path(weights).name: result}))
    print(f"Results saved to {metrics.save_dir}" if hasattr(metrics, "save_dir") else "")
    return 0


@contextmanager
def _evaluation_in(folder: Path):
    """Around an evaluation that writes to `folder`: if it fails, the folders it made are removed (`NewFolder`), and a
    ValueError (e.g. an annotation file that does not match the dataset or the model's classes) is a CLIError."""
    made = NewFolder(folder)
    try:
        yield
    except ValueError as e:
        made.remove()
        raise CLIError(str(e)) from e
    except BaseException:
        made.remove()
        raise


def _val_sliced(model, weights: str, data: str, settings, args, imgsz) -> int:
    """val.py --slice: sliced inference on the split, the COCO table, saved as a plain run saves it."""
    detector = sliced_detector(model, weights, settings, args, imgsz)
    save_dir = run_folder(args.project, args.name, args.exist_ok)
    with _evaluation_in(save_dir):
        result = sliced_coco_eval(detector, data, save_dir, split=args.task, anno_json=args.anno_json or None,
                                  single_cls=args.single_cls, save_txt=args.save_txt, save_conf=args.save_conf)
    print(f"\nCOCO metrics (pycocotools), ground truth: {result.gt_source}\n{result.summary.rstrip()}")
    print(format_table({f"{Path(weights).name} --slice": result}))
    print(f"Results saved to {save_dir}")
    return 0


def _val(model, args, data):
    """ultralytics validation with our validator (COCO metrics always on)."""
    return model.val(
        validator=functools.partial(
            SPDDetectionValidator, anno_json=args.anno_json or None, coco_backend=args.coco_backend
        ),
        data=data,
        batch=args.batch_size,
        imgsz=args.imgsz,
        conf=args.conf_thres,
        iou=args.iou_thres,
        max_det=args.max_det,
        split=args.task,
        device=args.device or None,
        workers=args.workers,
        single_cls=args.single_cls,
        verbose=args.verbose,
        save_txt=args.save_txt,
        save_conf=args.save_conf,
        save_json=True,
        quantize=16 if args.half else None,
        project=str(Path(args.project).resolve()),
        name=args.name,
        exist_ok=args.exist_ok,
    )


def _val_classifier(model, weights: str, args) -> int:
    """Top-1/top-5 accuracy (per class with --verbose) and the confusion matrix of a classifier on an image folder."""
    data, found = check_cls_data(args.data, (args.task,))
    split = found[args.task]
    if not args.single_cls and len(model.names) != len(split.classes):
        raise CLIError(
            f"--weights {weights} predicts {len(model.names)} classes but {split.folder} has {len(split.classes)} "
            f"class folders: validate on the data it was trained for"
        )
    ignored = [flag for flag, used in (("--anno-json", args.anno_json), ("--save-txt", args.save_txt)) if used]
    if ignored:
        print(f"note: {' and '.join(ignored)} apply to detectors only, ignored for this classifier", file=sys.stderr)
    imgsz = args.imgsz or trained_imgsz(model, weights) or 224
    metrics = model.val(
        validator=SPDClassificationValidator,
        data=data,
        batch=args.batch_size,
        imgsz=imgsz,
        split=args.task,
        device=args.device or None,
        workers=args.workers,
        single_cls=args.single_cls,
        verbose=args.verbose,
        quantize=16 if args.half else None,
        project=str(Path(args.project).resolve()),
        name=args.name,
        exist_ok=args.exist_ok,
    )
    n = sum(n for n, _, _ in (getattr(metrics, "class_accuracy", None) or {}).values())
    print(
        f"{Path(weights).name} on {split.folder} ({n} images, {imgsz} px): top-1 accuracy {metrics.top1:.4f}, "
        f"top-5 accuracy {metrics.top5:.4f}"
    )
    if getattr(metrics, "save_dir", None):
        print(f"Results saved to {metrics.save_dir}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, argv)
