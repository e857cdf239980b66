# SPD-YOLO, AGPL-3.0 license
"""Checkpoints with SPD layers load in fresh processes: plain ultralytics, another directory, safe loading."""

import os
import pickletools
import subprocess
import sys
import zipfile

import pytest
import torch

import spd_yolo
from helpers import REPO, rewrite_pickle, run_python
from spd_yolo.checkpoint import check_checkpoint
from spd_yolo.errors import CheckpointError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A yolov5n-SPD checkpoint saved the ultralytics way, and the reference output of the model loaded from it."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = spd_yolo.YOLO("yolov5n-SPD")
    path = folder / "spd.pt"
    model.save(path)
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    torch.save(x, folder / "x.pt")
    loaded = spd_yolo.YOLO(path).model.eval()
    with torch.no_grad():
        torch.save(loaded(x)[0], folder / "y.pt")
    return path


LOAD_AND_COMPARE = """
import sys, torch
from ultralytics import YOLO
folder = sys.argv[1] if len(sys.argv) > 1 else {folder!r}
model = YOLO({path!r})
assert 'spd_yolo' in sys.modules, 'unpickling must import the SPD layers'
x, y = torch.load({folder!r} + '/x.pt'), torch.load({folder!r} + '/y.pt')
with torch.no_grad():
    out = model.model.eval()(x)[0]
print('max_abs_diff', (out - y).abs().max().item())
"""


@pytest.mark.slow  # starts fresh interpreters
def test_loads_in_fresh_process_without_importing_project(checkpoint, tmp_path):
    code = LOAD_AND_COMPARE.format(folder=str(checkpoint.parent), path=str(checkpoint))
    out = run_python("import sys\nassert 'spd_yolo' not in sys.modules\n" + code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "max_abs_diff 0.0" in out.stdout


@pytest.mark.slow  # starts fresh interpreters
def test_fine_tunes_in_fresh_process(checkpoint, tmp_path):
    """Rebuild from the checkpoint's YAML (as the trainer does), transfer weights, take one optimizer step."""
    code = f"""
import sys
import torch
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
src = YOLO({str(checkpoint)!r}).model
model = DetectionModel(src.yaml, nc=2, verbose=False)  # nc differs: the head is rebuilt, the rest transfers
model.load(src, verbose=False)
assert torch.equal(model.model[0].conv.conv.weight, src.model[0].conv.conv.weight.float())
sys.path.insert(0, {str(REPO / 'tests')!r})
from helpers import one_training_step
stem = model.model[0].conv.conv.weight
loss, changed = one_training_step(model, [[0.5, 0.5, 0.2, 0.3], [0.3, 0.4, 0.1, 0.1]], watch=(stem,))
assert torch.isfinite(loss).all()
assert changed == [True], 'the SPD stem must learn'
print('ok', float(loss.sum()))
"""
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


@pytest.mark.slow  # starts fresh interpreters
def test_safe_load_after_importing_project(checkpoint, tmp_path):
    code = "import spd_yolo\n" + LOAD_AND_COMPARE.format(folder=str(checkpoint.parent), path=str(checkpoint))
    out = run_python(code, cwd=tmp_path, env={"ULTRALYTICS_SAFE_LOAD": "1"})
    assert out.returncode == 0, out.stderr
    assert "max_abs_diff 0.0" in out.stdout


@pytest.mark.slow  # starts fresh interpreters
def test_safe_load_refuses_unknown_layers_without_project(checkpoint, tmp_path):
    """Negative control: the allow-list loader knows nothing of ours until the project is imported."""
    code = f"from ultralytics import YOLO\nYOLO({str(checkpoint)!r})\n"
    out = run_python(code, cwd=tmp_path, env={"ULTRALYTICS_SAFE_LOAD": "1"})
    assert out.returncode != 0
    assert "outside the supported Ultralytics checkpoint format" in out.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints written before the layers moved into spd_yolo.layers (they pickled `spd_modules.SPDConv` etc.): two small
# models saved by ultralytics with that version (tests/data/old_spd_*.pt) and the output each gave then.

OLD = {"det": "old_spd_det", "cls": "old_spd_cls"}


@pytest.mark.slow  # starts fresh interpreters
@pytest.mark.parametrize("kind", OLD)
def test_old_checkpoints_naming_spd_modules_load_in_a_fresh_process(kind, tmp_path):
    path = REPO / "tests/data" / f"{OLD[kind]}.pt"
    with zipfile.ZipFile(path) as z:  # they really name the old module
        assert b"cspd_modules\n" in z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    code = f"""
import sys, torch
from ultralytics import YOLO
model = YOLO({str(path)!r}).model.float().eval()
io = torch.load({str(path.with_suffix('.io.pt'))!r})
with torch.no_grad():
    y = model(io["x"])
y = y[0] if isinstance(y, (list, tuple)) else y
# float rounding only: the reference was computed with another thread count, which reorders the conv sums
print("close", torch.allclose(y, io["y"], rtol=1e-5, atol=1e-6), type(model.model[0]).__module__)
"""
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "close True spd_yolo.layers." in out.stdout


def _our_modules(path) -> set:
    """The modules of ours a checkpoint's pickle names: torch.save writes pickle protocol 2, where each class is one
    GLOBAL opcode 'module name'."""
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    ops = list(pickletools.genops(data))
    assert not any(op.name == "STACK_GLOBAL" for op, _, _ in ops)  # protocol 2: every class is a GLOBAL
    modules = {str(arg).split(" ")[0] for op, arg, _ in ops if op.name == "GLOBAL"}
    return {m for m in modules if m.startswith(("spd", "models"))}


def test_new_checkpoints_name_only_the_spd_yolo_package(checkpoint, tmp_path):
    assert _our_modules(checkpoint) == {"spd_yolo.layers.space_to_depth"}
    old = REPO / "tests/data/old_spd_cls.pt"
    assert _our_modules(old) == {"spd_modules"}
    spd_yolo.YOLO(old).save(tmp_path / "resaved.pt")  # what the README advises for an old checkpoint that travels
    assert _our_modules(tmp_path / "resaved.pt") == {"spd_yolo.layers.space_to_depth", "spd_yolo.layers.resnet"}


BLOCK_PROJECT = """
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):  # as in an environment where spd-yolo is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("spd_yolo", "spd_modules"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, NotInstalled())
"""


@pytest.mark.slow  # starts fresh interpreters
def test_without_the_project_autoinstall_could_only_ask_for_spd_yolo(checkpoint, tmp_path):
    """ultralytics pip-installs the module a checkpoint names when it is missing: that name must be one only this
    project's distribution provides. The install step is replaced by a recorder here (nothing is installed)."""
    code = BLOCK_PROJECT + f"""
from packaging.utils import canonicalize_name
import ultralytics.utils.checks as checks
import ultralytics.nn.tasks as tasks
asked = []
tasks.check_requirements = lambda name, *a, **k: asked.append(name) or False
from ultralytics import YOLO
try:
    YOLO({str(checkpoint)!r})
except ModuleNotFoundError as e:
    print("error:", e)
print("asked", asked, [str(canonicalize_name(n)) for n in asked])
"""
    out = run_python(code, cwd=tmp_path, env={"YOLO_AUTOINSTALL": "true"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "asked ['spd_yolo'] ['spd-yolo']" in out.stdout  # the distribution name in pyproject.toml
    assert "error: No module named 'spd_yolo'" in out.stdout


@pytest.mark.slow  # starts fresh interpreters
def test_without_the_project_and_no_autoinstall_the_message_names_our_module(checkpoint, tmp_path):
    code = BLOCK_PROJECT + f"from ultralytics import YOLO\nYOLO({str(checkpoint)!r})\n"
    out = run_python(code, cwd=tmp_path, env={"YOLO_AUTOINSTALL": "false"})
    assert out.returncode != 0
    assert out.stderr.rstrip().endswith("ModuleNotFoundError: No module named 'spd_yolo'")


# ---------------------------------------------------------------------------------------------------------------------
# Settings: whatever of ours comes first, ultralytics ends up offline and never auto-installing, unless the user's
# environment says otherwise.

READ_SETTINGS = """
import ultralytics.utils as u, ultralytics.utils.checks as c, ultralytics.utils.events as ev
print("settings", u.AUTOINSTALL, c.AUTOINSTALL, u.ONLINE, c.ONLINE, ev.events.enabled)
"""
ENTRY_POINTS = {
    "import spd_modules": "import spd_modules",
    "import spd_yolo": "import spd_yolo",
    "ultralytics first": "import ultralytics, ultralytics.utils.checks, ultralytics.utils.events\nimport spd_yolo",
    "unpickle a checkpoint": "from ultralytics import YOLO\nYOLO({ckpt!r})\nassert 'spd_yolo' in sys.modules",
    **{f"{name}.py": f"import runpy\nsys.argv = [{name!r}, '--help']\ntry:\n"
                     f"    runpy.run_path({str(REPO / (name + '.py'))!r}, run_name='__main__')\n"
                     f"except SystemExit as e:\n    assert e.code == 0, e.code"
       for name in ("train", "val", "detect", "export")},
}


def _settings(code: str, tmp_path, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("YOLO_OFFLINE", "YOLO_AUTOINSTALL")}
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + code + READ_SETTINGS], cwd=tmp_path,
                          env={**clean, **env}, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return next(line for line in proc.stdout.splitlines() if line.startswith("settings"))


@pytest.mark.slow  # starts fresh interpreters
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_offline_and_no_autoinstall_whatever_is_imported_first(entry, checkpoint, tmp_path):
    code = ENTRY_POINTS[entry].format(ckpt=str(checkpoint))
    assert _settings(code, tmp_path) == "settings False False False False False"


@pytest.mark.slow  # starts fresh interpreters
@pytest.mark.parametrize("entry", ["import spd_yolo", "ultralytics first", "unpickle a checkpoint"])
def test_the_users_environment_wins(entry, checkpoint, tmp_path):
    code = ENTRY_POINTS[entry].format(ckpt=str(checkpoint))
    assert _settings(code, tmp_path, YOLO_AUTOINSTALL="true").startswith("settings True True")


# ---------------------------------------------------------------------------------------------------------------------
# Files that are not loadable checkpoints: one CheckpointError naming the file and what is wrong, before unpickling.

def _bad_files(checkpoint, folder):
    empty, text, cut, other_zip = (folder / n for n in ("empty.pt", "notes.pt", "cut.pt", "archive.pt"))
    empty.write_bytes(b"")
    text.write_text("these are my notes\n")
    cut.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hello")
    old = b"cspd_yolo.layers.space_to_depth\nSPDConv\n"
    renamed = rewrite_pickle(checkpoint, folder / "renamed.pt", old, b"cspd_yolo.layers.space_to_depth\nSPDConvV2\n")
    moved = rewrite_pickle(checkpoint, folder / "moved.pt", old, b"cspd_yolo.fancy_layers\nSPDConv\n")
    foreign = rewrite_pickle(checkpoint, folder / "foreign.pt", old, b"cdetectron_blocks.conv\nSPDConv\n")
    with zipfile.ZipFile(checkpoint) as zin, zipfile.ZipFile(folder / "cut_pickle.pt", "w") as zout:  # archive intact
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, data[: len(data) // 2] if item.filename.endswith("/data.pkl") else data)
    torch.save(torch.load(checkpoint, weights_only=False), folder / "protocol4.pt", pickle_protocol=4)
    moved4 = rewrite_pickle(folder / "protocol4.pt", folder / "moved4.pt", b"spd_yolo.layers.space_to_depth",
                            b"spd_yolo.fancy_layers_23456789")  # same length: the pickle's string and frame sizes hold
    return {
        empty: "the file is empty (0 bytes), not a PyTorch checkpoint",
        text: "not a PyTorch checkpoint (a file written by torch.save, such as ultralytics' best.pt); it starts with "
              "b'thes'",
        cut: "truncated or damaged checkpoint: its zip archive ends early",
        other_zip: "a zip archive but not a PyTorch checkpoint (no data.pkl inside)",
        renamed: "the checkpoint needs class 'spd_yolo.layers.space_to_depth.SPDConvV2', which this environment "
                 "does not have; it was written by another version of spd-yolo (installed here: spd-yolo 0.1.0): "
                 "install the version that wrote it, or upgrade with 'pip install -U spd-yolo'",
        moved: "the checkpoint needs module 'spd_yolo.fancy_layers', which this environment does not have; it was "
               "written by another version of spd-yolo",
        foreign: "the checkpoint needs module 'detectron_blocks', which this environment does not have; install the "
                 "package that provides the module 'detectron_blocks'",
        folder / "cut_pickle.pt": "damaged checkpoint, its pickle ends early",
        moved4: "the checkpoint needs module 'spd_yolo.fancy_layers_23456789', which this environment does not have; "
                "it was written by another version of spd-yolo",
    }


def test_files_that_are_not_loadable_checkpoints_say_why(checkpoint, tmp_path):
    for path, message in _bad_files(checkpoint, tmp_path).items():
        before = path.read_bytes()
        with pytest.raises(CheckpointError) as err:
            spd_yolo.YOLO(path)
        assert str(err.value) == f"{path}: {message}" or str(err.value).startswith(f"{path}: {message}"), err.value
        assert path.read_bytes() == before
    check_checkpoint(checkpoint)  # the good one passes the same check
