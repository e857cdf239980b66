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
