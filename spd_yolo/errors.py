# SPD-YOLO, AGPL-3.0 license
"""Error types of SPD-YOLO: each user mistake we detect raises one of these, with a message saying what to fix."""

__all__ = ("SPDConfigError",)


class SPDConfigError(ValueError):
    """A model YAML or model name that cannot be built: the message names the file, the layer and the module."""
