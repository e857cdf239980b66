# SPD-YOLO, AGPL-3.0 license
"""What the four scripts share: YOLOv5-style flags, input checks that name the bad path, and clean exits.

Every check here runs before ultralytics sees the input, so a missing file is reported as such (ultralytics would
otherwise search its own folders or try to download a dataset or weights of that name).
"""

from __future__ import annotations

import argparse
import ast
import atexit
import glob
import os
import re
import shutil
import socket
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import cv2
import yaml
from PIL import Image
from ultralytics.cfg import check_cfg
from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS
from ultralytics.nn.backends.base import BaseBackend
from ultralytics.nn.tasks import guess_model_task
from ultralytics.utils import DATASETS_DIR
from ultralytics.utils.torch_utils import select_device

from spd_yolo.data.folders import check_classification_folders, find_split, is_image, resolve_root
from spd_yolo.errors import CheckpointError, ClassificationDataError, CLIError, SPDError
from spd_yolo.model import YOLO
from spd_yolo.models.configs import load_model_yaml
from spd_yolo.rewrite import rewrite_spd

__all__ = (
    "CLIError",
    "load_model",
    "data_names",
    "HelpFormatter",
    "script_name",
    "add_imgsz",
    "add_device",
    "add_run_dir",
    "check_weights",
    "check_data_yaml",
    "check_source",
    "stream_read_timeout",
    "run_main",
    "cfg_task",
    "check_cls_data",
    "cls_imgsz_from_data",
    "trained_imgsz",
    "check_device",
    "check_settings",
    "remove_if_empty",
)

VIDEO_SUFFIXES = {".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg", ".ts", ".wmv", ".webm"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "tcp://")
STREAM_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtmp": 1935}  # default ports (tcp:// needs one)
STREAM_TIMEOUT = 5  # seconds a stream URL may take to accept a connection and answer
STREAM_READ_TIMEOUT_MAX = 30  # OpenCV's own limit (s) on a read from a silent stream, which no option raises
FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"  # OpenCV passes these "key;value|..." to FFmpeg at every open


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


def check_weights(path: str | None, suffixes: tuple[str, ...] = (".pt", ".onnx")) -> str:
    """The --weights file must exist locally and be one of `suffixes` (never downloaded)."""
    if not path:
        raise CLIError("--weights is required: a checkpoint such as runs/train/exp/weights/best.pt")
    p = Path(path)
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


def remove_if_empty(folder: str | Path | None) -> None:
    """Delete `folder` if it holds no file at all (a run folder a failed run created), else leave it."""
    if folder and Path(folder).is_dir() and not any(p.is_file() for p in Path(folder).rglob("*")):
        shutil.rmtree(folder)


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


def check_data_yaml(path: str | None, splits: tuple[str, ...]) -> str:
    """The data YAML must exist and name existing image folders/lists for `splits`; nothing is downloaded."""
    if not path:
        raise CLIError("--data is required: a dataset YAML (path, train, val, names), e.g. datasets/spd-demo/data.yaml")
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"--data {path}: file not found (datasets are never downloaded; give a local data YAML)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise CLIError(f"--data {path}: not valid YAML ({e})") from None
    if not isinstance(data, dict) or "names" not in data and "nc" not in data:
        raise CLIError(f"--data {path}: expected a mapping with 'names' (and 'path', 'train', 'val')")

    root = Path(data.get("path") or p.parent)  # relative: from the working directory, else ultralytics' datasets dir
    if not root.is_absolute():
        root = root.resolve() if root.exists() else (DATASETS_DIR / root).resolve()
    for split in splits:
        entry = data.get(split)
        if not entry:
            raise CLIError(f"--data {path}: no '{split}' entry (a folder of images, a .txt list or a list of these)")
        for item in entry if isinstance(entry, list) else [entry]:
            target = Path(item) if Path(item).is_absolute() else root / item
            if not target.exists():
                raise CLIError(f"--data {path}: '{split}' path {target} does not exist")
            if target.is_dir() and not any(f.suffix[1:].lower() in IMG_FORMATS for f in target.rglob("*")):
                raise CLIError(f"--data {path}: '{split}' folder {target} holds no image ({', '.join(sorted(IMG_FORMATS))})")
    return str(p)


def check_source(source: str) -> str:
    """An image, folder, glob, video, .txt list, webcam index or stream URL; local paths must exist and open, a stream
    URL must answer (`check_stream`)."""
    if source.isnumeric():
        return source  # webcam index: opened by ultralytics
    if source.lower().startswith(STREAM_PREFIXES):
        return check_stream(source)
    p = Path(source)
    if any(c in source for c in "*?["):
        if not glob.glob(source, recursive=True):
            raise CLIError(f"--source {source}: the glob matches no file")
        return source
    if not p.exists():
        raise CLIError(f"--source {source}: no such file or folder")
    if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
        cap = cv2.VideoCapture(str(p))
        ok = cap.isOpened() and cap.read()[0]
        cap.release()
        if not ok:
            raise CLIError(f"--source {source}: the video cannot be opened or has no frame")
    if p.is_file() and p.suffix.lower() == ".txt":
        missing = [line for line in p.read_text().split() if line and not Path(line).exists()]
        if missing:
            raise CLIError(f"--source {source}: listed file {missing[0]} does not exist ({len(missing)} missing)")
    if p.is_dir() and not any(f.is_file() for f in p.iterdir()):
        subfolders = [f.name for f in p.iterdir() if f.is_dir()]
        if subfolders:  # e.g. a classification split: one folder per class
            raise CLIError(
                f"--source {source}: no file directly in the folder, only {len(subfolders)} sub-folder(s) "
                f"({', '.join(sorted(subfolders)[:3])}{', ...' if len(subfolders) > 3 else ''}); give one of them or "
                f"a recursive glob such as '{p / '**' / '*.*'}'"
            )
        raise CLIError(f"--source {source}: the folder is empty")
    return source


@contextmanager
def stream_read_timeout(seconds: float | None):
    """While inside, a stream that sends nothing for `seconds` ends the read (FFmpeg's socket I/O ``timeout`` option,
    set through OPENCV_FFMPEG_CAPTURE_OPTIONS with any other options the environment set there kept; restored after).
    None leaves OpenCV's own limit of STREAM_READ_TIMEOUT_MAX seconds. Seconds must be in (0, that limit]."""
    if seconds is None:
        yield
        return
    if not 0 < seconds <= STREAM_READ_TIMEOUT_MAX:
        raise CLIError(f"--stream-timeout {seconds:g}: must be > 0 and at most {STREAM_READ_TIMEOUT_MAX} (seconds; "
                       "OpenCV ends a silent stream's read after that anyway)")
    before = os.environ.get(FFMPEG_OPTIONS)
    kept = [o for o in (before or "").split("|") if o and o.split(";", 1)[0] != "timeout"]
    os.environ[FFMPEG_OPTIONS] = "|".join([*kept, f"timeout;{round(seconds * 1e6)}"])  # microseconds
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FFMPEG_OPTIONS, None)
        else:
            os.environ[FFMPEG_OPTIONS] = before


def check_stream(url: str) -> str:
    """A stream URL must answer within STREAM_TIMEOUT seconds, else a CLIError naming --source (ultralytics fails with
    a traceback, after up to 33 s for a server that accepts and stays silent): its host accepts a connection and, for
    http(s), answers a GET (headers only) with neither an HTTP error nor an HTML page.

    Returns the source for ultralytics: the URL, or for an http(s) URL whose path ends in a video suffix (cam.mp4,
    clip.avi) a .streams file listing it, so that ultralytics streams it (LoadStreams) instead of downloading it into
    the working directory (a download that, for a live stream, never ends)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or STREAM_PORTS.get(scheme)
    except ValueError:  # not a number
        port = None
    if not parts.hostname or not port:
        raise CLIError(f"--source {url}: expected {scheme}://HOST:PORT/... (a host and a port)")
    try:
        if scheme in ("http", "https"):
            import requests  # scoped as slow import, as in ultralytics

            with warnings.catch_warnings():  # https: only whether it answers is checked (FFmpeg does not verify)
                warnings.simplefilter("ignore")
                with requests.get(url, stream=True, timeout=STREAM_TIMEOUT, verify=False) as r:
                    status, reason, kind = r.status_code, r.reason, r.headers.get("Content-Type", "")
            if status >= 400 and not (status == 401 and parts.username):  # 401 with credentials: digest, for FFmpeg
                raise CLIError(f"--source {url}: the server answered {status} {reason}")
            if kind.startswith("text/html"):
                raise CLIError(f"--source {url}: the server answered with a web page ({kind}), not a video stream")
        else:
            socket.create_connection((parts.hostname, port), timeout=STREAM_TIMEOUT).close()
    except OSError as e:  # refused, unknown host, timeout (requests' errors are OSErrors too)
        found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(e))  # e.g. Connection refused, Name or service not known
        why = (f"no answer within {STREAM_TIMEOUT} s" if isinstance(e, TimeoutError) or "Timeout" in type(e).__name__
               else found.group(1) if found else type(e).__name__)
        raise CLIError(f"--source {url}: cannot connect ({why})") from None
    if scheme in ("http", "https") and parts.path.rpartition(".")[-1].lower() in VID_FORMATS:
        folder = tempfile.mkdtemp(prefix="spd-yolo-stream-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        listing = Path(folder) / "source.streams"
        listing.write_text(url + "\n")
        return str(listing)
    return url


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
                    with Image.open(Path(folder) / name) as im:
                        return max(32, -(-max(im.size) // 32) * 32)
                except OSError:
                    continue
    return 32


def trained_imgsz(model, weights: str) -> int | list[int] | None:
    """The input size a checkpoint was trained at (its train args) or an export was made for (its metadata)."""
    imgsz = (getattr(model, "overrides", None) or {}).get("imgsz")
    if imgsz is None and not str(weights).endswith(".pt"):
        imgsz = BaseBackend.read_metadata(weights).get("imgsz")
    if isinstance(imgsz, str):  # exports store it as text, e.g. '[32, 32]'
        try:
            imgsz = ast.literal_eval(imgsz)
        except (ValueError, SyntaxError):
            return None
    if isinstance(imgsz, (list, tuple)):
        return [int(v) for v in imgsz] if len(set(imgsz)) > 1 else int(imgsz[0])
    return int(imgsz) if imgsz else None


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
