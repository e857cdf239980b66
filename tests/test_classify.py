# SPD-YOLO, AGPL-3.0 license
"""Classification (#6): ResNet18/50 and their SPD versions for small inputs, image-folder datasets, converters.

Fast: every model builds with (B, nc) outputs at 32x32 and 64x64, no strided conv or pooling in the SPD models (the
classifier's final global average pool aside), the same feature-map sizes as stock, true GFLOPs, clear errors for bad
rows and bad dataset folders, the CIFAR-10 and Tiny ImageNet converters on small fakes. Slow (end to end on tiny
image folders with grayscale, RGBA, 16-bit and odd-sized images): train.py trains resnet18-SPD for one epoch, val.py
(top-1/top-5, per class, confusion matrix), detect.py, export.py (ONNX with onnxruntime parity), then the .onnx in
val.py and detect.py; ONNX parity of the three other models.
"""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn
from ultralytics.nn.modules import Classify
from ultralytics.nn.tasks import ClassificationModel

import spd_yolo
from helpers import REPO, script_ok, strided_layers, write_yaml
from spd_yolo import SPDConfigError
from spd_yolo.cli import detect, train, val
from spd_yolo.data import convert
from spd_yolo.data.folders import check_classification_folders
from spd_yolo.data.synth_cls import CLASS_NAMES, generate_cls_dataset
from spd_yolo.errors import ClassificationDataError, SPDSizeError
from spd_yolo.layers import DepthToSpace, ResNetStage, ResNetStem, SpaceToDepth, SPDConv, full_res_conv_as_spd

CLASSIFIERS = ("resnet18", "resnet18-SPD", "resnet50", "resnet50-SPD")
_BUILT = {}


def built(name: str, nc: int = 10):
    """Build each model once per test session (ResNet50 takes a few seconds)."""
    if (name, nc) not in _BUILT:
        _BUILT[name, nc] = spd_yolo.build_model(name, nc=nc)
    return _BUILT[name, nc]


# ---------------------------------------------------------------------------------------------------------------------
# Models.


def test_names_resolve():
    assert spd_yolo.available_models("classify") == CLASSIFIERS
    assert set(spd_yolo.available_models(None)) == set(spd_yolo.available_models()) | set(CLASSIFIERS)
    for name in CLASSIFIERS:
        assert spd_yolo.resolve_model_cfg(name) == str(spd_yolo.CONFIG_DIR / f"{name}.yaml")
        assert spd_yolo.resolve_model_cfg(f"{name}.yaml") == str(spd_yolo.CONFIG_DIR / f"{name}.yaml")
    with pytest.raises(SPDConfigError, match=r"unknown SPD model 'resnet34-SPD'.*resnet18-SPD"):
        spd_yolo.resolve_model_cfg("resnet34-SPD")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_builds_with_class_outputs_at_32_and_64(name):
    model = built(name)
    assert isinstance(model, ClassificationModel) and isinstance(model.model[-1], Classify)
    for size in (32, 64):
        model.eval()
        with torch.no_grad():
            probs, logits = model(torch.rand(2, 3, size, size))
        assert probs.shape == logits.shape == (2, 10)
        assert torch.allclose(probs.sum(1), torch.ones(2))
        model.train()
        with torch.no_grad():
            assert model(torch.rand(2, 3, size, size)).shape == (2, 10)
    model.eval()


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_no_strided_conv_or_pooling_in_spd_models(name):
    model = built(name)
    bad = strided_layers(model, allowed=(model.model[-1].pool,))  # the head's global pool averages, not skips
    n_spd = sum(isinstance(m, SpaceToDepth) for m in model.modules())
    if name.endswith("-SPD"):
        assert bad == []
        # SPD stem + (3x3 conv and 1x1 shortcut) in the first block of stages 2, 3 and 4
        assert n_spd == 7
        assert sum(isinstance(m, SPDConv) for m in model.modules()) == 6
        assert sum(isinstance(m, DepthToSpace) for m in model.modules()) == 1
    else:  # stock: the strided 3x3 conv and the strided 1x1 projection of stages 2-4, nothing else
        assert len(bad) == 6 and all(".shortcut." in b or ".cv1." in b or ".cv2." in b for b in bad)
        assert n_spd == 0
    assert [type(m) for m in model.model[:-1]] == [ResNetStem] + [ResNetStage] * 4


@pytest.mark.parametrize("s,k,kf", [(2, 3, 3), (2, 3, 5), (2, 1, 1), (3, 3, 7), (2, 5, 9)])
def test_full_res_conv_as_spd_is_exact(s, k, kf):
    # SPD -> k x k conv -> DepthToSpace with these weights computes the full-resolution conv, checked by F.conv2d
    torch.manual_seed(0)
    w = torch.randn(5, 3, kf, kf, dtype=torch.float64)
    x = torch.randn(2, 3, 6 * s, 4 * s, dtype=torch.float64)
    spd_w = full_res_conv_as_spd(w, s, k)
    assert spd_w.shape == (s * s * 5, s * s * 3, k, k)
    y = DepthToSpace(s)(nn.functional.conv2d(SpaceToDepth(s)(x), spd_w, padding=k // 2))
    torch.testing.assert_close(y, nn.functional.conv2d(x, w, padding=kf // 2), rtol=0, atol=1e-10)


def test_full_res_conv_as_spd_rejects_kernels_it_cannot_express():
    with pytest.raises(ValueError, match="7x7 kernel cannot be expressed by a 3x3 conv on SpaceToDepth\\(2\\)"):
        full_res_conv_as_spd(torch.zeros(4, 3, 7, 7), 2, 3)
    with pytest.raises(ValueError, match="4x4 kernel"):
        full_res_conv_as_spd(torch.zeros(4, 3, 4, 4), 2, 3)


def test_spd_stem_starts_shift_equivariant():
    # A fresh SPD stem is a full-resolution conv (no 2x2 phase pattern): shifting the input by one pixel shifts its
    # pre-BN output by one pixel. Independently initialised phases (the plain init) break this.
    torch.manual_seed(0)
    stem = ResNetStem(3, 16, 3, spd=True)
    x = torch.randn(1, 3, 16, 16)
    f = lambda t: stem.d2s(stem.conv(stem.s2d(t)))
    y, y_shift = f(x), f(torch.roll(x, 1, dims=3))
    torch.testing.assert_close(y_shift[..., 3:-3, 4:-3], y[..., 3:-3, 3:-4], rtol=0, atol=1e-5)
    nn.init.kaiming_uniform_(stem.conv.weight)  # negative control: phases drawn independently
    y, y_shift = f(x), f(torch.roll(x, 1, dims=3))
    assert (y_shift[..., 3:-3, 4:-3] - y[..., 3:-3, 3:-4]).abs().max() > 0.1


@pytest.mark.parametrize("depth", ["18", "50"])
def test_spd_and_stock_have_the_same_feature_map_sizes(depth):
    """Fair comparison: both models see the same spatial size at every stage (stem and stage 1 at full size)."""
    widths = [64, 64, 128, 256, 512] if depth == "18" else [64, 256, 512, 1024, 2048]
    for size in (32, 64):
        shapes = {}
        for name in (f"resnet{depth}", f"resnet{depth}-SPD"):
            model = built(name).eval()
            out = []
            hooks = [m.register_forward_hook(lambda m, i, o, out=out: out.append(tuple(o.shape[1:])))
                     for m in model.model[:-1]]
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            for h in hooks:
                h.remove()
            shapes[name] = out
        expected = [(c, size // s, size // s) for c, s in zip(widths, (1, 1, 2, 4, 8))]
        assert shapes[f"resnet{depth}"] == shapes[f"resnet{depth}-SPD"] == expected


def test_gflops_are_true_and_scale_with_area():
    """thop's GFLOPs (the README table) match an independent count of the convolutions' multiply-adds."""
    for name in ("resnet18", "resnet18-SPD"):
        model = built(name).eval()
        for size in (32, 64):
            macs = []

            def hook(m, inp, out, macs=macs):
                macs.append(out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])

            handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
            for h in handles:
                h.remove()
            conv = 2 * sum(macs) / 1e9
            stats = spd_yolo.model_stats(model, name, size)
            assert conv <= stats.gflops < conv * 1.03, (name, size, conv, stats.gflops)
    ours, stock = (spd_yolo.model_stats(built(n), n, 32).gflops for n in ("resnet18-SPD", "resnet18"))
    assert 1.2 < ours / stock < 1.5


def test_summary_prints_classification_rows(capsys):
    from spd_yolo.models import summary

    assert summary.main(["resnet18-SPD", "--nc", "10"]) == 0
    out = capsys.readouterr().out
    assert "Classification models at 32x32 and 64x64, nc=10" in out
    row = next(line for line in out.splitlines() if line.startswith("| resnet18-SPD |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == "resnet18" and cells[-1].endswith("x")
    assert float(cells[3]) == pytest.approx(float(cells[4]) / 4, rel=0.01)  # GFLOPs at 32 = GFLOPs at 64 / 4


def test_odd_size_names_the_layer():
    model = built("resnet18-SPD").eval()
    with pytest.raises(SPDSizeError, match=r"SpaceToDepth\(s=2\) at model layer 0 cannot split a 33x33"):
        model(torch.zeros(1, 3, 33, 33))
    with pytest.raises(SPDSizeError, match=r"at model layer 4 cannot split a 15x15"):  # 60 -> 30 -> 15 at stage 4
        model(torch.zeros(1, 3, 60, 60))


BAD_ROWS = [
    (["ResNetStage", ["wide"]], r"argument c2='wide' must be an integer >= 1"),
    (["ResNetStage", [64, 2, 1, "no"]], r"argument bottleneck='no' must be true/false"),
    (["ResNetStage", [66, 1, 1, True]], r"c2=66 must be divisible by 4 for bottleneck"),
    (["ResNetStage", [64, 1, 1, False, True, 9]], r"1 to 5 values"),
    (["ResNetStem", [64, 4]], r"k=4 must be odd"),
    (["ResNetStem", [64, 3, 1]], r"spd=1 must be true/false"),
]


@pytest.mark.parametrize("row,message", BAD_ROWS, ids=[b[1][:30] for b in BAD_ROWS])
def test_bad_rows_name_file_layer_module(row, message, tmp_path):
    module, args = row
    cfg = write_yaml(tmp_path / "bad-resnet.yaml", [[-1, 1, "ResNetStem", [16]], [-1, 1, module, args]],
                     [[-1, 1, "Classify", ["nc"]]])
    with pytest.raises(SPDConfigError, match=rf"bad-resnet\.yaml: layer 1 \({module}\): .*{message}"):
        spd_yolo.build_model(cfg)


def test_own_yaml_with_resnet_rows(tmp_path):
    """The rows work in any classification YAML, with width scaling like a Conv."""
    cfg = write_yaml(tmp_path / "tiny-resnet.yaml",
                     [[-1, 1, "ResNetStem", [16, 3, True]], [-1, 1, "ResNetStage", [32, 1, 2, False, True]],
                      [-1, 1, "ResNetStage", [64, 2, 2, True, False]]],
                     [[-1, 1, "Classify", ["nc"]]], nc=3, width_multiple=0.5)
    model = spd_yolo.build_model(cfg)
    assert model.model[1].m[0].cv1.conv.conv.in_channels == 4 * 8  # SPDConv on the 8-channel stem (16 x 0.5)
    assert model.model[2].m[1].cv3.conv.out_channels == 32
    assert model.eval()(torch.zeros(1, 3, 32, 32))[0].shape == (1, 3)


# ---------------------------------------------------------------------------------------------------------------------
# Dataset folders: clear errors naming the folder, before any training (and never a download).


def _folder(root, split, cls, n=1, size=(32, 32)):
    d = root / split / cls
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(d / f"{i}.png"), np.full((*size, 3), 60 * i % 255, np.uint8))
    return d


@pytest.fixture
def good(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            _folder(tmp_path / "good", split, cls, 2)
    return tmp_path / "good"


def _train_error(argv, capsys, tmp_path) -> str:
    code = train.cli([*argv, "--project", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: "), err
    assert not (tmp_path / "runs").exists()
    return err


def test_dataset_folder_errors(good, tmp_path, capsys):
    base = ["--cfg", "resnet18-SPD", "--epochs", "1"]
    missing = tmp_path / "cifar10"
    err = _train_error([*base, "--data", str(missing)], capsys, tmp_path)
    assert f"{missing}: dataset folder not found" in err and "nothing is downloaded" in err
    assert not missing.exists()

    (good / "val" / "b" / "0.png").unlink()
    (good / "val" / "b" / "1.png").unlink()
    err = _train_error([*base, "--data", str(good)], capsys, tmp_path)
    assert f"{good / 'val' / 'b'}: empty class folder" in err

    (good / "val" / "b").rmdir()
    err = _train_error([*base, "--data", str(good)], capsys, tmp_path)
    assert f"{good / 'train'} has 2 class folders but {good / 'val'} has 1 (only in train: b)" in err

    for f in (good / "val" / "a").iterdir():
        f.unlink()
    err = _train_error([*base, "--data", str(good)], capsys, tmp_path)
    assert f"{good / 'val'}: no image in its 1 class folder(s)" in err

    import shutil

    shutil.rmtree(good / "val")
    err = _train_error([*base, "--data", str(good)], capsys, tmp_path)
    assert f"{good}: no val/ (or validation/, valid/) or test/ folder" in err

    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    cv2.imwrite(str(flat / "train" / "x.png"), np.zeros((8, 8, 3), np.uint8))
    err = _train_error([*base, "--data", str(flat)], capsys, tmp_path)
    assert f"{flat / 'train'}: no class sub-folder" in err and "1 image(s) directly inside" in err

    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("names: [a, b]\n")
    err = _train_error(["--cfg", "resnet18-SPD", "--data", str(data_yaml)], capsys, tmp_path)
    assert "expected a classification dataset folder" in err and "got a file" in err


def test_test_split_used_when_no_val_and_extra_names(good):
    (good / "val").rename(good / "test")
    found = check_classification_folders(good, ("train", "val"))
    assert found["val"].folder == good / "test" and found["train"].counts == {"a": 2, "b": 2}
    with pytest.raises(ClassificationDataError, match=r"no val/ \(or validation/, valid/\) folder"):
        check_classification_folders(good, ("val",))  # val.py --task val on a dataset with test/ only
    _folder(good, "test", "c")
    with pytest.raises(ClassificationDataError, match=r"has 2 class folders but .*test has 3 \(only in test: c\)"):
        check_classification_folders(good, ("train", "test"))


def test_task_flag_and_detector_flags(good, tmp_path, capsys):
    err = _train_error(["--cfg", "resnet18-SPD", "--data", str(good), "--task", "detect"], capsys, tmp_path)
    assert "--task detect: the model resnet18-SPD is a 'classify' model" in err
    weights = tmp_path / "r18.pt"
    spd_yolo.YOLO("resnet18").save(weights)
    assert val.cli(["--weights", str(weights), "--data", str(good), "--project", str(tmp_path / "v")]) == 1
    err = capsys.readouterr().err
    assert f"predicts 10 classes but {good / 'val'} has 2 class folders" in err
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(f"path: {good}\ntrain: train\nval: val\nnames: [a, b]\n")
    assert val.cli(["--weights", str(weights), "--data", str(data_yaml)]) == 1
    assert "is a classifier: --data must be an image folder" in capsys.readouterr().err
    assert detect.cli(["--weights", str(weights), "--source", str(good / "val")]) == 1
    assert "only 2 sub-folder(s) (a, b); give one of them or a recursive glob" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Converters.


def _fake_cifar(root, per_batch=4, names=("airplane", "automobile", "bird")):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    meta = {b"label_names": [n.encode() for n in names], b"num_cases_per_batch": per_batch}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    expected = {}
    for k, batch in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [(k + i) % len(names) for i in range(per_batch)]
        files = [f"img_{k}_{i}.png".encode() for i in range(per_batch)]
        (root / batch).write_bytes(pickle.dumps({b"data": data, b"labels": labels, b"filenames": files}, protocol=2))
        expected[batch] = (data, labels, files)
    return expected


def test_cifar10_converter(tmp_path):
    src = tmp_path / "cifar-10-batches-py"
    expected = _fake_cifar(src)
    counts = convert.cifar10_to_folders(tmp_path, tmp_path / "out")  # the parent of cifar-10-batches-py works too
    assert counts == {"classes": 3, "train": 20, "val": 4}
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
    found = check_classification_folders(out, ("train", "val"))
    assert found["train"].counts == {"airplane": 7, "automobile": 7, "bird": 6}
    assert found["val"].counts == {"airplane": 1, "automobile": 1, "bird": 2}
    data, labels, files = expected["data_batch_3"]
    im = cv2.imread(str(out / "train" / ("airplane", "automobile", "bird")[labels[1]] / files[1].decode()))
    assert np.array_equal(im[..., ::-1], data[1].reshape(3, 32, 32).transpose(1, 2, 0))  # exact pixels, RGB order
    with pytest.raises(convert.ConversionError, match=r"out: destination folder exists and is not empty"):
        convert.cifar10_to_folders(src, out)
    (src / "data_batch_4").unlink()
    with pytest.raises(convert.ConversionError, match=rf"{src / 'data_batch_4'}: not found"):
        convert.cifar10_to_folders(src, tmp_path / "out2")
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2*"))


def test_converter_overwrite_replaces_only_after_success(tmp_path):
    src = tmp_path / "cifar-10-batches-py"
    _fake_cifar(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old dataset")
    (src / "test_batch").write_bytes(b"not a pickle")  # the conversion fails half way (after the train batches)
    with pytest.raises(convert.ConversionError, match="test_batch: not a CIFAR-10 python batch"):
        convert.cifar10_to_folders(src, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # the old folder is untouched
    _fake_cifar(tmp_path / "good" / "cifar-10-batches-py")
    assert convert.main(["cifar10", str(tmp_path / "good"), str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp or backup folder left


def test_cifar_pickle_cannot_run_code(tmp_path):
    src = tmp_path / "cifar-10-batches-py"
    _fake_cifar(src)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    (src / "batches.meta").write_bytes(pickle.dumps({b"label_names": Evil()}))
    with pytest.raises(convert.ConversionError, match=r"refusing to unpickle (posix|os)\.system"):
        convert.cifar10_to_folders(src, tmp_path / "out")
    assert not (tmp_path / "pwned").exists() and not (REPO / "pwned").exists()


def _fake_tiny_imagenet(root, wnids=("n01443537", "n01629819", "n12267677"), n_train=3, n_val=2):
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {i}, other name\n" for i, w in enumerate(wnids)))
    lines = []
    for k, w in enumerate(wnids):
        d = root / "train" / w / "images"
        d.mkdir(parents=True)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(n_train):
            cv2.imwrite(str(d / f"{w}_{i}.JPEG"), np.full((64, 64, 3), 40 * k, np.uint8))
        for i in range(n_val):
            name = f"val_{k * n_val + i}.JPEG"
            (root / "val" / "images").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "val" / "images" / name), np.full((64, 64, 3), 40 * k, np.uint8))
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (root / "test" / "images").mkdir(parents=True)
    return wnids


@pytest.mark.slow  # starts fresh interpreters
def test_tiny_imagenet_converter_and_cli(tmp_path, capsys):
    src = tmp_path / "tiny-imagenet-200"
    wnids = _fake_tiny_imagenet(src)
    out = subprocess.run([sys.executable, "-m", "spd_yolo.data.convert", "tiny-imagenet", str(src),
                          str(tmp_path / "ti")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "3 classes, 9 train and 6 val images" in out.stdout
    found = check_classification_folders(tmp_path / "ti", ("train", "val"))
    assert found["train"].counts == dict.fromkeys(wnids, 3) and found["val"].counts == dict.fromkeys(wnids, 2)
    assert (tmp_path / "ti/val" / wnids[1] / "val_2.JPEG").is_file()
    assert (tmp_path / "ti/classes.txt").read_text().splitlines()[0] == f"{wnids[0]}\tthing 0, other name"
    assert sorted(p.name for p in (tmp_path / "ti").iterdir()) == ["classes.txt", "train", "val"]

    (src / "val" / "val_annotations.txt").unlink()
    assert convert.main(["tiny-imagenet", str(src), str(tmp_path / "t2")]) == 1
    assert f"error: {src / 'val' / 'val_annotations.txt'}: not found" in capsys.readouterr().err
    assert not (tmp_path / "t2").exists()
    with pytest.raises(convert.ConversionError, match=rf"{tmp_path / 'nothing'}: Tiny ImageNet folder not found"):
        convert.tiny_imagenet_to_folders(tmp_path / "nothing", tmp_path / "t3")


def test_synthetic_set_is_deterministic(tmp_path):
    a = generate_cls_dataset(tmp_path / "a", n_train=2, n_val=1, n_classes=4, seed=3)
    b = generate_cls_dataset(tmp_path / "b", n_train=2, n_val=1, n_classes=4, seed=3)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 12 and files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert check_classification_folders(a)["train"].classes == sorted(CLASS_NAMES[:4])
    assert json.loads((a / ".complete").read_text())["seed"] == 3


def test_synthetic_set_replaces_only_its_own_folder(tmp_path):
    """Other arguments regenerate the set in place (nothing left beside it); a folder it did not write is refused."""
    root = generate_cls_dataset(tmp_path / "s", n_train=1, n_val=1, n_classes=2)
    generate_cls_dataset(root, n_train=2, n_val=1, n_classes=3)
    assert json.loads((root / ".complete").read_text())["n_classes"] == 3
    assert len(list(root.rglob("*.png"))) == 9 and [p.name for p in tmp_path.iterdir()] == ["s"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not made by spd_yolo.data.synth_cls"):
        generate_cls_dataset(mine, n_train=1, n_val=1, n_classes=2)
    assert (mine / "notes.txt").read_text() == "keep" and [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.slow  # starts fresh interpreters
def test_ddp_worker_imports_the_classification_trainer(good, tmp_path):
    from ultralytics.utils.dist import generate_ddp_file

    from spd_yolo.engine import SPDClassificationTrainer

    trainer = SPDClassificationTrainer(overrides={"model": "resnet18-SPD.yaml", "data": str(good), "device": "cpu",
                                                  "project": str(tmp_path), "name": "ddp"})
    trainer.model = spd_yolo.build_model("resnet18-SPD", nc=2)
    text = Path(generate_ddp_file(trainer)).read_text()
    probe = text.replace(
        "trainer.train()",
        "from ultralytics.nn import tasks\n"
        "    print('registered', tasks.parse_model.__module__, type(trainer).__name__)\n"
        "    print('spd layers', sum(type(m).__name__ == 'SpaceToDepth' for m in trainer.model.modules()))",
    )
    (tmp_path / "probe.py").write_text(probe)
    out = subprocess.run([sys.executable, str(tmp_path / "probe.py")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert "registered spd_yolo.models.registry SPDClassificationTrainer" in out.stdout
    assert "spd layers 7" in out.stdout


def test_classification_label_smoothing():
    from spd_yolo.engine import SmoothBCEWithLogits, SmoothCrossEntropy, label_smoothing

    logits, target = torch.randn(6, 5), torch.randint(0, 5, (6,))
    loss, items = SmoothCrossEntropy(0.1)((torch.softmax(logits, 1), logits), {"cls": target})
    assert torch.allclose(loss, nn.functional.cross_entropy(logits, target, label_smoothing=0.1))
    assert items["loss"] == loss
    with pytest.raises(ValueError, match="label smoothing must be in"):
        label_smoothing(1.0)
    # One callback for both tasks: a classifier gets the smoothed cross-entropy, a detector the smoothed BCE.
    from types import SimpleNamespace

    from ultralytics.cfg import get_cfg

    classifier, detector = spd_yolo.build_model("resnet18-SPD", nc=5), spd_yolo.build_model("yolov5n-SPD", nc=5)
    detector.args = get_cfg()
    for model in (classifier, detector):
        label_smoothing(0.1)(SimpleNamespace(model=model))
    assert isinstance(classifier.criterion, SmoothCrossEntropy) and classifier.criterion.eps == 0.1
    assert isinstance(detector.criterion.bce, SmoothBCEWithLogits) and detector.criterion.bce.eps == 0.1


# ---------------------------------------------------------------------------------------------------------------------
# End to end with the scripts.


@pytest.fixture
def mixed_folders(cls_folders):
    """The session's classification set (conftest): 3 synthetic classes at 32x32 plus, in train and val, a grayscale
    PNG, an RGBA PNG, a 48x40 JPEG and a 16-bit PNG."""
    return cls_folders


@pytest.fixture
def trained(trained_classifier):
    """The session's trained resnet18-SPD (conftest): (model name, run folder)."""
    return "resnet18-SPD", trained_classifier.folder


@pytest.mark.slow
def test_train_writes_a_classifier(trained, trained_classifier):
    name, run = trained
    out = trained_classifier.output
    assert "--imgsz not given: training at 32" in out  # the images' size, not 640
    assert "Results saved to" in out and "16 images, 0 corrupt" in out  # 12 synthetic + 4 mixed-mode images
    for f in ("weights/best.pt", "weights/last.pt", "weights/best.weights.pt", "results.csv", "args.yaml"):
        assert (run / f).is_file(), f
    ckpt = torch.load(run / "weights/best.pt", weights_only=False)
    assert ckpt["train_args"]["task"] == "classify" and ckpt["model"].names == dict(enumerate(sorted(CLASS_NAMES[:3])))
    assert ckpt["train_args"]["imgsz"] == 32
    assert any(isinstance(m, SpaceToDepth) for m in ckpt["model"].modules()) == name.endswith("-SPD")


@pytest.mark.slow
def test_val_top1_top5_per_class_and_confusion_matrix(trained, mixed_folders, tmp_path):
    _, run = trained
    out = script_ok("val", "--weights", run / "weights/best.pt", "--data", mixed_folders, "--verbose",
                 "--project", tmp_path, "--name", "v")
    assert "top1_acc   top5_acc" in out
    line = next(x for x in out.splitlines() if "top-1 accuracy" in x)
    assert "(10 images, 32 px)" in line and "top-5 accuracy 1.0000" in line  # 3 classes: top-5 is always right
    a, b, c = CLASS_NAMES[:3]
    per_class = [x.split()[:2] for x in out.splitlines() if x.split()[:1] in ([a], [b], [c])]
    assert sorted(map(tuple, per_class)) == sorted([(a, "3"), (b, "3"), (c, "4")])
    for plot in ("confusion_matrix.png", "confusion_matrix_normalized.png"):
        assert (tmp_path / "v" / plot).is_file()


@pytest.mark.slow
def test_predict_folder_and_glob(trained, mixed_folders, tmp_path):
    _, run = trained
    out = script_ok("detect", "--weights", run / "weights/best.pt", "--source", mixed_folders / "val" / CLASS_NAMES[2],
                 "--project", tmp_path, "--name", "p", "--save-txt")
    assert "4 images/frames classified, top-1:" in out
    assert len(list((tmp_path / "p/labels").glob("*.txt"))) == 4
    lines = (tmp_path / "p/labels/zz_odd.txt").read_text().splitlines()
    assert len(lines) == 3 and {x.split()[1] for x in lines} == set(CLASS_NAMES[:3])  # top-5 of 3 classes


@pytest.mark.slow
# Over 30 s on a busy 2-core machine: three script runs (export, val, detect).
def test_export_onnx_parity_then_onnx_in_val_and_detect(trained, mixed_folders, tmp_path):
    import shutil

    import onnxruntime as ort

    _, run = trained
    weights = tmp_path / "best.pt"
    shutil.copy(run / "weights/best.pt", weights)
    out = script_ok("export", "--weights", weights, "--include", "onnx")
    assert "ONNX parity on bus.jpg (1, 3): max abs diff" in out and "(class probabilities)" in out
    assert float(out.split("max abs diff ")[1].split()[0]) < 1e-4
    onnx = tmp_path / "best.onnx"
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]
    model = spd_yolo.YOLO(weights).model.float().eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        probs, _logits = model(x)
    z = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(z - probs.numpy()).max() < 1e-5
    out = script_ok("val", "--weights", onnx, "--data", mixed_folders, "--project", tmp_path, "--name", "ov")
    assert "best.onnx on" in out and "(10 images, 32 px)" in out
    out = script_ok("detect", "--weights", onnx, "--source", f"{mixed_folders}/val/**/*.*", "--project", tmp_path,
                 "--name", "op")
    assert "10 images/frames classified" in out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50-SPD", "resnet50"])
def test_other_models_onnx_parity(name, tmp_path):
    """The other models, untrained, at 64x64 (Tiny ImageNet's size): the exported graph matches torch."""
    from ultralytics.utils import ASSETS

    from spd_yolo.export_check import onnx_parity

    weights = tmp_path / f"{name}.pt"
    spd_yolo.YOLO(name).save(weights)
    onnx = spd_yolo.YOLO(weights).export(format="onnx", imgsz=64)
    parity = onnx_parity(spd_yolo.YOLO(weights).model.fuse(), onnx, ASSETS / "bus.jpg", 64)
    assert parity.task == "classify" and parity.shape == (1, 10) and parity.max_abs_diff < 1e-4
