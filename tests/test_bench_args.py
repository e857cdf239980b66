# SPD-YOLO, AGPL-3.0 license
"""The long-running benchmark scripts reject bad arguments before any work, with a clear message and exit code 2."""

import subprocess
import sys

import pytest

from helpers import REPO

CASES = [
    ("bench_small_objects.py", ["--pair", "yolov9z"], "--pair yolov9z: unknown; choose one of yolov5n"),
    ("bench_small_objects.py", ["--eval-imgsz", "256", "100"], "must be a positive multiple of 32"),
    ("bench_small_objects.py", ["--threads", "0"], "--threads must be an integer >= 1"),
    ("bench_small_objects.py", ["--seeds", "1", "1"], "--seeds must be distinct"),
    ("bench_small_objects.py", ["--out", "results.txt"], "--out must end in .json or .md"),
    ("bench_detect_load.py", ["--imgsz", "250"], "--imgsz must be a positive multiple of 32"),
    ("bench_detect_load.py", ["--items", "10"], "--items must be >= 100"),
    ("bench_detect_load.py", ["--threads", "-1"], "--threads must be an integer >= 1"),
]


@pytest.mark.parametrize("script,argv,message", CASES, ids=[f"{c[0]}:{c[1][0]}" for c in CASES])
def test_bad_benchmark_arguments(script, argv, message, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *argv], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
