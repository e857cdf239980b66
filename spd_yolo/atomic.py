# SPD-YOLO, AGPL-3.0 license
"""Atomic writes: a reader (or a process killed mid-write) sees the old file or folder or the new one, never a torn
one."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ("AtomicPath", "atomic_torch_save", "atomic_write", "staged_folder")

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
def staged_folder(dst: str | os.PathLike) -> Iterator[Path]:
    """Build the folder `dst` all at once: yields a new empty folder beside it (``.<name>.*.tmp``) to fill; when the
    block ends without error that folder takes dst's place (renamed; an existing dst is moved aside first and deleted
    only once the new one is in place), on any error (Ctrl-C too) it is deleted and dst is left as it was.

    Whether an existing dst may be replaced is the caller's to check before."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp made it 0o700; the folder gets the mode a plain mkdir would give
        yield tmp
        if not dst.exists():
            os.replace(tmp, dst)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        os.replace(dst, old / dst.name)
        try:
            os.replace(tmp, dst)
        except BaseException:
            os.replace(old / dst.name, dst)  # put the old one back
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
