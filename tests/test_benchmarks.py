# SPD-YOLO, AGPL-3.0 license
"""The benchmark scripts: bad arguments rejected before any work (clear message, exit code 2, nothing written),
result files written atomically, and every script's --quick run finishing with a readable results file."""

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO
from spd_yolo import build_model


def _bench_module(name: str):
    """Import benchmarks/<name>.py (a script folder, not a package)."""
    folder = str(REPO / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


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


@pytest.mark.parametrize("script,argv,message", CASES, ids=[f"{c[0]}:{c[1][0]}" for c in CASES])
def test_bad_benchmark_arguments(script, argv, message, tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *argv], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    "script,argv,message",
    [
        ("bench_models", ["--models", "yolov9z-SPD"], "unknown model 'yolov9z-SPD'"),
        ("bench_models", ["--models", "yolov5n"], "unknown model 'yolov5n'"),
        ("bench_models", ["--imgsz", "100"], "--imgsz must be a positive multiple of 32"),
        ("bench_models", ["--train-imgsz", "0"], "--train-imgsz must be a positive multiple of 32"),
        ("bench_models", ["--threads", "0"], "--threads must be an integer >= 1"),
        ("bench_models", ["--train-batch", "0"], "--train-batch must be an integer >= 1"),
        ("bench_models", ["--out", "results.txt"], "--out must end in .json or .md"),
        ("bench_spd_layer", ["--threads", "-1"], "--threads must be an integer >= 1"),
        ("bench_spd_layer", ["--shape", "1,64,150,160"], "must be a positive multiple of 32"),
        ("bench_spd_layer", ["--shape", "1,64,160"], "four positive integers"),
        ("bench_spd_layer", ["--repeats", "0"], "--repeats must be an integer >= 1"),
        ("bench_spd_layer", ["--out", "/no/such/folder/r.json"], "does not exist"),
        ("bench_spd_layer", ["--variants", "bogus"], "invalid choice: 'bogus'"),
        ("bench_gpu", ["--models", "yolov5n"], "unknown model 'yolov5n'"),
        ("bench_gpu", ["--device", "cpu", "--imgsz", "650"], "--imgsz must be a positive multiple of 32"),
        ("bench_gpu", ["--device", "cpu", "--train-imgsz", "16"], "--train-imgsz must be a positive multiple of 32"),
        ("bench_gpu", ["--device", "cpu", "--batches", "1", "0"], "--batches must be integers >= 1, got 1 0"),
        ("bench_gpu", ["--device", "cpu", "--train-batch", "-4"], "--train-batch must be integers >= 1"),
        ("bench_gpu", ["--device", "gpu0"], "--device must be cuda, cuda:i, i or cpu, got 'gpu0'"),
        ("bench_gpu", ["--device", "cpu", "--threads", "0"], "--threads must be an integer >= 1"),
        ("bench_gpu", ["--device", "cuda:99"], "--device cuda:99: this machine has"),
    ],
)
def test_benchmarks_reject_bad_arguments(script, argv, message, capsys):
    module = _bench_module(script)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_benchmark_results_are_written_atomically(tmp_path, monkeypatch):
    common = _bench_module("common")
    out = tmp_path / "r.json"
    common.write_results(out, {"a": 1}, "| a |")
    assert out.read_text().strip().startswith("{") and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(common.os, "replace", boom)
    with pytest.raises(OSError):
        common.write_results(tmp_path / "new.md", {}, "| b |")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no partial or temporary file left
    with pytest.raises(TypeError):
        common.write_results(out, {"x": object()}, "")  # unserialisable: fails before touching the old file
    assert out.read_text().strip().startswith("{")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_gpu_benchmark_without_a_gpu_says_so(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _bench_module("bench_gpu").parse_args([])  # default --device cuda
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "use --device cpu" in err


def test_slicing_variant_is_the_layer_channel_order(rng):
    """bench_spd_layer's 'slicing' variant: the same bytes as the package's layer (it also checks before timing)."""
    from spd_yolo.layers import space_to_depth

    slicing_spd = _bench_module("bench_spd_layer").slicing_spd
    x = torch.randn(2, 3, 8, 12, generator=rng)
    assert torch.equal(slicing_spd(x), space_to_depth(x))
    assert torch.equal(slicing_spd(x[..., :6, :9], 3), space_to_depth(x[..., :6, :9], 3))
    assert not torch.equal(slicing_spd(x), torch.nn.functional.pixel_unshuffle(x, 2))  # a different order


def test_slicing_swap_reaches_the_model_layers_and_is_undone(rng):
    """Part B's swap: SpaceToDepth layers call the swapped function inside the block, and the layer again after."""
    from spd_yolo.layers import SpaceToDepth, space_to_depth

    bench = _bench_module("bench_spd_layer")
    calls = []

    def recording(x, s):
        calls.append(s)
        return bench.slicing_spd(x, s)

    layer, x = SpaceToDepth(2), torch.randn(1, 2, 4, 4, generator=rng)
    with bench.swapped_layer(recording):
        assert torch.equal(layer(x), space_to_depth(x))
    assert calls == [2]
    with pytest.raises(RuntimeError), bench.swapped_layer(recording):
        raise RuntimeError("boom")  # restored even when the block fails
    layer(x)
    assert calls == [2]


def test_layer_benchmark_times_only_the_variants_asked_for():
    rows = _bench_module("bench_spd_layer").bench_layer((1, 4, 64, 64), "cpu", 1, only=["layer"])
    assert [(r["pass"], r["variant"]) for r in rows] == [
        ("forward", "copy"), ("forward", "layer"), ("forward+backward", "copy"), ("forward+backward", "layer")]
    assert all(r["ms"] > 0 for r in rows)


def test_small_object_table_keeps_negative_differences():
    """Each variant - stock is paired by seed and may be negative; pycocotools' -1 (undefined) is left out, never
    averaged; the verdict is "no difference shown" unless |mean diff| > std of the paired diffs."""
    bench = _bench_module("bench_small_objects")
    METRICS, table_rows = bench.METRICS, bench.table_rows
    stock = {64: {m: [0.30, 0.20, -1.0] for m in METRICS}}
    spd = {64: {m: [0.10, 0.30, 0.50] for m in METRICS}}
    rows = table_rows({"a.yaml": stock, "b": spd}, ["a.yaml", "b"], [64])
    assert rows[0][:4] == ["a", 64, "plain", "25.0 ± 7.1"]  # the -1 of seed 3 is not a value
    assert rows[1][3] == "30.0 ± 20.0"
    assert rows[2][:4] == ["b - stock", 64, "plain", "-5.0 ± 21.2"]  # seeds 1 and 2 only: -20 and +10 points
    assert rows[2][-2:] == ["no difference shown"] * 2  # |-5| < 21.2
    assert len(rows) == 3  # no sliced block without sliced results


def test_small_object_table_sliced_block_and_verdicts():
    bench = _bench_module("bench_small_objects")
    M = bench.METRICS
    plain = {"s": {64: {m: [0.1, 0.1] for m in M}}, "v": {64: {m: [0.3, 0.4] for m in M}}}
    sliced = {"s": {64: {m: [0.2, 0.3] for m in M}}, "v": {64: {m: [0.1, 0.2] for m in M}}}
    rows = bench.table_rows(plain, ["s", "v"], [64], sliced)
    assert [r[0] for r in rows] == ["s", "v", "v - stock", "s", "v", "v - stock", "s, sliced - plain"]
    assert [r[2] for r in rows] == ["plain"] * 3 + ["sliced"] * 3 + [""]
    assert rows[2][3] == "+25.0 ± 7.1" and rows[2][-1] == "higher"  # +20, +30: mean beyond the spread
    assert rows[5][3] == "-10.0 ± 0.0" and rows[5][-1] == "lower"
    assert rows[6][3] == "+15.0 ± 7.1" and rows[6][-1] == "higher"  # slicing alone: +10, +20
    assert bench.verdict([0.0, 0.0]) == bench.verdict([0.1, -0.1]) == "no difference shown"  # ties show none
    assert bench.verdict([0.05]) == "1 seed: no spread" and bench.verdict([]) == "-"


def test_small_object_compute_matched_epochs():
    """stock-compute trains round(epochs x GFLOPs(SPD) / GFLOPs(stock)) epochs, at least 1, under a labelled row."""
    bench = _bench_module("bench_small_objects")
    assert bench.compute_matched_epochs(12, 7.1, 4.55) == (19, pytest.approx(1.5604, abs=1e-4))  # 18.7 -> 19
    assert bench.compute_matched_epochs(100, 1.92, 1.311)[0] == 146
    assert bench.compute_matched_epochs(1, 1.0, 4.0)[0] == 1  # never 0 epochs
    assert bench.compute_matched_epochs(10, 1.0, 1.0) == (10, 1.0)
    assert bench.compute_label("yolov5n.yaml", 1.5604) == "yolov5n (x1.56 epochs)"
    assert [bench.variant_cfg("yolov8n", v) for v in bench.VARIANTS] == [
        "yolov8n.yaml", "yolov8n-SPD", "yolov8n-SPD-p2", "yolov8n-p2.yaml", "yolov8n-SPD-lite", "yolov8n.yaml"]
    assert bench.available_variants("yolov5n") == ["stock", "spd", "spd-p2", "stock-p2", "stock-compute"]  # no lite
    assert bench.available_variants("yolov8n") == list(bench.VARIANTS)
    for pair in bench.PAIRS:  # the stock P2 control exists for every pair (ultralytics' yolov8-p2, our yolov5/11-p2)
        assert build_model(bench.variant_cfg(pair, "stock-p2"), nc=2).stride.tolist() == [4, 8, 16, 32], pair


# ---------------------------------------------------------------------------------------------------------------------
# Every benchmark runs end to end in its --quick mode (seconds each) and writes a readable results file.


def _quick(script: str, tmp_path, *extra) -> dict:
    """Run benchmarks/<script>.py --quick --out r.json in `tmp_path`; the parsed results (exit 0 asserted)."""
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{script}.py"), "--quick", "--out", "r.json",
                          *extra], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "|---" in out.stdout  # printed a table
    return json.loads((tmp_path / "r.json").read_text())


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


def test_quick_models_benchmark(tmp_path):
    (pair,) = _quick("bench_models", tmp_path)["pairs"]
    assert (pair["spd"], pair["stock"]) == ("yolov5n-SPD", "yolov5n")
    assert pair["gflops"][0] > pair["gflops"][1] and pair["params"][0] > pair["params"][1]
    assert set(pair["latency"]) == {"fused SPD", "fused stock", "fused SPD, strided rewrite", "unfused SPD",
                                    "unfused stock", "ORT SPD", "ORT stock", "ORT SPD, strided rewrite"}
    assert pair["train"]["time_ratio"] > 0 and min(pair["train"]["images_per_s"]) > 0
    assert all(m["step_mib"] > 0 for m in pair["memory"])


def test_quick_gpu_benchmark_on_cpu(tmp_path):
    data = _quick("bench_gpu", tmp_path, "--device", "cpu")
    assert data["environment"]["device"] == "cpu"
    got = [(r["batch"], r["variant"], r["dtype"]) for r in data["latency"]]
    assert got == [(b, v, "float32") for b in (1, 2) for v in ("SPD", "SPD, strided rewrite", "stock")]
    (train,) = data["train"]
    assert train["spd"] == "yolov5s-SPD" and train["time_ratio"] > 0 and train["peak_step_mib"] == [None, None]
    assert {r["variant"] for r in data["layer"]} == {"copy", "layer", "slicing", "pixel_unshuffle", "autograd floor"}
    assert 1.5 < data["gflops_ratio"]["yolov5s-SPD"] < 2


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


def test_quick_finetune_benchmark(tmp_path):
    """Pretrain stock, upgrade exactly, fine-tune stock and SPD under two rules; each SPD run used the rule asked for."""
    data = _quick("bench_finetune", tmp_path, "--project", "runs")
    assert data["upgrade"]["target"] == "yolov8n-SPD" and data["upgrade"]["max_diff"] <= data["upgrade"]["tolerance"]
    assert list(data["results"]) == ["stock, auto", "stock, SGD", "SPD, none", "SPD, sgd-hold",
                                     f"stock, SGD, x{data['gflops_ratio']:.2f} epochs"]
    assert all(len(v["AP"]) == 1 for r in data["results"].values() for v in r.values())  # plain and sliced, 1 seed
    ckpt = torch.load(tmp_path / "runs/train/SPD-sgd-hold-seed0/weights/best.pt", weights_only=False)
    assert ckpt["spd_finetune"]["name"] == "sgd-hold"


def test_reuse_needs_the_same_training_settings_and_weights(tmp_path):
    bench = _bench_module("bench_small_objects")
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "weights/best.pt").write_bytes(b"x")
    (run / "results.csv").write_text("epoch,loss\n1,0.5\n2,0.4\n")
    data = tmp_path / "d.yaml"
    (run / "args.yaml").write_text(f"model: /x/yaml_configs/yolov5n-SPD.yaml\ndata: {data}\nepochs: 2\nseed: 0\n"
                                   "scale: 0.3\n")
    same = {"model": "yolov5n-SPD", "data": data, "epochs": 2, "seed": 0, "scale": 0.3}
    assert bench.finished_run(run, same)
    for changed in ({"model": "yolov5n"}, {"data": tmp_path / "e.yaml"}, {"seed": 1}, {"scale": 0.5}, {"epochs": 3}):
        assert not bench.finished_run(run, {**same, **changed}), changed
    (run / "results.csv").write_text("epoch,loss\n1,0.5\n")  # interrupted after one of two epochs
    assert not bench.finished_run(run, same)
    record = bench.eval_record(run / "weights/best.pt", data, 64, None)
    assert record == bench.eval_record(run / "weights/best.pt", data, 64, None) != bench.eval_record(
        run / "weights/best.pt", data, 64, 0.2)
    os.utime(run / "weights/best.pt", ns=(1, 1))  # retrained weights: their evaluations are stale
    assert bench.eval_record(run / "weights/best.pt", data, 64, None) != record


def test_quick_classification_benchmark(tmp_path):
    data = _quick("bench_classify", tmp_path)
    assert "accuracy" in data and "speed" in data


def test_quick_detect_load_benchmark(tmp_path):
    runs = _quick("bench_detect_load", tmp_path)["runs"]
    assert {r["input"] for r in runs} == {"video", "images"}
    assert all(r["output_frames"] == r["items"] for r in runs if r["input"] == "video")


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
