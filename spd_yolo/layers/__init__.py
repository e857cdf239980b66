# SPD-YOLO, AGPL-3.0 license
"""The SPD layers: plain torch modules that import only torch, ultralytics' `Conv` and our error types.

Checkpoints pickle these classes under ``spd_yolo.layers.*``, so unpickling one imports `spd_yolo` (which registers
them with ultralytics) and, where the project is missing, names a module only this project's distribution provides.
"""

from spd_yolo.layers.resnet import ResNetBasicBlock, ResNetBottleneck, ResNetStage, ResNetStem, full_res_conv_as_spd
from spd_yolo.layers.space_to_depth import DepthToSpace, SpaceToDepth, SPDConv, depth_to_space, space_to_depth
from spd_yolo.layers.spd_group_conv import SPDGroupConv, interleave_phases, space_to_depth_interleaved

__all__ = (
    "LAYERS",
    "DepthToSpace",
    "ResNetBasicBlock",
    "ResNetBottleneck",
    "ResNetStage",
    "ResNetStem",
    "SPDConv",
    "SPDGroupConv",
    "SpaceToDepth",
    "depth_to_space",
    "full_res_conv_as_spd",
    "interleave_phases",
    "space_to_depth",
    "space_to_depth_interleaved",
)

# Every module class of ours that a model can hold (the safe-loading allow-list and the registry use this tuple).
LAYERS = (
    SpaceToDepth, DepthToSpace, SPDConv, SPDGroupConv, ResNetStem, ResNetBasicBlock, ResNetBottleneck, ResNetStage
)
