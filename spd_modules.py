# SPD-YOLO, AGPL-3.0 license
"""SPD-Conv building blocks under their first name: `SpaceToDepth`, `DepthToSpace`, `SPDConv` and the ResNet blocks.

The layers live in `spd_yolo.layers` (checkpoints written since 0.1 name them there); this module re-exports them so
code that imports ``spd_modules`` and checkpoints that pickled ``spd_modules.SPDConv`` keep working. Importing it
imports `spd_yolo`, which registers the layers in the ultralytics model-YAML parser.
"""

from spd_yolo.errors import SPDSizeError
from spd_yolo.layers import (
    DepthToSpace,
    ResNetBasicBlock,
    ResNetBottleneck,
    ResNetStage,
    ResNetStem,
    SpaceToDepth,
    SPDConv,
    depth_to_space,
    full_res_conv_as_spd,
    space_to_depth,
)

__all__ = (
    "DepthToSpace",
    "ResNetBasicBlock",
    "ResNetBottleneck",
    "ResNetStage",
    "ResNetStem",
    "SPDConv",
    "SPDSizeError",
    "SpaceToDepth",
    "depth_to_space",
    "full_res_conv_as_spd",
    "space_to_depth",
)
