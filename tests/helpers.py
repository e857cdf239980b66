# SPD-YOLO, AGPL-3.0 license
"""Small helpers shared by the tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from filelock import FileLock
from torch import nn
from ultralytics.cfg import get_cfg

from forkserver import run_script

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter of this venv, in `cwd` (outside the repo), and return the result."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTHONPATH", None)  # the project must be found through its installation, not the repo path
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def build_once(tmp_path_factory, name: str, build) -> Path:
    """The folder `name`, filled by `build(folder)` once per test session and shared by the pytest-xdist workers: the
    first worker to ask builds it under a file lock, the others wait for it and reuse it (xdist's recipe for fixtures
    that must run once). Without xdist it is a folder of this session's temp dir. A failed build leaves nothing marked
    complete, so the next worker to ask builds it again (and fails the same way)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-N/: this session's, all workers'
    folder = root / "built-once" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not (folder / ".complete").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".complete").touch()
    return folder


def write_yaml(path: Path, backbone: list, head: list, nc: int = 2, **extra) -> Path:
    """Write a model YAML with the given rows."""
    path.write_text(yaml.safe_dump({"nc": nc, **extra, "backbone": backbone, "head": head}, sort_keys=False))
    return path


def script(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    """Run one of the root scripts as a user would (`python <name>.py ARGS`, in a process of its own forked from a
    pre-imported interpreter: see forkserver.py); returns the finished process (its .stdout and .stderr)."""
    env = {**os.environ, "YOLO_VERBOSE": "true"}  # the scripts print what a user sees
    return run_script(REPO / f"{name}.py", args, cwd=cwd, env=env)


def ok(proc: subprocess.CompletedProcess) -> str:
    """The output of a finished script, asserting it exited 0 (else the tail of its output is the failure)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def script_ok(name: str, *args, cwd=None) -> str:
    """`script`, asserting success; its output."""
    return ok(script(name, *args, cwd=cwd))


def slicing_space_to_depth(x, s: int = 2):
    """The slicing reference of space-to-depth: the blocks ``x[..., i::s, j::s]``, column offset j outer, row offset i
    inner, concatenated along channels (for s=2: Focus's and the paper authors' code)."""
    return torch.cat([x[..., i::s, j::s] for j in range(s) for i in range(s)], 1)


def rewrite_pickle(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    """Copy the torch.save archive `src` to `dst` with `old` replaced by `new` in its pickle (e.g. a class name), as
    a checkpoint written by another version would read."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("/data.pkl"):
                assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times in {src}"
                data = data.replace(old, new)
            zout.writestr(item, data)
    return dst


def strided_layers(model: nn.Module, allowed: tuple = ()) -> list:
    """Names of every conv or pooling layer that skips pixels (stride > 1, or an adaptive pool), except the modules
    in `allowed` (e.g. a classifier head's global pool, which averages the final map rather than down-sampling)."""
    bad = []
    for name, m in model.named_modules():
        if any(m is a for a in allowed):
            continue
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)):
            strides = m.stride if isinstance(m.stride, tuple) else (m.stride, m.stride)
            if any(s is not None and s > 1 for s in strides):
                bad.append(name)
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            bad.append(name)
    return bad


def stride2_convs(model: nn.Module) -> int:
    """How many Conv2d layers have stride 2 (the down-sampling steps of a stock model)."""
    return sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in model.modules())


def one_training_step(model: nn.Module, boxes: list, watch: tuple = ()) -> tuple[torch.Tensor, list[bool]]:
    """One SGD step (lr 0.01) of a detection model in training mode on two random 64x64 images with one box each
    (`boxes`: two normalised xywh rows, classes 0 and 1) through its ultralytics loss. Returns the loss and, for each
    tensor in `watch`, whether the step changed it; the gradients are left in place for the caller to inspect."""
    model.args = get_cfg()
    model.train()
    batch = {"img": torch.rand(2, 3, 64, 64), "batch_idx": torch.tensor([0.0, 1.0]),
             "cls": torch.tensor([[0.0], [1.0]]), "bboxes": torch.tensor(boxes, dtype=torch.float32)}
    loss, _ = model.loss(batch)
    loss.sum().backward()
    before = [w.detach().clone() for w in watch]
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    return loss, [not torch.equal(b, w) for b, w in zip(before, watch)]


def detect_feats(preds: dict) -> list:
    """The feature maps a Detect head returns beside its eval output: ``preds['feats']``, or for an end-to-end head
    (YOLO26: one-to-many and one-to-one branches) its one-to-many branch's, which the eval output is made of."""
    return preds.get("one2many", preds)["feats"]


def large_scales_slow(names) -> list:
    """Model names as pytest params, the l and x scales (the largest builds) marked slow: `make test` checks every
    scale, `make test-fast` the n, s and m ones."""
    large = re.compile(r"^yolo(v\d+|\d+)[lx](-|$)")
    return [pytest.param(n, marks=pytest.mark.slow) if large.match(n) else n for n in names]
