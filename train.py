#!/usr/bin/env python3
# SPD-YOLO, AGPL-3.0 license
"""Train a detector (YOLOv5 flags, ultralytics trainer, SPD layers registered). See --help."""

import sys

from spd_yolo.cli.train import cli

if __name__ == "__main__":
    sys.exit(cli())
