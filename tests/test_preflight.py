# SPD-YOLO, AGPL-3.0 license
"""Bad input fails before the first epoch or result: one `error:` line naming the file or flag, exit 1, no traceback,
no folder left behind, no network access attempted (issue 19). One table, ROWS; the next bad input is one more row.

Each row runs the script in process (`cli(argv)`, fast), in an empty working directory, with `network_guard` making
any look-up or non-loopback connection fail the test. The checkpoints of a finished and of an interrupted run are
written as ultralytics writes them (a training checkpoint, then `strip_optimizer` for the finished one) instead of
being trained, to keep the table fast; train.py reads nothing else from them.
"""

import copy
import json
import shutil
from pathlib import Path

import cv2
import pytest
import torch
import yaml
from ultralytics import __version__ as ultralytics_version
from ultralytics.cfg import get_cfg
from ultralytics.utils import DATASETS_DIR, ROOT, SETTINGS
from ultralytics.utils.torch_utils import strip_optimizer

from spd_yolo import build_model
from spd_yolo.cli import detect, export, train, val

SCRIPTS = {"train": train, "val": val, "detect": detect, "export": export}
DET = ["--weights", "{weights}", "--source", "{images}"]  # a detect.py command that works, to add one bad flag to

# (script, argv with {placeholders} from the `inputs` fixture, text the one error line must contain)
ROWS = [
    # --- issue 19 -------------------------------------------------------------------------------------------------
    ("train", ["--resume", "{finished}"], ("--resume {finished}: the run finished (epoch 2/2): nothing to resume; to "
     "train further, start a new run from its weights with --weights {finished}/weights/best.pt")),
    ("train", ["--resume", "{finished}/weights/best.pt"], ("--resume {finished}/weights/best.pt: the run finished "
     "(epoch 2/2): nothing to resume")),
    ("train", ["--resume", "{interrupted}/weights/best.pt"], ("best.pt holds the best epoch's weights, not where "
     "training stopped; resume from the run folder or its last.pt ({interrupted}/weights/last.pt)")),
    ("train", ["--resume", "{weights}"], "--resume {weights}: {weights} is not a training checkpoint"),
    ("train", ["--resume", "{interrupted}", "--epochs", "5"], ("--epochs 5: --resume continues the run with the "
     "settings it started with (epochs=3); only --device, --workers and --data may come with it. To change them, "
     "start a new run from its weights: --weights {interrupted}/weights/last.pt --epochs 5")),
    ("train", ["--resume", "{interrupted}", "--img", "128", "--batch-size", "8", "--name", "again"],
     "--batch-size 8 --imgsz 128 --name again: --resume continues the run with the settings it started with"),
    ("train", ["--resume", "{interrupted}", "--data", "{nolabels}"], "--data {nolabels}: no labels for the 'train'"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{nolabels}"], ("--data {nolabels}: no labels for the 'train' images: "
     "the labels folder {root}/nolabels/labels/train does not exist")),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{nc3}"], "--data {nc3}: 'names' length 4 and 'nc: 3' must match"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{names_str}"],
     "--data {names_str}: 'names' must be a list or dict, not str (names: 'red')"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{gaps}"], ("--data {gaps}: 'names': 2-class dataset requires class "
     "indices 0-1")),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{bad_anno}", "--coco-metrics"], ("--data {bad_anno}: its 'val' "
     "annotation file {root}/bad_anno/annotations/instances_val.json: not valid JSON (Expecting property name "
     "enclosed in double quotes: line 1 column 2)")),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{bad_anno}", "--fitness", "ap_small"], "its 'val' annotation file"),
    ("train", ["--weights", "{yolov5n_named}", "--data", "{nolabels}"], "--data {nolabels}: no labels"),  # loaded as is
    ("val", ["--weights", "{weights}", "--data", "{bad_anno}"], ("--data {bad_anno}: its 'val' annotation file "
     "{root}/bad_anno/annotations/instances_val.json: not valid JSON (Expecting property name enclosed in double "
     "quotes: line 1 column 2)")),
    ("val", ["--weights", "{weights}", "--data", "{good}", "--anno-json", "{bad_json}"],
     "--anno-json {bad_json}: not valid JSON (Expecting ',' delimiter: line 2 column 1)"),
    ("val", ["--weights", "{weights}", "--data", "{good}", "--anno-json", "{other_json}"],
     "--anno-json {other_json}: none of the 4 validation images is in this annotation file"),
    ("val", ["--weights", "{weights}", "--data", "{good}", "--anno-json", "{cats_json}"],
     "--anno-json {cats_json}: cannot map model classes to GT categories"),
    ("val", ["--weights", "{weights}", "--data", "{nolabels}"], "--data {nolabels}: no labels for the 'val' images"),
    ("val", ["--weights", "{weights}", "--data", "{names_str}"], "'names' must be a list or dict, not str"),
    ("val", ["--weights", "{yolov5n_named}", "--data", "{two}"], "--weights {yolov5n_named} predicts 4 classes"),
    ("detect", ["--weights", "{weights}", "--source", "0"], "--source 0: cannot open camera 0"),
    ("detect", [*DET, "--classes", "7"], "--classes 7: the model {weights} has classes 0-3 (0 disk, 1 square"),
    ("detect", [*DET, "--classes", "0", "-1", "4"], "--classes -1 4: the model {weights} has classes 0-3"),
    ("detect", ["--weights", "{yolov5n_named}", "--source", "{images}", "--classes", "9"],
     "--classes 9: the model {yolov5n_named} has classes 0-3"),  # the file named is the file loaded, no look-up
    ("detect", ["--weights", "{weights}", "--source", "{notes}", "--name", "p32"],
     "--source {notes}: no readable image or video frame (the file cannot be decoded as an image or video)"),
    ("detect", ["--weights", "{weights}", "--source", "{unreadable}"],
     "--source {unreadable}: no readable image or video frame (none of its 2 image/video files can be decoded)"),
    ("detect", ["--weights", "{weights}", "--source", "{good}"], "--source {good}: No images or videos found in"),
    # --- what docs/reliability.md promised before (formerly tests/test_cli.py) --------------------------------------
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{root}/missing.yaml"], "--data {root}/missing.yaml: file not found"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{no_val}"], "'val' path {root}/d/images/missing does not exist"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{not_yaml}"], "--data {not_yaml}: not valid YAML"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{empty}"], "'val' folder {root}/d/images/empty holds no image"),
    ("train", ["--cfg", "yolov5q-SPD", "--data", "{good}"], "unknown SPD model 'yolov5q-SPD'"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{good}", "--img", "100"], "--imgsz 100: must be a positive multiple"),
    ("train", ["--weights", "{root}/none.pt", "--data", "{good}"], "--weights {root}/none.pt: file not found"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{good}", "--hyp", "{hyp}"], "unknown hyperparameters learning_rate"),
    ("train", ["--data", "{good}"], "give --cfg"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{good}", "--epochs", "0"], "--epochs 0: must be >= 1"),
    ("train", ["--resume", "{root}/d/images"], "--resume {root}/d/images: {root}/d/images/weights/last.pt not found"),
    ("train", ["--weights", "{fake}", "--data", "{good}"], "--weights {fake}: not a PyTorch checkpoint"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{good}", "--device", "7"], "--device 7: Invalid CUDA 'device=7'"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{good}", "--label-smoothing", "1.5"], "--label-smoothing 1.5: must"),
    ("train", ["--cfg", "yolov5n-SPD", "--data", "{good}", "--hyp", "{bad_hyp}"],
     "--hyp {bad_hyp}: lr0: 'lr0=3.0' is an invalid value"),
    ("val", ["--weights", "{root}/none.pt", "--data", "{good}"], "--weights {root}/none.pt: file not found"),
    ("val", ["--weights", "{hyp}", "--data", "{good}"], "expected a .pt or .onnx or .torchscript or .tflite"),
    ("val", ["--weights", "{weights}", "--data", "{good}", "--task", "test"], "no 'test' entry"),
    ("val", ["--weights", "{fake}", "--data", "{good}"], "--weights {fake}: not a PyTorch checkpoint"),
    ("val", ["--weights", "{truncated}", "--data", "{good}"], "--weights {truncated}: truncated or damaged checkpoint"),
    ("val", ["--weights", "{weights}", "--data", "{good}", "--device", "7"], "--device 7: Invalid CUDA 'device=7'"),
    ("val", ["--weights", "{weights}", "--data", "{two}"], "predicts 4 classes but --data {two} has 2"),
    ("val", ["--weights", "{weights}", "--data", "{good}", "--anno-json", "{root}/a.json"], "{root}/a.json: file not"),
    ("detect", [*DET, "--device", "7"], "--device 7: Invalid CUDA"),
    ("detect", [*DET, "--conf-thres", "2"],
     "--conf-thres 2.0: 'conf=2.0' is an invalid value. Valid 'conf' values are between 0.0 and 1.0"),
    ("detect", [*DET, "--iou-thres", "-1"], "--iou-thres -1.0: 'iou=-1.0'"),
    ("detect", [*DET, "--max-det", "0"], "--max-det 0: must be >= 1"),
    ("detect", [*DET, "--vid-stride", "0"], "--vid-stride 0: must be >= 1"),
    ("detect", ["--weights", "{truncated}", "--source", "{images}"], "--weights {truncated}: truncated or damaged"),
    ("detect", ["--weights", "{weights}", "--source", "{root}/nothing.jpg"], "--source {root}/nothing.jpg: no such"),
    ("detect", ["--weights", "{weights}", "--source", "{root}/*.png"], "the glob matches no file"),
    ("detect", ["--weights", "{weights}", "--source", "{video}"], "the video cannot be opened"),
    ("detect", ["--weights", "{weights}", "--source", "{root}/d/images/empty"], "the folder is empty"),
    ("detect", ["--weights", "{weights}", "--source", "{listing}"], "listed file {root}/nothere.jpg does not exist"),
    ("detect", ["--weights", "{weights}"], "--source is required"),
    ("export", ["--weights", "{weights}", "--device", "7"], "--device 7: Invalid CUDA"),
    ("export", ["--weights", "{weights}", "--include", "tflite2"], "--include tflite2: unknown format"),
    ("export", ["--weights", "{root}/m.onnx"], "expected a .pt file"),
    ("export", ["--weights", "{weights}", "--img", "64", "64", "64"], "give one size or H W"),
]
NAMES = ["disk", "square", "triangle", "cross"]  # the demo data's classes


def _checkpoint(model, path: Path, data: Path, epoch: int, epochs: int) -> Path:
    """A training checkpoint as ultralytics' trainer writes one after `epoch` (0-based) of `epochs`."""
    args = vars(get_cfg(overrides={"model": "yolov5n-SPD.yaml", "data": str(data), "epochs": epochs, "batch": 4,
                                   "imgsz": 64, "name": path.parent.parent.name}))
    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.save({"date": "2026-01-01T00:00:00", "version": ultralytics_version, "epoch": epoch, "best_fitness": 0.0,
                "model": None, "ema": copy.deepcopy(model).half(), "updates": 2, "optimizer": optimizer.state_dict(),
                "train_args": args, "train_metrics": {}, "train_results": {}}, path)
    return path


def _yaml(file: Path, **data) -> Path:
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    return file


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Everything the rows name: the demo dataset and broken copies of it, checkpoints, annotation files, sources."""
    from spd_yolo.data.synth import generate_demo_dataset

    root = tmp_path_factory.mktemp("preflight")
    good = generate_demo_dataset(root / "d", n_train=8, n_val=4, imgsz=64, video_frames=0, progress=False)
    d = root / "d"
    (d / "images/empty").mkdir()
    split = {"train": "images/train", "val": "images/val"}
    f = {"root": root, "good": good, "images": d / "images/val"}

    shutil.copytree(d / "images", root / "nolabels/images")
    f["nolabels"] = _yaml(root / "nolabels/data.yaml", path=str(root / "nolabels"), **split, names=NAMES)
    f["nc3"] = _yaml(root / "nc3.yaml", path=str(d), **split, nc=3, names=NAMES)
    f["names_str"] = _yaml(root / "names_str.yaml", path=str(d), **split, names="red")
    f["gaps"] = _yaml(root / "gaps.yaml", path=str(d), **split, names={0: "a", 5: "b"})
    f["two"] = _yaml(root / "two.yaml", path=str(d), **split, names=["a", "b"])
    f["no_val"] = _yaml(root / "noval.yaml", path=str(d), train="images/train", val="images/missing", names=NAMES)
    f["empty"] = _yaml(root / "empty.yaml", path=str(d), train="images/train", val="images/empty", names=NAMES)
    f["not_yaml"] = root / "broken.yaml"
    f["not_yaml"].write_text("names: [a\n  - : :")
    f["hyp"] = root / "hyp.yaml"
    f["hyp"].write_text("lr0: 0.01\nlearning_rate: 0.1\n")
    f["bad_hyp"] = root / "bad_hyp.yaml"
    f["bad_hyp"].write_text("lr0: 3.0\n")

    shutil.copytree(d / "images", root / "bad_anno/images")
    shutil.copytree(d / "labels", root / "bad_anno/labels")
    (root / "bad_anno/annotations").mkdir()
    (root / "bad_anno/annotations/instances_val.json").write_text("{bad json\n")
    f["bad_anno"] = _yaml(root / "bad_anno/data.yaml", path=str(root / "bad_anno"), **split, names=NAMES)
    f["bad_json"] = root / "bad.json"
    f["bad_json"].write_text('{"images": []\n')
    val_images = sorted(p.name for p in (d / "images/val").iterdir())
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]
    f["other_json"] = root / "other.json"
    f["other_json"].write_text(json.dumps({"images": [{"id": 1, "file_name": "elsewhere.jpg"}], "annotations": [],
                                           "categories": categories}))
    f["cats_json"] = root / "cats.json"
    f["cats_json"].write_text(json.dumps({"images": [{"id": i + 1, "file_name": n} for i, n in enumerate(val_images)],
                                          "annotations": [], "categories": [{"id": 1, "name": "person"}]}))

    model = build_model("yolov5n-SPD", nc=4)
    model.names = dict(enumerate(NAMES))
    f["weights"] = root / "m.pt"
    torch.save({"model": copy.deepcopy(model).half(), "version": ultralytics_version}, f["weights"])
    f["yolov5n_named"] = Path(shutil.copy(f["weights"], root / "my-yolov5n.pt"))  # ultralytics renames these
    f["fake"], f["truncated"] = root / "fake.pt", root / "trunc.pt"
    f["fake"].write_text("not a checkpoint")
    f["truncated"].write_bytes(f["weights"].read_bytes()[:50000])
    (root / "m.onnx").write_bytes(b"not onnx")

    f["finished"] = root / "runs/finished"
    for name in ("last.pt", "best.pt"):
        strip_optimizer(_checkpoint(model, f["finished"] / "weights" / name, good, epoch=1, epochs=2))
    (f["finished"] / "results.csv").write_text("epoch,train/box_loss\n1,4.1\n2,4.0\n")
    f["interrupted"] = root / "runs/interrupted"
    for name in ("last.pt", "best.pt"):
        _checkpoint(model, f["interrupted"] / "weights" / name, good, epoch=0, epochs=3)

    f["notes"] = root / "notes.jpg"  # a text file named like an image
    f["notes"].write_text("shopping list\n")
    f["unreadable"] = root / "unreadable"
    f["unreadable"].mkdir()
    (f["unreadable"] / "a.jpg").write_text("not an image")
    (f["unreadable"] / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    f["video"] = root / "broken.mp4"
    f["video"].write_bytes(b"\x00" * 100)
    f["listing"] = root / "list.txt"
    f["listing"].write_text(f"{root}/nothere.jpg\n")
    return f


def _ultralytics_folders() -> dict:
    """What ultralytics' own folders hold: where a run on its defaults would write, a dataset or weights download."""
    bases = [Path(SETTINGS["runs_dir"]), ROOT.parent / "tests/tmp/runs"]  # the second: under pytest
    places = [b / task for b in bases for task in ("detect", "classify")]
    places += [DATASETS_DIR, Path(SETTINGS["weights_dir"])]
    return {p: sorted(x.name for x in p.iterdir()) if p.is_dir() else None for p in places}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def run_row(name, argv, message, inputs, tmp_path, monkeypatch, capfd):
    """Run one row and check everything issue 19 promises."""
    fill = {k: str(v) for k, v in inputs.items()}
    argv = [a.format(**fill) for a in argv]
    if name != "export" and "--resume" not in argv:  # a resumed run stays in its own folder
        argv += ["--project", str(tmp_path / "runs")]
    work = tmp_path / "work"  # the working directory: a run on ultralytics' defaults, or a download, lands here
    work.mkdir()
    monkeypatch.chdir(work)
    before, elsewhere = _tree(inputs["root"]), _ultralytics_folders()
    assert SCRIPTS[name].cli(argv) == 1
    out, err = capfd.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message.format(**fill) in errors[0], err[-3000:]
    assert "Traceback" not in out + err and "Results saved to" not in out + err
    assert not (tmp_path / "runs").exists() and list(work.iterdir()) == []
    assert _tree(inputs["root"]) == before  # nothing written beside the inputs, nothing renamed
    assert _ultralytics_folders() == elsewhere


def rows(script: str):
    chosen = [(argv, message) for name, argv, message in ROWS if name == script]
    return pytest.mark.parametrize("argv,message", chosen, ids=[f"{' '.join(a)[:60]}" for a, _ in chosen])


@rows("train")
def test_train_preflight(argv, message, inputs, tmp_path, monkeypatch, capfd, network_guard):
    run_row("train", argv, message, inputs, tmp_path, monkeypatch, capfd)


@rows("val")
def test_val_preflight(argv, message, inputs, tmp_path, monkeypatch, capfd, network_guard):
    run_row("val", argv, message, inputs, tmp_path, monkeypatch, capfd)


@rows("detect")
def test_detect_preflight(argv, message, inputs, tmp_path, monkeypatch, capfd, network_guard):
    if "0" in argv:
        cap = cv2.VideoCapture(0)
        present = cap.isOpened()
        cap.release()
        if present:
            pytest.skip("this machine has a webcam 0")
    run_row("detect", argv, message, inputs, tmp_path, monkeypatch, capfd)


@rows("export")
def test_export_preflight(argv, message, inputs, tmp_path, monkeypatch, capfd, network_guard):
    run_row("export", argv, message, inputs, tmp_path, monkeypatch, capfd)


def test_network_guard_records_and_refuses_lookups_and_connections(network_guard):
    import socket

    with pytest.raises(OSError):
        socket.getaddrinfo("github.com", 443)
    with socket.socket() as s, pytest.raises(OSError):
        s.connect(("192.0.2.1", 80))  # TEST-NET-1: never reached
    assert network_guard == ["look-up of github.com", "connection to ('192.0.2.1', 80)"]
    assert socket.getaddrinfo("127.0.0.1", 80)  # loopback stays open
    network_guard.clear()


# ------------------------------------------------------------------------------------------ beyond the table rows


def test_a_file_named_like_a_yolov5_release_loads_as_it_is(inputs, network_guard):
    """ultralytics would rename my-yolov5n.pt to my-yolov5nu.pt and look that up on GitHub."""
    from spd_yolo import YOLO

    named = str(inputs["yolov5n_named"])
    model = YOLO(named)
    assert model.ckpt_path == named and model.model.pt_path == named and model.overrides["model"] == named
    assert model.names == dict(enumerate(NAMES))
    assert not Path(named.replace("yolov5n.pt", "yolov5nu.pt")).exists()


def test_a_run_that_fails_in_the_trainer_before_its_first_epoch_leaves_no_folder(inputs, tmp_path, capfd):
    """A failure ultralytics' trainer meets after it made the run folder (here AP_S undefined on a validation set
    without small objects) removes that folder and the new project folder: no folder, so no 'Results saved to'."""
    root = tmp_path / "big"
    shutil.copytree(inputs["root"] / "d/images", root / "images")
    shutil.copytree(inputs["root"] / "d/labels", root / "labels")
    for label in (root / "labels/val").glob("*.txt"):
        label.write_text("0 0.5 0.5 0.9 0.9\n")  # 58 x 58 pixels: medium
    data = _yaml(root / "data.yaml", path=str(root), train="images/train", val="images/val", names=NAMES)
    argv = ["--cfg", "yolov5n-SPD", "--data", str(data), "--epochs", "1", "--img", "64", "--batch-size", "4",
            "--workers", "0", "--device", "cpu", "--noplots", "--fitness", "ap_small"]
    assert train.cli([*argv, "--project", str(tmp_path / "runs")]) == 1
    assert "error: --fitness ap_small: best.pt cannot be selected by COCO AP_S" in capfd.readouterr().err
    assert not (tmp_path / "runs").exists()
    kept = tmp_path / "kept/exp"  # --exist-ok into a folder that was there before: never removed
    kept.mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    assert train.cli([*argv, "--project", str(tmp_path / "kept"), "--exist-ok"]) == 1
    assert (kept / "notes.txt").read_text() == "mine"


def test_detect_that_fails_before_its_first_result_leaves_no_folder(inputs, tmp_path, monkeypatch):
    from ultralytics.models.yolo.detect import DetectionPredictor

    def broken(self, *args, **kwargs):
        raise RuntimeError("inference failed")

    monkeypatch.setattr(DetectionPredictor, "postprocess", broken)
    with pytest.raises(RuntimeError, match="inference failed"):
        detect.cli(["--weights", str(inputs["weights"]), "--source", str(inputs["images"]), "--img", "64",
                    "--project", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_imgsz_for_a_static_onnx_is_one_note_and_the_fixed_size_is_used(inputs, tmp_path, capfd):
    """An ONNX exported at a fixed 64 px: detect.py and val.py with --img 128 run at 64 and say so once."""
    from spd_yolo import YOLO

    weights = Path(shutil.copy(inputs["weights"], tmp_path / "static.pt"))
    onnx = YOLO(weights).export(format="onnx", imgsz=64)
    note = f"note: --imgsz 128 is not used: {onnx} was exported with a fixed 64x64 (W x H) input"
    assert detect.cli(["--weights", onnx, "--source", str(inputs["images"]), "--img", "128", "--project",
                       str(tmp_path / "det")]) == 0
    err = capfd.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("note:")] == [note + " and runs at that size "
            "(export with --dynamic to choose the size when it runs)"], err
    assert len(list((tmp_path / "det/exp").glob("*.jpg"))) == 4
    assert cv2.imread(str(next((tmp_path / "det/exp").glob("*.jpg")))).shape[:2] == (64, 64)
    assert detect.cli(["--weights", onnx, "--source", str(inputs["images"]), "--img", "128", "--slice",
                       "--project", str(tmp_path / "det")]) == 0
    out, err = capfd.readouterr()
    assert err.count(note) == 1 and "inference size 64" in out, out + err
    assert val.cli(["--weights", onnx, "--data", str(inputs["good"]), "--img", "128", "--project",
                    str(tmp_path / "val")]) == 0
    assert capfd.readouterr().err.count(note) == 1
    assert detect.cli(["--weights", onnx, "--source", str(inputs["images"]), "--img", "64", "--project",
                       str(tmp_path / "det")]) == 0
    assert "note:" not in capfd.readouterr().err  # the size it has: nothing to say
