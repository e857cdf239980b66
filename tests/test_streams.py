# SPD-YOLO, AGPL-3.0 license
"""detect.py on streams: an MJPEG stream served on 127.0.0.1 (http.server in a thread) read to its end, cut half way,
unreachable or silent, and with a video suffix in its URL (streamed, never downloaded).

What ultralytics' LoadStreams does with a stream (ultralytics/data/loaders.py), which the counts below follow:
- a thread reads the frames with cv2.VideoCapture (FFmpeg); without --stream-buffer each step takes the latest frame
  and drops the others (real time), so the frames seen depend on the speed of inference: between 1 and all of them;
- with --stream-buffer up to 30 frames are queued and the reader waits for room: none is dropped;
- when the stream ends (or is cut), the failed read adds one black frame ("Video stream unresponsive") and the reader
  reopens the URL; when that fails (here: 404, the broadcast is over) the run ends. So a run sees the frames sent
  plus one black frame, and its video ends with it;
- a stream that stalls is read again after OpenCV's read timeout (30 s; detect.py --stream-timeout shortens it),
  then as above;
- the video of a stream is written as PROJECT/NAME/<name of the URL>.avi (MJPG) at 30 FPS, whatever the stream's.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import ok, script
from spd_yolo.cli import sources
from spd_yolo.cli.detect import cli as detect_cli
from spd_yolo.errors import CLIError

N_FRAMES, FPS, W, H = 30, 15, 128, 96  # the served video: 2 s
BOUNDARY = "spdframe"


def make_frames(n: int = N_FRAMES) -> list[bytes]:
    """`n` JPEG frames of W x H: a grey background and an orange square moving left to right."""
    frames = []
    for i in range(n):
        im = np.full((H, W, 3), 60, np.uint8)
        x = 4 + i * (W - 32) // max(n - 1, 1)
        cv2.rectangle(im, (x, 36), (x + 24, 60), (0, 160, 255), -1)
        frames.append(cv2.imencode(".jpg", im)[1].tobytes())
    return frames


class MJPEGServer:
    """Serves `frames` (JPEG bytes) as an MJPEG stream (multipart/x-mixed-replace) at `fps` frames a second to every
    GET on 127.0.0.1:port, as one live broadcast: once a client has been sent the whole video, or, with `cut`, `cut`
    frames and half of the next before the connection is closed, the broadcast is over and later GETs get 404 (so
    ultralytics' reconnect ends the run); with `stall` too, the connection stays open and silent after the `cut`
    frames for `stall` seconds instead. Clients that hang up early (probes reading only the headers) do not end it.
    `pages` maps paths to (status, content type, body) served instead. Every wait is bounded; `stop` ends it all."""

    def __init__(self, frames: list[bytes], fps: float = FPS, cut: int | None = None, stall: float | None = None,
                 pages: dict | None = None):
        self.frames, self.fps, self.cut, self.stall, self.pages = frames, fps, cut, stall, pages or {}
        self.requests: list[str] = []  # paths asked for, in order
        self.over = threading.Event()  # the broadcast has been sent (or cut)
        self.stalled_at: float | None = None  # time.monotonic() when a `stall` began
        self.halt = threading.Event()  # stop serving
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def url(self, path: str = "/live") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.halt.set()  # handlers leave their frame loop at the next frame
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        srv: MJPEGServer = self.server.owner
        srv.requests.append(self.path)
        if self.path in srv.pages:
            status, kind, body = srv.pages[self.path]
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if srv.over.is_set():
            self.send_error(404, "The broadcast is over")
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        frames = srv.frames if srv.cut is None else srv.frames[: srv.cut]
        try:
            for jpg in frames:
                self.wfile.write(_part(jpg) + b"\r\n")
                if srv.halt.wait(1 / srv.fps):
                    return
            if srv.stall:
                srv.stalled_at = time.monotonic()
                srv.over.set()
                srv.halt.wait(srv.stall)
                return
            if srv.cut is None:
                self.wfile.write(f"--{BOUNDARY}--\r\n".encode())
            else:  # the connection drops in the middle of the next frame
                jpg = srv.frames[srv.cut]
                self.wfile.write(_part(jpg)[: -len(jpg) // 2])
        except OSError:  # the client hung up (a probe that reads the headers only)
            return
        srv.over.set()
        self.close_connection = True


def _part(jpg: bytes) -> bytes:
    return f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n".encode() + jpg


@pytest.fixture
def serve():
    """serve(**kw) -> a running MJPEGServer; every server is stopped at teardown."""
    servers = []

    def start(**kw) -> MJPEGServer:
        servers.append(MJPEGServer(kw.pop("frames", None) or make_frames(), **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A real (untrained) checkpoint: the stream handling does not depend on training."""
    from spd_yolo import YOLO

    path = tmp_path_factory.mktemp("streams") / "m.pt"
    YOLO("yolov5n-SPD").save(path)
    return path


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections (its backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield s.getsockname()[1]


def detect(ckpt, url, project, *extra, cwd=None):
    """detect.py on `url`; (the finished process, its seconds)."""
    t = time.monotonic()
    proc = script("detect", "--weights", ckpt, "--source", url, "--img", 64, "--device", "cpu", "--project", project,
                  *extra, cwd=cwd)
    return proc, time.monotonic() - t


def read_video(path: Path) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    """All frames of a video, its FPS and its (width, height)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return frames, fps, size


def saved_video(project: Path) -> Path:
    videos = list((project / "exp").glob("*.avi"))
    assert len(videos) == 1, list((project / "exp").iterdir())
    return videos[0]


def frame_count(out: str) -> int:
    line = next(x for x in out.splitlines() if " images/frames, " in x)
    return int(line.split()[0])


# check_source on stream URLs (in process: fast)


def test_stream_url_that_answers_passes(serve):
    srv = serve()
    assert sources.check_source(srv.url("/live")) == srv.url("/live")
    assert sources.check_source(srv.url("/live.mjpg")) == srv.url("/live.mjpg")  # not a suffix ultralytics downloads
    assert srv.requests == ["/live", "/live.mjpg"]  # one GET each, closed after the headers
    assert not srv.over.is_set()


@pytest.mark.parametrize("path", ["/cam.mp4", "/clip.AVI", "/video.avi?", "/video.avi?user=a&t=1"])
def test_stream_url_with_video_suffix_becomes_streams_file(serve, path):
    """ultralytics downloads an http(s) URL ending in a video suffix (build.check_source: is_url and is_file ->
    check_file) into the working directory, which for a live stream never ends; check_source lists it in a .streams
    file instead, which ultralytics streams."""
    srv = serve()
    source = sources.check_source(srv.url(path))
    assert source.endswith(".streams") and Path(source).read_text().split() == [srv.url(path)]
    from ultralytics.data.build import check_source as ultralytics_check_source

    assert ultralytics_check_source(source)[1]  # a stream (webcam flag), nothing downloaded


def test_unreachable_stream_urls_are_one_clear_error(serve, monkeypatch, silent_port):
    srv = serve(pages={"/page": (200, "text/html; charset=utf-8", b"<html>login</html>")})
    port = closed_port()
    cases = {
        f"http://127.0.0.1:{port}/live": "cannot connect (Connection refused)",
        f"https://127.0.0.1:{port}/live": "cannot connect (Connection refused)",
        f"rtsp://127.0.0.1:{port}/live": "cannot connect (Connection refused)",
        f"tcp://127.0.0.1:{port}": "cannot connect (Connection refused)",
        "tcp://127.0.0.1/live": "expected tcp://HOST:PORT/... (a host and a port)",
        "http://127.0.0.1:port/live": "expected http://HOST:PORT/... (a host and a port)",
        srv.url("/page"): "the server answered with a web page (text/html; charset=utf-8), not a video stream",
    }
    for url, why in cases.items():
        t = time.monotonic()
        with pytest.raises(CLIError) as e:
            sources.check_source(url)
        assert str(e.value) == f"--source {url}: {why}"
        assert time.monotonic() - t < sources.STREAM_TIMEOUT, url  # at once, not a timeout
    srv.over.set()  # the broadcast is over: 404
    with pytest.raises(CLIError, match=r": the server answered 404 The broadcast is over$"):
        sources.check_source(srv.url("/live"))

    monkeypatch.setattr(sources, "STREAM_TIMEOUT", 1)  # a server that accepts and never answers: a bounded wait
    t = time.monotonic()
    with pytest.raises(CLIError, match=r"cannot connect \(no answer within 1 s\)$"):
        sources.check_source(f"http://127.0.0.1:{silent_port}/live")
    assert 0.9 < time.monotonic() - t < 3


# detect.py on streams (a subprocess each)


@pytest.mark.slow  # starts fresh interpreters
def test_detect_unreachable_stream_is_one_error_line(ckpt, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/live"
    proc, seconds = detect(ckpt, url, tmp_path / "runs")
    assert proc.returncode == 1
    assert [x for x in proc.stderr.splitlines() if x.strip()] == [(f"error: --source {url}: cannot connect "
                                                                   "(Connection refused)")], proc.stderr
    assert seconds < 60  # the refusal is immediate; the rest is Python starting up
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_detect_reads_a_whole_stream(ckpt, serve, tmp_path):
    srv = serve()
    proc, _seconds = detect(ckpt, srv.url("/live"), tmp_path / "runs", "--stream-buffer")
    out = ok(proc)
    assert "Traceback" not in out
    assert frame_count(out) == N_FRAMES + 1  # every frame (queued) + ultralytics' black frame at the end
    frames, fps, size = read_video(saved_video(tmp_path / "runs"))
    assert len(frames) == N_FRAMES + 1 and size == (W, H) and fps == 30
    assert all(f.mean() > 40 for f in frames[:-1]) and frames[-1].max() == 0  # the last one is the black frame
    assert srv.over.is_set() and srv.requests[-1] == "/live"  # the reconnect got 404 and ended the run


@pytest.mark.slow
def test_detect_stream_cut_half_way_ends_cleanly(ckpt, serve, tmp_path):
    cut = N_FRAMES // 2
    srv = serve(cut=cut)
    proc, _seconds = detect(ckpt, srv.url("/live"), tmp_path / "runs", "--stream-buffer")
    out = ok(proc)
    assert "Traceback" not in out
    n = frame_count(out)  # the whole frames sent, the half frame (FFmpeg decodes what came of it), the black frame
    assert cut + 1 <= n <= cut + 2
    frames, _fps, size = read_video(saved_video(tmp_path / "runs"))
    assert len(frames) == n and size == (W, H)
    assert srv.over.is_set() and srv.requests[-1] == "/live"


@pytest.mark.slow
def test_detect_stalled_stream_ends_after_the_stream_timeout(ckpt, serve, tmp_path):
    """A stream that stops sending with its connection open: with --stream-timeout 2 the read gives up after 2 s
    (not OpenCV's 30 s), then the run ends as for a cut."""
    cut = 10
    srv = serve(cut=cut, stall=90)
    proc, _ = detect(ckpt, srv.url("/live"), tmp_path / "runs", "--stream-buffer", "--stream-timeout", 2)
    ended = time.monotonic()
    out = ok(proc)
    assert "Traceback" not in out
    assert frame_count(out) == cut + 1  # + the black frame
    assert len(read_video(saved_video(tmp_path / "runs"))[0]) == cut + 1
    # from the server's last frame to the end of the run: 2 s of silence and the run's ending, not OpenCV's 30 s (timed
    # from the stall, not from the start, so that a slow start-up on a busy machine does not count)
    assert ended - srv.stalled_at < 20


def test_stream_timeout_sets_ffmpegs_option_and_restores_the_environment(monkeypatch):
    """OPENCV_FFMPEG_CAPTURE_OPTIONS gets timeout in microseconds; the user's other options there are kept (their own
    timeout replaced), and the variable is as before afterwards, also after an error."""
    monkeypatch.delenv(sources.FFMPEG_OPTIONS, raising=False)
    with sources.stream_read_timeout(2.5):
        assert os.environ[sources.FFMPEG_OPTIONS] == "timeout;2500000"
    assert sources.FFMPEG_OPTIONS not in os.environ
    monkeypatch.setenv(sources.FFMPEG_OPTIONS, "rtsp_transport;tcp|timeout;9")
    with pytest.raises(RuntimeError), sources.stream_read_timeout(1):
        assert os.environ[sources.FFMPEG_OPTIONS] == "rtsp_transport;tcp|timeout;1000000"
        raise RuntimeError
    assert os.environ[sources.FFMPEG_OPTIONS] == "rtsp_transport;tcp|timeout;9"
    with sources.stream_read_timeout(None):
        assert os.environ[sources.FFMPEG_OPTIONS] == "rtsp_transport;tcp|timeout;9"


@pytest.mark.parametrize("value", ["0", "-1", "31"])
def test_detect_rejects_a_stream_timeout_out_of_range(value, tmp_path, capsys):
    assert detect_cli(["--weights", "missing.pt", "--source", "x.jpg", "--stream-timeout", value,
                       "--project", str(tmp_path / "runs")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: --stream-timeout {float(value):g}: must be > 0 and at most 30 (seconds; OpenCV ends a " \
                  "silent stream's read after that anyway)", err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_detect_streams_a_url_with_video_suffix_without_downloading(ckpt, serve, tmp_path, monkeypatch):
    """As tried by hand (no --stream-buffer: the latest frame each step), with cam.mp4 in the URL: streamed, nothing
    downloaded into the working directory, and the .streams listing removed at exit."""
    srv = serve()
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # where check_source writes its .streams listing
    url = srv.url("/cam.mp4")
    proc, _seconds = detect(ckpt, url, tmp_path / "runs", cwd=cwd)
    out = ok(proc)
    assert f"1/1: {url}... Success" in out  # LoadStreams
    assert list(cwd.iterdir()) == [] and list(tmp.glob("spd-yolo-stream-*")) == []
    n = frame_count(out)
    assert 1 <= n <= N_FRAMES + 1  # frames that arrive during an inference are dropped
    frames, _fps, size = read_video(saved_video(tmp_path / "runs"))
    assert len(frames) == n and size == (W, H)
    assert set(srv.requests) == {"/cam.mp4"}
