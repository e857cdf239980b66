# SPD-YOLO, AGPL-3.0 license
"""train.py: train a detector or classifier with YOLOv5's flags on the ultralytics trainer, SPD layers registered.

Examples:
    python train.py --cfg yolov5n-SPD --data datasets/spd-demo/data.yaml --epochs 30 --img 256 --batch-size 16
    python train.py --cfg yolov5s-SPD --weights yolov5su.pt --data my.yaml  # exact SPD upgrade, then fine-tune
    python train.py --weights runs/train/exp/weights/best.pt --data my.yaml  # fine-tune a checkpoint
    python train.py --resume runs/train/exp                                  # continue an interrupted run
    python train.py --cfg yolov5s-SPD --data my.yaml --device 0,1             # multi-GPU (DDP)
    python train.py --cfg resnet18-SPD --data datasets/cifar10 --img 32      # classification (image folders)
    python train.py --cfg yolov5s-SPD --data my.yaml --fitness ap_small      # best.pt = best COCO AP_S epoch
    python train.py --cfg yolov5s-SPD-p2 --data frames.yaml --tile 640 --fitness ap_small  # tiles, sliced AP_S

The task follows from the model (a ResNet YAML or classification checkpoint trains a classifier); --task says it
explicitly. Detection data is an ultralytics data YAML; classification data is a folder with train/<class>/ and
val/<class>/ (or test/<class>/), see `python -m spd_yolo.data.convert` for CIFAR-10 and Tiny ImageNet.

Results: PROJECT/NAME/ (default runs/train/exp, exp2, ...) with weights/best.pt, weights/last.pt, results.csv,
plots and args.yaml. With --coco-metrics (or --fitness ap/ap_small) results.csv and results.png also have the columns
metrics/coco_AP, metrics/coco_AP_S, metrics/coco_AP_M, metrics/coco_AP_L (pycocotools' COCOeval, fractions 0-1 like
ultralytics' mAP columns; -1 where undefined, i.e. the validation set has no object of that size, or for an epoch that
was not validated) and time/coco_eval_s (seconds the epoch spent on them); the ground truth is the dataset's official
annotations/instances_<split>.json if it ships one, else the YOLO labels at original image sizes, as in val.py.

--tile SIZE trains on tiles of the training frames cut at native resolution where sliced inference cuts them
(`spd_yolo.data.tiles`; made once in <dataset root>-tiles/ beside the dataset and reused while the settings and files
match), at --img SIZE unless given. The validation frames stay whole: the COCO metrics (--coco-metrics, --fitness ap /
ap_small) come from sliced inference on them with slices of the tile size and overlap (the code of val.py --slice),
so best.pt is the best epoch by AP_S as `val.py --slice` measures it; the stock mAP columns stay those of the plain
pass on the whole frames at --img.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from ultralytics.cfg import DEFAULT_CFG_DICT
from ultralytics.utils import LOGGER

from spd_yolo.cli.common import (
    CLIError,
    HelpFormatter,
    NewFolder,
    add_device,
    add_imgsz,
    add_run_dir,
    cfg_task,
    check_annotation_json,
    check_categories,
    check_cls_data,
    check_data_yaml,
    check_device,
    check_imgsz,
    check_settings,
    check_weights,
    cls_imgsz_from_data,
    data_names,
    load_model,
    parse_freeze,
    run_folder,
    run_main,
    script_name,
    split_annotation_file,
)
from spd_yolo.data.tiles import TileSettings
from spd_yolo.engine import (
    FITNESS,
    FITNESS_KEY,
    SPDClassificationTrainer,
    SPDDetectionTrainer,
    checkpoint_record,
    label_smoothing,
)
from spd_yolo.errors import ConversionError, FitnessError
from spd_yolo.model import YOLO
from spd_yolo.models.configs import resolve_model_yaml
from spd_yolo.slicing import SliceSettings
from spd_yolo.tile_training import SlicedTrainer, tile_slices, tiled_data
from spd_yolo.upgrade import DEFAULT_FINETUNE, FINETUNE_RULES

# YOLOv5 hyperparameters that the anchor-free ultralytics head has no use for: accepted in --hyp files, ignored.
YOLOV5_ONLY_HYP = {"obj", "obj_pw", "iou_t", "anchor_t", "anchors", "fl_gamma", "cls_pw"}
OPTIMIZERS = ("SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "auto")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=script_name("train.py"), description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--cfg", default="", help="model YAML or bare name, e.g. yolov5s-SPD, yolo11n-SPD, yolov5s.yaml")
    p.add_argument(
        "--weights", default="",
        help="checkpoint to start from; with --cfg, every tensor whose name and shape match is transferred, after "
        "the exact SPD upgrade when --cfg is the SPD twin of a stock checkpoint (yolo11n-SPD from yolo11n.pt)",
    )
    p.add_argument(
        "--data", default="",
        help="detection: dataset YAML (ultralytics format: path, train, val, names); classification: a folder with "
        "train/<class>/ and val/<class>/ (or test/<class>/)",
    )
    p.add_argument(
        "--task", default=None, choices=("detect", "classify"),
        help="detect or classify (default: the model's task, from --cfg or --weights)",
    )
    p.add_argument("--hyp", default="", help="hyperparameter YAML (lr0, momentum, box, cls, hsv_h, mosaic, ...)")
    p.add_argument("--epochs", type=int, default=100, help="number of epochs")
    p.add_argument("--batch-size", type=int, default=16, help="total batch size over all GPUs (-1: AutoBatch)")
    add_imgsz(
        p, default=None,
        help_extra=", train and val (default: 640 for detection; for classification the first training image's size "
        "rounded up to a multiple of 32, e.g. 32 for CIFAR-10, 64 for Tiny ImageNet)",
    )
    add_device(p, multi=True)
    p.add_argument("--workers", type=int, default=8, help="dataloader workers (per process in DDP)")
    add_run_dir(p, "runs/train")
    p.add_argument(
        "--resume", nargs="?", const=True, default=False, metavar="PATH",
        help="resume an interrupted run: its last.pt or run folder (no PATH: the latest run under PROJECT). It "
        "continues with the settings it started with; only --device, --workers and --data (the dataset moved) may "
        "be given with it",
    )
    p.add_argument("--seed", type=int, default=0, help="global training seed")
    p.add_argument("--optimizer", default="auto", choices=OPTIMIZERS, help="optimizer")
    p.add_argument("--cos-lr", action="store_true", help="cosine learning-rate schedule")
    p.add_argument("--patience", type=int, default=100, help="early stop after this many epochs without improvement")
    p.add_argument(
        "--freeze", type=int, nargs="+", default=None, metavar="N",
        help="freeze layers: one number N freezes the first N layers (10 = backbone), several freeze those indices",
    )
    p.add_argument("--save-period", type=int, default=-1, help="also save a checkpoint every N epochs (-1: off)")
    p.add_argument(
        "--cache", nargs="?", const="ram", default=None, choices=("ram", "disk"),
        help="cache images in 'ram' (default when given) or on 'disk'",
    )
    p.add_argument("--single-cls", action="store_true", help="train all classes as one class")
    p.add_argument("--rect", action="store_true", help="rectangular training batches")
    p.add_argument("--noval", action="store_true", help="validate only after the final epoch")
    p.add_argument("--noplots", action="store_true", help="save no plots")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing epsilon for the class loss")
    p.add_argument(
        "--coco-metrics", action="store_true",
        help="detection: each epoch's validation also computes COCO AP, AP_S, AP_M, AP_L with pycocotools (results.csv "
        "columns metrics/coco_AP, metrics/coco_AP_S, ... as fractions, -1 where undefined; time/coco_eval_s), and the "
        "final validation of best.pt prints and saves the full COCO table",
    )
    p.add_argument(
        "--fitness", default=None, choices=tuple(FITNESS),
        help="detection: what best.pt and --patience maximise: default = ultralytics' fitness (mAP50-95), "
        "ap = COCO AP, ap_small = COCO AP_S (small objects); ap and ap_small imply --coco-metrics and need objects of "
        "their size in the validation set. The checkpoints record it; not given: default, with --resume the run's own "
        "(a different value is refused)",
    )
    p.add_argument(
        "--upgrade-rule", default=DEFAULT_FINETUNE, choices=tuple(FINETUNE_RULES),
        help="training that starts from an exact SPD upgrade of a stock checkpoint: sgd = SGD instead of --optimizer "
        "auto (measured best: docs/benchmarks.md); none = ultralytics' defaults; sgd-hold / auto-hold = also hold the "
        "upgrade's zero-started weights at zero for the first half of the epochs (the model trains as the stock one "
        "would), then train them. Recorded in the checkpoints",
    )
    p.add_argument(
        "--tile", type=int, nargs="+", default=None, metavar="PIXELS",
        help="detection: train on tiles of this size (one value or H W, multiples of 32) cut from the training frames "
        "at native resolution (cached beside the dataset); --img defaults to it, and the COCO metrics (--coco-metrics, "
        "--fitness) are measured by sliced inference on the whole validation frames with slices of the tile size",
    )
    p.add_argument(
        "--tile-overlap", type=float, default=None, metavar="RATIO",
        help="with --tile: fraction of a tile shared with each neighbour, in [0, 1), for the tiles and the validation "
        "slices (default: 0.2)",
    )
    return p


def tile_settings(args) -> TileSettings | None:
    """The TileSettings of --tile / --tile-overlap (None without --tile); a bad value is a CLIError naming the flag."""
    if args.tile is None:
        if args.tile_overlap is not None:
            raise CLIError("--tile-overlap applies only with --tile")
        return None
    text = " ".join(map(str, args.tile))
    if len(args.tile) > 2:
        raise CLIError(f"--tile {text}: give one size or H W")
    if min(args.tile) < 32 or any(v % 32 for v in args.tile):
        raise CLIError(f"--tile {text}: each size must be a positive multiple of 32")
    overlap = 0.2 if args.tile_overlap is None else args.tile_overlap
    if not 0 <= overlap < 1:
        raise CLIError(f"--tile-overlap {overlap}: must be in [0, 1) (a fraction of the tile size)")
    return TileSettings(size=(args.tile[0], args.tile[-1]), overlap=overlap)


def load_hyp(path: str) -> dict:
    """Read a --hyp YAML; YOLOv5-only keys are ignored with a warning, unknown keys are an error naming them."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--hyp {path}: file not found")
    try:
        hyp = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise CLIError(f"--hyp {path}: not valid YAML ({e})") from None
    if not isinstance(hyp, dict):
        raise CLIError(f"--hyp {path}: expected a mapping of hyperparameter: value")
    ignored = sorted(set(hyp) & YOLOV5_ONLY_HYP)
    if ignored:
        LOGGER.warning(f"--hyp {path}: YOLOv5-only keys ignored by the anchor-free head: {', '.join(ignored)}")
    unknown = sorted(k for k in hyp if k not in DEFAULT_CFG_DICT and k not in YOLOV5_ONLY_HYP)
    if unknown:
        raise CLIError(f"--hyp {path}: unknown hyperparameters {', '.join(unknown)} (see ultralytics cfg/default.yaml)")
    return {k: v for k, v in hyp.items() if k not in YOLOV5_ONLY_HYP}


# --resume continues a run with its own settings; these flags may come with it (ultralytics applies them on resume).
RESUME_FLAGS = {"resume", "project", "device", "workers", "data", "fitness", "coco_metrics"}


def given_flags(argv: list[str] | None) -> dict[str, str]:
    """dest -> the flag as written in --help (its first option string), for every flag on the command line."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    given = vars(parser.parse_args(argv))
    return {a.dest: a.option_strings[0] for a in parser._actions if a.dest in given and a.option_strings}


def check_resumable(model, last: str, resume) -> None:
    """The checkpoint --resume names must be an interrupted run's: a finished run (its checkpoints are stripped of
    the optimizer, epoch -1), a checkpoint of the last epoch, best.pt or a file that is not a training checkpoint is
    refused with the way forward (ultralytics would warn and start a new run on its own default dataset)."""
    ckpt, path = model.ckpt or {}, Path(last)
    run = path.parent.parent if path.parent.name == "weights" else None
    train_args = ckpt.get("train_args") or {}
    total, epoch = train_args.get("epochs"), ckpt.get("epoch", -1)
    if not train_args:
        raise CLIError(f"--resume {resume}: {last} is not a training checkpoint (no epoch or optimizer state): nothing "
                       f"to resume; to train from its weights, give --weights {last}")
    if epoch is None or epoch < 0 or ckpt.get("optimizer") is None or total and epoch + 1 >= total:
        done = epoch + 1 if epoch is not None and epoch >= 0 else _epochs_logged(run)
        best = run / "weights" / "best.pt" if run is not None and (run / "weights" / "best.pt").is_file() else path
        where = (f"the latest run, {run or last}," if resume is True else "the run") + " finished" + (
            f" (epoch {done}/{total})" if done and total else "")
        raise CLIError(f"--resume {resume}: {where}: nothing to resume; to train further, start a new run from its "
                       f"weights with --weights {best}")
    if path.name == "best.pt":
        raise CLIError(f"--resume {resume}: best.pt holds the best epoch's weights, not where training stopped; resume "
                       f"from the run folder or its last.pt ({path.with_name('last.pt')})")


def _epochs_logged(run: Path | None) -> int | None:
    """Epochs a run's results.csv lists (a finished run's checkpoints no longer say)."""
    csv = run / "results.csv" if run is not None else None
    if csv is None or not csv.is_file():
        return None
    return max(0, len(csv.read_text(encoding="utf-8").strip().splitlines()) - 1)


def check_resume_flags(given: dict[str, str], args, model, last: str) -> None:
    """Flags --resume cannot apply are refused, all of them in one line, never ignored (ultralytics ignores most with
    a warning, and --epochs without one)."""
    run_args = (model.ckpt or {}).get("train_args") or {}
    keys = {"batch_size": "batch", "noval": "val", "noplots": "plots"}
    refused, theirs = [], []
    for dest, flag in given.items():
        if dest in RESUME_FLAGS and not (dest == "project" and args.resume is not True):
            continue
        value = getattr(args, dest)
        refused.append(flag if isinstance(value, bool) else
                       f"{flag} {' '.join(map(str, value)) if isinstance(value, list) else value}")
        if keys.get(dest, dest) in run_args:
            theirs.append(f"{keys.get(dest, dest)}={run_args[keys.get(dest, dest)]}")
    if refused:
        text, run_values = " ".join(refused), f" ({', '.join(theirs)})" if theirs else ""
        raise CLIError(f"{text}: --resume continues the run with the settings it started with{run_values}; only "
                       f"--device, --workers and --data may come with it. To change them, start a new run from its "
                       f"weights: --weights {last} {text}")


def resume_checkpoint(resume, project: str) -> str:
    """--resume value -> the last.pt to continue from."""
    if resume is True:
        runs = sorted(Path(project).glob("*/weights/last.pt"), key=lambda f: f.stat().st_mtime)
        if not runs:
            raise CLIError(f"--resume: no run with weights/last.pt under {project}")
        return str(runs[-1])
    p = Path(resume)
    last = p / "weights" / "last.pt" if p.is_dir() else p
    if not last.is_file():
        raise CLIError(f"--resume {resume}: {last} not found (give a run folder or its weights/last.pt)")
    return str(last)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resume:
        last = resume_checkpoint(args.resume, args.project)
        model = load_model(last, flag="--resume")
        check_resumable(model, last, args.resume)
        given = given_flags(argv)
        check_resume_flags(given, args, model, last)
        check_device(args.device)
        honoured = {k: getattr(args, k) for k in ("device", "workers") if k in given}
        if model.task == "classify":
            if args.data:
                honoured["data"], _ = check_cls_data(args.data, ("train", "val"))
            return _train(model, resume=True, trainer=SPDClassificationTrainer, **honoured)
        run_data = ((model.ckpt or {}).get("train_args") or {}).get("data")
        if args.data:
            honoured["data"] = check_data_yaml(args.data, ("train", "val"))
        else:
            check_data_yaml(run_data, ("train", "val"), flag=f"--resume {args.resume}: the run's data YAML")
        saved = checkpoint_record(model.ckpt, FITNESS_KEY) or {"name": "default", "coco_metrics": False}
        changed = args.fitness not in (None, saved["name"]) or args.coco_metrics and not saved["coco_metrics"]
        if changed:
            flag = f"--fitness {args.fitness}" if args.fitness not in (None, saved["name"]) else "--coco-metrics"
            raise CLIError(
                f"{flag}: a resumed run keeps the settings it started with (--fitness {saved['name']}"
                f"{', --coco-metrics' if saved['coco_metrics'] else ''}); start a new run to change them"
            )
        if saved["coco_metrics"]:
            check_val_annotations(args.data or run_data, model.names)
        slices = tile_slices(args.data or run_data)  # a --tile run: validated sliced, as it started
        trainer = (SlicedTrainer if slices else SPDDetectionTrainer).configured(saved["name"], saved["coco_metrics"])
        if slices is not None:
            trainer = trainer.sliced(slices)
        return _train(model, resume=True, trainer=trainer, callbacks=[("on_pretrain_routine_end", _check_fitness)],
                      **honoured)

    if args.imgsz is not None:
        check_imgsz(args.imgsz)
    if args.batch_size == 0 or args.batch_size < -1:
        raise CLIError(f"--batch-size {args.batch_size}: must be a positive number of images (or -1 for AutoBatch)")
    if args.epochs < 1:
        raise CLIError(f"--epochs {args.epochs}: must be >= 1")
    if not 0.0 <= args.label_smoothing < 1.0:
        raise CLIError(f"--label-smoothing {args.label_smoothing}: must be in [0, 1)")
    check_device(args.device)
    weights = check_weights(args.weights, (".pt",)) if args.weights else None
    if not args.cfg and not weights:
        raise CLIError("give --cfg (model YAML or name, e.g. yolov5n-SPD) and/or --weights (a .pt checkpoint)")
    model = None
    if args.cfg:
        task = cfg_task(resolve_model_yaml(args.cfg))
    else:
        model = load_model(weights)
        task = model.task
    if args.task and args.task != task:
        raise CLIError(f"--task {args.task}: the model {args.cfg or weights} is a '{task}' model")
    if task not in ("detect", "classify"):
        raise CLIError(f"the model {args.cfg or weights} is a '{task}' model; train.py trains detect and classify")
    tiling = tile_settings(args)
    if task != "detect" and tiling is not None:
        raise CLIError(f"--tile: tiles are for detection; the model {args.cfg or weights} is a '{task}' model")
    if task != "detect" and (args.fitness not in (None, "default") or args.coco_metrics):
        flag = "--coco-metrics" if args.fitness in (None, "default") else f"--fitness {args.fitness}"
        raise CLIError(f"{flag}: COCO metrics are for detection; the model {args.cfg or weights} is a '{task}' model")
    if task == "classify":
        data, _ = check_cls_data(args.data, ("train", "val"))
        if args.imgsz is None:
            args.imgsz = cls_imgsz_from_data(data)
            print(f"--imgsz not given: training at {args.imgsz} (the training images' size, rounded up to 32)")
    else:
        data = check_data_yaml(args.data, ("train", "val"))
        if args.coco_metrics or FITNESS[args.fitness or "default"]:
            check_val_annotations(data, data_names(data))
        if tiling is not None:
            data = _tiled(data, tiling, args)
        args.imgsz = (max(tiling.size) if tiling else 640) if args.imgsz is None else args.imgsz
    overrides = load_hyp(args.hyp) if args.hyp else {}
    model = model or YOLO(resolve_model_yaml(args.cfg))
    if args.label_smoothing:
        model.add_callback("on_pretrain_routine_end", label_smoothing(args.label_smoothing))
    overrides.update(
        data=data,
        epochs=args.epochs,
        batch=args.batch_size,
        imgsz=args.imgsz,
        device=args.device or None,
        workers=args.workers,
        project=str(Path(args.project).resolve()),
        name=args.name,
        exist_ok=args.exist_ok,
        seed=args.seed,
        optimizer=args.optimizer,
        cos_lr=args.cos_lr,
        patience=args.patience,
        freeze=parse_freeze(args.freeze),
        save_period=args.save_period,
        cache=args.cache or False,
        single_cls=args.single_cls,
        rect=args.rect and task == "detect",  # classification batches are square crops
        val=not args.noval,
        plots=not args.noplots,
    )
    check_settings(overrides, hyp=args.hyp)
    if args.cfg and weights:
        overrides["pretrained"] = weights  # ultralytics transfers name+shape matches and logs "Transferred N/M items"
    if task == "classify":
        return _train(model, trainer=SPDClassificationTrainer, **overrides)
    base = SPDDetectionTrainer if tiling is None else SlicedTrainer
    trainer = base.configured(args.fitness or "default", args.coco_metrics, args.upgrade_rule)
    if tiling is not None:
        trainer = trainer.sliced(SliceSettings(size=tiling.size, overlap=tiling.overlap))
    return _train(model, trainer=trainer, callbacks=[("on_pretrain_routine_end", _check_fitness)], **overrides)


def _tiled(data: str, tiling: TileSettings, args) -> str:
    """--tile: the data YAML of the tiled training set (made or reused); a bad dataset is a CLIError."""
    try:
        tiled = tiled_data(data, tiling)
    except ConversionError as e:
        raise CLIError(f"--tile: {e}") from None
    if not (args.coco_metrics or FITNESS[args.fitness or "default"]):
        LOGGER.warning("--tile without --coco-metrics or --fitness: best.pt is chosen by the plain mAP of whole "
                       "validation frames at --img; --fitness ap_small chooses it by sliced AP_S (as val.py --slice "
                       "measures it)")
    return tiled


def _check_fitness(trainer) -> None:
    """Callback before the first epoch: the COCO metric --fitness selects by must be defined on the validation set
    (else one clear error line, not a traceback)."""
    try:
        trainer.check_fitness()
    except FitnessError as e:
        raise CLIError(f"--fitness {trainer.fitness_name}: {e}") from None


def check_val_annotations(data: str, names: dict) -> None:
    """With COCO metrics each epoch's validation reads the dataset's official annotation file if it ships one
    (annotations/instances_<val folder>.json): it must be valid, list the validation images and map onto the classes
    before the first epoch trains, not fail after it."""
    found = split_annotation_file(data, "val")
    if found is not None:
        anno, images, where = found
        check_categories(check_annotation_json(anno, images, where), names, f"{where} {anno}")


def _train(model, callbacks=(), **kwargs) -> int:
    """Run the training; on Ctrl-C say how to resume (last.pt is only ever replaced atomically, so it is intact).
    A new run that fails or is interrupted before its first checkpoint removes the folders it made (a resumed run's
    folder is the user's and is kept)."""
    for event, callback in callbacks:
        model.add_callback(event, callback)
    made = None if kwargs.get("resume") else NewFolder(
        run_folder(kwargs["project"], kwargs["name"], kwargs["exist_ok"]))

    def nothing_to_resume() -> bool:
        trainer = model.trainer
        last = Path(trainer.last) if trainer is not None else made.folder / "weights" / "last.pt" if made else None
        if last is not None and last.is_file():
            return False
        if made is not None:
            made.remove()
        return True

    try:
        model.train(**kwargs)
    except KeyboardInterrupt:
        if nothing_to_resume():
            print("training interrupted before the first epoch ended: nothing to resume", file=sys.stderr)
        else:
            resume = script_name("python train.py")
            print(f"training interrupted: resume with  {resume} --resume {model.trainer.save_dir}", file=sys.stderr)
        return 130
    except BaseException:
        nothing_to_resume()
        raise
    print(f"Results saved to {model.trainer.save_dir}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, argv)
