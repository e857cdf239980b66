# SPD-YOLO, AGPL-3.0 license
"""Atomic file writes: a reader (or a process killed mid-write) sees the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import torch

__all__ = ("atomic_write", "atomic_torch_save", "AtomicPath", "atomic_torch_saves")

_UMASK = os.umask(0)  # read once at import (single-threaded): new files get the usual 0o666 & ~umask mode
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to a temp file beside `path`, flush and fsync it, then rename it over `path` (os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK)  # mkstemp made it 0o600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """`torch.save(obj, path)`, atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, buffer.getvalue())


class AtomicPath(type(Path())):
    """A Path whose `write_bytes`/`write_text` are atomic (the trainer writes last.pt/best.pt through them)."""

    def write_bytes(self, data: bytes) -> int:
        atomic_write(self, data)
        return len(data)

    def write_text(self, data: str, encoding=None, errors=None, newline=None) -> int:
        atomic_write(self, data.encode(encoding or "utf-8", errors or "strict"))
        return len(data)


@contextlib.contextmanager
def atomic_torch_saves():
    """Within this block, `torch.save(obj, path)` to a path is atomic (ultralytics' strip_optimizer saves that way)."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            buffer = io.BytesIO()
            original(obj, buffer, *args, **kwargs)
            atomic_write(f, buffer.getvalue())
        else:
            original(obj, f, *args, **kwargs)

    torch.save = save
    try:
        yield
    finally:
        torch.save = original
