# SPD-YOLO, AGPL-3.0 license
"""Light imports: the layers (and checkpoints that name them) load the layers, the registry and nothing else of ours;
the package's other public names load their modules on first use."""

import json
import os
import subprocess
import sys

import pytest

import spd_yolo

# Every module of ours that `import spd_yolo.layers` loads: the package (its environment defaults), the error types,
# the layers, the lazy-name helper and the registry that registers the layers with ultralytics.
LIGHT = {
    "spd_yolo",
    "spd_yolo.errors",
    "spd_yolo.lazy",
    "spd_yolo.layers",
    "spd_yolo.layers.resnet",
    "spd_yolo.layers.space_to_depth",
    "spd_yolo.layers.spd_group_conv",
    "spd_yolo.models",
    "spd_yolo.models.registry",
    "spd_yolo.models.yaml_args",
}
HEAVY = ("pycocotools", "sahi", "faster_coco_eval", "onnx", "onnxruntime")  # third-party packages only some jobs need

REPORT = """
import json, sys
from spd_yolo.models import registry
print(json.dumps({"modules": sorted(sys.modules), "registered": registry.is_registered(),
                  "offline": registry.ul_utils.env_bool("YOLO_OFFLINE")}))
"""


def _loaded(code: str, cwd) -> dict:
    """What a fresh interpreter has imported after running `code` (the report imports nothing new of ours)."""
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_OFFLINE", "PYTHONPATH")}  # its own default
    out = subprocess.run([sys.executable, "-c", "import sys\nassert 'spd_yolo' not in sys.modules\n" + code + REPORT],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["ours"] = {m for m in report["modules"] if m.split(".")[0] in ("spd_yolo", "spd_modules")}
    report["heavy"] = {m for m in report["modules"] if m.split(".")[0] in HEAVY}
    return report


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A yolov5n-SPD checkpoint saved the ultralytics way."""
    path = tmp_path_factory.mktemp("ckpt") / "spd.pt"
    spd_yolo.YOLO("yolov5n-SPD").save(path)
    return path


def test_importing_the_layers_loads_the_layers_and_the_registry_only(tmp_path):
    got = _loaded("import spd_yolo.layers", tmp_path)
    assert got["ours"] == LIGHT
    assert got["heavy"] == set()
    assert got["registered"] and got["offline"]


def test_unpickling_a_checkpoint_loads_the_layers_and_the_registry_only(checkpoint, tmp_path):
    got = _loaded(f"import torch\nckpt = torch.load({str(checkpoint)!r}, weights_only=False)\n"
                  "assert type(ckpt['model'].model[0]).__name__ == 'SPDConv'", tmp_path)
    assert got["ours"] == LIGHT
    assert got["heavy"] == set()
    assert got["registered"] and got["offline"]


def test_the_layers_first_name_is_as_light(tmp_path):
    got = _loaded("import spd_modules", tmp_path)
    assert got["ours"] == LIGHT | {"spd_modules"}
    assert got["heavy"] == set()


def test_a_public_name_loads_only_its_own_modules(tmp_path):
    got = _loaded("import spd_yolo\nspd_yolo.build_model('yolov5n-SPD')", tmp_path)
    assert got["ours"] == LIGHT | {"spd_yolo.models.configs"}
    got = _loaded("from spd_yolo import YOLO", tmp_path)
    assert {"spd_yolo.model", "spd_yolo.engine", "spd_yolo.coco"} <= got["ours"]
    assert "pycocotools" in got["heavy"]


def test_every_public_name_is_there_and_listed():
    from spd_yolo.model import YOLO
    from spd_yolo.models import configs, summary

    for name in spd_yolo.__all__:
        assert getattr(spd_yolo, name) is not None, name
        assert name in dir(spd_yolo), name
    assert spd_yolo.YOLO is YOLO and spd_yolo.build_model is configs.build_model
    assert spd_yolo.model_stats is summary.model_stats and spd_yolo.CONFIG_DIR == configs.CONFIG_DIR
    assert spd_yolo.SPDConv is spd_yolo.layers.SPDConv
    namespace = {}
    exec("from spd_yolo import *", namespace)  # noqa: S102 - a star import, which only exec can run here
    assert set(spd_yolo.__all__) <= set(namespace)
    assert spd_yolo.models.available_models is configs.available_models


def test_an_unknown_name_is_an_attribute_error_and_submodules_still_import():
    with pytest.raises(AttributeError, match="module 'spd_yolo' has no attribute 'no_such_name'"):
        spd_yolo.no_such_name  # noqa: B018
    with pytest.raises(AttributeError, match="module 'spd_yolo.models' has no attribute 'registry_v2'"):
        spd_yolo.models.registry_v2  # noqa: B018
    from spd_yolo import atomic  # a submodule, not a lazy name

    assert atomic.__name__ == "spd_yolo.atomic"
