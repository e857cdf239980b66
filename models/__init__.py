# SPD-YOLO, AGPL-3.0 license
"""Model side of SPD-YOLO (installed as `spd_yolo.models`): parser registration, config names, summaries.

The config names load `spd_yolo.models.configs` on first use, so importing `spd_yolo.models.registry` (as every import
of `spd_yolo` does) loads the registry alone.
"""

from spd_yolo.lazy import lazy_names

__all__ = ("CONFIG_DIR", "available_models", "build_model", "resolve_model_cfg")

__getattr__, __dir__ = lazy_names(__name__, dict.fromkeys(__all__, "spd_yolo.models.configs"), eager=__all__)
