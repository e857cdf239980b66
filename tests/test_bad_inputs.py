# SPD-YOLO, AGPL-3.0 license
"""Every bad input answered: model YAMLs, dataset files, inference sizes; plus a fuzz of the YAML-to-model path."""


import cv2
import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spd_yolo
from helpers import script
from spd_yolo import SPDConfigError
from spd_yolo.errors import SPDSizeError


def model_yaml(nc=2, stem=(-1, 1, "SPDConv", [16, 3, 2]), mid=(-1, 1, "Conv", [32, 3, 1]), head_from=(-1,), **extra):
    """The text of a small valid model YAML, with one part swapped for a bad one."""
    return yaml.safe_dump({"nc": nc, **extra, "backbone": [list(stem), list(mid)],
                           "head": [[list(head_from), 1, "Detect", ["nc"]]]})


MODEL_YAMLS = {
    # name: (file name, YAML text, expected message after "<file>: ")
    "not YAML": ("m.yaml", "nc: 2\nbackbone: [[-1, 1, Conv\n", "cannot be read as a model YAML"),
    "a list, not a mapping": ("m.yaml", "- 1\n- 2\n", "cannot be read as a model YAML"),
    "missing backbone": ("m.yaml", "nc: 2\nhead: [[-1, 1, Detect, [nc]]]\n", "'backbone' must be a non-empty list"),
    "missing head": ("m.yaml", "nc: 2\nbackbone: [[-1, 1, Conv, [8, 3, 2]]]\n", "'head' must be a non-empty list"),
    "unknown module": ("m.yaml", model_yaml(stem=(-1, 1, "SPDConvv", [16])),
                       "layer 0 (SPDConvv): unknown module 'SPDConvv'"),
    "wrong argument type": ("m.yaml", model_yaml(stem=(-1, 1, "SPDConv", ["sixteen"])),
                            "layer 0 (SPDConv): argument c2='sixteen' must be an integer >= 1"),
    "from points forward": ("m.yaml", model_yaml(mid=(2, 1, "Conv", [32])),
                            "layer 1 (Conv): 'from' 2 must be -1 or refer to an earlier layer"),
    "from out of range": ("m.yaml", model_yaml(head_from=(-7,)),
                          "layer 2 (Detect): 'from' [-7] must be -1 or refer to an earlier layer"),
    "scale that does not exist": ("yolo99x-test.yaml", model_yaml(scales={"n": [0.33, 0.25, 1024]}),
                                  "scale 'x' does not exist; this YAML defines n"),
    "nc 0": ("m.yaml", model_yaml(nc=0), "'nc' (number of classes) must be an integer >= 1"),
    "nc negative": ("m.yaml", model_yaml(nc=-3), "must be an integer >= 1, got -3"),
}


@pytest.mark.parametrize("case", MODEL_YAMLS, ids=list(MODEL_YAMLS))
def test_bad_model_yaml(case, tmp_path):
    name, text, message = MODEL_YAMLS[case]
    path = tmp_path / name
    path.write_text(text)
    before = path.read_bytes()
    for build in (spd_yolo.YOLO, spd_yolo.build_model):
        with pytest.raises(SPDConfigError) as err:
            build(str(path))
        assert str(err.value).startswith(f"{path}: "), str(err.value)
        assert message in str(err.value), str(err.value)
    assert path.read_bytes() == before


def test_model_yaml_errors_through_train_cli(tmp_path, capsys):
    from spd_yolo.cli import train

    name, text, message = MODEL_YAMLS["from points forward"]
    (tmp_path / name).write_text(text)
    (tmp_path / "images/train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images/train/a.jpg"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "labels/train").mkdir(parents=True)
    (tmp_path / "labels/train/a.txt").write_text("")  # a background image: the data is valid, the model is not
    data = tmp_path / "d.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/train",
                                    "names": ["a"]}))
    assert train.cli(["--cfg", str(tmp_path / name), "--data", str(data), "--project", str(tmp_path / "runs")]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_unknown_bare_model_name_through_train_cli(tmp_path, capsys):
    """`train.py --cfg foo` (no such YAML): one error line naming it and the models there are, not a traceback."""
    from spd_yolo.cli import train

    assert train.cli(["--cfg", "foo", "--data", str(tmp_path / "d.yaml"), "--project", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err
    assert "model YAML foo.yaml not found" in err and "yolov5n-SPD" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def _write_image(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)


@pytest.mark.slow
# Own training: the skipping and its warnings happen while training reads the bad set.
def test_bad_dataset_files_are_skipped_with_a_named_warning(tmp_path):
    """A training set full of problems: each bad file is named in a warning and skipped; odd-but-valid images train."""
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    img = lambda h, w: rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    good_label = "0 0.5 0.5 0.2 0.2\n"
    labels = {
        "class_too_big": "7 0.5 0.5 0.2 0.2\n",
        "negative": "0 -0.5 0.5 0.2 0.2\n",
        "nan": "0 nan 0.5 0.2 0.2\n",
        "over_one": "0 1.5 0.5 0.2 0.2\n",
        "columns": "0 0.5 0.5 0.2\n",
        "empty_label": "",
    }
    for name, text in labels.items():
        _write_image(root / f"images/train/{name}.jpg", img(48, 64))
        (root / "labels/train").mkdir(parents=True, exist_ok=True)
        (root / f"labels/train/{name}.txt").write_text(text)
    _write_image(root / "images/train/no_label.jpg", img(48, 64))
    (root / "images/train/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "images/train/zero.jpg").write_bytes(b"")
    valid = {
        "gray": cv2.cvtColor(img(40, 56), cv2.COLOR_BGR2GRAY),
        "rgba": np.dstack([img(40, 56), np.full((40, 56), 128, np.uint8)]),
        "sixteen_bit": (rng.integers(0, 65535, (40, 56, 3))).astype(np.uint16),
        "huge": np.full((6000, 8000, 3), 90, np.uint8),
    }
    for name, im in valid.items():
        _write_image(root / f"images/train/{name}.png", im)
        (root / f"labels/train/{name}.txt").write_text(good_label)
    _write_image(root / "images/train/one_pixel.png", img(1, 1))
    (root / "labels/train/one_pixel.txt").write_text(good_label)
    for name in ("corrupt", "zero"):
        (root / f"labels/train/{name}.txt").write_text(good_label)
    _write_image(root / "images/val/v.jpg", img(48, 64))
    (root / "labels/val").mkdir(parents=True, exist_ok=True)
    (root / "labels/val/v.txt").write_text(good_label)
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": ["a", "b", "c", "d"]}))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    out = script("train", "--cfg", "yolov5n-SPD", "--data", data, "--epochs", 1, "--img", 64, "--batch-size", 4,
                 "--workers", 0, "--device", "cpu", "--project", tmp_path / "runs", "--noplots")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    train_dir = root / "images/train"
    expected = {
        "class_too_big.jpg": "Label class 7 exceeds dataset class count 4",
        "negative.jpg": "negative label values",
        "nan.jpg": "out of bounds coordinates",
        "over_one.jpg": "out of bounds coordinates",
        "columns.jpg": "labels require 5 columns, 4 columns detected",
        "corrupt.jpg": "Truncated File Read",  # starts like a JPEG, then stops
        "zero.jpg": "cannot identify image file",
        "one_pixel.png": "<10 pixels",
    }
    for name, why in expected.items():
        line = next((x for x in text.splitlines() if f"{train_dir / name}: ignoring corrupt image/label" in x), "")
        assert why in line, f"{name}: {line or 'no warning'}"
    for name in ("empty_label.jpg", "no_label.jpg", "gray.png", "rgba.png", "sixteen_bit.png", "huge.png"):
        assert f"{train_dir / name}: ignoring" not in text, name
    assert f"{len(expected)} corrupt" in text
    assert (tmp_path / "runs/exp/weights/last.pt").is_file()
    assert all(p.read_bytes() == b for p, b in before.items())  # the dataset itself is never rewritten


def test_odd_image_size_is_letterboxed(tmp_path):
    """A 333x257 image goes through predict (letterboxing to a multiple of 32) and keeps its size in the output."""
    src = tmp_path / "odd.jpg"
    cv2.imwrite(str(src), np.random.default_rng(1).integers(0, 255, (257, 333, 3), dtype=np.uint8))
    model = spd_yolo.YOLO("yolov5n-SPD")
    result = model.predict(str(src), imgsz=320, conf=0.5, save=True, project=str(tmp_path), name="p", verbose=False)
    assert result[0].orig_shape == (257, 333)
    assert cv2.imread(str(tmp_path / "p/odd.jpg")).shape == (257, 333, 3)
    with pytest.raises(SPDSizeError, match=r"at model layer 0 cannot split a 257x333"):
        model.model(torch.zeros(1, 3, 257, 333))


# ---------------------------------------------------------------------------------------------------------- fuzzing

MODULES = ["Conv", "C3", "SPPF", "Concat", "nn.Upsample", "SPDConv", "SpaceToDepth", "space_to_depth", "C2f",
           "nn.Identity", "Bogus"]
SMALL = st.integers(1, 32)
ARG = st.one_of(SMALL, SMALL, st.integers(-3, 0), st.floats(-2, 4), st.just(float("nan")), st.booleans(), st.none(),
                st.sampled_from(["nc", "None", "nearest", "x"]))
MOSTLY = lambda good, bad: st.one_of(good, good, good, bad)


@st.composite
def model_dicts(draw):
    """Near-valid model dicts: mostly sensible rows, with bad froms, repeats, modules and args mixed in."""
    n_rows = draw(st.integers(1, 7))
    rows = []
    for i in range(n_rows):
        f = draw(MOSTLY(st.just(-1), st.one_of(st.integers(-4, 8), st.lists(st.integers(-4, 8), max_size=3))))
        n = draw(MOSTLY(st.just(1), st.one_of(st.integers(-1, 3), st.just(1.5))))
        args = draw(MOSTLY(st.lists(ARG, min_size=1, max_size=4), ARG))
        row = [f, n, draw(st.sampled_from(MODULES)), args]
        rows.append(draw(MOSTLY(st.just(row), st.sampled_from([row[:3], "row"]))))
    head_from = draw(MOSTLY(st.just([n_rows - 1]), st.lists(st.integers(-3, 9), max_size=3)))
    d = {"nc": draw(MOSTLY(st.integers(1, 5), st.sampled_from([0, -2, "two"]))), "yaml_file": "fuzz.yaml",
         "backbone": rows, "head": [[head_from, 1, "Detect", ["nc"]]]}
    if draw(st.booleans()):
        d["scales"] = {"n": [0.33, 0.25, 1024]}
        d["scale"] = draw(MOSTLY(st.just("n"), st.just("q")))
    return d


@pytest.mark.slow  # 200 random models built and run
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(model_dicts())
def test_fuzz_yaml_to_model_raises_only_our_errors(d):
    try:
        model = spd_yolo.build_model(d)
    except SPDConfigError as e:
        assert str(e).startswith("fuzz.yaml") or str(e).startswith("<model"), str(e)
        return
    # a model that builds has one layer per row, each built from its row
    assert len(model.model) == len(d["backbone"]) + len(d["head"])
    assert [m.i for m in model.model] == list(range(len(model.model)))
    # and its Detect head answers a 256x256 input (the size its strides were measured at) with one row of 4 box
    # coordinates + nc scores per cell of every level, the level sizes being 256 / stride
    sizes = [round(256 / s) for s in model.stride.tolist()]
    with torch.no_grad():
        y, preds = model.eval()(torch.zeros(1, 3, 256, 256))
    assert y.shape == (1, 4 + model.model[-1].nc, sum(h * h for h in sizes))
    assert [tuple(f.shape[-2:]) for f in preds["feats"]] == [(h, h) for h in sizes]
    assert torch.isfinite(y).all()


BASE_ROWS = [
    [-1, 1, "SPDConv", [16, 3, 2]],
    [-1, 1, "Conv", [32, 3, 1]],
    [-1, 1, "SpaceToDepth", [2]],
    [-1, 1, "C3", [32]],
    [-1, 1, "Conv", [32, 3, 1]],
    [-1, 1, "space_to_depth", [1]],
    [-1, 1, "C3", [64]],
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
    [[-1, 3], 1, "Concat", [1]],
    [-1, 1, "C3", [32, False]],
    [[9, 6], 1, "Detect", ["nc"]],
]
FIELD = {
    0: st.one_of(st.integers(-12, 12), st.lists(st.integers(-12, 12), max_size=3)),
    1: st.integers(-1, 4),
    2: st.sampled_from(MODULES + ["Detect", "SPDConv"]),
    3: st.lists(ARG, max_size=4),
}


@pytest.mark.slow  # 80 random models built and run
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.data())
def test_fuzz_one_mutation_of_a_valid_model(data):
    """A valid SPD model with one field of one row replaced at random: it builds and runs, or says clearly why not."""
    import copy

    rows = copy.deepcopy(BASE_ROWS)
    i, field = data.draw(st.integers(0, len(rows) - 1)), data.draw(st.integers(0, 3))
    rows[i][field] = data.draw(FIELD[field])
    d = {"nc": 3, "backbone": rows[:7], "head": rows[7:], "yaml_file": "fuzz.yaml"}
    try:
        model = spd_yolo.build_model(d)
    except SPDConfigError as e:
        assert str(e).startswith("fuzz.yaml: "), str(e)
        return
    model.eval()
    try:
        model(torch.zeros(1, 3, 256, 256))
    except SPDSizeError as e:  # e.g. a scale-3 SpaceToDepth on a 256x256 input: our clear size error
        assert "cannot split" in str(e)
