# SPD-YOLO, AGPL-3.0 license
"""Every error type of SPD-YOLO. Each user mistake we detect raises one of these, with a message that names the file,
flag, line or layer and says what is expected. Scripts print them as one ``error: ...`` line and exit 1.

This module imports nothing of ours, so every other module can use it.
"""

__all__ = (
    "CLIError",
    "CheckpointError",
    "ClassificationDataError",
    "ConversionError",
    "FitnessError",
    "SPDConfigError",
    "SPDError",
    "SPDSizeError",
    "UpgradeError",
)


class SPDError(Exception):
    """Base class of the errors below, for callers that want to catch any of them."""


class SPDConfigError(SPDError, ValueError):
    """A model YAML or model name that cannot be built (unknown module, wrong argument types, a ``from`` that points
    forward, a missing scale, nc < 1, a model that builds but cannot run). Raised by `spd_yolo.build_model`,
    `spd_yolo.YOLO` and the YAML parser; the message names the file, the layer index and the module."""


class SPDSizeError(SPDError, ValueError):
    """An SPD layer got a feature map it cannot rearrange: H or W not divisible by its block size, not 4-D, or (for
    `DepthToSpace`) channels not divisible by s*s. Raised in the forward pass; names the model layer."""


class CheckpointError(SPDError, ValueError):
    """A weights file that cannot be loaded: not a PyTorch checkpoint, empty or truncated, or one that names a class
    or module this installation lacks (the message says which package to install or upgrade)."""


class CLIError(SPDError):
    """A command-line input problem (a flag out of range, a missing file or folder, a source with no readable image):
    the scripts print it as ``error: ...`` and exit 1, without a traceback and before writing anything."""


class ClassificationDataError(SPDError, ValueError):
    """A classification image-folder dataset that is missing or malformed (no split, no class folder, an empty class,
    classes that differ between splits). Raised by `spd_yolo.data.folders`; names the folder."""


class ConversionError(SPDError, ValueError):
    """A dataset converter's source that is missing a file or folder or is malformed (`spd_yolo.data.convert`); names
    the file and, for text formats, the line."""


class FitnessError(SPDError, ValueError):
    """A training fitness that cannot select best.pt: an unknown name, or a COCO stat that is undefined on the
    validation set (AP_S with no small object, AP with no object). Raised by `spd_yolo.engine.SPDDetectionTrainer`
    before the first epoch; names the fitness, the stat and where the ground truth came from."""


class UpgradeError(SPDError, ValueError):
    """A stock checkpoint that cannot be upgraded exactly to an SPD model (`spd_yolo.upgrade`): not a detection model,
    already an SPD model, a fused model, a target that is not its SPD twin (another family, scale or head, or a
    ``-lite`` model), an output that exists, or outputs that differ after the upgrade. Names the file and, where one is
    to blame, the layer."""
