# SPD-YOLO, AGPL-3.0 license
"""`network_guard` for tests that must prove no network access is even attempted; the one trained detector and the
one trained classifier that every test needing only "a trained checkpoint" shares (`trained_detector`,
`trained_classifier`). Isolation (settings in a temp dir, offline, one torch thread) is the root conftest.py's."""

import ipaddress
import socket
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from helpers import build_once, ok, script


def _loopback(host) -> bool:
    """Whether a host name or address stays on this machine (the stream tests serve on 127.0.0.1)."""
    if host is None:
        return True
    host = host.decode() if isinstance(host, bytes) else str(host)
    if host in ("", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def network_guard(monkeypatch):
    """In-process network access beyond this machine fails loudly: host name look-ups (the first step of every
    download, GitHub API query or online check) and connections to non-loopback addresses raise, are recorded, and
    the test fails at teardown if there was any, also where the caller caught the error (ultralytics catches and logs
    some). Loopback and local (AF_UNIX) sockets work as usual. Yields the list of attempts."""
    attempts = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def refuse(what: str):
        attempts.append(what)
        return OSError(f"network access in a test that forbids it: {what}")

    def getaddrinfo(host, *args, **kwargs):
        if not _loopback(host):
            raise refuse(f"look-up of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def outside(sock, address) -> bool:
        return sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0])

    def connect(self, address):
        if outside(self, address):
            raise refuse(f"connection to {address}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if outside(self, address):
            raise refuse(f"connection to {address}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


# ---------------------------------------------------------------------------------------------------------------------
# Shared trained models. Each trains once per session (once for all xdist workers: helpers.build_once), the first time
# a test asks for it (only slow tests do), through train.py as a user runs it. Tests read them; a test that writes
# beside a checkpoint (export) copies it first.


class Run(NamedTuple):
    """A finished train.py run: its folder (weights/best.pt, last.pt, results.csv, args.yaml) and what it printed."""

    folder: Path
    output: str


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """data.yaml of the demo detection set: 8 train and 4 val images at 64 px (4 classes), a 7-frame video in
    video/demo.avi and a COCO annotation file for val."""
    from spd_yolo.data.synth import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo-data") / "tiny", n_train=8, n_val=4, imgsz=64,
                                 video_frames=7, progress=False)


@pytest.fixture(scope="session")
def trained_detector(demo_data, tmp_path_factory) -> Run:
    """yolov5n-SPD trained 2 epochs on `demo_data` by train.py (batch 4, 64 px, CPU), run folder <project>/spd."""
    def build(project):
        out = ok(script("train", "--cfg", "yolov5n-SPD", "--data", demo_data, "--epochs", 2, "--img", 64,
                        "--batch-size", 4, "--workers", 0, "--device", "cpu", "--project", project, "--name", "spd"))
        (project / "output.txt").write_text(out)

    project = build_once(tmp_path_factory, "trained-detector", build)
    return Run(project / "spd", (project / "output.txt").read_text())


@pytest.fixture(scope="session")
def cls_folders(tmp_path_factory):
    """A classification image-folder set: 3 synthetic classes at 32x32 (4 train and 2 val images each) plus, in train
    and val, a grayscale PNG, an RGBA PNG, a 48x40 JPEG and a 16-bit PNG."""
    from spd_yolo.data.synth_cls import CLASS_NAMES, generate_cls_dataset

    root = generate_cls_dataset(tmp_path_factory.mktemp("cls-data") / "mixed", n_train=4, n_val=2, n_classes=3)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        a, b, c = (root / split / name for name in CLASS_NAMES[:3])
        for path, im in ((a / "zz_gray.png", rng.integers(0, 255, (32, 32), dtype=np.uint8)),
                         (b / "zz_rgba.png", rng.integers(0, 255, (32, 32, 4), dtype=np.uint8)),
                         (c / "zz_odd.jpg", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)),
                         (c / "zz_16bit.png", rng.integers(0, 65535, (32, 32, 3), dtype=np.uint16))):
            assert cv2.imwrite(str(path), im)
    return root


@pytest.fixture(scope="session")
def trained_classifier(cls_folders, tmp_path_factory) -> Run:
    """resnet18-SPD trained 1 epoch on `cls_folders` by train.py (batch 4, at the images' 32 px, CPU), run folder
    <project>/cls. Stock resnet18 runs the same code with spd=false."""
    def build(project):
        out = ok(script("train", "--cfg", "resnet18-SPD", "--data", cls_folders, "--epochs", 1, "--batch-size", 4,
                        "--workers", 0, "--device", "cpu", "--project", project, "--name", "cls"))
        (project / "output.txt").write_text(out)

    project = build_once(tmp_path_factory, "trained-classifier", build)
    return Run(project / "cls", (project / "output.txt").read_text())
