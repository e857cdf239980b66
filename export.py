#!/usr/bin/env python3
# SPD-YOLO, AGPL-3.0 license
"""Export a checkpoint (ONNX, TorchScript, ...) with an ONNX parity check. See --help."""

import sys

from spd_yolo.cli.export import cli

if __name__ == "__main__":
    sys.exit(cli())
