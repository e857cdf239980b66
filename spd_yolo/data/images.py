# SPD-YOLO, AGPL-3.0 license
"""Image facts read from file headers, the way ultralytics' datasets read them."""

from __future__ import annotations

import os

from PIL import Image
from ultralytics.data.utils import exif_size

__all__ = ("image_size",)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of the image at `path` as ultralytics decodes it: from the header (no pixels are decoded for a
    JPEG or PNG), with the sides swapped where EXIF rotates it by 90 degrees (ultralytics' `exif_size`, which gives
    its datasets their label shapes). PIL's errors for a file that is not an image pass through (OSError mostly)."""
    with Image.open(path) as im:
        return exif_size(im)
