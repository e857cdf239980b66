# SPD-YOLO, AGPL-3.0 license
"""Shared pieces of the benchmark scripts: argument checks, interleaved timing, tables, atomic result files."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Callable

# Never download or auto-install while benchmarking (set before ultralytics is imported).
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")

RESULT_SUFFIXES = (".json", ".md")


# ---------------------------------------------------------------------------------------------------------------------
# Arguments.


def base_parser(description: str) -> argparse.ArgumentParser:
    """Parser with the flags every benchmark has: --threads, --repeats, --quick, --out."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch (and ONNX Runtime) intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (median reported)")
    parser.add_argument("--quick", action="store_true", help="few repeats and small work: a smoke test for CI")
    parser.add_argument("--out", type=Path, default=None, help="also write the results to this .json or .md file")
    return parser


def check_common(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject threads < 1, repeats < 1 and a bad --out before any work (exit 2 with a clear message)."""
    if args.threads < 1:
        parser.error(f"--threads must be an integer >= 1, got {args.threads}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be an integer >= 1, got {args.repeats}")
    if args.out is not None:
        if args.out.suffix not in RESULT_SUFFIXES:
            parser.error(f"--out must end in .json or .md, got '{args.out}'")
        if not args.out.parent.resolve().is_dir():
            parser.error(f"--out: folder '{args.out.parent}' does not exist")


def check_size(parser: argparse.ArgumentParser, flag: str, value: int) -> None:
    """Sizes must be positive multiples of 32 (the detectors' stride), else exit 2 naming the flag."""
    if value < 32 or value % 32:
        parser.error(f"{flag} must be a positive multiple of 32 (the model stride), got {value}")


def check_names(parser: argparse.ArgumentParser, flag: str, names: Iterable[str], known: Sequence[str]) -> None:
    """Every name must be one of `known`, else exit 2 listing them."""
    for name in names:
        if name not in known:
            parser.error(f"{flag}: unknown model '{name}'. Choose from: {', '.join(known)}")


def set_threads(n: int) -> None:
    """Use n intra-op threads in torch (ONNX Runtime sessions take theirs from the scripts)."""
    import torch

    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------------------------
# Timing.


def interleaved(
    variants: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, min_sample_s: float = 0.0
) -> dict[str, list[float]]:
    """Run each variant in turn, round after round, for `warmup` + `repeats` rounds; seconds per call, per round.

    Interleaving puts the compared variants under the same load, so their ratios hold on a shared machine even
    when absolute times drift. The order rotates from round to round, so no variant always runs right after the
    same other one (whose leftovers in the caches would otherwise favour or penalise it). With `min_sample_s`, a
    variant faster than that runs several times back to back per round (the count set from the warmup rounds) and
    its time per call is the mean over them: one descheduling of a thread then cannot dominate a sample of a
    sub-millisecond operation.
    """
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    calls = dict.fromkeys(names, 1)
    for round_ in range(warmup + repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            fn, n = variants[name], calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            per_call = (time.perf_counter() - start) / n
            if round_ >= warmup:
                times[name].append(per_call)
            elif min_sample_s > 0:
                calls[name] = max(calls[name], min(1000, int(min_sample_s / max(per_call, 1e-9)) + 1))
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], signed: bool = False) -> str:
    """'12.3 ± 0.4' in percent (mean ± sample std over seeds) of fractions ('+2.2 ± 2.4' with `signed`, for
    differences); '-' when there is no value."""
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return f"{text} ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else text


def ratio_of_medians_and_median_ratio(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(median(a) / median(b), median of the per-round ratios a_i / b_i): the second pairs runs of one round."""
    return median(a) / median(b), median([x / y for x, y in zip(a, b)])


# ---------------------------------------------------------------------------------------------------------------------
# Reporting.


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A markdown table; `align` holds 'l' or 'r' per column (default: first left, others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_model() -> str:
    """CPU model name from lscpu or /proc/cpuinfo (platform.processor() elsewhere)."""
    with contextlib.suppress(Exception):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _interpreter() -> str:
    """The Python that runs us, relative to the working directory when inside it (e.g. .venv/bin/python)."""
    with contextlib.suppress(ValueError):
        rel = os.path.relpath(sys.executable)
        if not rel.startswith(".."):
            return rel
    return sys.executable


def environment(threads: int) -> dict:
    """Machine, versions, threads and the exact command line, for the record."""
    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for module in ("ultralytics", "onnxruntime", "onnx"):
        with contextlib.suppress(Exception):
            versions[module] = __import__(module).__version__
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "load_average_at_start": load_average(),
        "versions": versions,
        "command": " ".join(shlex.quote(a) for a in [_interpreter(), *sys.argv]),
    }


def load_average() -> str:
    """The 1/5/15-minute load averages ('' where unknown): other work on a shared machine skews timings."""
    with contextlib.suppress(OSError, AttributeError):
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    return ""


def environment_lines(env: dict) -> str:
    """Three lines: machine and threads, versions, command (plus the load average at start)."""
    v = ", ".join(f"{k} {val}" for k, val in env["versions"].items())
    return (
        f"machine: {env['cpu']}, {env['logical_cpus']} logical CPUs; threads: {env['threads']}; "
        f"load average at start: {env['load_average_at_start']}\nversions: {v}\ncommand: {env['command']}"
    )


def write_results(path: Path | None, data: dict, markdown: str) -> None:
    """Write `data` (.json) or `markdown` (.md) to `path` atomically (`spd_yolo.atomic.atomic_write`)."""
    from spd_yolo.atomic import atomic_write

    if path is None:
        return
    atomic_write(path, json.dumps(data, indent=2) + "\n" if path.suffix == ".json" else markdown + "\n")
    print(f"results written to {path}", file=sys.stderr)
