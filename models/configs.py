# SPD-YOLO, AGPL-3.0 license
"""Model names: `yolov5s-SPD`, `yolov5s-SPD-p2`, `yolov8s-SPD-lite`, `yolov5s-p2` (bare, with or without .yaml) -> our
config, from any working directory.

ultralytics picks the scale from the file name (``yolov5s-SPD.yaml`` loads ``yolov5-SPD.yaml`` with scale ``s``) but
only searches the working directory and its own package. `resolve_model_cfg` maps our bare names to a path inside
`CONFIG_DIR` that ultralytics' own loader then reads with the right scale; every other name passes through unchanged.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch
import yaml
from ultralytics.nn import tasks
from ultralytics.nn.modules import Classify, Detect

from spd_yolo.errors import SPDConfigError, SPDSizeError
from spd_yolo.models.registry import SCALED_NAME
from spd_yolo.models.yaml_args import check_model_dict

__all__ = (
    "CONFIG_DIR",
    "available_models",
    "baseline_models",
    "build_errors",
    "build_model",
    "load_model_yaml",
    "probe_forward",
    "resolve_model_cfg",
    "resolve_model_yaml",
)


# yaml_configs/ beside models/ in the source tree; installed, both live inside the spd_yolo package (pyproject).
CONFIG_DIR = Path(__file__).resolve().parent.parent / "yaml_configs"


@cache
def _yaml_names(task: str) -> tuple[str, ...]:
    """Every model name our YAMLs give for `task` ('detect' or 'classify'): one per file and scale."""
    names = []
    for path in sorted(CONFIG_DIR.glob("*.yaml"), key=lambda p: (int(re.search(r"\d+", p.stem).group()), p.stem)):
        cfg = yaml.safe_load(path.read_text()) or {}
        if (tasks.guess_model_task(cfg) == "classify") != (task == "classify"):
            continue
        scales = cfg.get("scales") or {}
        for scale in scales:
            names.append(re.sub(r"(\d+)(-|$)", rf"\g<1>{scale}\2", path.stem, count=1))
        if not scales:  # one model per file (the classification ResNets)
            names.append(path.stem)
    return tuple(names)


def available_models(task: str | None = "detect") -> tuple[str, ...]:
    """Every model name we ship for `task`.

    'detect' (default): the SPD detectors, ('yolov5n-SPD', ..., 'yolov5x-SPD-p2', ..., 'yolo26x-SPD-p2'), one per
    family YAML and scale, families in version order (yolov5, yolov8, yolo11, yolo26), each family's files by name
    (the stock-cost ``-SPD-lite`` ones for yolov8, yolo11 and yolo26); the stock P2 baselines are
    `baseline_models()`. 'classify': the ResNets for small inputs,
    ('resnet18', 'resnet18-SPD', 'resnet50', 'resnet50-SPD') (stock ones included: they are ours, the CIFAR-style
    baselines). None: both, detectors first.
    """
    if task is None:
        return available_models("detect") + available_models("classify")
    if task == "classify":
        return _yaml_names("classify")
    return tuple(n for n in _yaml_names("detect") if "-SPD" in n)


def baseline_models() -> tuple[str, ...]:
    """The stock detectors we ship because ultralytics has none: baselines of SPD models ('yolov5n-p2', ...,
    'yolo11x-p2'). They resolve by bare name like ours; `yolov8n-p2`, `yolo26n-p2` and other stock names stay
    ultralytics'."""
    return tuple(n for n in _yaml_names("detect") if "-SPD" not in n)


def resolve_model_cfg(model: str | Path) -> str:
    """Return what ultralytics should load for `model`.

    Our names (``yolov5s-SPD``, ``yolov5s-SPD.yaml``, the baselines ``yolov5s-p2``) become
    ``CONFIG_DIR/yolov5s-SPD.yaml``: that file does not exist as such, ultralytics reads ``yolov5-SPD.yaml`` beside it
    with scale ``s``. Existing files, checkpoints and stock names (``yolov5n.yaml``, ``yolov8n-p2``, ``yolo11n.pt``)
    are returned unchanged. A name that looks like ours (``-SPD``) but is not one raises `SPDConfigError` listing the
    names that exist.
    """
    text = str(model)
    path = Path(text)
    if path.exists() or path.suffix not in ("", ".yaml", ".yml"):
        return text  # a real file, or a checkpoint/export to be handled by ultralytics
    stem = path.stem if path.suffix else path.name
    unified = SCALED_NAME.sub(r"\1\3", stem)
    family = CONFIG_DIR / f"{unified}.yaml"
    if family.is_file() and (stem == unified or stem in _yaml_names("detect") + _yaml_names("classify")):
        return str(CONFIG_DIR / f"{stem}.yaml")
    if "-spd" in stem.lower():
        raise SPDConfigError(
            f"unknown SPD model '{text}'. Available: {', '.join(available_models(None))} "
            f"(bare names, with or without .yaml), or a path to a model YAML"
        )
    return text


def resolve_model_yaml(model: str | Path) -> str:
    """`resolve_model_cfg` where only a model YAML makes sense (``train.py --cfg``, `load_model_yaml`): a bare name
    that is not a file names a YAML (``yolov5n`` -> ``yolov5n.yaml``, which ultralytics ships), not a checkpoint."""
    path = resolve_model_cfg(model)
    return path if Path(path).suffix or Path(path).exists() else f"{path}.yaml"


def load_model_yaml(model: str | Path) -> dict:
    """Read a model YAML (name or path) the way ultralytics does (scale from the name), with clear errors."""
    path = resolve_model_yaml(model)
    try:
        d = tasks.yaml_model_load(path)
    except FileNotFoundError:
        raise SPDConfigError(
            f"model YAML {model} not found (give a path or one of {', '.join(available_models(None))})"
        ) from None
    except (yaml.YAMLError, TypeError, AttributeError, ValueError) as e:  # bad syntax, or e.g. a list, not a mapping
        raise SPDConfigError(f"{path}: cannot be read as a model YAML (a mapping with nc, backbone, head): {e}"
                             ) from None
    check_model_dict(d)
    return d


def build_model(model: str | Path | dict = "yolov5n-SPD", nc: int | None = None, ch: int = 3, verbose: bool = False):
    """Build an untrained ultralytics model (DetectionModel, ClassificationModel, ...) from a name, path or dict.

    Any failure is an `SPDConfigError` naming the YAML (and the layer where the parser knows it).

    Examples:
        >>> import spd_yolo
        >>> m = spd_yolo.build_model("yolov5s-SPD", nc=80)
        >>> m(torch.zeros(1, 3, 640, 640))
    """
    if isinstance(model, dict):
        check_model_dict(model)  # load_model_yaml checks what it reads
    cfg = model if isinstance(model, dict) else load_model_yaml(model)
    task = tasks.guess_model_task(cfg)
    classes = {
        "detect": tasks.DetectionModel,
        "segment": tasks.SegmentationModel,
        "pose": tasks.PoseModel,
        "obb": tasks.OBBModel,
        "classify": tasks.ClassificationModel,
    }
    if task not in classes:
        raise SPDConfigError(f"{cfg.get('yaml_file', model)}: cannot build a model for task '{task}'")
    source = cfg.get("yaml_file", "<model dict>")
    with build_errors(source):
        model = classes[task](cfg, ch=ch, nc=nc, verbose=verbose)
    probe_forward(model, source)
    return model


def probe_forward(model, source) -> None:
    """Run one forward pass at 256x256 where ultralytics did not (its stride probe covers detection heads only), so a
    model that builds but cannot run (e.g. a repeated head, mismatched concatenation) fails now, naming its YAML.
    A classifier that runs at 64x64 passes without the 256x256 pass (a ResNet50 needs seconds for it on a CPU)."""
    if isinstance(model.model[-1], Detect):
        return  # already run by ultralytics to find the strides
    ch = int(getattr(model, "yaml", {}).get("channels", 3))
    training = model.training
    if isinstance(model.model[-1], Classify):  # classifiers (e.g. ResNet50, 4 GFLOPs at 32) first try a cheap 64x64
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, ch, 64, 64))
            return
        except Exception:  # noqa: BLE001, S110 - any failure is judged at 256x256 below, as for any other model
            pass
        finally:
            model.train(training)
    with build_errors(source, what="builds but cannot run a 256x256 input"), torch.no_grad():
        model.eval()(torch.zeros(1, ch, 256, 256))
        model.train(training)


@contextmanager
def build_errors(source, what: str = "could not be built"):
    """Turn any failure while building a model (e.g. mismatched shapes in the stride probe) into SPDConfigError,
    naming the model layer that was running (recorded by a forward pre-hook, see `_running_layers`)."""
    with _running_layers() as running:
        try:
            yield
        except (SPDConfigError, SPDSizeError):
            raise
        except Exception as e:
            layer = running[-1] if running else None
            where = f" (at layer {layer.i}, {layer.type.rsplit('.', 1)[-1]})" if layer is not None else ""
            raise SPDConfigError(f"{source}: the model {what}{where}: {type(e).__name__}: {e}") from e


@contextmanager
def _running_layers():
    """Within this block, the list it yields holds the last model layer (a module with the ``i`` and ``type`` that the
    parser sets) whose forward started: torch's global forward pre-hook, removed on leaving."""
    running = []

    def record(module, _):
        if hasattr(module, "i") and hasattr(module, "type"):
            running[:] = [module]

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        yield running
    finally:
        handle.remove()
