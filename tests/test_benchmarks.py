# SPD-YOLO, AGPL-3.0 license
"""The benchmark scripts run as a user runs them, in their own processes: bad arguments rejected before any work
(clear message, exit code 2, nothing written) and every script's --quick run finishing with a readable results file.
Nothing here imports from benchmarks/; the scripts' own logic is tested beside them (benchmarks/test_scripts.py)."""

import json

import pytest
import torch

from forkserver import run_script
from helpers import REPO
from spd_yolo.engine import FINETUNE_KEY, checkpoint_record

CASES = [
    ("bench_small_objects.py", ["--pair", "yolov9z"], "--pair yolov9z: unknown; choose one of yolov5n"),
    ("bench_small_objects.py", ["--eval-imgsz", "256", "100"], "must be a positive multiple of 32"),
    ("bench_small_objects.py", ["--threads", "0"], "--threads must be an integer >= 1"),
    ("bench_small_objects.py", ["--seeds", "1", "1"], "--seeds must be distinct"),
    ("bench_small_objects.py", ["--out", "results.txt"], "--out must end in .json or .md"),
    ("bench_small_objects.py", ["--variants", "spd", "fast"], "--variants fast: unknown; choose from stock"),
    ("bench_small_objects.py", ["--variants", "spd-lite"], "--variants spd-lite: no yolov5n-SPD-lite model"),
    ("bench_small_objects.py", ["--slice-overlap", "1"], "--slice-overlap must be in [0, 1)"),
    ("bench_finetune.py", ["--rules", "adam"], "invalid choice: 'adam'"),
    ("bench_finetune.py", ["--pretrained", "missing.pt"], "--pretrained missing.pt: file not found"),
    ("bench_finetune.py", ["--epochs", "0"], "--epochs, --pretrain-epochs and --batch-size must be >= 1"),
    ("bench_detect_load.py", ["--imgsz", "250"], "--imgsz must be a positive multiple of 32"),
    ("bench_detect_load.py", ["--items", "10"], "--items must be >= 100"),
    ("bench_detect_load.py", ["--threads", "-1"], "--threads must be an integer >= 1"),
    ("bench_export.py", ["--models", "yolov9n-SPD"], "--models: unknown model 'yolov9n-SPD'"),
    ("bench_export.py", ["--formats", "onnx", "tflite2"], "--formats: unknown format 'tflite2'"),
    ("bench_export.py", ["--imgsz", "100"], "--imgsz must be a positive multiple of 32"),
    ("bench_int8.py", ["--weights", "missing.pt", "--data", "d.yaml"], "--weights missing.pt: file not found"),
    ("bench_int8.py", ["--weights", "m.pt", "--data", "d.yaml", "--formats", "onnx"], "invalid choice: 'onnx'"),
    ("bench_classify.py", ["--models", "resnet34-SPD"], "resnet34-SPD"),
    ("bench_classify.py", ["--imgsz", "48"], "--imgsz must be a positive multiple of 32"),
    ("bench_classify.py", ["--threads", "0"], "--threads must be an integer >= 1"),
    ("bench_classify.py", ["--n-classes", "11"], "--n-classes must be in 2..10"),
    ("bench_classify.py", ["--epochs", "-1"], "--epochs must be an integer >= 1"),
]


@pytest.mark.slow  # starts fresh interpreters
@pytest.mark.parametrize("script,argv,message", CASES, ids=[f"{c[0]}:{c[1][0]}" for c in CASES])
def test_bad_benchmark_arguments(script, argv, message, tmp_path):
    out = run_script(REPO / "benchmarks" / script, argv, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


# ---------------------------------------------------------------------------------------------------------------------
# Every benchmark runs end to end in its --quick mode (seconds each) and writes a readable results file.


def _quick(script: str, tmp_path, *extra) -> dict:
    """Run benchmarks/<script>.py --quick --threads 1 --out r.json in `tmp_path`; the parsed results (exit 0 asserted).
    One thread: a smoke run of tiny models gains nothing from more, and on a busy machine more threads than free cores
    make each step several times slower."""
    args = ["--quick", "--threads", "1", "--out", "r.json", *extra]
    out = run_script(REPO / "benchmarks" / f"{script}.py", args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "|---" in out.stdout  # printed a table
    return json.loads((tmp_path / "r.json").read_text())


@pytest.mark.slow  # runs the whole script
def test_quick_spd_layer_benchmark(tmp_path):
    data = _quick("bench_spd_layer", tmp_path)
    assert "fast_kernel" not in data
    fwd = {r["variant"]: r for r in data["layer"] if r["pass"] == "forward"}
    expected = {"copy", "layer", "slicing", "pixel_unshuffle"}
    assert set(fwd) == expected and fwd["copy"]["x_copy"] == 1.0
    assert all(r["ms"] > 0 for r in data["layer"])
    assert {r["variant"] for r in data["layer"] if r["pass"] == "forward+backward"} == expected | {"autograd floor"}
    share = data["model_share"]
    assert [r["path"] for r in share] == ["layer", "slicing"] * 2
    assert [r["setting"].split(" ")[0] for r in share] == ["train"] * 2 + ["inference"] * 2
    assert all(0 < r["share"] < 1 and r["spd_layers"] > 0 for r in share)
    assert all(r["ratio_to_stock"] > 0 and r["stock_ms"] > 0 for r in share)
    assert all(1.5 < r["gflops_ratio"] < 1.6 for r in share)  # yolov5n-SPD / yolov5n at 640: 1.56x


@pytest.mark.slow  # runs the whole script
# Over 30 s on a busy 2-core machine: three ONNX exports and two memory probes in fresh interpreters.
def test_quick_models_benchmark(tmp_path):
    (pair,) = _quick("bench_models", tmp_path)["pairs"]
    assert (pair["spd"], pair["stock"]) == ("yolov5n-SPD", "yolov5n")
    assert pair["gflops"][0] > pair["gflops"][1] and pair["params"][0] > pair["params"][1]
    assert set(pair["latency"]) == {"fused SPD", "fused stock", "fused SPD, strided rewrite", "unfused SPD",
                                    "unfused stock", "ORT SPD", "ORT stock", "ORT SPD, strided rewrite"}
    assert pair["train"]["time_ratio"] > 0 and min(pair["train"]["images_per_s"]) > 0
    assert all(m["step_mib"] > 0 for m in pair["memory"])


@pytest.mark.slow  # runs the whole script
def test_quick_gpu_benchmark_on_cpu(tmp_path):
    data = _quick("bench_gpu", tmp_path, "--device", "cpu")
    assert data["environment"]["device"] == "cpu"
    got = [(r["batch"], r["variant"], r["dtype"]) for r in data["latency"]]
    assert got == [(b, v, "float32") for b in (1, 2) for v in ("SPD", "SPD, strided rewrite", "stock")]
    (train,) = data["train"]
    assert train["spd"] == "yolov5n-SPD" and train["time_ratio"] > 0 and train["peak_step_mib"] == [None, None]
    assert {r["variant"] for r in data["layer"]} == {"copy", "layer", "slicing", "pixel_unshuffle", "autograd floor"}
    assert 1.5 < data["gflops_ratio"]["yolov5n-SPD"] < 2  # --quick: yolov5n-SPD, 1.56x


@pytest.mark.slow  # runs the whole script
# Over 30 s on a busy 2-core machine: the script twice: three trainings, seven evaluations.
def test_quick_small_object_benchmark(tmp_path):
    data = _quick("bench_small_objects", tmp_path, "--project", "runs", "--reuse")  # nothing to reuse yet
    assert set(data["results"]) == {"yolov5n", "yolov5n-SPD"} and data["reused"] == 0
    assert set(data["results"]["yolov5n"]) == {"64", "32"}  # plain evaluation at both sizes, one seed
    assert list(data["sliced"]["yolov5n-SPD"]) == ["32"]  # val --slice at the smallest size
    assert all(len(v) == 1 for v in data["sliced"]["yolov5n-SPD"]["32"].values())
    assert data["runs"]["spd"]["gflops"] > data["runs"]["stock"]["gflops"] > 0
    assert list((tmp_path / "runs").glob("ap_s_vs_resolution_*.png"))

    # --reuse with the stock P2 model added: only it trains and is evaluated; the rest is read back unchanged
    stock_best = tmp_path / "runs/train/yolov5n-seed0/weights/best.pt"
    mtime = stock_best.stat().st_mtime_ns
    again = _quick("bench_small_objects", tmp_path, "--project", "runs", "--reuse", "--variants", "spd", "stock-p2")
    assert list(again["results"]) == ["yolov5n", "yolov5n-SPD", "yolov5n-p2"] and again["runs"]["stock-p2"]
    assert again["reused"] == 2 + 2 * 3  # stock's and SPD's trainings and their 3 evaluations (64, 32, 32 sliced)
    assert {k: again["results"][k] for k in data["results"]} == data["results"]
    assert stock_best.stat().st_mtime_ns == mtime


@pytest.mark.slow  # runs the whole script
# Over 30 s on a busy 2-core machine: one pretraining and five fine-tunings, each evaluated.
def test_quick_finetune_benchmark(tmp_path):
    """Pretrain stock, upgrade exactly, fine-tune stock and SPD under two rules; each SPD run used the rule asked
    for."""
    data = _quick("bench_finetune", tmp_path, "--project", "runs")
    assert data["upgrade"]["target"] == "yolov8n-SPD" and data["upgrade"]["max_diff"] <= data["upgrade"]["tolerance"]
    assert list(data["results"]) == ["stock, auto", "stock, SGD", "SPD, none", "SPD, sgd-hold",
                                     f"stock, SGD, x{data['gflops_ratio']:.2f} epochs"]
    assert all(len(v["AP"]) == 1 for r in data["results"].values() for v in r.values())  # plain and sliced, 1 seed
    ckpt = torch.load(tmp_path / "runs/train/SPD-sgd-hold-seed0/weights/best.pt", weights_only=False)
    assert checkpoint_record(ckpt, FINETUNE_KEY)["name"] == "sgd-hold"


@pytest.mark.slow  # runs the whole script
def test_quick_classification_benchmark(tmp_path):
    data = _quick("bench_classify", tmp_path)
    assert "accuracy" in data and "speed" in data


@pytest.mark.slow  # runs the whole script
# Over 30 s on a busy 2-core machine: four detect.py processes over 600 frames.
def test_quick_detect_load_benchmark(tmp_path):
    runs = _quick("bench_detect_load", tmp_path)["runs"]
    assert {r["input"] for r in runs} == {"video", "images"}
    assert all(r["output_frames"] == r["items"] for r in runs if r["input"] == "video")


@pytest.mark.slow  # runs the whole script
def test_quick_coco_eval_benchmark(tmp_path):
    data = _quick("bench_coco_eval", tmp_path)
    assert [r["backend"] for r in data["runs"]] == ["pycocotools", "faster-coco-eval"]
    assert data["max_abs_difference"] <= 1e-6  # both backends give the same 12 numbers
    assert all(r["images"] == 200 and r["detections"] > 0 and r["peak_rss_mib"] > 0 for r in data["runs"])
    assert all(set(r["seconds"]) >= {"gt_build", "load", "evaluate", "accumulate", "summarize", "total"}
               for r in data["runs"])


@pytest.mark.slow
def test_quick_export_benchmark(tmp_path):
    """yolov5n-SPD beside yolov5n in ONNX (runs with parity, a 4-D graph) and NCNN (the same where the deploy extra
    is installed, else a row naming the missing converter)."""
    rows = {(r["model"], r["format"]): r for r in _quick("bench_export", tmp_path)["rows"]}
    assert set(rows) == {(m, f) for m in ("yolov5n-SPD", "yolov5n") for f in ("onnx", "ncnn")}
    for model in ("yolov5n-SPD", "yolov5n"):
        onnx = rows[(model, "onnx")]
        assert onnx["runs"] == "yes" and onnx["ok"] and onnx["rank"] == 4 and onnx["latency_ms"] > 0
        ncnn = rows[(model, "ncnn")]
        ran = ncnn.get("runs") == "yes" and ncnn["ok"] and ncnn["rank"] == 4
        assert ran or ncnn["note"].endswith("not installed")
