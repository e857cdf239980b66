# SPD-YOLO, AGPL-3.0 license
"""`YOLO`: the ultralytics model class, knowing our bare model names, weights-only files and checkpoint errors, and
training and validating detect and classify models with SPD-YOLO's engine classes (`spd_yolo.engine`)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from torch import nn
from ultralytics import YOLO as _YOLO
from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils.checks import check_yolov5u_filename

from spd_yolo.checkpoint import checkpoint_errors
from spd_yolo.engine import (
    SPDClassificationTrainer,
    SPDClassificationValidator,
    SPDDetectionTrainer,
    SPDDetectionValidator,
)
from spd_yolo.models.configs import build_errors, load_model_yaml, probe_forward, resolve_model_cfg
from spd_yolo.models.registry import has_spd
from spd_yolo.upgrade import RECORD_KEY, prepare_pretrained
from spd_yolo.weights import load_weights_only

__all__ = ("SPD_ENGINE", "YOLO")

# task -> the engine classes that replace ultralytics' stock ones in `YOLO.task_map`
SPD_ENGINE = {
    "detect": {"trainer": SPDDetectionTrainer, "validator": SPDDetectionValidator},
    "classify": {"trainer": SPDClassificationTrainer, "validator": SPDClassificationValidator},
}


@contextlib.contextmanager
def _as_named(weights: str | Path) -> Iterator[str]:
    """A path ultralytics loads `weights` from as it is. ultralytics renames any .pt whose name ends like a YOLOv5 or
    YOLOv3 release (my-yolov5n.pt -> my-yolov5nu.pt: `check_yolov5u_filename`, also for a local file that exists) and
    then looks the new name up on GitHub; such a file is read through a link with a neutral name in a temporary
    folder (a copy where links are not allowed), so the file named is the file loaded and nothing is looked up."""
    name = str(weights)
    if not Path(name).is_file() or check_yolov5u_filename(name, verbose=False) == name:
        yield name
        return
    with tempfile.TemporaryDirectory(prefix="spd-yolo-load-") as folder:
        link = Path(folder) / "weights.pt"
        try:
            link.symlink_to(Path(name).resolve())
        except OSError:
            shutil.copyfile(name, link)
        yield str(link)


class YOLO(_YOLO):
    """ultralytics `YOLO` that also accepts our bare model names (``yolov5s-SPD``) from any working directory, and
    whose ``train()`` / ``val()`` use `SPD_ENGINE` for detect and classify: atomic checkpoints, best.weights.pt, the
    COCO table with ``save_json=True``. For per-epoch COCO metrics or best.pt by AP_S, pass
    ``trainer=SPDDetectionTrainer.configured(fitness="ap_small")``. Other tasks keep ultralytics' classes."""

    def __init__(self, model: str | Path = "yolov5n-SPD.yaml", task: str | None = None, verbose: bool = False):
        super().__init__(resolve_model_cfg(model) if isinstance(model, (str, Path)) else model, task, verbose)

    @property
    def task_map(self) -> dict:
        stock = super().task_map
        return {task: {**classes, **SPD_ENGINE.get(task, {})} for task, classes in stock.items()}

    def _new(self, cfg: str, task=None, verbose=False) -> None:
        """Build from a YAML as ultralytics does; any problem is an SPDConfigError naming the file (and layer)."""
        load_model_yaml(cfg)  # file-level problems (not YAML, no backbone, bad nc or scale) get a clear message
        with build_errors(cfg):
            super()._new(cfg, task=task, verbose=verbose)
        probe_forward(self.model, cfg)

    def _load(self, weights: str, task: str | None = None) -> None:
        """Load a checkpoint as ultralytics does; a weights-only file of ours is rebuilt from its YAML. A file that
        is not a checkpoint, is truncated or names a class we lack raises `CheckpointError` saying which."""
        with checkpoint_errors(weights):
            model = load_weights_only(weights, missing_ok=True)  # one read of the file, not a check then a load
            if model is None:
                with _as_named(weights) as path:
                    super()._load(path, task)
                if path != str(weights):  # the file the user named, not the link it was read through
                    self.ckpt_path = self.model_name = self.model.pt_path = self.overrides["model"] = str(weights)
                return
        self.model = model
        self.ckpt = {"model": self.model}  # truthy: train() fine-tunes from these weights
        self.task = self.model.task
        self.overrides = self.model.args = self._reset_ckpt_args(self.model.args)
        self.ckpt_path = self.model_name = str(weights)
        self.overrides.update(model=str(weights), task=self.task)

    def load(self, weights: str | Path | dict | nn.Module = "yolo26n.pt") -> YOLO:
        """ultralytics' `load` (name-and-shape transfer); when this model is the SPD twin of the stock checkpoint, the
        exact SPD upgrade comes first (`spd_yolo.upgrade.prepare_pretrained`) and ``model.spd_upgrade`` records it."""
        self._check_is_pytorch_model()
        source = weights
        if isinstance(weights, (str, Path)) and has_spd(self.model):
            with checkpoint_errors(weights), _as_named(weights) as path:  # read as named, as `_load` reads it
                source, _ = load_checkpoint(path)
            source.pt_path = str(weights)
        if not isinstance(source, nn.Module):
            return super().load(weights)
        source, record = prepare_pretrained(self.model, source)
        super().load(source)
        if isinstance(record, dict):
            setattr(self.model, RECORD_KEY, record)
        return self
