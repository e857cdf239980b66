# SPD-YOLO, AGPL-3.0 license
"""Datasets for SPD-YOLO: a deterministic synthetic small-object detection demo set, generated on demand.

Names are loaded lazily, so ``python -m spd_yolo.data.synth`` runs without importing its module twice.
"""

from __future__ import annotations

__all__ = ("CLASS_NAMES", "generate_demo_dataset")


def __getattr__(name: str):
    """Load ``generate_demo_dataset`` and ``CLASS_NAMES`` from :mod:`spd_yolo.data.synth` on first use."""
    if name in __all__:
        from spd_yolo.data import synth

        return getattr(synth, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
