# SPD-YOLO, AGPL-3.0 license
"""4-D-only forms of the SPD rearrangements, for export: no tensor above rank 4 in the traced graph.

`space_to_depth` and `depth_to_space` reshape to 6-D, which NCNN (and some TFLite / OpenVINO paths) cannot run. The
forms here give bit-identical outputs with rank-4 operations only, so every runtime that takes a convolution also
takes them:

- `space_to_depth_4d`: (B, C, H, W) -> (B, s*s*C, H/s, W/s) with contiguous slices only (NCNN has no strided
  slice): reshaped to (B, C, H/s, s*W), slice i of width W holds the rows i::s; each of those reshaped to
  (B, C, H/s * W/s, s), slice j of width 1 holds the columns j::s. The s*s maps are concatenated along channels in
  SpaceToDepth's order (column offset j outer, row offset i inner).
- `depth_to_space_4d`: its inverse by 4-D reshapes and transposes only: rows are interleaved by concatenating along
  W and reshaping (B, C, H, s*W) -> (B, C, s*H, W); columns likewise after swapping H and W.

They move values and never add or multiply them, so they are exact in every dtype. Export-only: the 6-D forms are
one copy instead of s*s (faster for training).
"""

from __future__ import annotations

import torch
from torch import nn

from spd_yolo.layers.space_to_depth import DepthToSpace, SpaceToDepth

__all__ = ("ChannelGather", "DepthToSpace4D", "SpaceToDepth4D", "depth_to_space_4d", "space_to_depth_4d")


def space_to_depth_4d(x: torch.Tensor, s: int = 2) -> torch.Tensor:
    """(B, C, H, W) -> (B, s*s*C, H/s, W/s), equal to `space_to_depth`, with 4-D reshapes, contiguous slices and one
    cat."""
    b, c, h, w = x.shape
    h2, w2 = h // s, w // s
    rows = x.reshape(b, c, h2, s * w)  # row r of the result = input rows s*r .. s*r + s - 1 side by side
    by_row = [rows[:, :, :, i * w : (i + 1) * w].reshape(b, c, h2 * w2, s) for i in range(s)]  # rows i::s
    return torch.cat([r[:, :, :, j : j + 1].reshape(b, c, h2, w2) for j in range(s) for r in by_row], 1)


def _interleave_rows(parts: list[torch.Tensor]) -> torch.Tensor:
    """n maps (B, C, H, W) -> (B, C, n*H, W) with row n*r + k = row r of parts[k] (4-D reshape only)."""
    b, c, h, w = parts[0].shape
    return torch.cat(parts, 3).reshape(b, c, h * len(parts), w)


def depth_to_space_4d(x: torch.Tensor, s: int = 2) -> torch.Tensor:
    """(B, s*s*C, H, W) -> (B, C, s*H, s*W), equal to `depth_to_space`, with rank-4 operations only."""
    c = x.shape[1] // (s * s)
    block = [x[:, (s * j + i) * c : (s * j + i + 1) * c] for j in range(s) for i in range(s)]  # block of phase (i, j)
    columns = [_interleave_rows(block[s * j : s * (j + 1)]) for j in range(s)]  # phase j: (B, C, s*H, W)
    return _interleave_rows([t.transpose(2, 3) for t in columns]).transpose(2, 3)


class SpaceToDepth4D(SpaceToDepth):
    """`SpaceToDepth` in its 4-D form (`space_to_depth_4d`); same values, same size checks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return space_to_depth_4d(x, self.s)


class DepthToSpace4D(DepthToSpace):
    """`DepthToSpace` in its 4-D form (`depth_to_space_4d`); same values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % (self.s * self.s):
            return super().forward(x)  # raises the size error
        return depth_to_space_4d(x, self.s)


class ChannelGather(nn.Module):
    """(B, C, H, W) -> (B, C, H, W) with output channel k = input channel order[k] (an index_select, 4-D)."""

    def __init__(self, order: torch.Tensor):
        super().__init__()
        self.register_buffer("order", order.long(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.order)
