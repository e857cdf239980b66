# SPD-YOLO, AGPL-3.0 license
"""Export (issue 21): the 4-D forms of the SPD layers, the export form (fold + 4-D), the graph rank check, export.py's
bad inputs, and (deploy tier, `make test-deploy`) every format that runs here in its own runtime with parity."""

import importlib.util
import shutil

import pytest
import torch
from torch import nn

import spd_yolo
from spd_yolo.cli import export
from spd_yolo.export_check import graph_rank
from spd_yolo.layers import SpaceToDepth, SPDGroupConv, depth_to_space, space_to_depth
from spd_yolo.layers.four_d import DepthToSpace4D, SpaceToDepth4D, depth_to_space_4d, space_to_depth_4d
from spd_yolo.rewrite import export_form


@pytest.mark.parametrize("s,shape", [(2, (2, 3, 8, 6)), (2, (1, 1, 2, 2)), (3, (2, 5, 9, 12)), (4, (1, 2, 8, 4))])
def test_4d_forms_equal_the_6d_forms_bit_for_bit(s, shape, rng):
    x = torch.randn(shape, generator=rng)
    want = space_to_depth(x, s)
    got = space_to_depth_4d(x, s)
    assert got.shape == (shape[0], s * s * shape[1], shape[2] // s, shape[3] // s) and torch.equal(got, want)
    back = depth_to_space_4d(want, s)
    assert torch.equal(back, x) and torch.equal(back, depth_to_space(want, s))
    assert torch.equal(SpaceToDepth4D(s)(x), want) and torch.equal(DepthToSpace4D(s)(want), x)


def test_4d_form_traces_without_a_tensor_above_4d(rng, tmp_path):
    """The traced graph of the 4-D form holds no rank above 4 (the 6-D form's reshape is rank 6)."""
    for layer, rank in ((SpaceToDepth(2), 6), (SpaceToDepth4D(2), 4)):
        path = tmp_path / f"{type(layer).__name__}.onnx"
        torch.onnx.export(layer, (torch.rand(1, 3, 8, 8),), str(path), opset_version=17, dynamo=False)
        assert graph_rank("onnx", path)[0] == rank


def test_4d_form_keeps_the_size_error():
    with pytest.raises(spd_yolo.SPDSizeError, match="cannot split a 7x8"):
        SpaceToDepth4D(2)(torch.zeros(1, 1, 7, 8))


def _out(y):
    return y[0] if isinstance(y, (list, tuple)) else y


def test_export_form_of_yolov5n_spd_folds_five_writes_two_in_4d_and_keeps_outputs(rng):
    model = spd_yolo.YOLO("yolov5n-SPD").model.fuse().eval()
    x = torch.rand(1, 3, 64, 64, generator=rng)
    form, folded, four_d = export_form(model)
    assert len(folded) == 5 and four_d == ["SpaceToDepth model.23: 4-D form", "SpaceToDepth model.27: 4-D form"]
    assert all(type(m) is SpaceToDepth4D for m in form.modules() if isinstance(m, SpaceToDepth))
    assert form.model[23].f == -1 and form.model[23].i == 23  # the parser's bookkeeping travels with it
    with torch.no_grad():
        want, got = _out(model(x)), _out(form(x))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-4), (got - want).abs().max()
    assert any(type(m) is SpaceToDepth for m in model.modules())  # the original is left as it was


def test_an_spd_group_conv_that_cannot_fold_is_written_4d_with_its_channel_order(rng):
    """A dilated SPDGroupConv has no strided equivalent: SpaceToDepth4D + channel gather + its conv, same values."""
    m = nn.Sequential(SPDGroupConv(8, 16, 3, 2, d=2)).eval()
    x = torch.randn(2, 8, 12, 12, generator=rng)
    form, folded, four_d = export_form(m)
    assert folded == [] and four_d == ["SPDGroupConv 0: 4-D form"]
    with torch.no_grad():
        assert torch.equal(form(x), m(x))


@pytest.mark.parametrize("line,rank", [
    ("Reshape                  reshape_1               1 1 0 1 0=80 1=80 2=128", 4),
    ("Reshape                  reshape_1               1 1 in0 1", 5),  # pnnx's trace of a 6-D reshape
    ("Tensor.reshape           reshape_1               1 1 in0 1 shape=(1,3,2,2,2,2)", 5),  # left unconverted
])
def test_ncnn_rank_check_reads_the_param_file(tmp_path, line, rank):
    folder = tmp_path / "m_ncnn_model"
    folder.mkdir()
    (folder / "model.ncnn.param").write_text(
        f"7767517\n3 3\nInput in0 0 1 in0\n{line}\nConvolution conv_0 1 1 1 out0 0=8 1=3 6=216\n")
    assert graph_rank("ncnn", folder)[0] == rank
    assert graph_rank("torchscript", folder) is None


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "m.pt"
    spd_yolo.YOLO("yolov5n-SPD").save(path)
    return path


@pytest.mark.parametrize("argv,message", [
    (["--int8", "--include", "onnx"], "--int8: offered for openvino, litert only, not onnx"),
    (["--int8", "--include", "openvino"], "--int8 needs --data"),
    (["--keep-spd", "--strided-spd"], "--keep-spd and --strided-spd: give one"),
])
def test_bad_export_flags_are_one_error_line(weights, capsys, argv, message):
    if "openvino" in argv and importlib.util.find_spec("openvino") is None:
        argv = [a.replace("openvino", "litert") for a in argv]  # the converter check would answer first
        if importlib.util.find_spec("litert_torch") is None:
            pytest.skip("no INT8 converter installed")
    assert export.cli(["--weights", str(weights), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_a_missing_converter_is_one_error_line_naming_the_extra(weights, capsys, tmp_path):
    missing = next((f for f, mods in export.CONVERTERS.items()
                    if any(importlib.util.find_spec(m) is None for m in mods)), None)
    if missing is None:
        pytest.skip("every converter is installed here")
    w = shutil.copy(weights, tmp_path / "m.pt")
    assert export.cli(["--weights", str(w), "--include", missing]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"error: --include {missing}: needs " in err[0], err
    assert 'install the deploy extra: pip install "spd-yolo[deploy]"' in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # nothing written


# Deploy tier: every format whose converter installs here, run in its own runtime (make test-deploy).
RUNNABLE = ["torchscript", "onnx", "openvino", "ncnn", "mnn", "litert"]
NAMES = {"torchscript": "TorchScript", "onnx": "ONNX", "openvino": "OpenVINO (fp32)", "ncnn": "NCNN", "mnn": "MNN",
         "litert": "LiteRT"}


def _checkpoint(name: str, path):
    """An untrained model whose class scores sit near 0.5 (class biases zeroed), so score differences show."""
    model = spd_yolo.YOLO(name)
    head = model.model.model[-1]
    for seq in (*head.cv3, *getattr(head, "one2one_cv3", ())):
        nn.init.zeros_(seq[-1].bias)
    model.save(path)
    return path


@pytest.mark.slow
@pytest.mark.deploy
@pytest.mark.parametrize("name", ["yolov5n-SPD", "yolo11n-SPD", "yolov5n.yaml"])
def test_every_format_runs_in_its_own_runtime_with_parity(name, tmp_path, capsys):
    weights = _checkpoint(name, tmp_path / "m.pt")
    assert export.cli(["--weights", str(weights), "--include", *RUNNABLE, "coreml", "--img", "64"]) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    for fmt in RUNNABLE:
        line = next((x for x in out.splitlines() if x.startswith(f"{NAMES[fmt]} parity on bus.jpg (1, 84, 84)")), None)
        assert line is not None, (fmt, out[-3000:])
        assert float(line.split("max abs diff ")[1].split()[0]) < 0.064  # 1e-3 of 64 px
        assert float(line.split("scores ")[1].split(")")[0]) < 1e-3
    assert "onnx: no tensor above 4-D in the graph" in out and "ncnn: no tensor above 4-D in the graph" in out
    assert "coreml: converted, not run here (Core ML runs on macOS / iOS only)" in out
    assert (tmp_path / "m.mlpackage").is_dir() and (tmp_path / "m_ncnn_model/model.ncnn.param").is_file()


@pytest.mark.slow
@pytest.mark.deploy
def test_keep_spd_ncnn_export_is_refused_by_the_rank_check_only_when_asked(tmp_path, capsys):
    """yolov8n-SPD in NCNN: with --keep-spd the 6-D reshape reaches NCNN as a parameterless Reshape (what broke);
    by default the graph is 4-D and the model runs in NCNN with parity."""
    weights = _checkpoint("yolov8n-SPD", tmp_path / "m.pt")
    assert export.cli(["--weights", str(weights), "--include", "ncnn", "--img", "64", "--keep-spd", "--no-parity"]) == 0
    assert graph_rank("ncnn", tmp_path / "m_ncnn_model")[0] == 5
    capsys.readouterr()
    assert export.cli(["--weights", str(weights), "--include", "ncnn", "--img", "64"]) == 0
    out = capsys.readouterr().out
    assert "ncnn: no tensor above 4-D in the graph" in out and "NCNN parity on bus.jpg (1, 84, 84)" in out
    assert graph_rank("ncnn", tmp_path / "m_ncnn_model")[0] == 4
