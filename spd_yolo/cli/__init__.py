# SPD-YOLO, AGPL-3.0 license
"""Command-line front ends of the root scripts train.py, val.py, detect.py and export.py (YOLOv5 flags)."""
