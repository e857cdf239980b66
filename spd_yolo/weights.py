# SPD-YOLO, AGPL-3.0 license
"""Weights-only checkpoints: the state dict plus the model YAML, loadable with ``torch.load(weights_only=True)``.

A regular ultralytics ``.pt`` is a pickle of the whole model object: loading one can run arbitrary code, so load only
files you trust (or use ``ULTRALYTICS_SAFE_LOAD=1``). A weights-only file holds nothing but tensors, numbers, strings,
lists and dicts; the network is rebuilt from the YAML by our own code. Training writes one beside best.pt
(``best.weights.pt``); `spd_yolo.YOLO` and the scripts load it like any checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from ultralytics.nn.tasks import guess_model_task

from spd_yolo.atomic import atomic_torch_save
from spd_yolo.models.configs import build_model

__all__ = ("FORMAT", "is_weights_only", "load_weights_only", "save_weights_only")

FORMAT = "spd-yolo-weights-only/1"
_PLAIN = (str, int, float, bool, type(None))


def _plain(x):
    """The JSON-like part of `x` (what weights_only unpickling accepts); other values become strings."""
    if isinstance(x, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x if isinstance(x, _PLAIN) else str(x)


def save_weights_only(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write `model` (an ultralytics model built from a YAML) as a weights-only checkpoint, atomically."""
    args = getattr(model, "args", None) or {}
    payload = {
        "format": FORMAT,
        "yaml": _plain(model.yaml),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},  # as stored in best.pt
        "names": _plain(dict(getattr(model, "names", {}))),
        "task": guess_model_task(model),
        "args": _plain(dict(args) if isinstance(args, dict) else vars(args)),
    }
    return atomic_torch_save(payload, path)


def _read(path: str | os.PathLike) -> dict | None:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not our weights-only file, whatever torch says
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == FORMAT else None


def is_weights_only(path: str | os.PathLike) -> bool:
    """Whether `path` is a weights-only checkpoint of ours."""
    return _payload(path) is not None


def _payload(path: str | os.PathLike) -> dict | None:
    p = Path(path)
    return _read(p) if p.is_file() and p.suffix == ".pt" else None


def load_weights_only(path: str | os.PathLike, missing_ok: bool = False) -> torch.nn.Module | None:
    """Rebuild the model from the file's YAML and load its tensors (``torch.load(weights_only=True)`` only).

    A file that is not a weights-only checkpoint of ours raises ValueError, or returns None with `missing_ok`.
    """
    payload = _payload(path)
    if payload is None:
        if missing_ok:
            return None
        raise ValueError(f"{path} is not an SPD-YOLO weights-only checkpoint ({FORMAT})")
    names = {int(k): v for k, v in payload["names"].items()}
    model = build_model(payload["yaml"], nc=len(names) or None)
    model.load_state_dict(payload["state_dict"])
    model.names, model.args, model.task, model.pt_path = names, payload["args"], payload["task"], str(path)
    return model.float().eval()
