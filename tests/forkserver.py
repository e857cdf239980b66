# SPD-YOLO, AGPL-3.0 license
"""Run a Python program as `python script.py ARGS` (or `-c CODE`, `-m MODULE`) would, without paying for a fresh
interpreter each time.

Most of a script's start is importing torch, ultralytics and what they load lazily (4-7 s of every run on 2 cores,
more on a busy machine), and the suite runs programs about a hundred times. A fork server is started once per
environment: a fresh interpreter of this venv, with the environment the caller asks for (but the per-test
PYTEST_CURRENT_TEST), that imports PRELOAD and nothing else (no test code, no settings of the test process). Each run
is a child forked from it: its own process, with fd 0 on /dev/null, fds 1 and 2 in files, its cwd, environment,
``sys.argv`` and ``sys.path[0]`` set as the interpreter sets them, SIGINT as a `preexec_fn` would set it, the program
run as ``__main__``, and a normal interpreter exit (atexit handlers, the exit code, a traceback and exit 1 on an
uncaught exception, -N when killed by signal N); see `_child`.

What it does not reproduce is the import itself: tests of import order and of what an import loads, of the installed
console commands, and of a fresh process start real interpreters (``helpers.run_python``, ``subprocess``).

Protocol: one JSON line per request on the server's stdin ({"kind", "target", "args", "cwd", "env", "sigint", "stdout",
"stderr"}); the server answers {"pid": N} when the child has started and {"rc": N} when it has ended."""

from __future__ import annotations

import atexit
import builtins
import gc
import importlib
import importlib.util
import json
import os
import runpy
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

# What the project's scripts import when they run (a training, a validation with COCO metrics, a detection, an export):
# the scripts' own modules, and what ultralytics and torch load lazily on the way (torchvision, torch._dynamo and sympy,
# matplotlib, polars, thop, the integration callbacks), about 3 s of every run on 2 cores. The rest, a script imports
# itself as usual.
PRELOAD = ("torch", "torchvision", "matplotlib.pyplot", "polars", "thop", "ultralytics", "ultralytics.utils.events",
           *(f"ultralytics.utils.callbacks.{n}" for n in ("platform", "clearml", "comet", "dvc", "mlflow", "raytune")),
           "pycocotools.coco", "pycocotools.cocoeval", "sahi.slicing", "spd_yolo", "spd_yolo.cli.train",
           "spd_yolo.cli.val", "spd_yolo.cli.detect", "spd_yolo.cli.export")


def _serve() -> None:
    """The server's loop (runs in the server process)."""
    for name in PRELOAD:
        importlib.import_module(name)
    gc.freeze()  # the children's collections then leave the preloaded objects' pages shared, not copied
    requests, answers = sys.stdin.buffer, sys.stdout
    answers.write(json.dumps({"ready": os.getpid()}) + "\n")
    answers.flush()
    for line in requests:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(req)
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()


def _child(req: dict) -> None:
    """Become `python <script> ARGS`, `python -c CODE ARGS` or `python -m MODULE ARGS` in <cwd>, run it, and exit as
    the interpreter would: the exit code of SystemExit, or the traceback (from the program's own frame on) and 1, or
    death by SIGINT on an uncaught KeyboardInterrupt; non-daemon threads joined, atexit handlers run, output flushed.
    It skips only the teardown of the preloaded modules, which would copy every page it touches."""
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    if req["sigint"] is not None:  # as the interpreter starts when its parent left SIGINT default or ignored
        signal.signal(signal.SIGINT, signal.default_int_handler if req["sigint"] == "default" else signal.SIG_IGN)
    kind, target = req["kind"], req["target"]
    if kind == "script":
        sys.argv, sys.path[0], own = [target, *req["args"]], str(Path(target).resolve().parent), target
    elif kind == "code":
        sys.argv, sys.path[0], own = ["-c", *req["args"]], "", "<string>"
    else:
        sys.path[0] = os.getcwd()
        spec = importlib.util.find_spec(target)
        if spec is None:
            print(f"{sys.executable}: No module named {target}", file=sys.stderr)
            os._exit(1)
        own = spec.origin
        sys.argv = [own, *req["args"]]
    code, interrupted = 0, False
    try:
        if kind == "script":
            runpy.run_path(target, run_name="__main__")
        elif kind == "code":
            exec(compile(target, "<string>", "exec"), {"__name__": "__main__", "__builtins__": builtins})  # noqa: S102
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException as e:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != own:
            tb = tb.tb_next
        e = e.with_traceback(tb or e.__traceback__)
        sys.excepthook(type(e), e, e.__traceback__)
        code, interrupted = 1, isinstance(e, KeyboardInterrupt)
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


class _Server:
    """One fork server (a subprocess) and the pipe to it."""

    def __init__(self, env: dict):
        self.folder = tempfile.mkdtemp(prefix="spd-yolo-forkserver-")
        self.log = Path(self.folder, "server.log")  # the server's own stderr (a failed import, say)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, __file__], cwd=self.folder, env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True)
        self._buf, self.runs = b"", 0
        self._read(timeout=300)  # {"ready": pid}: the imports are done

    def _read(self, timeout: float) -> dict:
        """The server's next answer (raw reads: a buffered reader could hold the next line out of select's sight)."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            data = os.read(fd, 1 << 16)
            if not data:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"fork server {self.proc.pid} ended (exit code {self.proc.wait()}):\n{tail}")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, command: list[str], req: dict, timeout: float) -> subprocess.CompletedProcess:
        """Run `req` ({"kind", "target", "args", "cwd", "env", "sigint"}); `command` is what it stands for."""
        out, err = (Path(self.folder, f"{self.runs}{suffix}") for suffix in (".out", ".err"))
        self.runs += 1
        try:
            req = {**req, "stdout": str(out), "stderr": str(err)}
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            pid = self._read(timeout=60)["pid"]
            try:
                rc = self._read(timeout=timeout)["rc"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._read(timeout=60)
                raise subprocess.TimeoutExpired(command, timeout) from None
            text = [p.read_text(encoding="utf-8", errors="replace") for p in (out, err)]
            return subprocess.CompletedProcess(command, rc, *text)
        finally:
            out.unlink(missing_ok=True)
            err.unlink(missing_ok=True)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)


_SERVERS: dict[tuple, _Server] = {}
# Set by pytest for each test (its name), read by nothing at import time: a server serves every test.
_PER_RUN = ("PYTEST_CURRENT_TEST",)


def _run(kind: str, target: str, args, cwd, env: dict | None, timeout: float, sigint) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env)
    key = tuple(sorted((k, v) for k, v in env.items() if k not in _PER_RUN))
    if key not in _SERVERS:
        _SERVERS[key] = _Server({k: v for k, v in env.items() if k not in _PER_RUN})
    args = [str(a) for a in args]
    command = [sys.executable, *{"script": [], "code": ["-c"], "module": ["-m"]}[kind], target, *args]
    sigint = {None: None, signal.SIG_DFL: "default", signal.SIG_IGN: "ignore"}[sigint]
    req = {"kind": kind, "target": target, "args": args, "cwd": str(cwd or os.getcwd()), "env": env, "sigint": sigint}
    return _SERVERS[key].run(command, req, timeout)


def run_script(script, args=(), cwd=None, env=None, timeout: float = 600, sigint=None) -> subprocess.CompletedProcess:
    """`subprocess.run([sys.executable, script, *args], cwd=cwd, env=env, capture_output=True, text=True,
    timeout=timeout)`, run by the fork server started with that environment (the first time one is asked for; the
    child's environment is then set to exactly `env`). `sigint` (signal.SIG_DFL or SIG_IGN) is the SIGINT disposition
    the program starts with, as a `preexec_fn` would set it; None inherits this process's."""
    return _run("script", str(script), args, cwd, env, timeout, sigint)


def run_code(code: str, args=(), cwd=None, env=None, timeout: float = 600, sigint=None) -> subprocess.CompletedProcess:
    """`run_script` for `python -c CODE ARGS`."""
    return _run("code", code, args, cwd, env, timeout, sigint)


def run_module(module: str, args=(), cwd=None, env=None, timeout: float = 600,
               sigint=None) -> subprocess.CompletedProcess:
    """`run_script` for `python -m MODULE ARGS`."""
    return _run("module", module, args, cwd, env, timeout, sigint)


@atexit.register
def _close_all() -> None:
    for server in _SERVERS.values():
        server.close()


if __name__ == "__main__":
    _serve()
