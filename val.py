#!/usr/bin/env python3
# SPD-YOLO, AGPL-3.0 license
"""Validate a detector: ultralytics metrics and pycocotools COCO metrics (AP_S first). See --help."""

import sys

from spd_yolo.cli.val import cli

if __name__ == "__main__":
    sys.exit(cli())
