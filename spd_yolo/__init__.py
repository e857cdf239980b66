# SPD-YOLO, AGPL-3.0 license
"""SPD-YOLO: SPD-Conv (space-to-depth + non-strided convolution) YOLO models on the ultralytics engine.

Importing this package registers the SPD layers in the ultralytics model-YAML parser.

Examples:
    >>> from spd_yolo import YOLO
    >>> model = YOLO("yolov5s-SPD")  # bare names of ours resolve from any working directory
    >>> model.info()
"""

from __future__ import annotations

import os
from pathlib import Path

# Never download or pip-install at run time unless the environment says otherwise (set before ultralytics loads).
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

from ultralytics import YOLO as _YOLO  # noqa: E402

import spd_modules  # noqa: F401,E402  (registers the SPD layers)
from spd_modules import SPDConv, SPDSizeError, SpaceToDepth  # noqa: E402
from spd_yolo.errors import SPDConfigError  # noqa: E402
from spd_yolo.models.configs import (  # noqa: E402
    CONFIG_DIR,
    available_models,
    build_errors,
    build_model,
    load_model_yaml,
    probe_forward,
    resolve_model_cfg,
)
from spd_yolo.models.summary import ModelStats, model_stats  # noqa: E402

__version__ = "0.1.0"


__all__ = (
    "YOLO",
    "SpaceToDepth",
    "SPDConv",
    "SPDConfigError",
    "SPDSizeError",
    "CONFIG_DIR",
    "available_models",
    "build_model",
    "resolve_model_cfg",
    "ModelStats",
    "model_stats",
)


class YOLO(_YOLO):
    """ultralytics `YOLO` that also accepts our bare model names (``yolov5s-SPD``) from any working directory."""

    def __init__(self, model: str | Path = "yolov5n-SPD.yaml", task: str | None = None, verbose: bool = False):
        super().__init__(resolve_model_cfg(model) if isinstance(model, (str, Path)) else model, task, verbose)

    def _new(self, cfg: str, task=None, verbose=False) -> None:
        """Build from a YAML as ultralytics does; any problem is an SPDConfigError naming the file (and layer)."""
        load_model_yaml(cfg)  # file-level problems (not YAML, no backbone, bad nc or scale) get a clear message
        with build_errors(cfg):
            super()._new(cfg, task=task, verbose=verbose)
        probe_forward(self.model, cfg)

    def _load(self, weights: str, task: str | None = None) -> None:
        """Load a checkpoint as ultralytics does; a weights-only file of ours is rebuilt from its YAML."""
        from spd_yolo.weights import load_weights_only

        model = load_weights_only(weights, missing_ok=True)  # one read of the file, not a check then a load
        if model is None:
            return super()._load(weights, task)
        self.model = model
        self.ckpt = {"model": self.model}  # truthy: train() fine-tunes from these weights
        self.task = self.model.task
        self.overrides = self.model.args = self._reset_ckpt_args(self.model.args)
        self.ckpt_path = self.model_name = str(weights)
        self.overrides.update(model=str(weights), task=self.task)
