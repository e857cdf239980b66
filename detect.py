#!/usr/bin/env python3
# SPD-YOLO, AGPL-3.0 license
"""Run detection on images, folders, globs, videos, webcams or streams. See --help."""

import sys

from spd_yolo.cli.detect import cli

if __name__ == "__main__":
    sys.exit(cli())
