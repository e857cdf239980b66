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
