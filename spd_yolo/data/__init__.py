# SPD-YOLO, AGPL-3.0 license
"""Datasets for SPD-YOLO: a deterministic synthetic small-object detection demo set, generated on demand.

Names are loaded lazily, so ``python -m spd_yolo.data.synth`` runs without importing its module twice.
"""

from spd_yolo.lazy import lazy_names

__all__ = ("CLASS_NAMES", "generate_demo_dataset")

__getattr__, __dir__ = lazy_names(__name__, dict.fromkeys(__all__, "spd_yolo.data.synth"), eager=__all__)
