# SPD-YOLO, AGPL-3.0 license
"""Why a ``.pt`` file cannot be loaded, said in one line instead of a pickle traceback.

ultralytics unpickles a checkpoint first and explains afterwards: a text file renamed ``.pt`` fails with ``invalid
literal for int() with base 10``, and a module the checkpoint names but this environment lacks triggers a pip install
attempt. `check_checkpoint` looks first, without running anything: the container (``torch.save``'s zip archive or its
legacy pickle), whether the archive is whole, and every module and class its pickle names (read, without running
anything, by torch's `torch.serialization.get_unsafe_globals_in_checkpoint`), each of which must be importable here.
`checkpoint_errors` turns what is left (damage inside an intact archive) into the same `CheckpointError`.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import importlib
import pickle
import re
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import torch

from spd_yolo.errors import CheckpointError

__all__ = ("check_checkpoint", "checkpoint_errors")

# Modules resolved by ultralytics' own legacy aliases while it loads (renamed ultralytics modules, Windows paths):
# ultralytics reports those itself.
_ALIASED = ("ultralytics", "pathlib")
_OURS = {"spd_yolo", "spd_modules"}  # importable names of the spd-yolo distribution


def _missing(module: str, qualname: str) -> str | None:
    """What of `module`.`qualname` this environment lacks ('module X' or 'class X.Y'), or None if it resolves."""
    if (module, qualname) in _compat_pickle.NAME_MAPPING:  # Python 2 names, mapped as pickle's find_class does
        module, qualname = _compat_pickle.NAME_MAPPING[(module, qualname)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as e:
        return f"module '{e.name or module}'"
    for part in qualname.split("."):
        if not hasattr(obj, part):
            return f"class '{module}.{qualname}'"
        obj = getattr(obj, part)
    return None


def _remedy(module: str) -> str:
    """Which distribution to install or upgrade for `module`."""
    top = module.split(".")[0]
    if top in _OURS:
        try:
            here = f" (installed here: spd-yolo {metadata.version('spd-yolo')})"
        except metadata.PackageNotFoundError:
            here = ""
        return (f"it was written by another version of spd-yolo{here}: install the version that wrote it, or upgrade "
                f"with 'pip install -U spd-yolo'")
    dists = metadata.packages_distributions().get(top)
    if dists:
        return f"install or upgrade the package that provides it ({', '.join(sorted(set(dists)))})"
    return f"install the package that provides the module '{top}'"


def check_checkpoint(path: str | Path) -> None:
    """Raise `CheckpointError` if the ``.pt`` file at `path` cannot be a loadable checkpoint here. Nothing is run."""
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p}: the file is empty (0 bytes), not a PyTorch checkpoint")
    with p.open("rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80":
        return  # torch.save's legacy (pre-zip) format: a pickle stream, left to torch
    if head != b"PK\x03\x04":
        raise CheckpointError(
            f"{p}: not a PyTorch checkpoint (a file written by torch.save, such as ultralytics' best.pt); "
            f"it starts with {head!r}"
        )
    if not zipfile.is_zipfile(p):
        raise CheckpointError(f"{p}: truncated or damaged checkpoint: its zip archive ends early ({size:,} bytes); "
                              f"copy or download the file again")
    with zipfile.ZipFile(p) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointError(f"{p}: a zip archive but not a PyTorch checkpoint (no data.pkl inside)")
        try:
            z.read(pkl[0])  # checks the record's CRC too
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointError(f"{p}: truncated or damaged checkpoint ({e})") from None
    try:  # the classes and functions its pickle names, but those torch's safe loading already allows (all importable)
        names = torch.serialization.get_unsafe_globals_in_checkpoint(p)
    except EOFError:
        raise CheckpointError(f"{p}: damaged checkpoint, its pickle ends early") from None
    except ValueError as e:  # e.g. a TorchScript archive (torch.jit.save)
        raise CheckpointError(f"{p}: not a checkpoint that torch.load reads ({e})") from None
    except RuntimeError as e:  # torch's archive reader refuses what zipfile accepted
        raise CheckpointError(f"{p}: damaged checkpoint, torch cannot read its archive ({e})") from None
    except pickle.UnpicklingError:  # an opcode torch's reader does not follow (pickle protocol > 2, or damage):
        return  # left to torch.load, whose failure `checkpoint_errors` reports
    for module, qualname in sorted(name.rsplit(".", 1) for name in names):  # a GLOBAL's name holds no dot (protocol 2)
        if module.split(".")[0] in _ALIASED:
            continue
        what = _missing(module, qualname)
        if what is not None:
            raise CheckpointError(f"{p}: the checkpoint needs {what}, which this environment does not have; "
                                  f"{_remedy(module)}")


@contextlib.contextmanager
def checkpoint_errors(path: str | Path) -> Iterator[None]:
    """Check a ``.pt`` file first (`check_checkpoint`), then turn load failures of a damaged file into
    `CheckpointError`. Other files (exports, YAMLs) pass through untouched."""
    p = Path(path)
    if p.suffix.lower() != ".pt" or not p.is_file():
        yield
        return
    check_checkpoint(p)
    try:
        yield
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{p}: damaged checkpoint, it cannot be unpickled ({type(e).__name__}: {e})") from e
    except ModuleNotFoundError as e:  # named by a pickle that `check_checkpoint` could not read (protocol > 2)
        if not e.name:
            raise
        raise CheckpointError(f"{p}: the checkpoint needs module '{e.name}', which this environment does not have; "
                              f"{_remedy(e.name)}") from e
    except RuntimeError as e:
        if "PytorchStreamReader" not in str(e):
            raise
        raise CheckpointError(f"{p}: damaged checkpoint, torch cannot read its archive ({e})") from e
    except TypeError as e:  # ultralytics' own diagnoses ("ERROR ❌️ <file> is not a loadable checkpoint ...")
        if not str(e).startswith("ERROR"):
            raise
        raise CheckpointError(re.sub(r"^ERROR\W*", "", str(e)).splitlines()[0]) from e
