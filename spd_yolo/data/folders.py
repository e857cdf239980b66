# SPD-YOLO, AGPL-3.0 license
"""Classification datasets as image folders: the layout check that runs before ultralytics sees a dataset.

Layout (as torchvision's ImageFolder and ultralytics expect, and as `spd_yolo.data.convert` writes CIFAR-10 and
Tiny ImageNet)::

    root/train/<class>/*.png|jpg|...     one sub-folder per class
    root/val/<class>/...                 (or validation/, valid/ as ultralytics accepts), and/or
    root/test/<class>/...

`check_classification_folders` raises `ClassificationDataError` naming the folder for: a missing root or split
folder, a split without class sub-folders, a split or class folder without images, and class folders that differ
between train and the evaluated split. ultralytics itself would try to download a dataset whose folder is missing;
this check never downloads anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ultralytics.data.utils import IMG_FORMATS

from spd_yolo.errors import ClassificationDataError

__all__ = (
    "ClassificationDataError",
    "SplitFolder",
    "check_classification_folders",
    "find_split",
    "is_image",
    "resolve_root",
)

VAL_NAMES = ("val", "validation", "valid")  # ultralytics' names for the validation split, in its order


def is_image(name: str) -> bool:
    """Whether a file name has one of ultralytics' image suffixes."""
    return name.rpartition(".")[-1].lower() in IMG_FORMATS


@dataclass
class SplitFolder:
    """One split of an image-folder dataset: its folder and the number of images per class folder."""

    folder: Path
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return sorted(self.counts)

    @property
    def images(self) -> int:
        return sum(self.counts.values())


def find_split(root: str | Path, split: str) -> Path | None:
    """The folder of `split` under root ('val' also finds validation/ and valid/), or None."""
    names = VAL_NAMES if split == "val" else (split,)
    for name in names:
        if (Path(root) / name).is_dir():
            return Path(root) / name
    return None


def resolve_root(root: str | Path) -> Path:
    """The dataset folder as ultralytics finds it: the path itself, else the same relative path under its
    DATASETS_DIR setting (where ultralytics keeps datasets)."""
    from ultralytics.utils import DATASETS_DIR

    root = Path(root)
    if not root.exists() and not root.is_absolute() and (DATASETS_DIR / root).is_dir():
        return DATASETS_DIR / root
    return root


def _count_images(folder: Path) -> int:
    """Images anywhere below `folder` (ImageFolder also reads nested folders)."""
    return sum(is_image(f) for _, _, files in os.walk(folder, followlinks=True) for f in files)


def _scan_split(folder: Path) -> SplitFolder:
    """Count the images of each class sub-folder; raise for no class folder, no image, or an empty class folder."""
    from ultralytics.data.utils import IMG_FORMATS

    formats = ", ".join(sorted(IMG_FORMATS))
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not class_dirs:
        loose = sum(is_image(p.name) for p in folder.iterdir() if p.is_file())
        found = f"; it has {loose} image(s) directly inside, move them into their class folders" if loose else ""
        raise ClassificationDataError(
            f"{folder}: no class sub-folder (expected one sub-folder of images per class, e.g. {folder}/<class>/"
            f"img.png){found}"
        )
    split = SplitFolder(folder, {p.name: _count_images(p) for p in class_dirs})
    if not split.images:
        raise ClassificationDataError(
            f"{folder}: no image in its {len(class_dirs)} class folder(s) (image suffixes: {formats})"
        )
    empty = [name for name, n in split.counts.items() if n == 0]
    if empty:
        more = f" (and {len(empty) - 1} more empty class folder(s): {', '.join(empty[1:6])})" if len(empty) > 1 else ""
        raise ClassificationDataError(
            f"{folder / empty[0]}: empty class folder, it holds no image{more}. Every class needs images in every "
            f"split: add images or remove the folder from all splits"
        )
    return split


def check_classification_folders(
    root: str | Path | None, splits: tuple[str, ...] = ("train", "val")
) -> dict[str, SplitFolder]:
    """Check an image-folder classification dataset; return {split: SplitFolder} for the splits found.

    Args:
        root: The dataset folder.
        splits: Splits that must exist. 'val' is satisfied by val/ (validation/, valid/) or, when training (with
            'train' in splits), by test/ as ultralytics then validates on test/. 'test' needs test/.

    Raises:
        ClassificationDataError: naming the missing or malformed folder, or the two splits whose classes differ.
    """
    if root is None or str(root) == "":
        raise ClassificationDataError(
            "no dataset folder given: a classification dataset is a folder with train/ and val/ (or test/), one "
            "sub-folder of images per class"
        )
    root = resolve_root(root)
    if root.is_file():
        raise ClassificationDataError(
            f"{root}: expected a classification dataset folder (train/, val/ or test/ with one sub-folder of images "
            f"per class), got a file"
        )
    if not root.is_dir():
        raise ClassificationDataError(
            f"{root}: dataset folder not found (classification datasets are local image folders train/<class>/, "
            f"val/<class>/ or test/<class>/; nothing is downloaded)"
        )
    found: dict[str, SplitFolder] = {}
    for split in splits:
        folder = find_split(root, split)
        if folder is None and split == "val" and "train" in splits:
            folder = find_split(root, "test")  # ultralytics trains with val/ or else test/
        if folder is None:
            want = f"{split}/" if split != "val" else "val/ (or validation/, valid/)" + (
                " or test/" if "train" in splits else ""
            )
            raise ClassificationDataError(
                f"{root}: no {want} folder (expected {root}/{split}/<class>/<images>, one sub-folder per class)"
            )
        found[split] = _scan_split(folder)
    if "train" in found:
        train = found["train"]
        for split, other in found.items():
            if split != "train" and set(other.counts) != set(train.counts):
                only_train = sorted(set(train.counts) - set(other.counts))
                only_other = sorted(set(other.counts) - set(train.counts))
                detail = "; ".join(
                    f"only in {name}: {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}"
                    for name, items in ((train.folder.name, only_train), (other.folder.name, only_other))
                    if items
                )
                raise ClassificationDataError(
                    f"{train.folder} has {len(train.counts)} class folders but {other.folder} has "
                    f"{len(other.counts)}" + (" with other names" if len(train.counts) == len(other.counts) else "")
                    + f" ({detail}): every split needs the same class folders"
                )
    return found
