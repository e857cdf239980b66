# SPD-YOLO, AGPL-3.0 license
"""spd-yolo: the ultralytics ``yolo`` command with the SPD-YOLO models, trainers and validators.

Same syntax and modes as ``yolo`` (``spd-yolo [TASK] MODE key=value ...``, ``help``, ``cfg``, ``checks``, ...), run by
ultralytics' own `ultralytics.cfg.entrypoint`; nothing of it is copied. We extend it at three points:

1. ``model=`` values: before the arguments reach the entrypoint, our bare names (``model=yolov8n-SPD.yaml``,
   ``model=resnet18-SPD``) become the path `resolve_model_cfg` gives, so they load from any folder and the run's
   args.yaml records a loadable path. An unknown ``-SPD`` name is an ``error:`` line listing ours; so is a ``.pt`` (or
   suffix-less) name that is no local file (here or in ultralytics' weights_dir) and no ultralytics release asset,
   checked here so that ultralytics does not query GitHub for it; a release asset that is not local is an error line
   too while YOLO_OFFLINE is set (ultralytics would try to download it regardless). A ``.yaml`` name is looked up by
   ultralytics' own search (working directory, then its package: YAMLs are never downloaded); when it finds
   nothing, `spd_yolo.YOLO` raises the ``error:`` line. The same check runs again when the model is built (point 2),
   for the name the entrypoint picks itself when ``model=`` is missing (``yolo26n.pt``).
2. The model class: the entrypoint builds its model with ``from ultralytics import YOLO`` *at call time*, so for the
   duration of the call the attribute ``ultralytics.YOLO`` is `EntrypointYOLO` (then the lazy attribute is restored).
   `EntrypointYOLO` is `spd_yolo.YOLO` (our names, weights-only files, checkpoint errors, and a ``task_map`` that gives
   `SPDDetectionTrainer` / `SPDDetectionValidator` for detect and `SPDClassificationTrainer` /
   `SPDClassificationValidator` for classify) with the model-name check of point 1. This is the one place where the
   model is made, so it is the smallest hook: ``Model.train(trainer=...)`` cannot be reached from outside the
   entrypoint, and patching ``task_map`` of ultralytics' own class would change every ``YOLO`` in the process.
   RT-DETR, SAM, FastSAM and NAS names keep ultralytics' classes.
3. ``info``, which this ultralytics version has no mode for: ``spd-yolo info model=NAME [detailed=True]
   [imgsz=640]`` prints the layers, parameters, gradients and GFLOPs of a model (`Model.info`).

Errors: ours (`SPDError`, a missing file) print one ``error:`` line and exit 1, as the other scripts do. ultralytics'
own argument checks (an unknown mode or argument, a bad value), which `check_cfg_args` runs before the entrypoint,
print ultralytics' message, likewise without a traceback, and so does a failed download of a model or dataset that
ultralytics knows by name (``model=yolo26n.pt``, its default when none is given; offline unless ``YOLO_OFFLINE=0``).
Any other exception keeps its traceback.

Examples:
    spd-yolo detect train model=yolov8n-SPD.yaml data=datasets/spd-demo/data.yaml epochs=30 imgsz=256
    spd-yolo val model=runs/detect/train/weights/best.pt data=datasets/spd-demo/data.yaml save_json=True
    spd-yolo predict model=runs/detect/train/weights/best.pt source=datasets/spd-demo/video/demo.avi
    spd-yolo export model=runs/detect/train/weights/best.pt format=onnx
    spd-yolo info model=yolov5s-SPD
"""

from __future__ import annotations

import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import ultralytics
import ultralytics.cfg
from ultralytics.cfg import (
    DEFAULT_CFG_DICT,
    MODES,
    TASKS,
    check_cfg,
    check_dict_alignment,
    entrypoint,
    merge_equals_args,
    parse_key_value_pair,
    smart_value,
)
from ultralytics.utils import SETTINGS, env_bool
from ultralytics.utils.checks import check_yolov5u_filename
from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

from spd_yolo.cli.common import run_main
from spd_yolo.errors import CLIError
from spd_yolo.model import YOLO
from spd_yolo.models.configs import available_models, resolve_model_cfg

__all__ = ("EntrypointYOLO", "cli", "main")

INFO_KEYS = {"model": None, "detailed": False, "imgsz": 640}  # `spd-yolo info` settings and their defaults
HELP_WORDS = {"help", "h"}  # ultralytics' help commands, without their optional leading dashes
OFFLINE_HINT = (
    " (YOLO_OFFLINE is set: SPD-YOLO keeps ultralytics offline unless the environment says otherwise. Give a local "
    "file, or run with YOLO_OFFLINE=0 to let ultralytics download it)"
)


def usage() -> str:
    """What SPD-YOLO adds to ultralytics' help text (printed before it)."""
    names = textwrap.fill(", ".join(available_models(None)), 120, initial_indent=" " * 21, subsequent_indent=" " * 21)
    return f"""
    spd-yolo: the ultralytics 'yolo' command with SPD-YOLO's models, trainers and validators.
    Type 'spd-yolo' wherever ultralytics' help below says 'yolo'. SPD-YOLO adds:

        model=NAME   our models by bare name, from any folder (with or without .yaml):
{names}
        spd-yolo info model=NAME [detailed=True] [imgsz=640]   layers, parameters and GFLOPs of a model

    train and val of detect and classify models run SPD-YOLO's trainer and validator: atomic checkpoints,
    weights/best.weights.pt, and for detectors COCO metrics (AP_S, AP_M, AP_L) with val save_json=True.

        spd-yolo detect train model=yolov8n-SPD.yaml data=datasets/spd-demo/data.yaml epochs=30 imgsz=256
        spd-yolo val model=runs/detect/train/weights/best.pt data=datasets/spd-demo/data.yaml save_json=True
        spd-yolo predict model=runs/detect/train/weights/best.pt source=path/to/images
        spd-yolo export model=runs/detect/train/weights/best.pt format=onnx
"""


class EntrypointYOLO(YOLO):
    """`spd_yolo.YOLO` (SPD-YOLO's engine classes for detect and classify): the model class ultralytics' CLI
    entrypoint builds under ``spd-yolo``. Its model name is checked by `check_model_name`, also when the entrypoint
    chose it (``yolo26n.pt`` for a TASK without ``model=``)."""

    def __init__(self, model: str | Path = "yolov5n-SPD.yaml", task: str | None = None, verbose: bool = False):
        super().__init__(check_model_name(str(model)) if isinstance(model, (str, Path)) else model, task, verbose)


@contextmanager
def entrypoint_model(cls: type):
    """While inside, ``from ultralytics import YOLO`` (as the entrypoint does when it runs) gives `cls`."""
    own = "YOLO" in vars(ultralytics)  # else the attribute is served lazily by the package's __getattr__
    before = vars(ultralytics).get("YOLO")
    ultralytics.YOLO = cls
    try:
        yield
    finally:
        if own:
            ultralytics.YOLO = before
        else:
            del ultralytics.YOLO


@contextmanager
def entrypoint_argv(args: list[str]):
    """While inside, ultralytics' entrypoint reads `args` as its command line (a list: paths may hold spaces)."""
    before = ultralytics.cfg.ARGV
    ultralytics.cfg.ARGV = ["spd-yolo", *args]
    try:
        yield
    finally:
        ultralytics.cfg.ARGV = before


def check_model_name(value: str) -> str:
    """A ``model=`` value -> what ultralytics should load: our names become paths (unknown ``-SPD`` names raise
    SPDConfigError listing ours). A checkpoint name that is no local file (here or in ultralytics' weights_dir) is a
    CLIError before ultralytics would look for it online: when it is no ultralytics release asset, or when it is one
    but YOLO_OFFLINE is set. Anything else is returned unchanged."""
    resolved = resolve_model_cfg(value)
    path = Path(value)
    if resolved != value or path.exists() or "://" in value or path.suffix.lower() not in ("", ".pt"):
        return resolved
    asset = check_yolov5u_filename(value if path.suffix else f"{value}.pt", verbose=False)  # ultralytics' file name
    if any((folder / name).exists() for folder in (Path(), Path(SETTINGS["weights_dir"])) for name in (value, asset)):
        return value
    if Path(asset).name not in GITHUB_ASSETS_NAMES:
        raise CLIError(
            f"model={value}: no such file, and not a model ultralytics can download. Give a checkpoint or model YAML "
            f"path, or one of ours: {', '.join(available_models(None))}"
        )
    if env_bool("YOLO_OFFLINE"):
        raise CLIError(f"model={value}: not found here or in {SETTINGS['weights_dir']}{OFFLINE_HINT}")
    return value


def resolve_args(args: list[str]) -> list[str]:
    """ultralytics' own argument merging (``model = x`` -> ``model=x``), then every ``model=`` value checked and our
    names mapped to their paths; all other arguments unchanged."""
    out = []
    for a in merge_equals_args(args):
        key, equals, value = a.partition("=")
        if equals and key.strip().removeprefix("--") == "model" and value.strip():
            value = smart_value(value.strip())  # as the entrypoint reads it: quotes removed, 'none' is None
            if isinstance(value, str):
                a = f"model={check_model_name(value)}"
        out.append(a)
    return out


def info(args: list[str]) -> int:
    """``spd-yolo [TASK] info model=NAME [detailed=True] [imgsz=640]``: ultralytics' `Model.info` summary."""
    settings, task = dict(INFO_KEYS), None
    for a in args:
        a = a.removeprefix("--")
        if a == "info":
            continue
        if a in TASKS:
            task = a
        elif "=" in a and a.split("=", 1)[0].strip() in INFO_KEYS:
            try:
                key, value = parse_key_value_pair(a)
            except AssertionError as e:
                raise CLIError(f"info: {e}") from None
            settings[key] = value
        else:
            raise CLIError(f"info: unexpected argument '{a}'; usage: spd-yolo info model=NAME [detailed=True] "
                           f"[imgsz=640]")
    if not settings["model"]:
        raise CLIError(f"info: give model=NAME: a model YAML, a checkpoint or one of {', '.join(available_models())}")
    EntrypointYOLO(str(settings["model"]), task=task).info(
        detailed=bool(settings["detailed"]), verbose=True, imgsz=settings["imgsz"]
    )
    return 0


def check_cfg_args(args: list[str]) -> None:
    """ultralytics' own checks of the ``key=value`` arguments (`parse_key_value_pair`, `check_dict_alignment`: known
    keys, `check_cfg`: types and ranges) and of the mode and task values, run before its entrypoint, so that an error
    they raise is known to be about the input. CLIError with ultralytics' message."""
    overrides = {}
    try:
        for a in args:
            a = a.removeprefix("--").removesuffix(",")  # as the entrypoint reads them
            if "=" not in a:
                continue
            try:
                key, value = parse_key_value_pair(a)
            except (NameError, SyntaxError, ValueError, AssertionError) as e:
                check_dict_alignment(DEFAULT_CFG_DICT, {a: ""}, e)  # ultralytics' message for a bad pair
                raise
            overrides[key] = value
        check_dict_alignment(DEFAULT_CFG_DICT, overrides)
        check_cfg({k: v for k, v in overrides.items() if k != "cfg"})  # a copy: check_cfg converts values in place
    except (NameError, SyntaxError, ValueError, TypeError, AssertionError) as e:
        raise CLIError(str(e).strip()) from None
    mode, task = overrides.get("mode"), overrides.get("task")
    if mode is not None and mode not in MODES:
        raise CLIError(f"Invalid 'mode={mode}'. Valid modes are {list(MODES)}.")
    if task is not None and task not in (*TASKS, "track"):
        raise CLIError(f"Invalid 'task={task}'. Valid tasks are {list(TASKS)}.")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].lower().lstrip("-") in HELP_WORDS:
        print(usage())
        args = ["help"]  # ultralytics' help (also for --help, without its "leading dashes" warning)
    try:
        args = resolve_args(args)  # ultralytics' merge_equals_args: SyntaxError for an unmatched bracket
    except SyntaxError as e:
        raise CLIError(str(e).strip()) from None
    if "info" in args:
        return info(args)
    check_cfg_args(args)
    try:
        with entrypoint_model(EntrypointYOLO), entrypoint_argv(args):
            entrypoint()
    except SyntaxError as e:  # ultralytics' entrypoint raises it for a bare word that is no task, mode or command
        raise CLIError(str(e).strip()) from None
    except ConnectionError as e:  # ultralytics could not download a model or dataset it knows by name
        offline = env_bool("YOLO_OFFLINE")
        raise CLIError(f"{' '.join(str(e).split())}{OFFLINE_HINT if offline else ''}") from None
    return 0


def cli(argv: list[str] | None = None) -> int:
    """Console script ``spd-yolo``."""
    return run_main(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
