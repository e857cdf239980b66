# SPD-YOLO, AGPL-3.0 license
"""Training that survives faults (SIGKILL, Ctrl-C, a kill during a checkpoint write), determinism, weights-only
files."""

import csv
import os
import signal
import subprocess

import pytest
import torch
from ultralytics.utils.torch_utils import strip_optimizer

from forkserver import run_code, run_script
from helpers import REPO, build_once
from spd_yolo import build_model
from spd_yolo.engine.fault_tolerance import FaultTolerantTrainer

pytestmark = pytest.mark.slow

# train.py's CLI in a child process, after SETUP (python lines) has planted a fault.
CHILD = """
import os, signal, sys
from ultralytics.utils import callbacks
import spd_yolo.atomic, spd_yolo.engine
{setup}
from spd_yolo.cli.train import cli
sys.exit(cli(sys.argv[1:]))
"""
AT_EPOCH_2 = 'callbacks.default_callbacks["on_train_batch_end"].append(lambda t: t.epoch == 1 and ({action}))'
FAULTS = {
    # SIGKILL in the middle of the second epoch
    "mid-epoch": AT_EPOCH_2.format(action="os.kill(os.getpid(), signal.SIGKILL)"),
    # SIGKILL after the second epoch's results.csv row, before its checkpoint: resume must not list it twice
    "after-csv": "orig = spd_yolo.engine.SPDDetectionTrainer.save_model\n"
    "spd_yolo.engine.SPDDetectionTrainer.save_model = "
    "lambda self: os.kill(os.getpid(), signal.SIGKILL) if self.epoch == 1 else orig(self)",
    # SIGKILL inside the write of last.pt: the temp file is written, the rename never happens
    "mid-write": AT_EPOCH_2.format(action="setattr(os, 'replace', lambda *a: os.kill(os.getpid(), signal.SIGKILL))"),
    "ctrl-c": AT_EPOCH_2.format(action="os.kill(os.getpid(), signal.SIGINT)"),
    "none": "",
}


def child(fault: str, *argv, sigint=signal.SIG_DFL) -> subprocess.CompletedProcess:
    """`python -c CHILD ARGV` with the fault planted, started with SIGINT set to `sigint` whatever the shell that
    started pytest chose (a background job inherits SIGINT ignored): the test then tests the project, not its
    surroundings."""
    return run_code(CHILD.format(setup=FAULTS[fault]), argv, env={**os.environ, "YOLO_VERBOSE": "true"}, sigint=sigint)


def train_args(data, project, name, epochs=3):
    return ["--cfg", "yolov5n-SPD", "--data", data, "--epochs", epochs, "--img", 64, "--batch-size", 4, "--workers", 0,
            "--device", "cpu", "--project", project, "--name", name, "--noplots", "--seed", 0]


def rows(run_dir):
    return list(csv.DictReader((run_dir / "results.csv").open()))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from spd_yolo.data.synth import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("data") / "d", n_train=8, n_val=4, imgsz=64, video_frames=0,
                                 progress=False)


@pytest.fixture(scope="module")
# Own training: the uninterrupted run the faulted ones must reproduce, with the same seed and settings.
def reference(data, tmp_path_factory):
    """An uninterrupted 3-epoch run: what every resumed run must reproduce epoch by epoch (schedule, row count); once
    per session (helpers.build_once)."""
    def build(project):
        out = child("none", *train_args(data, project, "ref"))
        assert out.returncode == 0, out.stderr[-3000:]

    return build_once(tmp_path_factory, "reliability-reference", build) / "ref"


def resume(run_dir) -> subprocess.CompletedProcess:
    return run_script(REPO / "train.py", ["--resume", run_dir])


def assert_same_schedule(run_dir, reference):
    got, ref = rows(run_dir), rows(reference)
    assert [int(float(r["epoch"])) for r in got] == [1, 2, 3]  # one row per epoch: no gap, no duplicate
    for g, r in zip(got, ref):
        assert [g[k] for k in ("lr/pg0", "lr/pg1", "lr/pg2")] == [r[k] for k in ("lr/pg0", "lr/pg1", "lr/pg2")]


@pytest.mark.parametrize("fault", ["mid-epoch", "after-csv", "mid-write"])
# Own training: killing and resuming a training is what is checked.
def test_sigkill_then_resume_finishes_exactly(fault, data, reference, tmp_path):
    out = child(fault, *train_args(data, tmp_path, "run"))
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    run = tmp_path / "run"
    ckpt = torch.load(run / "weights/last.pt", weights_only=False)  # the previous last.pt is whole and readable
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None
    if fault == "after-csv":
        assert [int(float(r["epoch"])) for r in rows(run)] == [1, 2]
    if fault == "mid-write":
        assert list((run / "weights").glob(".last.pt.*.tmp"))  # the torn write stayed in its temp file
    res = resume(run)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert_same_schedule(run, reference)
    assert not list((run / "weights").glob(".*.tmp"))
    assert torch.load(run / "weights/best.pt", weights_only=False)["epoch"] == -1  # final, optimizer stripped


# Own training: interrupting and resuming a training is what is checked.
def test_ctrl_c_stops_cleanly_and_resumes(data, reference, tmp_path):
    out = child("ctrl-c", *train_args(data, tmp_path, "run"))
    assert out.returncode == 130, out.stderr[-2000:]
    assert f"training interrupted: resume with  python train.py --resume {tmp_path / 'run'}" in out.stderr
    assert "Traceback" not in out.stderr
    assert torch.load(tmp_path / "run/weights/last.pt", weights_only=False)["optimizer"] is not None
    res = resume(tmp_path / "run")
    assert res.returncode == 0, res.stderr[-2000:]
    assert_same_schedule(tmp_path / "run", reference)


# Own training: a training started with SIGINT ignored is what is checked.
def test_sigint_ignored_by_the_parent_stays_ignored(data, tmp_path):
    """Started with SIGINT ignored (as a background job is), training keeps it ignored: the same Ctrl-C does not stop
    it, all epochs finish. That is the choice of the shell that started it, not ours to override."""
    out = child("ctrl-c", *train_args(data, tmp_path, "run"), sigint=signal.SIG_IGN)
    assert out.returncode == 0, out.stderr[-2000:]
    assert [int(float(r["epoch"])) for r in rows(tmp_path / "run")] == [1, 2, 3]


# Own training: a second training with the same seed is what is checked.
def test_same_seed_same_first_epoch_losses(data, reference, tmp_path):
    out = child("none", *train_args(data, tmp_path, "again"))
    assert out.returncode == 0, out.stderr[-2000:]
    a, b = rows(reference)[0], rows(tmp_path / "again")[0]
    for k in ("train/box_loss", "train/cls_loss", "train/dfl_loss"):
        assert a[k] == b[k], k


def test_weights_only_file_loads_safely_and_predicts_the_same(reference, data):
    from spd_yolo import YOLO

    path = reference / "weights/best.weights.pt"
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no pickle of code objects inside
    assert payload["format"].startswith("spd-yolo-weights-only/") and payload["task"] == "detect"
    x = torch.rand(1, 3, 64, 96)
    full, light = YOLO(reference / "weights/best.pt").model.float().eval(), YOLO(path).model
    with torch.no_grad():
        assert torch.equal(full(x)[0], light(x)[0])
    out = run_script(REPO / "val.py", ["--weights", path, "--data", data, "--img", 64, "--project",
                                       reference.parent / "v"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "AP_S" in out.stdout


class _StripsThenFails:
    """Stands in for ultralytics' trainer: final_eval strips self.last in place, then fails while writing self.best."""

    def final_eval(self):
        strip_optimizer(self.last)
        self.best.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt


@pytest.mark.parametrize("fails", [False, True])
def test_final_eval_replaces_last_and_best_only_when_stripping_finished(tmp_path, fails):
    """A fault inside ultralytics' final_eval leaves last.pt and best.pt as they were; once it finishes they are the
    stripped files. No hidden copy is left either way."""
    class Base(_StripsThenFails):
        def final_eval(self):
            if fails:
                return super().final_eval()
            strip_optimizer(self.last)
            strip_optimizer(self.best)

    trainer = object.__new__(type("Trainer", (FaultTolerantTrainer, Base), {}))
    trainer.wdir = tmp_path
    trainer.last, trainer.best = tmp_path / "last.pt", tmp_path / "best.pt"
    for path in (trainer.last, trainer.best):
        ckpt = {"model": None, "ema": build_model("yolov5n-SPD", nc=1), "optimizer": {"state": 1}, "epoch": 3}
        torch.save(ckpt, path)
    before = {p: p.read_bytes() for p in (trainer.last, trainer.best)}
    if fails:
        with pytest.raises(KeyboardInterrupt):
            trainer.final_eval()
        assert {p: p.read_bytes() for p in before} == before
    else:
        trainer.final_eval()
        for path in before:
            assert torch.load(path, weights_only=False)["optimizer"] is None
        assert (tmp_path / "best.weights.pt").is_file()
    assert trainer.last == tmp_path / "last.pt" and trainer.best == tmp_path / "best.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", "best.pt"] + ([] if fails else
                                                                                          ["best.weights.pt"]))
