# SPD-YOLO, AGPL-3.0 license
"""Test isolation for tests/ and benchmarks/test_scripts.py: ultralytics settings in a temp dir, never online, never
auto-installing, one torch thread; the seeded `rng` fixture."""

import os
import tempfile

# Set before anything imports ultralytics (it reads these at import time). Subprocesses inherit them.
_CONFIG_DIR = tempfile.mkdtemp(prefix="spd-yolo-tests-")
os.environ["YOLO_CONFIG_DIR"] = _CONFIG_DIR
os.environ["YOLO_OFFLINE"] = "1"
os.environ["YOLO_AUTOINSTALL"] = "false"
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ.pop("ULTRALYTICS_SAFE_LOAD", None)

import pytest
import torch

# One intra-op thread in the test process, whatever ran before: ultralytics' select_device() sets its own count
# (cpu_count - 1, at most 8) for the rest of the process, so the count would otherwise depend on the test order;
# the tests' tiny models gain nothing from more, and on a busy machine more threads than free cores make each
# step several times slower.
torch.set_num_threads(1)


@pytest.fixture
def rng():
    """A seeded torch generator, so every test's random inputs are reproducible."""
    return torch.Generator().manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """Tests marked `deploy` (every export format in its own runtime, `make test-deploy`) run only when -m names
    them; `make test` and `make test-fast` skip them."""
    if "deploy" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="deploy tier: run by `make test-deploy` (converters in .venv-deploy)")
    for item in items:
        if "deploy" in item.keywords:
            item.add_marker(skip)
