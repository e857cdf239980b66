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
    ("bench_classify.py", ["--models", "resnet34-SPD"], "resnet34-SPD"),
    ("bench_classify.py", ["--imgsz", "48"], "--imgsz must be a positive multiple of 32"),
    ("bench_classify.py", ["--threads", "0"], "--threads must be an integer >= 1"),
    ("bench_classify.py", ["--n-classes", "11"], "--n-classes must be in 2..10"),
    ("bench_classify.py", ["--epochs", "-1"], "--epochs must be an integer >= 1"),
]


@pytest.mark.parametrize("script,argv,message", CASES, ids=[f"{c[0]}:{c[1][0]}" for c in CASES])
def test_bad_benchmark_arguments(script, argv, message, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *argv], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_small_object_table_keeps_negative_differences(monkeypatch):
    """SPD - stock is paired by seed and may be negative; pycocotools' -1 (undefined) is left out, never averaged."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from bench_small_objects import METRICS, table_rows

    stock = {64: {m: [0.30, 0.20, -1.0] for m in METRICS}}
    spd = {64: {m: [0.10, 0.30, 0.50] for m in METRICS}}
    rows = table_rows({"a.yaml": stock, "b": spd}, "a.yaml", "b", [64])
    assert rows[0][:3] == ["a", 64, "25.0 ± 7.1"]  # the -1 of seed 3 is not a value
    assert rows[1][2] == "30.0 ± 20.0"
    assert rows[2][2] == "-5.0 ± 21.2"  # seeds 1 and 2 only: -20 and +10 points
