# SPD-YOLO, AGPL-3.0 license
"""Model side of SPD-YOLO (installed as `spd_yolo.models`): parser registration, config names, summaries."""

from .configs import CONFIG_DIR, available_models, build_model, resolve_model_cfg

__all__ = ("CONFIG_DIR", "available_models", "build_model", "resolve_model_cfg")
