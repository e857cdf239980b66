# SPD-YOLO, AGPL-3.0 license
"""The benchmark scripts' own logic: argument checks, results files, the layer swap of bench_spd_layer, the tables'
pairing and verdicts, the reuse of finished runs. Beside the scripts, so that tests/ imports nothing from here (the
scripts' end-to-end --quick runs are in tests/test_benchmarks.py, as subprocesses)."""

import os

import pytest
import torch

import bench_gpu
import bench_models
import bench_small_objects
import bench_spd_layer
import bench_tiles
import common
from spd_yolo import build_model
from spd_yolo.layers import SpaceToDepth, space_to_depth

MODULES = {m.__name__: m for m in (bench_gpu, bench_models, bench_spd_layer)}


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
    module = MODULES[script]
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_benchmark_results_are_written_atomically(tmp_path, monkeypatch):
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
        bench_gpu.parse_args([])  # default --device cuda
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "use --device cpu" in err


def test_slicing_variant_is_the_layer_channel_order(rng):
    """bench_spd_layer's 'slicing' variant: the same bytes as the package's layer (it also checks before timing)."""
    slicing_spd = bench_spd_layer.slicing_spd
    x = torch.randn(2, 3, 8, 12, generator=rng)
    assert torch.equal(slicing_spd(x), space_to_depth(x))
    assert torch.equal(slicing_spd(x[..., :6, :9], 3), space_to_depth(x[..., :6, :9], 3))
    assert not torch.equal(slicing_spd(x), torch.nn.functional.pixel_unshuffle(x, 2))  # a different order


def test_slicing_swap_reaches_the_model_layers_and_is_undone(rng):
    """Part B's swap: SpaceToDepth layers call the swapped function inside the block, and the layer again after."""
    bench = bench_spd_layer
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
    rows = bench_spd_layer.bench_layer((1, 4, 64, 64), "cpu", 1, only=["layer"])
    assert [(r["pass"], r["variant"]) for r in rows] == [
        ("forward", "copy"), ("forward", "layer"), ("forward+backward", "copy"), ("forward+backward", "layer")]
    assert all(r["ms"] > 0 for r in rows)


def test_small_object_table_keeps_negative_differences():
    """Each variant - stock is paired by seed and may be negative; pycocotools' -1 (undefined) is left out, never
    averaged; the verdict is "no difference shown" unless |mean diff| > std of the paired diffs."""
    bench = bench_small_objects
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
    bench = bench_small_objects
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
    bench = bench_small_objects
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


def test_reuse_needs_the_same_training_settings_and_weights(tmp_path):
    bench = bench_small_objects
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


@pytest.mark.parametrize("argv,message", [
    (["--imgsz", "100"], "--imgsz must be a positive multiple of 32"),
    (["--variants", "spd-lite"], "--variants spd-lite: unknown; choose from stock, spd, spd-p2, stock-p2"),
    (["--tile-overlap", "1"], "--tile-overlap must be in [0, 1)"),
    (["--seeds", "2", "2"], "--seeds must be distinct"),
    (["--tile-epochs", "0"], "--epochs, --tile-epochs and --batch-size must be >= 1"),
])
def test_bench_tiles_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_tiles.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bench_tiles_table_pairs_by_seed():
    bench = bench_tiles
    cell = lambda a, b: {m: [a, b] for m in bench.METRICS}
    results = {lab: {"whole": {"plain": cell(0.10, 0.20), "sliced": cell(0.10, 0.30)},
                     "tiles": {"plain": cell(0.10, 0.20), "sliced": cell(0.30, 0.40)}} for lab in ("s", "d")}
    results["d"]["tiles"]["sliced"] = cell(0.31, 0.42)
    info = {lab: {"whole": "w", "tiles": "t"} for lab in results}
    rows = {r[0]: r for r in bench.table_rows(results, ["s", "d"], info)}
    assert rows["s: tiles - whole, sliced"][3:6] == ["+15.0 ± 7.1"] * 3  # (0.2, 0.1) paired by seed
    assert rows["s: tiles - whole, sliced"][6] == bench.verdict([0.2, 0.1]) == "higher"
    assert rows["s: tiles - whole, plain"][3] == "+0.0 ± 0.0" and rows["s: tiles - whole, plain"][6] == (
        "no difference shown")
    assert rows["d - s: tiles, sliced"][3] == "+1.5 ± 0.7"
