# SPD-YOLO, AGPL-3.0 license
"""The console commands (pyproject [project.scripts]) as a user runs them, from a folder outside the repo: spd-yolo
(ultralytics' CLI with our models, trainer and validator) and spd-train/val/detect/export (the root scripts)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import ultralytics
import ultralytics.cfg
import yaml

from helpers import build_once
from spd_yolo import YOLO, SpaceToDepth
from spd_yolo.cli import yolo
from spd_yolo.data.synth import generate_demo_dataset
from spd_yolo.engine import SPDClassificationTrainer, SPDDetectionTrainer, SPDDetectionValidator

BIN = Path(sys.executable).parent
COMMANDS = ("spd-yolo", "spd-train", "spd-val", "spd-detect", "spd-export")


def user_env() -> dict:
    """The tests' environment (offline, settings in a temp dir) as a user's shell: verbose, no PYTHONPATH (the
    package is found through its installation)."""
    env = {**os.environ, "YOLO_VERBOSE": "true"}
    env.pop("PYTHONPATH", None)
    return env


def run(command: str, *args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run an installed console command in `cwd`."""
    return subprocess.run([str(BIN / command), *map(str, args)], cwd=cwd, env=user_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow  # starts fresh interpreters
def test_every_command_is_installed_and_has_help(tmp_path):
    procs = {c: subprocess.Popen([str(BIN / c), "--help"], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=user_env())
             for c in COMMANDS}  # started together: each spends seconds importing torch
    for command, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{command}: exit {proc.returncode}\n{err[-2000:]}"
        if command == "spd-yolo":
            assert "spd-yolo info model=NAME" in out and "yolov5n-SPD" in out  # ours
            assert "yolo TASK MODE ARGS" in out  # and ultralytics' own help
        else:
            assert out.startswith(f"usage: {command} ") and "--weights" in out, command  # named as typed
    assert list(tmp_path.iterdir()) == []


def test_spd_yolo_help_modes(capsys):
    for argv in ([], ["help"], ["-h"]):
        assert yolo.cli(argv) == 0
        assert "spd-yolo info model=NAME" in capsys.readouterr().out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return generate_demo_dataset(tmp_path_factory.mktemp("data") / "d", n_train=8, n_val=4, imgsz=64, video_frames=0,
                                 progress=False)


@pytest.fixture(scope="module")
# Own training: the `spd-yolo detect train` run is what these tests check.
def trained(data, tmp_path_factory):
    """`spd-yolo detect train` of yolov5n-SPD by bare name, run from an empty folder outside the repo (once per session,
    helpers.build_once)."""
    def build(folder):
        (folder / "cwd").mkdir()
        out = ok(run("spd-yolo", "detect", "train", "model=yolov5n-SPD.yaml", f"data={data}", "epochs=1", "imgsz=64",
                     "batch=4", "workers=0", "device=cpu", f"project={folder / 'runs'}", "name=t", cwd=folder / "cwd"))
        (folder / "output.txt").write_text(out)

    folder = build_once(tmp_path_factory, "console-trained", build)
    return folder / "runs/t", (folder / "output.txt").read_text()


@pytest.mark.slow
def test_spd_yolo_trains_our_model_with_our_trainer(trained):
    run_dir, _out = trained
    best = run_dir / "weights" / "best.pt"
    assert best.is_file()
    assert (run_dir / "weights" / "best.weights.pt").is_file()  # written by SPDDetectionTrainer only
    assert any(isinstance(m, SpaceToDepth) for m in YOLO(best).model.modules())
    model = Path(yaml.safe_load((run_dir / "args.yaml").read_text())["model"])  # our name, mapped to our config
    assert model.name == "yolov5n-SPD.yaml" and model.parent.name == "yaml_configs" and model.is_absolute()


@pytest.mark.slow
def test_spd_yolo_val_uses_our_validator(trained, data, tmp_path):
    run_dir, _ = trained
    ok(run("spd-yolo", "val", f"model={run_dir / 'weights' / 'best.pt'}", f"data={data}", "imgsz=64", "batch=4",
           "workers=0", "device=cpu", "save_json=True", f"project={tmp_path}", "name=v", cwd=tmp_path))
    assert (tmp_path / "v" / "coco_metrics.json").is_file()  # SPDDetectionValidator's COCO table


@pytest.mark.slow
def test_spd_detect_writes_an_annotated_image(trained, data, tmp_path):
    run_dir, _ = trained
    image = min((data.parent / "images" / "val").iterdir())
    ok(run("spd-detect", "--weights", run_dir / "weights" / "best.pt", "--source", image, "--img", "64",
           "--project", tmp_path / "det", cwd=tmp_path))
    assert (tmp_path / "det" / "exp" / image.name).is_file()


@pytest.mark.slow  # starts fresh interpreters
def test_spd_yolo_info_from_any_folder(tmp_path):
    out = ok(run("spd-yolo", "info", "model=yolov8n-SPD.yaml", cwd=tmp_path))
    assert "YOLOv8n-SPD summary" in out and "parameters" in out and "GFLOPs" in out
    assert "Traceback" not in out


@pytest.mark.slow  # starts fresh interpreters
def test_unknown_mode_gives_ultralytics_message_without_traceback(tmp_path):
    proc = run("spd-yolo", "detect", "trian", "model=yolov8n-SPD.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip() == "error: 'trian' is not a valid YOLO argument. Similar arguments are i.e. " \
                                  "['train', 'track']."
    assert "yolo TASK MODE ARGS" in proc.stdout  # ultralytics' help follows its message, as under `yolo`


@pytest.mark.slow  # starts fresh interpreters
def test_unknown_spd_model_is_one_error_line(tmp_path):
    proc = run("spd-yolo", "detect", "train", "model=yolov9q-SPD.yaml", "data=x.yaml", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown SPD model 'yolov9q-SPD.yaml'"), proc.stderr
    assert "yolov5n-SPD" in lines[0] and "resnet18-SPD" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def no_network(monkeypatch):
    """Host name lookups (the first step of a download or a GitHub API query) fail and are recorded: the test asserts
    there were none (ultralytics catches and logs some failures, so raising alone would go unnoticed)."""
    lookups = []

    def refuse(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(f"no network in this test ({host})")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return lookups


@pytest.mark.parametrize(
    "argv,message",
    [
        (["predict", "model=foo.yaml"], "error: model YAML foo.yaml not found (give a path or one of yolov5n-SPD"),
        (["predict", "model=foo.pt"], "error: model=foo.pt: no such file, and not a model ultralytics can download"),
        (["predict", "model", "=", "foo"], "error: model=foo: no such file"),
        (["val", "model=resnet99-SPD"], "error: unknown SPD model 'resnet99-SPD'"),
        (["mode=trian"], "error: Invalid 'mode=trian'. Valid modes are"),
        (["predict", "task=segmnt"], "error: Invalid 'task=segmnt'. Valid tasks are"),
        (["train", "model=yolov5n-SPD", "epochs=1.5"], "error: 'epochs=1.5' is of invalid type float."),
        (["predict", "model=yolov5n-SPD", "lr0"], "error: 'lr0' is a valid YOLO argument but is missing an '=' sign"),
        (["predict", "model=yolov5n-SPD", "conf=2"], "error: 'conf=2' is an invalid value"),
        (["train", "imgsz=[64,"], "error: 'imgsz=[64,' has an unmatched '[' or ']' bracket."),
        (["info"], "error: info: give model=NAME"),
        (["predict", "model=yolo11n.pt"], "error: model=yolo11n.pt: not found here or in "),  # YOLO_OFFLINE=1
        (["detect", "predict"], "error: model=yolo26n.pt: not found here or in "),  # the entrypoint's default
        (["info", "model=yolov5n-SPD", "epochs=3"], "error: info: unexpected argument 'epochs=3'"),
    ],
)
def test_bad_input_is_an_error_line_never_a_download(argv, message, capsys, no_network, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert yolo.cli(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert no_network == [], "a download or lookup was attempted"
    assert list(tmp_path.iterdir()) == []


def test_entrypoint_builds_our_model_class_only_while_it_runs(monkeypatch):
    """The hook: ultralytics' entrypoint imports YOLO from `ultralytics` when it runs; during spd-yolo that is ours,
    whose task_map names our trainers and validators; afterwards ultralytics is as before."""
    seen, lazy, argv = {}, vars(ultralytics).get("YOLO"), ultralytics.cfg.ARGV

    def fake_entrypoint(debug=""):
        from ultralytics import YOLO as built  # what entrypoint does

        seen["cls"], seen["argv"] = built, list(ultralytics.cfg.ARGV)

    monkeypatch.setattr(yolo, "entrypoint", fake_entrypoint)
    assert yolo.cli(["detect", "train", "model", "=", "yolov5n-SPD", "epochs=1"]) == 0
    assert seen["cls"] is yolo.EntrypointYOLO
    assert seen["argv"][:3] == ["spd-yolo", "detect", "train"]
    assert Path(seen["argv"][3].removeprefix("model=")).parent.name == "yaml_configs"  # our name -> our path
    assert seen["argv"][4] == "epochs=1"
    assert vars(ultralytics).get("YOLO") is lazy and ultralytics.YOLO is not yolo.EntrypointYOLO  # as before
    assert ultralytics.cfg.ARGV is argv

    task_map = yolo.EntrypointYOLO("yolov5n-SPD").task_map
    assert task_map["detect"]["trainer"] is SPDDetectionTrainer
    assert task_map["detect"]["validator"] is SPDDetectionValidator
    assert task_map["classify"]["trainer"] is SPDClassificationTrainer
    assert all(c.__module__.startswith("ultralytics.") for c in task_map["segment"].values())  # others: stock


def test_failed_download_is_an_error_line_with_the_offline_hint(monkeypatch, capsys):
    """A dataset ultralytics knows by name (data=coco8.yaml) that it fails to download: one line, how to allow it."""

    def offline(debug=""):
        raise ConnectionError("❌  Download failure for https://ultralytics.com/assets/coco8.zip. Environment may be "
                              "offline.")

    monkeypatch.setattr(yolo, "entrypoint", offline)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    assert yolo.cli(["val", "model=yolov5n-SPD", "data=coco8.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ❌ Download failure for https://ultralytics.com/assets/coco8.zip.") and \
        err.rstrip().endswith("run with YOLO_OFFLINE=0 to let ultralytics download it)") and err.count("\n") == 1
