# SPD-YOLO, AGPL-3.0 license
"""Checkpoints with SPD layers load in fresh processes: plain ultralytics, another directory, safe loading."""

import pytest
import torch

import spd_yolo
from helpers import run_python


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
assert 'spd_modules' in sys.modules, 'unpickling must import the SPD layers'
x, y = torch.load({folder!r} + '/x.pt'), torch.load({folder!r} + '/y.pt')
with torch.no_grad():
    out = model.model.eval()(x)[0]
print('max_abs_diff', (out - y).abs().max().item())
"""


def test_loads_in_fresh_process_without_importing_project(checkpoint, tmp_path):
    code = LOAD_AND_COMPARE.format(folder=str(checkpoint.parent), path=str(checkpoint))
    out = run_python("import sys\nassert 'spd_yolo' not in sys.modules\n" + code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "max_abs_diff 0.0" in out.stdout


def test_fine_tunes_in_fresh_process(checkpoint, tmp_path):
    """Rebuild from the checkpoint's YAML (as the trainer does), transfer weights, take one optimizer step."""
    code = f"""
import torch
from ultralytics import YOLO
from ultralytics.nn.tasks import DetectionModel
from ultralytics.cfg import get_cfg
src = YOLO({str(checkpoint)!r}).model
model = DetectionModel(src.yaml, nc=2, verbose=False)  # nc differs: the head is rebuilt, the rest transfers
model.load(src, verbose=False)
assert torch.equal(model.model[0].conv.conv.weight, src.model[0].conv.conv.weight.float())
model.args = get_cfg()
model.train()
batch = {{
    'img': torch.rand(2, 3, 64, 64),
    'batch_idx': torch.tensor([0.0, 1.0]),
    'cls': torch.tensor([[0.0], [1.0]]),
    'bboxes': torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.4, 0.1, 0.1]]),
}}
opt = torch.optim.SGD(model.parameters(), lr=0.01)
before = model.model[0].conv.conv.weight.detach().clone()
loss, items = model.loss(batch)
loss.sum().backward()
opt.step()
assert torch.isfinite(loss).all()
assert not torch.equal(before, model.model[0].conv.conv.weight), 'the SPD stem must learn'
print('ok', float(loss.sum()))
"""
    out = run_python(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


def test_safe_load_after_importing_project(checkpoint, tmp_path):
    code = "import spd_yolo\n" + LOAD_AND_COMPARE.format(folder=str(checkpoint.parent), path=str(checkpoint))
    out = run_python(code, cwd=tmp_path, env={"ULTRALYTICS_SAFE_LOAD": "1"})
    assert out.returncode == 0, out.stderr
    assert "max_abs_diff 0.0" in out.stdout


def test_safe_load_refuses_unknown_layers_without_project(checkpoint, tmp_path):
    """Negative control: the allow-list loader knows nothing of ours until the project is imported."""
    code = f"from ultralytics import YOLO\nYOLO({str(checkpoint)!r})\n"
    out = run_python(code, cwd=tmp_path, env={"ULTRALYTICS_SAFE_LOAD": "1"})
    assert out.returncode != 0
    assert "outside the supported Ultralytics checkpoint format" in out.stderr
