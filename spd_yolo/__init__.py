# SPD-YOLO, AGPL-3.0 license
"""SPD-YOLO: SPD-Conv (space-to-depth + non-strided convolution) YOLO models on the ultralytics engine.

Importing this package (or any module of it: Python runs this file first) loads the SPD layers, registers them in the
ultralytics model-YAML parser and keeps ultralytics offline and from pip-installing anything, unless the environment
sets ``YOLO_OFFLINE`` / ``YOLO_AUTOINSTALL`` itself; nothing else. Checkpoints name our layers as
``spd_yolo.layers.*``, so unpickling one in a fresh process does exactly that too. The other public names (`YOLO`,
`build_model`, ...) load their modules on first use (PEP 562), so the engine, pycocotools and sahi are imported only
by the code that needs them.

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

from spd_yolo.errors import CheckpointError, SPDConfigError, SPDError, SPDSizeError
from spd_yolo.layers import DepthToSpace, SpaceToDepth, SPDConv
from spd_yolo.lazy import lazy_names
from spd_yolo.models import registry

registry.register()

__version__ = "0.1.0"

_LAZY = {
    "YOLO": "spd_yolo.model",
    "CONFIG_DIR": "spd_yolo.models.configs",
    "available_models": "spd_yolo.models.configs",
    "build_model": "spd_yolo.models.configs",
    "load_model_yaml": "spd_yolo.models.configs",
    "resolve_model_cfg": "spd_yolo.models.configs",
    "ModelStats": "spd_yolo.models.summary",
    "model_stats": "spd_yolo.models.summary",
}

__all__ = (
    "CONFIG_DIR",
    "YOLO",
    "CheckpointError",
    "DepthToSpace",
    "ModelStats",
    "SPDConfigError",
    "SPDConv",
    "SPDError",
    "SPDSizeError",
    "SpaceToDepth",
    "available_models",
    "build_model",
    "load_model_yaml",
    "model_stats",
    "resolve_model_cfg",
)

__getattr__, __dir__ = lazy_names(__name__, _LAZY, eager=__all__)
