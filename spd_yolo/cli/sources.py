# SPD-YOLO, AGPL-3.0 license
"""detect.py's --source checks and stream handling: every kind of source is checked before ultralytics sees it.

An image, folder, glob, video or .txt list must exist and hold something that decodes; a webcam must open; a stream
URL must answer within `STREAM_TIMEOUT` seconds (`check_stream`), and `stream_read_timeout` bounds how long a silent
stream may keep a run waiting. Each problem is one `CLIError` naming --source.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import socket
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import cv2
from ultralytics.data.loaders import LoadImagesAndVideos
from ultralytics.data.utils import VID_FORMATS
from ultralytics.utils.patches import imread

from spd_yolo.errors import CLIError

__all__ = (
    "FFMPEG_OPTIONS",
    "STREAM_READ_TIMEOUT_MAX",
    "STREAM_TIMEOUT",
    "check_camera",
    "check_source",
    "check_stream",
    "stream_read_timeout",
)

STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "tcp://")
STREAM_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtmp": 1935}  # default ports (tcp:// needs one)
STREAM_TIMEOUT = 5  # seconds a stream URL may take to accept a connection and answer
STREAM_READ_TIMEOUT_MAX = 30  # OpenCV's own limit (s) on a read from a silent stream, which no option raises
FFMPEG_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"  # OpenCV passes these "key;value|..." to FFmpeg at every open


def check_source(source: str) -> str:
    """An image, folder, glob, video, .txt list, webcam index or stream URL; local paths must exist and hold an image or
    video that can be read, a webcam must open, a stream URL must answer (`check_stream`)."""
    if source.isnumeric():
        return check_camera(source)
    if source.lower().startswith(STREAM_PREFIXES):
        return check_stream(source)
    p = Path(source)
    if any(c in source for c in "*?["):
        if not glob.glob(source, recursive=True):
            raise CLIError(f"--source {source}: the glob matches no file")
    elif not p.exists():
        raise CLIError(f"--source {source}: no such file or folder")
    if p.is_file() and p.suffix[1:].lower() in VID_FORMATS and not _video_readable(str(p)):
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
    if p.suffix.lower() != ".streams":
        _check_readable(source)
    return source


def _video_readable(path: str) -> bool:
    cap = cv2.VideoCapture(path)
    try:
        return bool(cap.isOpened() and cap.read()[0])
    finally:
        cap.release()


def _check_readable(source: str) -> None:
    """The files ultralytics' loader would read from `source` (its own file list) must include one image or video it
    can decode: else the run would make its folder, read nothing and say where it saved it. Stops at the first that
    reads (one decode for a normal source); unreadable ones before it are ultralytics' to warn about."""
    try:
        loader = LoadImagesAndVideos(source)
    except FileNotFoundError as e:
        raise CLIError(f"--source {source}: {str(e).split('. ')[0]}") from None
    loader.close()
    for path, video in zip(loader.files, loader.video_flag):
        if _video_readable(path) if video else imread(path) is not None:
            return
    what = "the file cannot be decoded as an image or video" if len(loader.files) == 1 else (
        f"none of its {len(loader.files)} image/video files can be decoded")
    raise CLIError(f"--source {source}: no readable image or video frame ({what})")


def check_camera(source: str) -> str:
    """A webcam index must open (ultralytics fails with OpenCV warnings and a ConnectionError traceback otherwise);
    OpenCV's own log lines are silenced while it tries."""
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        cap = cv2.VideoCapture(int(source))
        ok = cap.isOpened()
        cap.release()
    finally:
        log.setLogLevel(level)
    if not ok:
        raise CLIError(f"--source {source}: cannot open camera {source} (no such webcam on this machine, or it is in "
                       f"use)")
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
