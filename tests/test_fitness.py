# SPD-YOLO, AGPL-3.0 license
"""Training that selects for small objects: per-epoch COCO metrics (--coco-metrics) and best.pt chosen by COCO AP or
AP_S (--fitness), recorded in the checkpoints and kept on --resume.

Three epochs on 8 tiny images teach a model nothing (its COCO AP stays 0), so the selection tests replace the
validation predictions by an "oracle" that reports a known share of the ground-truth boxes (`install_oracle`): the
COCO numbers of each epoch are then known (1.0 for all boxes) and the epoch best.pt must come from is too.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
from pathlib import Path

import cloudpickle
import pytest
import torch

from forkserver import run_code
from helpers import build_once
from spd_yolo import coco
from spd_yolo.cli.train import build_parser, cli
from spd_yolo.engine import (
    COCO_COLUMNS,
    COCO_TIME_COLUMN,
    FITNESS_KEY,
    SPDDetectionTrainer,
    SPDDetectionValidator,
    checkpoint_record,
)
from spd_yolo.errors import FitnessError

TESTS = Path(__file__).resolve().parent
COLUMNS = [*COCO_COLUMNS.values(), COCO_TIME_COLUMN]
KEEP = {0: 0.5, 1: 1.0, 2: 0.25}  # share of the ground-truth boxes the oracle reports at the validation of epoch i

# train.py's CLI in a child process, after SETUP (python lines) has planted the oracle and/or a fault.
CHILD = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from ultralytics.utils import callbacks
{setup}
from spd_yolo.cli.train import cli
sys.exit(cli(sys.argv[1:]))
"""
ORACLE = "import test_fitness; test_fitness.install_oracle({keep!r})"
# SIGKILL in the middle of the second epoch (as tests/test_reliability.py)
SIGKILL_EPOCH_2 = ('callbacks.default_callbacks["on_train_batch_end"].append('
                   'lambda t: t.epoch == 1 and os.kill(os.getpid(), signal.SIGKILL))')


def install_oracle(keep: dict | float, setattr=setattr) -> None:
    """Make SPDDetectionValidator report, for each image, the first round(share * n) of its n ground-truth boxes (score
    0.9) instead of the model's predictions: share = keep[trainer.epoch] during training (the model's own predictions
    outside training), or keep if it is a number."""
    call, update = SPDDetectionValidator.__call__, SPDDetectionValidator.update_metrics

    def oracle_call(self, trainer=None, model=None, **kwargs):
        if isinstance(keep, dict):
            self.oracle_share = keep[trainer.epoch] if trainer is not None else None
        else:
            self.oracle_share = keep
        return call(self, trainer=trainer, model=model, **kwargs)

    def oracle_update(self, preds, batch):
        if self.oracle_share is not None:
            preds = []
            for si in range(len(batch["im_file"])):
                gt = self._prepare_batch(si, batch)
                n = round(self.oracle_share * len(gt["cls"]))
                preds.append({"bboxes": gt["bboxes"][:n].reshape(-1, 4).float(), "conf": torch.full((n,), 0.9),
                              "cls": gt["cls"][:n].float(), "extra": torch.zeros((n, 0))})
        return update(self, preds, batch)

    setattr(SPDDetectionValidator, "__call__", oracle_call)
    setattr(SPDDetectionValidator, "update_metrics", oracle_update)


def child(setup: str, *argv) -> subprocess.CompletedProcess:
    return run_code(CHILD.format(tests=str(TESTS), setup=setup), argv, env={**os.environ, "YOLO_VERBOSE": "true"},
                    sigint=signal.SIG_DFL)


def val_args(weights, data, project, name) -> dict:
    """The arguments of a standalone validation (what val.py runs) of `weights` on `data`, with COCO metrics."""
    return {"model": str(weights), "data": str(data), "imgsz": 64, "batch": 8, "conf": 0.001, "iou": 0.7,
            "device": "cpu", "save_json": True, "plots": False, "project": str(project), "name": name}


def train_args(data, project, name, *extra, epochs=3) -> list[str]:
    args = ["--cfg", "yolov5n-SPD", "--data", data, "--epochs", epochs, "--img", 64, "--batch-size", 4, "--workers", 0,
            "--device", "cpu", "--project", project, "--name", name, "--seed", 0, *extra]
    return [str(a) for a in args]


def rows(run_dir) -> list[dict]:
    return list(csv.DictReader((run_dir / "results.csv").open()))


def record(path) -> dict:
    return checkpoint_record(torch.load(path, weights_only=False), FITNESS_KEY)


def assert_best_by(run_dir, name: str, column: str, coco_metrics: bool = True):
    """best.pt and last.pt record `name`, and the value and epoch of the best `column` (the last of ties, as
    ultralytics overwrites best.pt on a tie)."""
    table = rows(run_dir)
    values = [float(r[column]) for r in table]
    best_epoch = max(i for i, v in enumerate(values, 1) if v == max(values))
    for f in ("best.pt", "last.pt"):
        saved = record(run_dir / "weights" / f)
        assert saved["name"] == name and saved["coco_metrics"] is coco_metrics, saved
        assert saved["best_value"] == pytest.approx(max(values), abs=1e-9) and saved["best_epoch"] == best_epoch, saved


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from spd_yolo.data.synth import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("data") / "d", n_train=8, n_val=4, imgsz=64, video_frames=0,
                                 progress=False)


def copy_without_annotations(data, root) -> Path:
    """A copy of the dataset without its COCO annotation file: the ground truth is then built from the YOLO labels."""
    shutil.copytree(data.parent, root, ignore=shutil.ignore_patterns("annotations", "*.cache"))
    yaml_path = root / "data.yaml"
    yaml_path.write_text(yaml_path.read_text().replace(str(data.parent), str(root)))
    return yaml_path


@pytest.fixture(scope="module")
# Own training: how training selects best.pt under --fitness is what is checked.
def oracle_run(data, tmp_path_factory):
    """3 epochs with --fitness ap_small, the oracle reporting 50%, 100%, 25% of the boxes: best.pt is epoch 2 (trained
    once per session, helpers.build_once)."""
    def build(project):
        out = child(ORACLE.format(keep=KEEP), *train_args(data, project, "run", "--fitness", "ap_small"))
        assert out.returncode == 0, out.stderr[-3000:]

    return build_once(tmp_path_factory, "oracle", build) / "run"


# --------------------------------------------------------------------------------------------------- fast checks


def test_count_objects_follows_pycocotools_area_ranges():
    gt = {"images": [{"id": 1}, {"id": 2}], "annotations": [
        {"image_id": 1, "bbox": [0, 0, 32, 32], "area": 1024.0, "iscrowd": 0},  # small AND medium: bounds inclusive
        {"image_id": 1, "bbox": [0, 0, 10, 10], "area": 100.0, "iscrowd": 1},  # crowd: never counted
        {"image_id": 2, "bbox": [0, 0, 40, 40]},  # no area field: w * h = 1600, medium
        {"image_id": 2, "bbox": [0, 0, 100, 100], "area": 9216.5},  # large
    ]}
    assert [coco.count_objects(gt, a) for a in ("all", "small", "medium", "large")] == [3, 1, 2, 1]
    assert coco.count_objects(gt, "small", image_ids=[2]) == 0


def test_configured_trainer_is_a_picklable_subclass():
    assert SPDDetectionTrainer.configured() is SPDDetectionTrainer
    trainer = SPDDetectionTrainer.configured("ap_small")
    assert issubclass(trainer, SPDDetectionTrainer)
    assert (trainer.fitness_name, trainer.coco_metrics) == ("ap_small", True)
    again = cloudpickle.loads(cloudpickle.dumps(trainer))  # what ultralytics' DDP workers get
    assert (again.fitness_name, again.coco_metrics) == ("ap_small", True)
    metrics_only = SPDDetectionTrainer.configured(coco_metrics=True)
    assert (metrics_only.fitness_name, metrics_only.coco_metrics) == ("default", True)
    with pytest.raises(FitnessError, match="fitness must be one of default, ap, ap_small"):
        SPDDetectionTrainer.configured("ap_tiny")


def test_help_names_the_flags():
    text = " ".join(build_parser().format_help().split())  # help lines wrap at the terminal width
    assert "--coco-metrics" in text and "--fitness {default,ap,ap_small}" in text
    assert "imply --coco-metrics" in text and "with --resume the run's own" in text


def test_unknown_fitness_is_argparse_choice_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--cfg", "yolov5n-SPD", "--fitness", "ap_tiny"])
    assert e.value.code == 2
    assert "argument --fitness: invalid choice: 'ap_tiny'" in capsys.readouterr().err


@pytest.mark.parametrize("flags", [["--fitness", "ap_small"], ["--coco-metrics"]])
def test_coco_flags_refused_for_classification(flags, capsys, tmp_path):
    assert cli(["--cfg", "resnet18-SPD", "--project", str(tmp_path), *flags]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {' '.join(flags)}: COCO metrics are for detection"), err
    assert "'classify' model" in err[0]


# --------------------------------------------------------------------------------------------------- training


@pytest.mark.slow
def test_ap_small_selects_best_pt_and_matches_validation(oracle_run, data, tmp_path, monkeypatch):
    table = rows(oracle_run)
    assert [int(r["epoch"]) for r in table] == [1, 2, 3]
    for r in table:
        for c in COCO_COLUMNS.values():
            assert float(r[c]) == -1 or 0 <= float(r[c]) <= 1, (c, r[c])  # fractions; -1: undefined
        assert float(r[COCO_TIME_COLUMN]) > 0
    ap_s = [float(r["metrics/coco_AP_S"]) for r in table]
    assert ap_s[1] == 1.0 and 0 < ap_s[2] < ap_s[0] < 1, ap_s  # all boxes reported -> exactly 1: the mapping is right
    assert all(float(r["metrics/coco_AP_M"]) == -1 for r in table)  # 64-pixel images: no medium object, undefined
    assert_best_by(oracle_run, "ap_small", "metrics/coco_AP_S")
    assert record(oracle_run / "weights/best.pt")["best_epoch"] == 2  # not the last epoch
    assert record(oracle_run / "weights/best.pt")["column"] == "metrics/coco_AP_S"
    assert (oracle_run / "results.png").is_file() and (oracle_run / "coco_metrics.json").is_file()

    # the last epoch's numbers are those of a standalone validation (what val.py runs) of the same predictions
    install_oracle(KEEP[2], setattr=monkeypatch.setattr)
    validator = SPDDetectionValidator(args=val_args(oracle_run / "weights/last.pt", data, tmp_path, "val"))
    validator()
    for stat, column in COCO_COLUMNS.items():
        assert float(table[-1][column]) == pytest.approx(validator.coco_stats.values[stat], abs=1e-5), stat
    assert "annotation file" in validator.coco_stats.gt_source

    # and against the ground truth built from the YOLO labels (no annotation file): the same numbers
    labels_only = copy_without_annotations(data, tmp_path / "labels-only")
    again = SPDDetectionValidator(args=val_args(oracle_run / "weights/last.pt", labels_only, tmp_path, "val-labels"))
    again()
    assert again.coco_stats.gt_source.startswith("YOLO labels at original image sizes")
    for stat in COCO_COLUMNS:
        assert again.coco_stats.values[stat] == pytest.approx(validator.coco_stats.values[stat], abs=1e-9), stat


@pytest.mark.slow
# Own training: a killed and resumed training is what is checked.
def test_resume_after_sigkill_keeps_ap_small(data, tmp_path):
    """Also the ground truth from the YOLO labels during training (no annotation file in this copy)."""
    data = copy_without_annotations(data, tmp_path / "labels-only")
    setup = ORACLE.format(keep=KEEP) + "\n" + SIGKILL_EPOCH_2
    out = child(setup, *train_args(data, tmp_path, "run", "--fitness", "ap_small", "--noplots"))
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    run = tmp_path / "run"
    assert record(run / "weights/last.pt")["name"] == "ap_small"

    # a changed selection is refused before anything runs
    assert cli(["--resume", str(run), "--fitness", "default"]) == 1

    res = child(ORACLE.format(keep=KEEP), "--resume", run)  # the same flags as `train.py --resume RUN`
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    table = rows(run)
    assert [int(r["epoch"]) for r in table] == [1, 2, 3]
    assert [float(r["metrics/coco_AP_S"]) for r in table][1] == 1.0  # resumed epochs have their COCO columns
    assert_best_by(run, "ap_small", "metrics/coco_AP_S")  # default fitness would have recorded mAP50-95 (0.995)
    assert record(run / "weights/best.pt")["best_epoch"] == 2


@pytest.mark.slow
# Own training: the COCO columns a training writes are what is checked.
def test_coco_metrics_on_a_real_run_match_val_of_last_pt(data, tmp_path):
    """--coco-metrics with --noval: the epoch that is not validated has -1 placeholders, the table stays aligned, and
    the final epoch equals a standalone validation of last.pt at the training validation's settings (conf 0.001,
    iou 0.7, same imgsz; last.pt holds the EMA in FP16, validated in FP32 during training: a small tolerance)."""
    assert cli(train_args(data, tmp_path, "run", "--coco-metrics", "--noval", "--noplots", epochs=2)) == 0
    run = tmp_path / "run"
    first, last = rows(run)
    assert [first[c] for c in COCO_COLUMNS.values()] == ["-1"] * 4 and float(first[COCO_TIME_COLUMN]) == 0
    assert all(float(last[c]) == -1 or 0 <= float(last[c]) <= 1 for c in COCO_COLUMNS.values())
    assert_best_by(run, "default", "metrics/mAP50-95(B)", coco_metrics=True)
    validator = SPDDetectionValidator(args=val_args(run / "weights/last.pt", data, tmp_path, "val"))
    validator()
    for stat, column in COCO_COLUMNS.items():
        assert float(last[column]) == pytest.approx(validator.coco_stats.values[stat], abs=0.02), stat


@pytest.mark.slow
# Own training: the columns a training writes are what is checked.
def test_without_coco_metrics_results_are_unchanged(data, tmp_path):
    assert cli(train_args(data, tmp_path, "run", "--noplots", epochs=2)) == 0
    run = tmp_path / "run"
    header = (run / "results.csv").read_text().splitlines()[0].split(",")
    assert not [c for c in header if "coco" in c], header
    assert not (run / "coco_metrics.json").exists()
    saved = record(run / "weights/best.pt")
    assert saved["name"] == "default" and saved["coco_metrics"] is False and saved["column"] is None
    assert_best_by(run, "default", "metrics/mAP50-95(B)", coco_metrics=False)


@pytest.mark.slow
# Own training: the refusal comes from the trainer, before its first epoch.
def test_ap_small_without_small_objects_is_one_error_line(data, tmp_path, capsys):
    """AP_S is undefined (-1) on a validation set without small objects: refused before the first epoch."""
    yaml_path = copy_without_annotations(data, tmp_path / "big")
    for label in (tmp_path / "big/labels/val").glob("*.txt"):
        label.write_text("0 0.5 0.5 0.9 0.9\n")  # 58 x 58 pixels: medium
    assert cli(train_args(yaml_path, tmp_path, "run", "--fitness", "ap_small", "--noplots", epochs=1)) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and err[0].startswith("error: --fitness ap_small: best.pt cannot be selected by COCO AP_S: "
                                               "the validation set (the YOLO labels) has no small"), err
    assert not (tmp_path / "run/weights/last.pt").exists()


@pytest.mark.slow
# Own training: the trainer the Python API picks is what is checked.
def test_python_api_trains_with_our_trainer_and_a_configured_fitness(data, tmp_path, monkeypatch):
    """`spd_yolo.YOLO(...).train()` uses SPDDetectionTrainer (not ultralytics' stock one): best.weights.pt and the
    fitness record; ``trainer=SPDDetectionTrainer.configured("ap_small")`` selects best.pt by AP_S as train.py does.
    Plain ultralytics' YOLO keeps its own classes."""
    from ultralytics import YOLO as StockYOLO

    from spd_yolo import YOLO

    install_oracle({0: 1.0, 1: 0.25}, setattr=monkeypatch.setattr)
    model = YOLO("yolov5n-SPD")
    assert model.task_map["detect"]["validator"] is SPDDetectionValidator
    assert StockYOLO("yolov5n.yaml").task_map["detect"]["trainer"].__module__.startswith("ultralytics.")
    model.train(data=str(data), epochs=2, imgsz=64, batch=4, workers=0, device="cpu", project=str(tmp_path),
                name="api", seed=0, plots=False, trainer=SPDDetectionTrainer.configured("ap_small"))
    run = tmp_path / "api"
    assert isinstance(model.trainer, SPDDetectionTrainer) and model.trainer.fitness_name == "ap_small"
    assert (run / "weights/best.weights.pt").is_file() and (run / "coco_metrics.json").is_file()
    ap_s = [float(r["metrics/coco_AP_S"]) for r in rows(run)]
    assert ap_s[0] == pytest.approx(1.0) and 0 < ap_s[1] < 0.5, ap_s  # all boxes, then a quarter of them
    assert_best_by(run, "ap_small", "metrics/coco_AP_S")
    assert record(run / "weights/best.pt")["best_epoch"] == 1

    plain = YOLO("yolov5n-SPD")
    plain.train(data=str(data), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", project=str(tmp_path),
                name="plain", seed=0, plots=False)
    assert type(plain.trainer) is SPDDetectionTrainer
    assert record(tmp_path / "plain/weights/last.pt")["name"] == "default"


def test_checkpoint_record_reads_the_model_attribute_and_old_top_level_keys():
    """Records are attributes of the saved model (ckpt["ema"] in last.pt, ckpt["model"] once stripped); checkpoints
    of earlier versions hold them as top-level keys, which are still read."""
    record = {"name": "ap_small", "column": "metrics/coco_AP_S", "coco_metrics": True, "best_value": 0.25,
              "best_epoch": 2}
    model = torch.nn.Linear(1, 1)
    setattr(model, FITNESS_KEY, record)
    assert checkpoint_record({"model": None, "ema": model}, FITNESS_KEY) == record  # last.pt during training
    assert checkpoint_record({"model": model, "ema": None}, FITNESS_KEY) == record  # stripped best.pt
    assert checkpoint_record({"model": torch.nn.Linear(1, 1), FITNESS_KEY: record}, FITNESS_KEY) == record  # old
    assert checkpoint_record({"model": torch.nn.Linear(1, 1)}, FITNESS_KEY) is None
    assert checkpoint_record(None, FITNESS_KEY) is None
    loaded = torch.load(_saved(model), weights_only=False)  # the attribute survives pickling
    assert checkpoint_record({"model": loaded}, FITNESS_KEY) == record


def _saved(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer
