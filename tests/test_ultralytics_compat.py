# SPD-YOLO, AGPL-3.0 license
"""One test per point where SPD-YOLO changes or relies on ultralytics' internals (docs/layout.md, "Couplings to
ultralytics"). Each checks the behaviour we depend on, in the installed ultralytics, and fails with a message naming
the ultralytics function or attribute that changed, so an upgrade that breaks one says where to look."""

import copy
import inspect

import pytest
import torch
from torch import nn
from ultralytics.cfg import entrypoint, get_cfg
from ultralytics.data.loaders import LoadImagesAndVideos
from ultralytics.engine.model import Model
from ultralytics.engine.trainer import BaseTrainer
from ultralytics.models.yolo.detect import DetectionPredictor, DetectionValidator
from ultralytics.nn import tasks
from ultralytics.nn.modules import Concat, Conv
from ultralytics.utils import callbacks, checks, torch_utils

import spd_yolo
from spd_yolo.cli.yolo import entrypoint_argv, entrypoint_model
from spd_yolo.engine import FITNESS_KEY, checkpoint_record
from spd_yolo.models import registry

STOCK_PARSE = registry._STOCK["parse_model"]  # ultralytics' own, as register() found it


def changed(what: str, detail: str) -> str:
    return f"ultralytics changed {what}: {detail} (SPD-YOLO relies on it, see docs/layout.md)"


def params(func) -> list[str]:
    return list(inspect.signature(func).parameters)


# ---------------------------------------------------------------------------------------------------------------------
# models/registry.py: the patches made by register()


def test_parse_model_builds_surrogate_rows_with_our_channel_bookkeeping():
    """SPD rows are rewritten into a 1x1 `Conv [c2]` (channels scaled by width, made divisible by 8, capped) and a
    `Concat` of s*s copies of the input; the stock parser must give them exactly those channels, and tag every layer
    with i, f, type and np (our layer table and the running-layer hook read them)."""
    d = {"nc": 2, "scales": {"n": [0.5, 0.25, 1024]}, "scale": "n",
         "backbone": [[-1, 1, "Conv", [64, 1]], [[0, 0, 0, 0], 1, "Concat", [1]]], "head": []}
    model, save = STOCK_PARSE(copy.deepcopy(d), 3, verbose=False)
    assert isinstance(model[0], Conv) and (model[0].conv.in_channels, model[0].conv.out_channels) == (3, 16), changed(
        "tasks.parse_model", f"a Conv [64] row at width 0.25 from 3 channels built {model[0]}")
    assert isinstance(model[1], Concat), changed("tasks.parse_model", "a Concat row no longer builds a Concat")
    assert model[1]([torch.zeros(1, 16, 2, 2)] * 4).shape[1] == 64, changed("Concat", "channels of 4 copies")
    assert all((m.i, m.f, m.type) == (i, r[0], type(m).__module__ + "." + type(m).__name__) and m.np >= 0
               for i, (m, r) in enumerate(zip(model, d["backbone"]))), changed(
        "tasks.parse_model", "the layers no longer carry i, f, type and np")
    assert save == [0, 0, 0, 0], changed("tasks.parse_model", f"the save list of a Concat of 4 copies is {save}")
    assert params(STOCK_PARSE)[:3] == ["d", "ch", "verbose"], changed("tasks.parse_model", "its signature")


def test_parse_model_builds_a_prefix_of_rows_and_fails_on_a_bad_row():
    """`_failing_layer` builds prefixes of the rows (an empty head) to find the row the stock parser fails on."""
    rows = [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "C3", ["wide"]]]
    model, _ = STOCK_PARSE({"nc": 2, "backbone": copy.deepcopy(rows[:1]), "head": []}, 3, verbose=False)
    assert len(model) == 1, changed("tasks.parse_model", "a dict with an empty head no longer builds its backbone")
    with pytest.raises(Exception):  # noqa: B017 - ultralytics' own error, whatever its type
        STOCK_PARSE({"nc": 2, "backbone": copy.deepcopy(rows), "head": []}, 3, verbose=False)
    d = {"nc": 2, "backbone": rows, "head": [[-1, 1, "Conv", [8, 1]]]}
    assert registry._failing_layer(d, 3) == 1


def test_parse_model_sets_conv_default_act_from_the_yaml():
    """`parse_model` sets the process-wide ``Conv.default_act`` from 'activation' (our wrapper restores it after a
    failed build) and restores it after a successful one."""
    before = Conv.default_act
    seen = []
    d = {"nc": 2, "activation": "nn.ReLU()", "backbone": [[-1, 1, "Conv", [8, 3, 2]]], "head": []}
    model, _ = STOCK_PARSE(d, 3, verbose=False)
    seen.append(type(model[0].act))
    assert seen == [nn.ReLU], changed("tasks.parse_model", "'activation' no longer sets Conv.default_act")
    assert Conv.default_act is before, changed("tasks.parse_model", "Conv.default_act is not restored on success")


def test_get_flops_is_what_model_info_calls():
    """`torch_utils.get_flops` is replaced: stock, an SPD stem makes the dummy input 12 channels and it reports 0.0;
    `model_info` (Model.info, the trainer's log) must look it up in its module when called."""
    model = spd_yolo.build_model("yolov5n-SPD")
    assert registry._STOCK["get_flops"](model, 64) == 0.0, changed(
        "torch_utils.get_flops", "it now counts SPD models itself: registry.get_flops may be dropped")
    assert params(registry._STOCK["get_flops"]) == ["model", "imgsz"], changed("torch_utils.get_flops", "signature")
    assert "get_flops(model" in inspect.getsource(torch_utils.model_info), changed(
        "torch_utils.model_info", "no longer calls get_flops")
    assert torch_utils.model_info(model, verbose=True, imgsz=64)[3] > 0, changed(
        "torch_utils.model_info", "reports 0 GFLOPs for an SPD model with get_flops replaced")


def test_yaml_model_load_returns_scale_and_file_and_is_imported_by_name():
    """`tasks.yaml_model_load` is wrapped (scale from the file name only) and rebound where it was imported."""
    d = registry._STOCK["yaml_model_load"](spd_yolo.CONFIG_DIR / "yolov5-SPD.yaml")
    assert {"backbone", "head", "scale", "yaml_file"} <= set(d), changed("tasks.yaml_model_load", f"keys {sorted(d)}")
    assert tasks.guess_model_scale("x/yolov5s-SPD.yaml") == "s", changed("tasks.guess_model_scale", "scale of a name")
    import ultralytics.engine.model as engine_model

    assert getattr(engine_model, "yaml_model_load", None) is tasks.yaml_model_load is registry.yaml_model_load, changed(
        "ultralytics.engine.model", "it no longer imports yaml_model_load by name (the rebinding in register())")


def test_check_font_is_imported_by_name_where_fonts_are_needed():
    """`checks.check_font` is wrapped (no download while offline) and rebound in the modules that imported it."""
    import ultralytics.data.utils as data_utils
    from ultralytics.utils import plotting

    for module in (checks, data_utils, plotting):
        assert getattr(module, "check_font", None) is registry.check_font, changed(
            f"{module.__name__}.check_font", "no longer a module global that register() can rebind")
    assert params(registry._STOCK["check_font"]) == ["font"], changed("checks.check_font", "signature")


def test_safe_load_allows_our_layers_through_torch_safe_globals(tmp_path):
    """With ``safe_only`` (ULTRALYTICS_SAFE_LOAD=1) ultralytics unpickles against torch's allow-list, to which
    register() adds our layers."""
    path = tmp_path / "m.pt"
    torch.save({"model": spd_yolo.build_model("yolov5n-SPD"), "train_args": {}}, path)
    ckpt, _ = tasks.torch_safe_load(path, safe_only=True)
    assert any(isinstance(m, spd_yolo.SPDConv) for m in ckpt["model"].modules()), changed(
        "tasks.torch_safe_load", "safe_only no longer loads an SPD checkpoint with our safe globals")


def test_settings_are_module_globals_read_at_import():
    """`apply_settings` sets AUTOINSTALL / ONLINE in every loaded ultralytics module and turns usage events off."""
    import ultralytics.utils as ul_utils
    from ultralytics.utils import events

    assert isinstance(ul_utils.AUTOINSTALL, bool) and isinstance(ul_utils.ONLINE, bool), changed(
        "ultralytics.utils", "AUTOINSTALL / ONLINE are no longer module-level booleans")
    assert isinstance(checks.AUTOINSTALL, bool) and isinstance(getattr(events.events, "enabled", None), bool), changed(
        "ultralytics.utils.checks.AUTOINSTALL / events.events.enabled", "no longer where apply_settings sets them")
    registry.apply_settings()
    assert ul_utils.ONLINE is False and events.events.enabled is False  # the test environment sets YOLO_OFFLINE=1


# ---------------------------------------------------------------------------------------------------------------------
# spd_yolo/engine: trainer and validator hooks


def test_trainer_writes_checkpoints_through_path_write_bytes():
    """`FaultTolerantTrainer` makes ``wdir`` an `AtomicPath`: BaseTrainer.save_model must write last.pt, best.pt and
    epochN.pt with ``Path.write_bytes`` of self.last / self.best / self.wdir / name."""
    src = inspect.getsource(BaseTrainer.save_model)
    epoch_pt = '(self.wdir / f"epoch{self.epoch}.pt").write_bytes('
    for call in ("self.last.write_bytes(", "self.best.write_bytes(", epoch_pt):
        assert call in src, changed("BaseTrainer.save_model", f"it no longer writes with {call}...)")
    assert "deepcopy(ema)" in src and '"ema": ema' in src, changed(
        "BaseTrainer.save_model", "ckpt['ema'] is no longer a copy of self.ema.ema (our records are its attributes)")


def test_final_eval_strips_the_files_named_by_last_and_best_in_place(tmp_path):
    """`FaultTolerantTrainer.final_eval` points ``self.last`` / ``self.best`` at copies while ultralytics' final_eval
    strips them (renamed over the originals after): `strip_optimizer` must rewrite the file it is given, in place, and
    keep the EMA model, with our record attributes, as ckpt['model']; final_eval must take the paths from those two
    attributes."""
    model = nn.Sequential(nn.Linear(2, 2))
    setattr(model, FITNESS_KEY, {"name": "ap"})
    path = tmp_path / ".last.stripping.pt"
    torch.save({"model": None, "ema": model, "optimizer": {"state": 1}, "train_args": {}}, path)
    torch_utils.strip_optimizer(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], changed(
        "torch_utils.strip_optimizer", "it no longer rewrites the file it is given in place")
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["optimizer"] is None, changed("torch_utils.strip_optimizer", "it no longer drops the optimizer")
    assert checkpoint_record(ckpt, FITNESS_KEY) == {"name": "ap"}, changed(
        "torch_utils.strip_optimizer", "ckpt['model'] is no longer the EMA model with its attributes")
    src = inspect.getsource(BaseTrainer.final_eval)
    assert "strip_optimizer(self.last)" in src and "strip_optimizer(self.best" in src, changed(
        "BaseTrainer.final_eval", "it no longer strips the files named by self.last / self.best")


def test_pretrain_routine_end_runs_after_metrics_and_validator_are_set():
    """`SPDDetectionTrainer.before_first_epoch` runs on ``on_pretrain_routine_end``: after self.validator and
    self.metrics exist (it adds the COCO columns to self.metrics)."""
    src = inspect.getsource(BaseTrainer._setup_train)
    end = src.find('run_callbacks("on_pretrain_routine_end")')
    assert 0 < src.find("self.validator = ") < end and 0 < src.find("self.metrics = ") < end, changed(
        "BaseTrainer._setup_train", "on_pretrain_routine_end no longer follows the validator and metrics set-up")
    assert "on_pretrain_routine_end" in callbacks.get_default_callbacks(), changed("callbacks", "the event is gone")


@pytest.mark.parametrize("cls,method,expected", [
    (BaseTrainer, "resume_training", ["self", "ckpt"]),
    (BaseTrainer, "final_eval", ["self"]),
    (BaseTrainer, "save_model", ["self"]),
    (BaseTrainer, "build_optimizer", ["self", "model", "name", "lr", "momentum", "decay", "iterations"]),
    (BaseTrainer, "optimizer_step", ["self"]),
    (DetectionValidator, "init_metrics", ["self", "model"]),
    (DetectionValidator, "update_metrics", ["self", "preds", "batch"]),
    (DetectionValidator, "pred_to_json", ["self", "predn", "pbatch"]),
    (DetectionValidator, "gather_stats", ["self"]),
    (DetectionValidator, "get_stats", ["self"]),
    (DetectionValidator, "eval_json", ["self", "stats"]),
    (DetectionValidator, "_prepare_batch", ["self", "si", "batch"]),
    (DetectionValidator, "_prepare_pred", ["self", "pred"]),
    (DetectionValidator, "scale_preds", ["self", "predn", "pbatch"]),
])
def test_overridden_and_called_methods_keep_their_signature(cls, method, expected):
    """The trainer and validator methods that our engine classes override or call."""
    assert params(getattr(cls, method)) == expected, changed(f"{cls.__name__}.{method}", "its parameters")


def test_validator_pred_to_json_and_prepare_batch_give_what_coco_metrics_read():
    """Training-time COCO metrics call `_prepare_batch`, `_prepare_pred`, `scale_preds` and `pred_to_json`: one
    jdict entry per box, category from ``class_map``, ``pbatch['im_file']`` naming the image."""
    v = DetectionValidator(args={"single_cls": False})
    v.device, v.class_map, v.jdict = torch.device("cpu"), [5, 7], []
    batch = {"batch_idx": torch.tensor([0.0]), "cls": torch.tensor([[1.0]]), "bboxes": torch.tensor([[.5, .5, .5, .5]]),
             "ori_shape": [(20, 40)], "img": torch.zeros(1, 3, 32, 64), "ratio_pad": [((1.6, 1.6), (0.0, 0.0))],
             "im_file": ["d/a/7.jpg"]}
    pbatch = v._prepare_batch(0, batch)
    assert pbatch["im_file"] == "d/a/7.jpg", changed("DetectionValidator._prepare_batch", "no 'im_file'")
    pred = v._prepare_pred({"bboxes": torch.tensor([[16.0, 8.0, 48.0, 24.0]]), "conf": torch.tensor([0.9]),
                            "cls": torch.tensor([1.0])})
    v.pred_to_json(v.scale_preds(pred, pbatch), pbatch)
    assert len(v.jdict) == 1 and v.jdict[0]["category_id"] == 7 and v.jdict[0]["file_name"] == "7.jpg", changed(
        "DetectionValidator.pred_to_json", f"entries {v.jdict}")
    assert v.jdict[0]["bbox"] == pytest.approx([10.0, 5.0, 20.0, 10.0]), changed(
        "DetectionValidator.scale_preds / pred_to_json", f"box {v.jdict[0]['bbox']} (xywh at the original size)")


def test_detection_loss_has_the_bce_that_label_smoothing_replaces():
    """`label_smoothing` sets ``model.criterion = model.init_criterion()`` and replaces its ``bce``."""
    model = tasks.DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.args = get_cfg()  # as the trainer sets it: the loss reads its gains
    criterion = model.init_criterion()
    assert isinstance(getattr(criterion, "bce", None), nn.BCEWithLogitsLoss), changed(
        "v8DetectionLoss", "no bce attribute (BCEWithLogitsLoss) for label smoothing to replace")


# ---------------------------------------------------------------------------------------------------------------------
# spd_yolo/cli/yolo.py and spd_yolo/model.py


class _Built(Exception):
    pass


def test_entrypoint_reads_argv_and_imports_yolo_when_called():
    """`spd-yolo` swaps ``ultralytics.cfg.ARGV`` and ``ultralytics.YOLO`` while the entrypoint runs: it must read
    both at call time."""
    seen = []

    class Probe:
        def __init__(self, model, task=None, **kwargs):
            seen.append(model)
            raise _Built

    with entrypoint_model(Probe), entrypoint_argv(["predict", "model=probe.pt"]), pytest.raises(_Built):
        entrypoint()
    assert seen == ["probe.pt"], changed("ultralytics.cfg.entrypoint", "it no longer builds ultralytics.YOLO(model)")


def test_entrypoint_raises_syntax_error_for_an_unknown_bare_word():
    """`spd-yolo` reports a SyntaxError from the entrypoint as ultralytics' argument error (no traceback)."""
    with entrypoint_argv(["detect", "trian"]), pytest.raises(SyntaxError, match="'trian' is not a valid YOLO argument"):
        entrypoint()


@pytest.mark.parametrize("method,expected", [
    ("_new", ["self", "cfg", "task", "verbose"]),
    ("_load", ["self", "weights", "task"]),
    ("_check_is_pytorch_model", ["self"]),
    ("_reset_ckpt_args", ["args"]),
])
def test_model_private_methods_we_override_or_call(method, expected):
    """`spd_yolo.YOLO` overrides ``Model._new`` / ``_load`` (our names, weights-only files, clear errors) and calls
    ``_check_is_pytorch_model`` / ``_reset_ckpt_args``; ultralytics offers no public hook for either."""
    assert hasattr(Model, method) and params(getattr(Model, method)) == expected, changed(f"Model.{method}",
                                                                                        "its parameters")


def test_predictor_hooks_and_loader_attributes_of_sliced_inference():
    """`SlicedPredictor` overrides setup_source / inference / postprocess / stream of the stock predictor and reads
    the loader's ``files`` / ``video_flag`` and the predictor's ``batch``."""
    for method in ("setup_source", "inference", "postprocess", "stream_inference"):
        assert callable(getattr(DetectionPredictor, method, None)), changed(f"DetectionPredictor.{method}", "gone")
    assert params(DetectionPredictor.postprocess)[:4] == ["self", "preds", "img", "orig_imgs"], changed(
        "DetectionPredictor.postprocess", "its parameters")
    src = inspect.getsource(LoadImagesAndVideos.__init__)
    assert "self.files" in src and "self.video_flag" in src, changed("LoadImagesAndVideos", "files / video_flag")


def test_openvino_backend_runs_the_compiled_model_we_replace():
    """`export_check.load_backend` recompiles an OpenVINO export at fp32 and puts it in
    ``AutoBackend.backend.ov_compiled_model``: the backend must keep its compiled model there and run it in forward."""
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.nn.backends.openvino import OpenVINOBackend

    assert AutoBackend._BACKEND_MAP.get("openvino") is OpenVINOBackend, changed(
        "AutoBackend._BACKEND_MAP", "OpenVINO exports no longer run through OpenVINOBackend")
    assert "self.backend = self._BACKEND_MAP[" in inspect.getsource(AutoBackend.__init__), changed(
        "AutoBackend.__init__", "the format's backend is no longer AutoBackend.backend")
    assert "self.ov_compiled_model(im)" in inspect.getsource(OpenVINOBackend.forward), changed(
        "OpenVINOBackend.forward", "it no longer runs self.ov_compiled_model")
