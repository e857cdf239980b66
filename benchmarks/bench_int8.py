# SPD-YOLO, AGPL-3.0 license
"""INT8 against fp32 (issue 21 part 4): COCO AP and AP_S of trained SPD and stock models, exported by export.py in
fp32 and in INT8 (calibrated on --data's images) for OpenVINO and LiteRT, each validated by val.py on --data.

Usage (in .venv-deploy; the demo's trained models):
    .venv-deploy/bin/python benchmarks/bench_int8.py --weights runs/demo/yolov5n-SPD/weights/best.pt \\
        runs/demo/yolov5n/weights/best.pt --data datasets/spd-demo/data.yaml --imgsz 256
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

FORMATS = ("openvino", "litert")
SUFFIX = {"openvino": "_openvino_model", "litert": ".tflite"}


def _val(weights: Path, data: str, imgsz: int, project: Path, name: str) -> dict:
    """val.py on `weights`; the COCO metrics it saved."""
    from spd_yolo.cli import val

    with contextlib.redirect_stdout(io.StringIO()):
        rc = val.cli(["--weights", str(weights), "--data", data, "--img", str(imgsz), "--project", str(project),
                      "--name", name, "--batch-size", "1"])
    if rc:
        raise SystemExit(f"error: val.py failed on {weights}")
    return json.loads((project / name / "coco_metrics.json").read_text())


def _export(weights: Path, fmt: str, imgsz: int, data: str, int8: bool) -> Path:
    """export.py (fp32 with its parity check, or --int8 on --data) into weights' folder; the path written."""
    from spd_yolo.cli import export

    argv = ["--weights", str(weights), "--include", fmt, "--img", str(imgsz)] + (["--int8", "--data", data] * int8)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        rc = export.cli(argv)
    if rc:
        raise SystemExit(f"error: export.py {' '.join(argv)} failed")
    line = [x for x in out.getvalue().splitlines() if x.startswith(f"{fmt}: ")][-1]  # the last: what was written
    return Path(line.split(": ", 1)[1].strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", required=True, type=Path, help="trained .pt checkpoints")
    parser.add_argument("--data", required=True, help="dataset YAML: INT8 calibration and validation")
    parser.add_argument("--imgsz", type=int, default=256)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this .md or .json file")
    args = parser.parse_args(argv)
    for w in args.weights:
        if not w.is_file():
            parser.error(f"--weights {w}: file not found")
    env = common.environment(2)
    rows, data = [], []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        for w in args.weights:
            label = w.parent.parent.name if w.parent.name == "weights" else w.stem
            folder = Path(tmp) / label
            folder.mkdir()
            local = Path(shutil.copy(w, folder / f"{label}.pt"))
            torch_m = _val(local, args.data, args.imgsz, folder / "val", "pt")
            rows.append([label, "torch (.pt)", "fp32", f"{100 * torch_m['AP']:.1f}", f"{100 * torch_m['AP_S']:.1f}",
                         "", ""])
            for fmt in args.formats:
                fp32 = _val(_export(local, fmt, args.imgsz, args.data, False), args.data, args.imgsz,
                            folder / "val", f"{fmt}-fp32")
                int8 = _val(_export(local, fmt, args.imgsz, args.data, True), args.data, args.imgsz,
                            folder / "val", f"{fmt}-int8")
                for prec, m in (("fp32", fp32), ("int8", int8)):
                    d_ap = f"{100 * (m['AP'] - fp32['AP']):+.1f}" if prec == "int8" else ""
                    d_aps = f"{100 * (m['AP_S'] - fp32['AP_S']):+.1f}" if prec == "int8" else ""
                    rows.append([label, fmt, prec, f"{100 * m['AP']:.1f}", f"{100 * m['AP_S']:.1f}", d_ap, d_aps])
                    data.append({"model": label, "format": fmt, "precision": prec, "AP": m["AP"], "AP_S": m["AP_S"]})
                print("row | " + " | ".join(rows[-1]) + " |", file=sys.stderr, flush=True)
    table = common.markdown_table(["model", "format", "precision", "AP", "AP_S", "AP drop", "AP_S drop"], rows,
                                  "lllrrrr")
    text = f"{common.environment_lines(env)}\nimgsz {args.imgsz}, data {args.data}\n\n{table}"
    print(text)
    common.write_results(args.out, {"environment": env, "rows": data}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
