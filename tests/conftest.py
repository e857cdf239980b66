# SPD-YOLO, AGPL-3.0 license
"""Test isolation: ultralytics settings in a temp dir, never online, never auto-installing; `network_guard` for tests
that must prove no network access is even attempted."""

import ipaddress
import os
import socket
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


def pytest_collection_modifyitems(config, items):
    """Tests marked `deploy` (every export format in its own runtime, `make test-deploy`) run only when -m names
    them; `make test` and `make test-fast` skip them."""
    if "deploy" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="deploy tier: run by `make test-deploy` (converters in .venv-deploy)")
    for item in items:
        if "deploy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    """A seeded torch generator, so every test's random inputs are reproducible."""
    return torch.Generator().manual_seed(0)


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
