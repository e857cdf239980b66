# SPD-YOLO, AGPL-3.0 license
"""``python -m spd_yolo.upgrade STOCK.pt OUT.pt [--to NAME] [--overwrite]``: see `spd_yolo.upgrade`."""

import sys

from spd_yolo.upgrade import main

sys.exit(main())
