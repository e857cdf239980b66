# SPD-YOLO, AGPL-3.0 license
"""The fork server that runs the scripts for the tests behaves as `python script.py ARGS` does: argv, cwd, sys.path[0],
environment, stdout/stderr, exit codes, uncaught exceptions, death by signal, and the timeout."""

import os
import subprocess
import sys

import pytest

from forkserver import run_script

SCRIPT = """
import os, signal, sys, threading, time, atexit
what = sys.argv[1]
print(repr(sys.argv), os.getcwd(), sys.path[0], __name__, os.environ.get("PROBE"))
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
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe") / "probe.py"
    path.write_text(SCRIPT)
    return path


@pytest.mark.parametrize("what", ["ok", "exit3", "message", "raise", "kill", "interrupt", "thread"])
def test_same_as_a_fresh_interpreter(probe, what, tmp_path):
    env = {**os.environ, "PROBE": "x"}
    real = subprocess.run([sys.executable, str(probe), what], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    forked = run_script(probe, [what], cwd=tmp_path, env=env)
    assert forked.returncode == real.returncode
    assert forked.stdout == real.stdout
    assert forked.stderr == real.stderr
    assert forked.args == real.args


def test_timeout_kills_the_child(probe, tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        run_script(probe, ["sleep"], cwd=tmp_path, timeout=1)
    assert run_script(probe, ["ok"], cwd=tmp_path).returncode == 0  # the server goes on
