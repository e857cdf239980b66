# SPD-YOLO, AGPL-3.0 license
"""Export parity: each format's own runtime against the torch model on a real image, preprocessed as predict does.

`onnx_parity` runs onnxruntime directly; `format_parity` runs any exported format through ultralytics' AutoBackend
(OpenVINO compiled at fp32 for the check: its CPU default may be bf16 / fp16). `NOT_RUN_HERE` names the formats whose
runtime needs other hardware or OS; they are converted only.

Detectors: the image is letterboxed; the (batch, 4 + classes, anchors) outputs are compared (boxes in pixels,
class scores). The tolerance applies to class scores as they are and to boxes as a fraction of the input's longer side
(so 1e-3 allows 0.64 px at 640 and 0.32 px at 320: float32 rounding of coordinates in the hundreds is ~1e-3 px).

Classifiers (a `Classify` head): the image is resized and center-cropped (ultralytics' classify transforms); the
(batch, classes) probabilities are compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = (
    "Parity",
    "classify_input",
    "format_parity",
    "graph_rank",
    "letterboxed_input",
    "load_backend",
    "onnx_parity",
    "runs_here",
)


@dataclass(frozen=True)
class Parity:
    """Largest absolute differences between the two outputs: box coordinates (pixels) and class scores (for a
    classifier: box_diff is 0 and score_diff the class probabilities' difference); `size` is the input's longer side
    in pixels, the scale boxes are compared at."""

    max_abs_diff: float
    box_diff: float
    score_diff: float
    shape: tuple
    task: str = "detect"
    size: int = 1

    @property
    def diff(self) -> float:
        """What the tolerance applies to: the larger of the score difference and the box difference / `size`."""
        return max(self.score_diff, self.box_diff / self.size)

    def ok(self, tol: float) -> bool:
        return self.diff <= tol


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


def classify_input(image: str | Path, imgsz: tuple[int, int], batch: int = 1) -> torch.Tensor:
    """(batch, 3, h, w) float32, RGB, resized and center-cropped as a classifier's predict() does."""
    import cv2
    from PIL import Image
    from ultralytics.data.augment import classify_transforms

    im0 = cv2.imread(str(image))
    if im0 is None:
        raise FileNotFoundError(f"parity image {image} cannot be read")
    size = imgsz[0] if imgsz[0] == imgsz[1] else tuple(imgsz)
    x = classify_transforms(size)(Image.fromarray(cv2.cvtColor(im0, cv2.COLOR_BGR2RGB)))
    return x[None].repeat(batch, 1, 1, 1).float()


def _parity(model: torch.nn.Module, image: str | Path, imgsz, batch: int, name: str, run) -> Parity:
    """Run the same preprocessed image (letterboxed; a classifier's resized and cropped) through `model` (eval, as
    exported) and through `run` (the exported model's runtime, input -> output); compare the raw outputs."""
    from ultralytics.nn.modules import Classify

    imgsz = (imgsz, imgsz) if isinstance(imgsz, int) else tuple(imgsz)
    classifier = isinstance(getattr(model, "model", [None])[-1], Classify)
    x = (classify_input if classifier else letterboxed_input)(image, imgsz, batch)
    model = model.eval().float()
    with torch.no_grad():
        y = model(x)
        y = (y[0] if isinstance(y, (list, tuple)) else y).numpy()
        z = run(x)
    z = z[0] if isinstance(z, (list, tuple)) else z
    z = (z.float().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)).astype(np.float32)
    if z.shape != y.shape:
        raise ValueError(f"{name} output shape {z.shape} differs from the torch output shape {y.shape}")
    diff = np.abs(z - y)
    if classifier:
        return Parity(float(diff.max()), 0.0, float(diff.max()), tuple(y.shape), "classify")
    box, score = float(diff[:, :4].max()), float(diff[:, 4:].max())
    return Parity(float(diff.max()), box, score, tuple(y.shape), size=max(imgsz))


def onnx_parity(model: torch.nn.Module, onnx_path: str | Path, image: str | Path, imgsz, batch: int = 1) -> Parity:
    """Run the same letterboxed image through `model` (eval, as exported) and through onnxruntime; compare outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    dtype = np.float16 if "float16" in inp.type else np.float32
    return _parity(model, image, imgsz, batch, "ONNX",
                   lambda x: session.run(None, {inp.name: x.numpy().astype(dtype)})[0])


# Formats whose runtime cannot run on this machine (x86 Linux CPU), and why: exported (converted) only.
NOT_RUN_HERE = {
    "coreml": "Core ML runs on macOS / iOS only",
    "rknn": "RKNN runs on a Rockchip NPU board",
    "edgetpu": "Edge TPU models run on a Coral device",
    "imx": "IMX500 models run on the Sony camera",
    "axelera": "Axelera models run on an Axelera accelerator",
    "deepx": "DeepX models run on a DeepX NPU",
    "qnn": "QNN models run on a Qualcomm NPU",
    "coreai": "Core AI runs on Apple devices",
}


def runs_here(fmt: str) -> str | None:
    """None if `fmt`'s runtime runs on this machine, else why not (TensorRT: only with a CUDA GPU)."""
    if fmt == "engine" and not torch.cuda.is_available():
        return "TensorRT needs an NVIDIA GPU"
    return NOT_RUN_HERE.get(fmt)


def load_backend(fmt: str, path: str | Path):
    """An ultralytics AutoBackend on the CPU for the exported file / folder `path`; OpenVINO recompiled at fp32."""
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(path), device=torch.device("cpu"), fp16=False, verbose=False)
    if fmt == "openvino":
        import openvino as ov

        inner = backend.backend
        xml = Path(path) if Path(path).is_file() else next(Path(path).glob("*.xml"))
        core = ov.Core()
        inner.ov_compiled_model = core.compile_model(
            core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": ov.Type.f32}
        )
    return backend


def format_parity(model: torch.nn.Module, fmt: str, path: str | Path, image: str | Path, imgsz, batch: int = 1
                  ) -> Parity:
    """Run the same preprocessed image through `model` (eval, as exported) and through format `fmt`'s own runtime
    (ultralytics' AutoBackend on `path`); compare the raw outputs as `onnx_parity` does."""
    return _parity(model, image, imgsz, batch, fmt, load_backend(fmt, path))


def _onnx_rank(path: Path) -> tuple[int, str]:
    """Highest tensor rank in an ONNX graph (shape inference over every value), and the value that has it."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    best = (0, "")
    for v in (*g.input, *g.value_info, *g.output):
        t = v.type.tensor_type
        if t.HasField("shape") and len(t.shape.dim) > best[0]:
            best = (len(t.shape.dim), v.name)
    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant":
            consts.update((n.output[0], a.t) for a in n.attribute if a.name == "value")
    for n in g.node:  # a Reshape's target shape, where it is a constant (shape inference may not reach every value)
        shape = consts.get(n.input[1]) if n.op_type == "Reshape" else None
        if shape is not None and len(shape.dims) == 1 and shape.dims[0] > best[0]:
            best = (int(shape.dims[0]), n.name)
    return best


def _ncnn_rank(folder: Path) -> tuple[int, str]:
    """NCNN holds at most 4-D mats (w, h, d, c per batch item). pnnx writes a reshape to a higher rank (the 6-D SPD
    reshape) as a Reshape layer with no shape parameters, and leaves a layer it cannot convert under its torch name
    (e.g. Tensor.reshape); either is reported as rank 5 with the layer's name, else 4."""
    param = folder / "model.ncnn.param" if folder.is_dir() else folder
    for line in param.read_text().splitlines()[2:]:
        parts = line.split()
        if not parts:
            continue
        n_in, n_out = int(parts[2]), int(parts[3])
        params = parts[4 + n_in + n_out :]
        if "." in parts[0] or (parts[0] == "Reshape" and not params):
            return 5, f"{parts[0]} {parts[1]}"
    return 4, ""


def graph_rank(fmt: str, path: str | Path) -> tuple[int, str] | None:
    """(highest tensor rank, where) in the graph an ONNX or NCNN export wrote; None for other formats."""
    path = Path(path)
    if fmt == "onnx":
        return _onnx_rank(path)
    if fmt == "ncnn":
        return _ncnn_rank(path)
    return None
