# SPD-YOLO, AGPL-3.0 license
"""The export format table (issue 21 part 3): every format ultralytics offers whose converter installs here, for SPD
models beside their stock twins.

For each pair (default: yolov5n-SPD / yolov5n, yolo11n-SPD / yolo11n, yolo26n-SPD / yolo26n, yolo11n-SPD-p2 /
yolo11n-p2, yolo11n-SPD-lite / yolo11n; untrained, nc=80, class biases zeroed so scores sit near 0.5 and score
differences show) and each format:

- exports? the model as export.py writes it (SPD layers folded or in 4-D form), at --imgsz (640);
- rank: the highest tensor rank in the ONNX / NCNN graph written (4 is the goal);
- runs here? the format's own runtime through ultralytics' AutoBackend on this machine (OpenVINO compiled at fp32);
  CoreML (macOS only) and TensorRT (GPU only) are converted only;
- parity: the largest box (px) and score differences against the torch model on the letterboxed bus.jpg;
- batch-1 CPU latency (ms, median; SPD and stock timed in turn) and its SPD / stock ratio.

A format whose converter is not installed is a row saying so (pip install "spd-yolo[deploy]").

Usage (in .venv-deploy, `make test-deploy` builds it):
    .venv-deploy/bin/python benchmarks/bench_export.py --out docs/deploy_table.md     # ~40 min on 2 cores
    .venv-deploy/bin/python benchmarks/bench_export.py --quick                         # smoke test: 64 px, 2 formats
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

PAIRS = {
    "yolov5n-SPD": "yolov5n.yaml",
    "yolo11n-SPD": "yolo11n.yaml",
    "yolo26n-SPD": "yolo26n.yaml",
    "yolo11n-SPD-p2": "yolo11n-p2",
    "yolo11n-SPD-lite": "yolo11n.yaml",
}
FORMATS = ("torchscript", "onnx", "openvino", "ncnn", "mnn", "litert", "coreml", "rknn")
# Formats offered by ultralytics whose converter cannot install beside this project, and why.
NOT_INSTALLABLE = {"rknn": "rknn-toolkit2 (2.3.2, the newest ultralytics accepts) pins torch<=2.4; we need 2.14"}


def _checkpoint(name: str, folder: Path) -> Path:
    """An untrained model saved as a .pt, its class biases zeroed (scores near 0.5)."""
    from torch import nn

    import spd_yolo

    model = spd_yolo.YOLO(name)
    head = model.model.model[-1]
    for seq in (*head.cv3, *getattr(head, "one2one_cv3", ())):
        nn.init.zeros_(seq[-1].bias)
    path = folder / f"{Path(name).stem}.pt"
    model.save(path)
    return path


def _export(weights: Path, fmt: str, imgsz: int) -> dict:
    """Export one format as export.py does; parity and the runtime; a dict for the table."""
    import torch
    from ultralytics.utils import ASSETS

    from spd_yolo.cli.common import load_model
    from spd_yolo.cli.export import CONVERTERS, no_mnn_telemetry
    from spd_yolo.export_check import format_parity, graph_rank, load_backend, onnx_parity, runs_here
    from spd_yolo.rewrite import export_form

    if fmt in NOT_INSTALLABLE:
        return {"exports": "no", "note": NOT_INSTALLABLE[fmt]}
    missing = [m for m in CONVERTERS.get(fmt, ()) if importlib.util.find_spec(m) is None]
    if missing:
        return {"exports": "no", "note": f"{', '.join(missing)} not installed"}
    if fmt == "mnn":
        no_mnn_telemetry()
    model = load_model(weights)
    model.model, _, _ = export_form(model.model.fuse().eval())
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            path = model.export(format=fmt, imgsz=imgsz, device="cpu")
    except Exception as e:  # noqa: BLE001 - a failing converter is a row of the table, not the end of the run
        return {"exports": "no", "note": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:80]}"}
    row = {"exports": "yes", "path": str(path)}
    rank = graph_rank(fmt, path)
    row["rank"] = rank[0] if rank else None
    why = runs_here(fmt)
    if why is not None:
        return {**row, "runs": "no", "note": why}
    reference = load_model(weights).model.fuse()
    try:
        p = (onnx_parity(reference, path, ASSETS / "bus.jpg", imgsz) if fmt == "onnx"
             else format_parity(reference, fmt, path, ASSETS / "bus.jpg", imgsz))
    except Exception as e:  # noqa: BLE001 - a runtime that fails is a row of the table too
        return {**row, "runs": "no", "note": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:80]}"}
    backend = load_backend(fmt, path)
    x = torch.rand(1, 3, imgsz, imgsz)
    return {**row, "runs": "yes", "box_px": p.box_diff, "score": p.score_diff, "ok": p.ok(1e-3),
            "call": lambda: backend(x)}


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--imgsz", type=int, default=640, help="input size (default 640)")
    parser.add_argument("--models", nargs="+", default=list(PAIRS), help="SPD models (their stock twin comes along)")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), help="formats (default: all in the table)")
    args = parser.parse_args(argv)
    common.check_common(parser, args)
    common.check_size(parser, "--imgsz", args.imgsz)
    common.check_names(parser, "--models", args.models, list(PAIRS))
    for fmt in args.formats:
        if fmt not in FORMATS:
            parser.error(f"--formats: unknown format '{fmt}'. Choose from: {', '.join(FORMATS)}")
    if args.quick:
        args.imgsz, args.models, args.formats = 64, args.models[:1], ["onnx", "ncnn"]
    repeats = args.repeats or (2 if args.quick else 10)
    common.set_threads(args.threads)
    import torch

    env = common.environment(args.threads)
    rows, data = [], []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        cache: dict[tuple[str, str], dict] = {}
        for spd in args.models:
            stock = PAIRS[spd]
            for fmt in args.formats:
                results = {}
                for name in (spd, stock):
                    if (name, fmt) not in cache:
                        folder = Path(tmp) / f"{Path(name).stem}-{fmt}"
                        folder.mkdir()
                        cache[(name, fmt)] = _export(_checkpoint(name, folder), fmt, args.imgsz)
                    results[name] = cache[(name, fmt)]
                a, b = results[spd], results[stock]
                ms = {}
                if "call" in a and "call" in b:
                    with torch.no_grad():
                        t = common.interleaved({"spd": a["call"], "stock": b["call"]}, repeats, warmup=2)
                    ms = {k: 1000 * common.median(v) for k, v in t.items()}
                for name, r in ((spd, a), (Path(stock).stem, b)):
                    parity = (f"{r['box_px']:.2g} px / {r['score']:.2g}" + ("" if r["ok"] else " FAIL")
                              if "box_px" in r else "-")
                    key = "spd" if name == spd else "stock"
                    rows.append([
                        name, fmt, r["exports"], r.get("runs", "-"), parity, r.get("rank") or "-",
                        f"{ms[key]:.1f}" if ms else "-",
                        f"{ms['spd'] / ms['stock']:.2f}" if ms and key == "spd" else "", r.get("note", ""),
                    ])
                    data.append({"model": name, "format": fmt, **{k: v for k, v in r.items() if k != "call"},
                                 "latency_ms": ms.get(key)})
                    print("row | " + " | ".join(str(c) for c in rows[-1]) + " |", file=sys.stderr, flush=True)
    headers = ["model", "format", "exports", "runs here", "parity (box / score)", "max rank", "ms", "SPD/stock",
               "note"]
    table = common.markdown_table(headers, rows, "lllllrrrl")
    text = f"{common.environment_lines(env)}\nimgsz {args.imgsz}, batch 1, {repeats} timed runs\n\n{table}"
    print(text)
    common.write_results(args.out, {"environment": env, "imgsz": args.imgsz, "rows": data}, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
