# SPD-YOLO, AGPL-3.0 license
"""export.py: export a checkpoint with the ultralytics exporter and check each format in its own runtime.

By default every SPD layer that folds is exported as the equal strided convolution (spd_yolo.rewrite) and every one
that does not (the neck SPDs of yolov5-SPD) in a 4-D-only form (4-D reshapes, slices, concat), so no exported tensor has
a rank above 4 and NCNN, OpenVINO, LiteRT and MNN run the model; --keep-spd exports the layers as they are.

After each export the same real image (letterboxed) goes through that format's own runtime (ultralytics'
AutoBackend; ONNX: onnxruntime) and through the unrewritten torch model; the largest absolute differences of the raw
outputs (boxes in pixels, class scores) are printed, and the command fails if the score difference, or the box
difference as a fraction of the input size, is above --parity-tol. OpenVINO is compiled at fp32 for the check.
Formats whose runtime cannot run on this machine (CoreML off macOS, TensorRT without a GPU, RKNN without a board)
are converted only and say "not run here". For a classifier (e.g. resnet18-SPD) the image is resized and
center-cropped as predict does and the (batch, classes) probabilities are compared; its default size is the training
size. INT8 (--int8, OpenVINO and LiteRT) is calibrated on --data and not parity-checked (see docs/deploy.md).
Converters come with the deploy extra: pip install "spd-yolo[deploy]"; nothing is installed at run time.

Examples:
    python export.py --weights runs/train/exp/weights/best.pt --include onnx --img 256
    python export.py --weights best.pt --include onnx torchscript openvino ncnn mnn litert
    python export.py --weights best.pt --include onnx --dynamic --simplify --opset 17
    python export.py --weights best.pt --include openvino litert --int8 --data datasets/spd-demo/data.yaml
    python export.py --weights best.pt --include onnx --keep-spd     # SPD layers exported as they are (6-D reshape)
    python export.py --weights runs/train/exp2/weights/best.pt --include onnx     # a classifier, at its training size
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ultralytics.engine.exporter import export_formats
from ultralytics.utils import ASSETS

from spd_yolo.cli.common import (
    CLIError,
    HelpFormatter,
    add_device,
    add_strided_spd,
    check_device,
    check_imgsz,
    check_weights,
    load_model,
    run_main,
    script_name,
    trained_imgsz,
)
from spd_yolo.export_check import format_parity, graph_rank, onnx_parity, runs_here
from spd_yolo.rewrite import export_form

# Modules each format's converter and runtime import (the deploy extra installs them), checked before exporting.
CONVERTERS = {
    "onnx": ("onnx", "onnxruntime"),
    "openvino": ("openvino",),
    "ncnn": ("ncnn", "pnnx"),
    "mnn": ("MNN",),
    "litert": ("litert_torch", "ai_edge_litert"),
    "coreml": ("coremltools",),
    "rknn": ("rknn",),
    "paddle": ("paddle", "x2paddle"),
    "saved_model": ("onnx2tf", "tensorflow"),
    "pb": ("onnx2tf", "tensorflow"),
    "edgetpu": ("onnx2tf", "tensorflow"),
    "executorch": ("executorch",),
}
ALIASES = {"tflite": "litert", "tfjs": "litert", "mlpackage": "coreml", "mlmodel": "coreml", "trt": "engine"}
INT8 = ("openvino", "litert")  # formats whose INT8 export this script offers (calibrated on --data)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=script_name("export.py"), description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--weights", default="", help="the .pt checkpoint to export")
    p.add_argument(
        "--include", nargs="+", default=["onnx"], metavar="FORMAT",
        help="formats: onnx, torchscript, or any other ultralytics format whose package is installed",
    )
    p.add_argument(
        "--imgsz", "--img", "--img-size", dest="imgsz", type=int, nargs="+", default=None, metavar="PIXELS",
        help="input size: one value (square) or H W, multiples of 32 (default: 640 for detectors; a classifier's "
        "training size)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the exported model")
    add_device(p)
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and image size (ONNX, TorchScript)")
    p.add_argument("--simplify", action="store_true", help="simplify the ONNX graph (onnxslim)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: ultralytics' choice)")
    p.add_argument("--half", action="store_true", help="FP16 export (GPU only)")
    p.add_argument("--parity-image", default="", help="image for the ONNX parity check (default: ultralytics' bus.jpg)")
    p.add_argument(
        "--parity-tol", type=float, default=1e-3,
        help="largest allowed output difference: class scores absolute, boxes as a fraction of the input's longer side "
        "(1e-3: 0.64 px at 640)",
    )
    p.add_argument("--no-parity", action="store_true", help="skip the parity checks")
    p.add_argument("--int8", action="store_true",
                   help=f"INT8 export calibrated on --data ({', '.join(INT8)}); not parity-checked")
    p.add_argument("--data", default="", help="dataset YAML whose images calibrate --int8")
    p.add_argument("--keep-spd", action="store_true",
                   help="export the SPD layers as they are (a 6-D reshape each: NCNN cannot run that) instead of "
                   "folded into strided convolutions or in 4-D form")
    add_strided_spd(p, "export")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    weights = check_weights(args.weights, (".pt",))
    check_device(args.device)
    if args.imgsz is not None:
        if len(args.imgsz) not in (1, 2):
            raise CLIError(f"--imgsz: give one size or H W, got {args.imgsz}")
        check_imgsz(args.imgsz)
    if args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: must be >= 1")
    image = Path(args.parity_image) if args.parity_image else ASSETS / "bus.jpg"
    if not image.is_file():
        raise CLIError(f"--parity-image {image}: file not found")
    if args.keep_spd and args.strided_spd:
        raise CLIError("--keep-spd and --strided-spd: give one (--strided-spd is the default now)")
    tol = args.parity_tol * (50 if args.half else 1)  # FP16 keeps ~3 significant digits
    table = export_formats()
    supported = dict(zip(table["Argument"], table["Arguments"]))  # format -> the export options it takes
    include = [ALIASES.get(f, f) for f in args.include]
    unknown = [f for f, g in zip(args.include, include) if g not in supported or g == "-"]
    if unknown:
        raise CLIError(f"--include {' '.join(unknown)}: unknown format; known: {', '.join(list(supported)[1:])}")
    check_converters(include)
    if "mnn" in include:
        no_mnn_telemetry()
    if args.int8:
        not_int8 = [f for f in include if f not in INT8]
        if not_int8:
            raise CLIError(f"--int8: offered for {', '.join(INT8)} only, not {' '.join(not_int8)}")
        if not args.data:
            raise CLIError("--int8 needs --data: the dataset YAML whose images calibrate the quantization")
        if not Path(args.data).is_file():
            raise CLIError(f"--data {args.data}: file not found")
    options = {
        "batch": args.batch_size,
        "dynamic": args.dynamic,
        "simplify": args.simplify,
        "opset": args.opset,
        "quantize": 8 if args.int8 else 16 if args.half else None,
        "data": args.data or None,
    }
    model = load_model(weights)
    if not args.keep_spd:
        model.model, folded, four_d = export_form(model.model.fuse().eval())
        if folded or four_d:
            print(f"SPD layers: {len(folded)} folded into strided convolutions, {len(four_d)} in 4-D form "
                  f"(--keep-spd exports them as they are)")
    if args.imgsz is None:  # detectors: 640; classifiers: the size they were trained at
        size = (trained_imgsz(model, weights) or 224) if model.task == "classify" else 640
        args.imgsz = size if isinstance(size, list) else [size]
    imgsz = args.imgsz * 2 if len(args.imgsz) == 1 else args.imgsz
    written = {}
    for fmt in include:
        try:
            kwargs = {k: v for k, v in options.items() if k in supported[fmt] and v is not None}
            written[fmt] = model.export(format=fmt, imgsz=imgsz, device=args.device or None, **kwargs)
        except (ImportError, ModuleNotFoundError, SyntaxError, ValueError, RuntimeError) as e:
            raise CLIError(f"--include {fmt}: export failed: {str(e).strip().splitlines()[-1]}") from e
        if not written[fmt]:
            raise CLIError(f"--include {fmt}: the exporter wrote nothing (see its log above)")
        if not args.keep_spd:
            check_rank(fmt, written[fmt])
        if args.no_parity:
            continue
        if args.int8:
            print(f"{fmt}: INT8, not parity-checked (measure it with val.py, see docs/deploy.md)")
        elif (why := runs_here(fmt)) is not None:
            print(f"{fmt}: converted, not run here ({why})")
        else:
            check_parity(fmt, load_model(weights).model.fuse(), written[fmt], image, imgsz, args.batch_size, tol)
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    return 0


def check_rank(fmt: str, path) -> None:
    """CLIError if the ONNX / NCNN graph just written holds a tensor above 4-D (other formats: nothing checked)."""
    found = graph_rank(fmt, path)
    if found is None:
        return
    rank, where = found
    if rank > 4:
        raise CLIError(f"--include {fmt}: the exported graph holds a {rank}-D tensor ({where}); expected at most 4-D; "
                       f"{path} was written")
    print(f"{fmt}: no tensor above 4-D in the graph")


def no_mnn_telemetry() -> None:
    """MNN's converter imports MNN.tools.utils.log, which pip-installs a logging SDK and sends usage logs; its import
    is guarded (`except: mnn_logger = None`), so marking the module absent keeps the conversion offline."""
    sys.modules.setdefault("MNN.tools.utils.log", None)


def check_converters(formats: list[str]) -> None:
    """One CLIError naming the deploy extra if a format's converter or runtime module is not installed."""
    for fmt in formats:
        missing = [m for m in CONVERTERS.get(fmt, ()) if importlib.util.find_spec(m) is None]
        if missing:
            raise CLIError(f"--include {fmt}: needs {', '.join(missing)}, not installed; install the deploy extra: "
                           f'pip install "spd-yolo[deploy]"')


def check_parity(fmt: str, reference, path, image: Path, imgsz, batch: int, tol: float) -> None:
    """Run format `fmt`'s runtime on `image` against the torch `reference`; print the differences, CLIError if above
    `tol`."""
    name = {"onnx": "ONNX", "openvino": "OpenVINO (fp32)", "ncnn": "NCNN", "mnn": "MNN", "litert": "LiteRT",
            "torchscript": "TorchScript"}.get(fmt, fmt)
    try:
        if fmt == "onnx":
            parity = onnx_parity(reference, path, image, imgsz, batch)
        else:
            parity = format_parity(reference, fmt, path, image, imgsz, batch)
    except (ValueError, RuntimeError, IndexError, StopIteration) as e:
        raise CLIError(f"{name} parity: the exported model does not run in {name}: {e}; {path} was written") from e
    detail = (
        "class probabilities" if parity.task == "classify"
        else f"boxes {parity.box_diff:.3g} px = {parity.box_diff / parity.size:.3g} of {parity.size} px, "
        f"scores {parity.score_diff:.3g}"
    )
    print(f"{name} parity on {image.name} {parity.shape}: max abs diff {parity.max_abs_diff:.3g} ({detail}), "
          f"tolerance {tol:.3g}")
    if not parity.ok(tol):
        raise CLIError(f"{name} parity failed: the outputs differ by {parity.diff:.3g} > --parity-tol {tol:.3g} "
                       f"({detail}); {path} was written")


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, argv)
