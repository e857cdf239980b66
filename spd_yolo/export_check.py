# SPD-YOLO, AGPL-3.0 license
"""ONNX parity: onnxruntime against the torch model on a real, letterboxed image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ("Parity", "onnx_parity", "letterboxed_input")


@dataclass(frozen=True)
class Parity:
    """Largest absolute differences between the two outputs: box coordinates (pixels) and class scores."""

    max_abs_diff: float
    box_diff: float
    score_diff: float
    shape: tuple

    def ok(self, tol: float) -> bool:
        return self.max_abs_diff <= tol


def letterboxed_input(image: str | Path, imgsz: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """(batch, 3, h, w) float32 in [0, 1], RGB, letterboxed as predict() does."""
    import cv2
    from ultralytics.data.augment import LetterBox

    im0 = cv2.imread(str(image))
    if im0 is None:
        raise FileNotFoundError(f"parity image {image} cannot be read")
    im = LetterBox(imgsz, auto=False, stride=32)(image=im0)
    x = torch.from_numpy(np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1))).float() / 255.0
    return x[None].repeat(batch, 1, 1, 1)


def onnx_parity(model: torch.nn.Module, onnx_path: str | Path, image: str | Path, imgsz, batch: int = 1) -> Parity:
    """Run the same letterboxed image through `model` (eval, as exported) and through onnxruntime; compare outputs."""
    import onnxruntime as ort

    imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    x = letterboxed_input(image, imgsz, batch)
    model = model.eval().float()
    with torch.no_grad():
        y = model(x)
    y = (y[0] if isinstance(y, (list, tuple)) else y).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    z = session.run(None, {inp.name: x.numpy().astype(dtype)})[0].astype(np.float32)
    if z.shape != y.shape:
        raise ValueError(f"ONNX output shape {z.shape} differs from the torch output shape {y.shape}")
    diff = np.abs(z - y)
    return Parity(float(diff.max()), float(diff[:, :4].max()), float(diff[:, 4:].max()), tuple(y.shape))
