# SPD-YOLO, AGPL-3.0 license
"""The fork server that runs the scripts for the tests behaves as `python script.py ARGS`, `python -c CODE ARGS` and
`python -m MODULE ARGS` do: argv, cwd, sys.path[0], environment, stdout/stderr, exit codes, uncaught exceptions, death
by signal, the SIGINT disposition it starts with, and the timeout."""

import os
import signal
import subprocess
import sys

import pytest

from forkserver import run_code, run_module, run_script

SCRIPT = """
import os, signal, sys, threading, time, atexit
what = sys.argv[1]
print(repr(sys.argv), os.getcwd(), sys.path[0], __name__)
print(os.environ.get("YOLO_VERBOSE"), os.environ.get("PYTEST_CURRENT_TEST"))
print("to stderr", file=sys.stderr)
atexit.register(lambda: print("atexit ran"))
if what == "exit3":
    sys.exit(3)
if what == "message":
    sys.exit("a message")
if what == "raise":
    raise ValueError("boom")
if what == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if what == "interrupt":
    raise KeyboardInterrupt
if what == "thread":
    threading.Thread(target=lambda: (time.sleep(0.5), print("thread done"))).start()
if what == "sleep":
    time.sleep(60)
if what == "sigint":
    print(signal.getsignal(signal.SIGINT))
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)
    print("still here")
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "probe.py"
    path.write_text(SCRIPT)
    return path


def _same(forked: subprocess.CompletedProcess, real: subprocess.CompletedProcess) -> None:
    assert forked.returncode == real.returncode
    assert forked.stdout == real.stdout
    # `python -m`'s traceback starts in runpy's frames, the fork server's at the module's own (one known difference)
    lines = real.stderr.splitlines(keepends=True)
    runpy_frames = [line for line in lines if line.startswith('  File "<frozen runpy>"')]
    assert forked.stderr == real.stderr.replace("".join(runpy_frames), "")
    assert forked.args == real.args


def _real(args, cwd, env, sigint=None) -> subprocess.CompletedProcess:
    preexec = None if sigint is None else (lambda: signal.signal(signal.SIGINT, sigint))
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False, preexec_fn=preexec)


# The environment of helpers.script (one fork server serves both), with a variable the server was not started with.
ENV = {**os.environ, "YOLO_VERBOSE": "true"}


@pytest.mark.parametrize("what", ["ok", "exit3", "message", "raise", "kill", "interrupt", "thread"])
def test_same_as_a_fresh_interpreter(probe, what, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_CURRENT_TEST", f"probe {what}")  # set per test by pytest: the child's is this one
    env = {**ENV, "PYTEST_CURRENT_TEST": os.environ["PYTEST_CURRENT_TEST"]}
    _same(run_script(probe, [what], cwd=tmp_path, env=env), _real([probe, what], tmp_path, env))
    _same(run_code(SCRIPT, [what], cwd=tmp_path, env=env), _real(["-c", SCRIPT, what], tmp_path, env))
    cwd = probe.parent  # -m finds the module in its cwd
    _same(run_module("probe", [what], cwd=cwd, env=env), _real(["-m", "probe", what], cwd, env))


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN])
def test_starts_with_the_sigint_disposition_asked_for(probe, sigint, tmp_path):
    forked = run_script(probe, ["sigint"], cwd=tmp_path, env=ENV, sigint=sigint)
    _same(forked, _real([probe, "sigint"], tmp_path, ENV, sigint=sigint))
    assert forked.returncode == (0 if sigint == signal.SIG_IGN else -signal.SIGINT)


def test_timeout_kills_the_child(probe, tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        run_script(probe, ["sleep"], cwd=tmp_path, env=ENV, timeout=1)
    assert run_script(probe, ["ok"], cwd=tmp_path, env=ENV).returncode == 0  # the server goes on
