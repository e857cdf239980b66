# SPD-YOLO, AGPL-3.0 license
"""export.py: export a checkpoint with the ultralytics exporter (ONNX, TorchScript, ...) and check ONNX parity.

After an ONNX export the same real image (letterboxed) goes through onnxruntime and through the torch model; the
largest absolute differences of the raw outputs (boxes in pixels, class scores) are printed, and the command fails if
the score difference, or the box difference as a fraction of the input size, is above --parity-tol. For a classifier
(e.g. resnet18-SPD) the image is resized and center-cropped as predict does and the outputs compared are the
(batch, classes) probabilities; its default size is the training size. The exported .onnx works in detect.py and
val.py. Formats other than onnx and torchscript need their own packages (e.g. openvino); they are not installed
automatically.

Examples:
    python export.py --weights runs/train/exp/weights/best.pt --include onnx --img 256
    python export.py --weights best.pt --include onnx torchscript --dynamic --simplify --opset 17
    python export.py --weights best.pt --include onnx --strided-spd      # SPD + conv exported as strided convs
    python export.py --weights runs/train/exp2/weights/best.pt --include onnx     # a classifier, at its training size
"""

from __future__ import annotations

import argparse
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
    strided_spd,
    trained_imgsz,
)
from spd_yolo.export_check import onnx_parity


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
    p.add_argument("--no-parity", action="store_true", help="skip the ONNX parity check")
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
    tol = args.parity_tol * (50 if args.half else 1)  # FP16 keeps ~3 significant digits
    table = export_formats()
    supported = dict(zip(table["Argument"], table["Arguments"]))  # format -> the export options it takes
    unknown = [f for f in args.include if f not in supported or f == "-"]
    if unknown:
        raise CLIError(f"--include {' '.join(unknown)}: unknown format; known: {', '.join(list(supported)[1:])}")
    options = {
        "batch": args.batch_size,
        "dynamic": args.dynamic,
        "simplify": args.simplify,
        "opset": args.opset,
        "quantize": 16 if args.half else None,
    }
    model = load_model(weights)
    if args.strided_spd:
        strided_spd(model)
    if args.imgsz is None:  # detectors: 640; classifiers: the size they were trained at
        size = (trained_imgsz(model, weights) or 224) if model.task == "classify" else 640
        args.imgsz = size if isinstance(size, list) else [size]
    imgsz = args.imgsz * 2 if len(args.imgsz) == 1 else args.imgsz
    written = {}
    for fmt in args.include:
        try:
            kwargs = {k: v for k, v in options.items() if k in supported[fmt]}
            written[fmt] = model.export(format=fmt, imgsz=imgsz, device=args.device or None, **kwargs)
        except (ImportError, ModuleNotFoundError, SyntaxError, ValueError) as e:
            raise CLIError(f"--include {fmt}: export failed: {e}") from e
        if fmt == "onnx" and not args.no_parity:
            reference = load_model(weights).model.fuse()
            parity = onnx_parity(reference, written[fmt], image, imgsz, args.batch_size)
            detail = (
                "class probabilities" if parity.task == "classify"
                else f"boxes {parity.box_diff:.3g} px = {parity.box_diff / parity.size:.3g} of {parity.size} px, "
                f"scores {parity.score_diff:.3g}"
            )
            print(
                f"ONNX parity on {image.name} {parity.shape}: max abs diff {parity.max_abs_diff:.3g} "
                f"({detail}), tolerance {tol:.3g}"
            )
            if not parity.ok(tol):
                raise CLIError(f"ONNX parity failed: the outputs differ by {parity.diff:.3g} > --parity-tol {tol:.3g} "
                               f"({detail}); {written[fmt]} was written")
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_main(main, argv)
