# SPD-YOLO, AGPL-3.0 license
"""SPD-YOLO: SPD-Conv (space-to-depth + non-strided convolution) YOLO models on the ultralytics engine.

Importing this package (or any module of it: Python runs this file first) registers the SPD layers in the ultralytics
model-YAML parser and keeps ultralytics offline and from pip-installing anything, unless the environment sets
``YOLO_OFFLINE`` / ``YOLO_AUTOINSTALL`` itself. Checkpoints name our layers as ``spd_yolo.layers.*``, so unpickling one
in a fresh process imports this package, and with it everything above.

Examples:
    >>> from spd_yolo import YOLO
    >>> model = YOLO("yolov5s-SPD")  # bare names of ours resolve from any working directory
    >>> model.info()
"""

from __future__ import annotations

import os

# Defaults set before anything below imports ultralytics (which reads them at its import); `register()` applies them to
# an ultralytics that was imported first.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

from spd_yolo.errors import CheckpointError, SPDConfigError, SPDError, SPDSizeError  # noqa: E402
from spd_yolo.layers import DepthToSpace, SPDConv, SpaceToDepth  # noqa: E402
from spd_yolo.models import registry  # noqa: E402

registry.register()

from spd_yolo.models.configs import (  # noqa: E402
    CONFIG_DIR,
    available_models,
    build_model,
    load_model_yaml,
    resolve_model_cfg,
)
from spd_yolo.models.summary import ModelStats, model_stats  # noqa: E402
from spd_yolo.model import YOLO  # noqa: E402

__version__ = "0.1.0"

__all__ = (
    "YOLO",
    "SpaceToDepth",
    "DepthToSpace",
    "SPDConv",
    "SPDError",
    "SPDConfigError",
    "SPDSizeError",
    "CheckpointError",
    "CONFIG_DIR",
    "available_models",
    "build_model",
    "load_model_yaml",
    "resolve_model_cfg",
    "ModelStats",
    "model_stats",
)
