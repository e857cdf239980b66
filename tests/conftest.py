# SPD-YOLO, AGPL-3.0 license
"""Test isolation: ultralytics settings in a temp dir, never online, never auto-installing."""

import os
import tempfile

# Set before anything imports ultralytics (it reads these at import time). Subprocesses inherit them.
_CONFIG_DIR = tempfile.mkdtemp(prefix="spd-yolo-tests-")
os.environ["YOLO_CONFIG_DIR"] = _CONFIG_DIR
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "false"
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ.pop("ULTRALYTICS_SAFE_LOAD", None)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def rng():
    """A seeded torch generator, so every test's random inputs are reproducible."""
    return torch.Generator().manual_seed(0)
