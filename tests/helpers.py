# SPD-YOLO, AGPL-3.0 license
"""Small helpers shared by the tests."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter of this venv, in `cwd` (outside the repo), and return the result."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTHONPATH", None)  # the project must be found through its installation, not the repo path
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def write_yaml(path: Path, backbone: list, head: list, nc: int = 2, **extra) -> Path:
    """Write a model YAML with the given rows."""
    path.write_text(yaml.safe_dump({"nc": nc, **extra, "backbone": backbone, "head": head}, sort_keys=False))
    return path


def script(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    """Run one of the root scripts as a user would; returns the finished process (its .stdout and .stderr)."""
    env = {**os.environ, "YOLO_VERBOSE": "true"}  # the scripts print what a user sees
    return subprocess.run(
        [sys.executable, str(REPO / f"{name}.py"), *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


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
    import torch

    return torch.cat([x[..., i::s, j::s] for j in range(s) for i in range(s)], 1)


def rewrite_pickle(src: Path, dst: Path, old: bytes, new: bytes) -> Path:
    """Copy the torch.save archive `src` to `dst` with `old` replaced by `new` in its pickle (e.g. a class name), as
    a checkpoint written by another version would read."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("/data.pkl"):
                assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times in {src}"
                data = data.replace(old, new)
            zout.writestr(item, data)
    return dst
