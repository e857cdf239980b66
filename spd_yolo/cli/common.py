# SPD-YOLO, AGPL-3.0 license
"""What the four scripts share: YOLOv5-style flags, input checks that name the bad path, and clean exits.

Every check here runs before ultralytics sees the input (before any run folder, model build or download), so a missing
or broken file is reported as such (ultralytics would otherwise search its own folders, try to download a dataset or
weights of that name, or fail with a traceback after the first epoch). A run that still fails before its first result
removes the folders it made (`NewFolder`).
"""

from __future__ import annotations

import argparse
import ast
import glob
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import yaml
from ultralytics.cfg import check_cfg
from ultralytics.data.utils import DATASET_KEY_TYPES, IMG_FORMATS, img2label_paths
from ultralytics.nn.autobackend import check_class_names
from ultralytics.nn.backends.base import BaseBackend
from ultralytics.nn.tasks import guess_model_task
from ultralytics.utils import DATASETS_DIR
from ultralytics.utils.files import increment_path
from ultralytics.utils.torch_utils import select_device

from spd_yolo import coco
from spd_yolo.data.folders import check_classification_folders, find_split, is_image, resolve_root
from spd_yolo.data.images import image_size
from spd_yolo.errors import CheckpointError, ClassificationDataError, CLIError, SPDError
from spd_yolo.model import YOLO
from spd_yolo.models.configs import load_model_yaml
from spd_yolo.rewrite import rewrite_spd

__all__ = (
    "EXPORTED_WEIGHTS",
    "CLIError",
    "HelpFormatter",
    "NewFolder",
    "add_device",
    "add_imgsz",
    "add_run_dir",
    "cfg_task",
    "check_annotation_json",
    "check_categories",
    "check_classes",
    "check_cls_data",
    "check_data_yaml",
    "check_device",
    "check_settings",
    "check_weights",
    "cls_imgsz_from_data",
    "data_names",
    "fixed_input_size",
    "load_model",
    "note_fixed_size",
    "run_folder",
    "run_main",
    "script_name",
    "split_annotation_file",
    "split_image_files",
    "trained_imgsz",
)



class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the description's line breaks."""


def script_name(script: str) -> str:
    """The name the user typed: the console command (`spd-train`) when run as one, else the root script `script`."""
    invoked = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return invoked if invoked.startswith("spd-") else script


def add_imgsz(parser: argparse.ArgumentParser, default: int = 640, help_extra: str = "") -> None:
    parser.add_argument(
        "--imgsz", "--img", "--img-size", dest="imgsz", type=int, default=default, metavar="PIXELS",
        help=f"input size in pixels (a multiple of 32: every SPD layer halves the size){help_extra}",
    )


def add_device(parser: argparse.ArgumentParser, multi: bool = False) -> None:
    more = ", '0,1' for multi-GPU (DDP)" if multi else ""
    parser.add_argument("--device", default="", help=f"'cpu', a CUDA index such as '0'{more}; empty: GPU 0 if any")


def add_run_dir(parser: argparse.ArgumentParser, project: str, exist_ok: bool = True) -> None:
    parser.add_argument("--project", default=project, help="results go to PROJECT/NAME")
    parser.add_argument("--name", default="exp", help="run name (exp, exp2, ... unless --exist-ok)")
    if exist_ok:
        parser.add_argument("--exist-ok", action="store_true", help="reuse PROJECT/NAME instead of incrementing it")


def check_imgsz(imgsz: int | list[int]) -> None:
    for v in imgsz if isinstance(imgsz, list) else [imgsz]:
        if v < 32 or v % 32:
            raise CLIError(f"--imgsz {v}: must be a positive multiple of 32 (the stride of the models)")


# What val.py runs: a checkpoint or an export that runs on the CPU here (folders: OpenVINO and NCNN exports).
EXPORTED_WEIGHTS = (".pt", ".onnx", ".torchscript", ".tflite", ".mnn", "_openvino_model", "_ncnn_model")


def check_weights(path: str | None, suffixes: tuple[str, ...] = (".pt", ".onnx")) -> str:
    """The --weights file must exist locally and be one of `suffixes` (never downloaded); a suffix starting with '_'
    names an export folder (e.g. best_openvino_model)."""
    if not path:
        raise CLIError("--weights is required: a checkpoint such as runs/train/exp/weights/best.pt")
    p = Path(path)
    if any(s.startswith("_") and p.name.endswith(s) for s in suffixes):
        if not p.is_dir():
            raise CLIError(f"--weights {path}: folder not found")
        return str(p)
    if p.suffix.lower() not in suffixes:
        raise CLIError(f"--weights {path}: expected a {' or '.join(suffixes)} file")
    if not p.is_file():
        raise CLIError(f"--weights {path}: file not found")
    return str(p)


def load_model(weights: str, flag: str = "--weights"):
    """`spd_yolo.YOLO(weights)`; any file that cannot be loaded is a CLIError naming `flag` and the file: for a .pt,
    why (not a checkpoint, truncated, a class or module this environment lacks: `spd_yolo.checkpoint`)."""
    try:
        return YOLO(weights)
    except CheckpointError as e:
        raise CLIError(f"{flag} {e}") from None
    except SPDError:
        raise
    except (TypeError, ValueError, RuntimeError, OSError, EOFError, KeyError) as e:
        raise CLIError(f"{flag} {weights}: not a loadable model ({type(e).__name__}: {str(e).splitlines()[0]})") from e


# ultralytics setting -> the script flag that sets it (for ultralytics' own argument errors).
FLAGS = {
    "conf": "--conf-thres", "iou": "--iou-thres", "max_det": "--max-det", "imgsz": "--imgsz", "batch": "--batch-size",
    "epochs": "--epochs", "workers": "--workers", "patience": "--patience", "seed": "--seed", "device": "--device",
    "line_width": "--line-thickness", "vid_stride": "--vid-stride", "save_period": "--save-period",
    "label_smoothing": "--label-smoothing", "freeze": "--freeze", "optimizer": "--optimizer", "classes": "--classes",
}


def check_device(device: str | None) -> None:
    """--device must name a device this machine has (ultralytics' own check, run before anything is loaded)."""
    if not device:
        return
    try:
        select_device(device, verbose=False)
    except (ValueError, AssertionError, RuntimeError) as e:
        raise CLIError(f"--device {device}: {' '.join(str(e).split())}") from None


def check_settings(overrides: dict, hyp: str | None = None) -> None:
    """Check settings with ultralytics' own rules (types, fraction ranges) before anything runs; an error names the
    flag that set the bad value (or the --hyp file for its keys)."""
    try:
        check_cfg({k: v for k, v in overrides.items() if v is not None}, hard=True)
    except (TypeError, ValueError, SyntaxError) as e:
        found = re.match(r"'(\w+)=", str(e))
        key = found.group(1) if found else ""
        if key in FLAGS:
            where = f"{FLAGS[key]} {overrides.get(key)}"
        else:
            where = f"--hyp {hyp}: {key}" if hyp and key else "argument"
        raise CLIError(f"{where}: {' '.join(str(e).split())}") from None


def run_folder(project: str, name: str, exist_ok: bool) -> Path:
    """The folder ultralytics will make for a run in PROJECT/NAME (NAME, NAME-2, ... unless `exist_ok`)."""
    return increment_path(Path(project).resolve() / name, exist_ok=exist_ok)


class NewFolder:
    """What a run writing to `folder` creates: the topmost part of its path that does not exist yet (the run folder,
    and its project folder too if that is new). `remove()` deletes exactly that, so a run that fails before its first
    result leaves nothing behind, while folders that existed before (--exist-ok, a shared project) are never touched.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        self.top = None
        for p in (self.folder, *self.folder.parents):
            if p.exists():
                break
            self.top = p

    def remove(self) -> None:
        if self.top is not None and self.top.is_dir():
            shutil.rmtree(self.top, ignore_errors=True)


def add_strided_spd(parser: argparse.ArgumentParser, what: str) -> None:
    """--strided-spd, the same flag for export.py and detect.py (`what`: the verb its help starts with)."""
    parser.add_argument(
        "--strided-spd", action="store_true",
        help=f"{what} each SPD + convolution as the equal strided convolution (spd_yolo.rewrite: exact up to "
        "float rounding; faster in ONNX Runtime and for yolov5n-SPD in torch, see docs/benchmarks.md)",
    )


def strided_spd(model, flag: str = "--strided-spd") -> None:
    """Fuse `model` (a YOLO, .pt) and rewrite each SPD + convolution in it as the equal strided convolution, in place;
    says how many were rewritten."""
    model.model, done = rewrite_spd(model.model.fuse().eval())
    print(f"{flag}: {len(done)} SPD layer(s) rewritten as strided convolutions" if done else
          f"{flag}: the model has no SPD + convolution pair to rewrite; it runs as it is")


def data_names(path: str) -> dict:
    """Class names of a data YAML (from 'names', or 'nc' placeholders)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    names = data.get("names")
    if isinstance(names, list):
        return dict(enumerate(names))
    if isinstance(names, dict):
        return {int(k): v for k, v in names.items()}
    return {i: str(i) for i in range(int(data.get("nc") or 0))}


def _read_data_yaml(path: str | None, flag: str) -> tuple[Path, dict]:
    """The data YAML `path` read and checked as ultralytics' `check_det_dataset` checks it (key types, nc and names),
    without its download and font steps; each problem is a CLIError naming `flag` and the file."""
    if not path:
        raise CLIError(f"{flag} is required: a dataset YAML (path, train, val, names), e.g. "
                       f"datasets/spd-demo/data.yaml")
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{flag} {path}: file not found (datasets are never downloaded; give a local data YAML)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise CLIError(f"{flag} {path}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or data.get("names") is None and "nc" not in data:
        raise CLIError(f"{flag} {path}: expected a mapping with 'names' (and 'path', 'train', 'val')")
    for key, types in DATASET_KEY_TYPES.items():  # ultralytics' own table of key types
        if data.get(key) is not None and not isinstance(data[key], types):
            expected = " or ".join(t.__name__ for t in types)
            raise CLIError(f"{flag} {path}: '{key}' must be a {expected}, not {type(data[key]).__name__} "
                           f"({key}: {data[key]!r})")
    nc, names = data.get("nc"), data.get("names")
    if "nc" in data and not isinstance(nc, int):
        try:  # as ultralytics: integer-like values (10.0, '10') are accepted
            if float(nc) != int(float(nc)):
                raise ValueError
            nc = int(float(nc))
        except (TypeError, ValueError):
            raise CLIError(f"{flag} {path}: 'nc: {nc}' must be an integer (the number of classes)") from None
    if names is not None and nc is not None and len(names) != nc:
        raise CLIError(f"{flag} {path}: 'names' length {len(names)} and 'nc: {nc}' must match")
    try:
        check_class_names(names if names is not None else [f"class_{i}" for i in range(nc)])
    except (KeyError, ValueError, TypeError) as e:  # e.g. names {0: a, 5: b}: indices must be 0..n-1
        why = e.args[0] if isinstance(e, KeyError) and e.args else e  # a KeyError's str() is quoted
        raise CLIError(f"{flag} {path}: 'names': {why}") from None
    return p, data


def _data_root(p: Path, data: dict) -> Path:
    """The dataset root as ultralytics resolves it: 'path' (relative: from the working directory if it exists there,
    else from ultralytics' datasets folder), else the YAML's folder."""
    root = Path(data.get("path") or p.parent)
    if not root.is_absolute():
        root = root.resolve() if root.exists() else (DATASETS_DIR / root).resolve()
    return root


def _split_targets(root: Path, entry) -> list[Path]:
    """The folders / .txt lists a split entry names, as ultralytics resolves them (a '../' that misses is retried
    without it)."""
    targets = []
    for item in map(str, entry if isinstance(entry, list) else [entry]):
        target = Path(item) if Path(item).is_absolute() else (root / item).resolve()
        if not target.exists() and str(item).startswith("../"):
            target = (root / str(item)[3:]).resolve()
        targets.append(target)
    return targets


def _iter_image_files(targets: list[Path]) -> Iterator[str]:
    """The image files of a split, found as ultralytics' datasets find them (folders recursively, .txt lists with
    './' relative to the list), one at a time."""
    for t in targets:
        if t.is_dir():
            files = glob.iglob(str(t / "**" / "*.*"), recursive=True)
        elif t.is_file():
            parent = str(t.parent) + os.sep
            files = (x.replace("./", parent) if x.startswith("./") else x for x in t.read_text().strip().splitlines())
        else:
            continue
        yield from (x.replace("/", os.sep) for x in files if x.rpartition(".")[-1].lower() in IMG_FORMATS)


def _image_files(targets: list[Path]) -> list[str]:
    """`_iter_image_files`, sorted (the dataset's order)."""
    return sorted(_iter_image_files(targets))


def split_image_files(path: str, split: str) -> tuple[Path, list[str]]:
    """(the dataset root, the image files of `split`) of a data YAML that `check_data_yaml` accepted."""
    p, data = _read_data_yaml(path, "--data")
    root = _data_root(p, data)
    entry = data.get(split)
    return root, _image_files(_split_targets(root, entry)) if entry else []


def _check_labels(where: str, split: str, targets: list[Path]) -> None:
    """Some image of the split must have its YOLO label file (images/.../a.jpg -> labels/.../a.txt; ultralytics stops
    with "No labels found" in a cache file that does not exist otherwise). Empty label files are backgrounds. Stops at
    the first image that has one."""
    first = None
    for image in _iter_image_files(targets):
        label = img2label_paths([image])[0]
        if os.path.isfile(label):
            return
        first = first or (image, Path(label))
    if first is None:
        return
    image, label = first
    if not label.parent.is_dir():
        raise CLIError(f"{where}: no labels for the '{split}' images: the labels folder {label.parent} does not exist "
                       f"(YOLO labels: one .txt per image, images/.../a.jpg -> labels/.../a.txt)")
    raise CLIError(f"{where}: the labels folder {label.parent} has no label file for the '{split}' images (expected "
                   f"e.g. {label.name} for {Path(image).name})")


def check_data_yaml(path: str | None, splits: tuple[str, ...], labels: bool | tuple[str, ...] = True,
                    flag: str = "--data") -> str:
    """The data YAML must exist, pass ultralytics' checks of its keys (types, nc and names), and name existing image
    folders/lists for `splits` whose images have YOLO labels (for `labels`: all of `splits` if True, else those
    listed); nothing is downloaded. Errors name `flag`, the file and what is expected."""
    p, data = _read_data_yaml(path, flag)
    root = _data_root(p, data)
    labelled = splits if labels is True else labels or ()
    for split in splits:
        entry = data.get(split)
        if not entry:
            raise CLIError(f"{flag} {path}: no '{split}' entry (a folder of images, a .txt list or a list of these)")
        targets = _split_targets(root, entry)
        for target in targets:
            if not target.exists():
                raise CLIError(f"{flag} {path}: '{split}' path {target} does not exist")
            if target.is_dir() and not any(f.suffix[1:].lower() in IMG_FORMATS for f in target.rglob("*")):
                raise CLIError(f"{flag} {path}: '{split}' folder {target} holds no image "
                               f"({', '.join(sorted(IMG_FORMATS))})")
        if split in labelled:
            _check_labels(f"{flag} {path}", split, targets)
    return str(p)


def check_annotation_json(anno: str | Path, images: list[str], where: str) -> dict:
    """Read a COCO annotation file before any inference (`spd_yolo.coco.read_annotation_file`): not JSON, not a COCO
    dataset, or naming none of `images` is a CLIError "`where` <file>: why" (`where`: the flag or data YAML that led
    to the file)."""
    try:
        return coco.read_annotation_file(anno, images)
    except ValueError as e:
        raise CLIError(f"{where} {e}") from None


def split_annotation_file(data: str, split: str, anno_json: str | None = None) -> tuple[str, list[str], str] | None:
    """(the COCO annotation file the evaluation of `split` reads, the split's images, how to name it in an error):
    `anno_json` if given, else the one the dataset ships (annotations/instances_<image folder>.json), else None (the
    ground truth is then the YOLO labels, or the data YAML is broken, which `check_data_yaml` reports)."""
    try:
        root, images = split_image_files(data, split)
    except CLIError:
        return None
    if anno_json:
        return anno_json, images, "--anno-json"
    found = coco.find_annotation_file(root, Path(images[0]).parent.name) if images else None
    return (str(found), images, f"--data {data}: its '{split}' annotation file") if found else None


def check_categories(gt: dict, names: dict, where: str) -> None:
    """The categories of a COCO annotation file (`gt`, as `check_annotation_json` read it) must map onto the model's
    class `names` (`spd_yolo.coco.category_map`); otherwise a CLIError "`where`: why"."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a by-order mapping warns again when the metrics run
            coco.category_map(names, gt["categories"])
    except ValueError as e:
        raise CLIError(f"{where}: {e}") from None


def check_classes(classes: list[int] | None, names: dict, weights: str) -> None:
    """--classes must be class ids of the model (0 .. nc-1)."""
    bad = [c for c in classes or () if not 0 <= c < len(names)]
    if bad:
        some = ", ".join(f"{i} {n}" for i, n in list(names.items())[:5]) + (", ..." if len(names) > 5 else "")
        raise CLIError(f"--classes {' '.join(map(str, bad))}: the model {weights} has classes 0-{len(names) - 1} "
                       f"({some})")


def fixed_input_size(weights: str) -> list[int] | None:
    """[H, W] an exported model's input is fixed to (exported without --dynamic), None for a .pt or a dynamic export."""
    if str(weights).endswith(".pt"):
        return None
    meta = BaseBackend.read_metadata(weights)
    options = meta.get("args") or {}
    if isinstance(options, str):
        try:
            options = ast.literal_eval(options)
        except (ValueError, SyntaxError):
            options = {}
    imgsz = _height_width(meta.get("imgsz"))
    return None if imgsz is None or (isinstance(options, dict) and options.get("dynamic")) else imgsz


def _height_width(imgsz) -> list[int] | None:
    """An image size as ultralytics keeps it (an int or a list; in export metadata their text, e.g. '[32, 32]') ->
    [H, W]; None when absent or unreadable."""
    if isinstance(imgsz, str):
        try:
            imgsz = ast.literal_eval(imgsz)
        except (ValueError, SyntaxError):
            return None
    if not imgsz:
        return None
    hw = [int(v) for v in (imgsz if isinstance(imgsz, (list, tuple)) else [imgsz])]
    return hw * 2 if len(hw) == 1 else hw


def note_fixed_size(imgsz: int | None, weights: str) -> int | list[int] | None:
    """The input size an export is fixed to (None if it is not); if --imgsz asked for another one, one note says it is
    not used (ultralytics runs the export at its own size without a word)."""
    fixed = fixed_input_size(weights)
    if fixed is None:
        return None
    h, w = fixed
    if imgsz is not None and [imgsz, imgsz] != fixed:
        print(f"note: --imgsz {imgsz} is not used: {weights} was exported with a fixed {w}x{h} (W x H) input and runs "
              f"at that size (export with --dynamic to choose the size when it runs)", file=sys.stderr)
    return h if h == w else fixed


def cfg_task(cfg: str) -> str:
    """Task of a model YAML or name ('detect', 'classify', ...), read from its head; SPDConfigError if unreadable."""
    return guess_model_task(load_model_yaml(cfg)) or "detect"


def check_cls_data(path: str | None, splits: tuple[str, ...]) -> tuple[str, dict]:
    """A classification dataset: an image folder with train/ and val/ (or test/), one sub-folder per class.

    Returns (the dataset folder, {split: SplitFolder} for `splits`). Every problem (missing folder, no class folder,
    no image, an empty class folder, classes that differ between train and val) is a CLIError naming the folder.
    Nothing is downloaded.
    """
    if not path:
        raise CLIError("--data is required: for classification an image folder with train/<class>/ and val/<class>/")
    try:
        found = check_classification_folders(path, splits)
    except ClassificationDataError as e:
        raise CLIError(f"--data {path}: {e}") from None
    return str(resolve_root(path)), found


def cls_imgsz_from_data(root: str) -> int:
    """The size of the first training image (its longer side) rounded up to a multiple of 32: 32 for CIFAR-10, 64
    for Tiny ImageNet."""
    train = find_split(root, "train")
    for folder, _, files in sorted(os.walk(train)):
        for name in sorted(files):
            if is_image(name):
                try:
                    return max(32, -(-max(image_size(Path(folder) / name)) // 32) * 32)
                except OSError:
                    continue
    return 32


def trained_imgsz(model, weights: str) -> int | list[int] | None:
    """The input size a checkpoint was trained at (its train args) or an export was made for (its metadata)."""
    imgsz = (getattr(model, "overrides", None) or {}).get("imgsz")
    if imgsz is None and not str(weights).endswith(".pt"):
        imgsz = BaseBackend.read_metadata(weights).get("imgsz")
    hw = _height_width(imgsz)
    return None if hw is None else hw[0] if hw[0] == hw[1] else hw


def parse_freeze(values: list[int] | None):
    """YOLOv5's --freeze: one number N freezes layers 0..N-1; several numbers freeze those layer indices."""
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a script's main: user errors (any `SPDError`, a missing file) print one clear line and exit 1; Ctrl-C
    exits 130. SIGINT is left as the process got it: ignored in a background job, as its shell chose."""
    try:
        return main(argv)
    except (SPDError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
