# SPD-YOLO, AGPL-3.0 license
"""Bad model YAMLs fail with an SPDConfigError naming the file, the layer index and the module, and what is expected."""

import pytest
import torch
from ultralytics.nn.tasks import DetectionModel

import spd_yolo
from helpers import write_yaml
from spd_yolo import SPDConfigError

STEM = [-1, 1, "SPDConv", [16, 3, 2]]
HEAD = [[[-1], 1, "Detect", ["nc"]]]


def backbone_with(row, at_end=True):
    rows = [STEM, [-1, 1, "Conv", [32, 3, 1]], [-1, 1, "SpaceToDepth", [2]]]
    return rows + [row] if at_end else rows


CASES = {
    "unknown module": (
        [-1, 1, "SpaceToDeep", [2]], 3, "SpaceToDeep", r"unknown module 'SpaceToDeep'\. Expected an ultralytics module"
    ),
    "SpaceToDepth float scale": ([-1, 1, "SpaceToDepth", [2.5]], 3, "SpaceToDepth", r"expected \[\] or \[s\]"),
    "SpaceToDepth string scale": ([-1, 1, "SpaceToDepth", ["two"]], 3, "SpaceToDepth", r"block size s an integer"),
    "SpaceToDepth two args": ([-1, 1, "SpaceToDepth", [2, 2]], 3, "SpaceToDepth", r"got \[2, 2\]"),
    "SpaceToDepth zero": ([-1, 1, "SpaceToDepth", [0]], 3, "SpaceToDepth", r"integer >= 1"),
    "space_to_depth dimension": ([-1, 1, "space_to_depth", ["x"]], 3, "space_to_depth", r"integer dimension"),
    "SPDConv no args": ([-1, 1, "SPDConv", []], 3, "SPDConv", r"expected \[c2, k=3, s=2"),
    "SPDConv string c2": ([-1, 1, "SPDConv", ["64"]], 3, "SPDConv", r"argument c2='64' must be an integer >= 1"),
    "SPDConv float k": ([-1, 1, "SPDConv", [64, 3.5]], 3, "SPDConv", r"argument k=3\.5 must be an integer >= 1"),
    "SPDConv zero s": ([-1, 1, "SPDConv", [64, 3, 0]], 3, "SPDConv", r"argument s=0 must be an integer >= 1"),
    "SPDConv padding": ([-1, 1, "SPDConv", [64, 3, 2, "same"]], 3, "SPDConv", r"p='same' must be None or an integer"),
    "SPDConv act": ([-1, 1, "SPDConv", [64, 3, 2, None, 1, 1, "yes"]], 3, "SPDConv", r"act='yes' must be true/false"),
    "SPDConv too many": ([-1, 1, "SPDConv", [64, 3, 2, None, 1, 1, True, 9]], 3, "SPDConv", r"1 to 7 values"),
    "multi-input SpaceToDepth": (
        [[-1, 1], 1, "SpaceToDepth", [2]], 3, "SpaceToDepth", r"takes exactly one input, so 'from' must be one index"
    ),
    "multi-input SPDConv": ([[-1, 0], 1, "SPDConv", [32]], 3, "SPDConv", r"takes exactly one input"),
    "repeated SPD": ([-1, 2, "SpaceToDepth", [2]], 3, "SpaceToDepth", r"'number' must be 1 for an SPD layer"),
    "from points forward": ([5, 1, "Conv", [32]], 3, "Conv", r"'from' 5 must be -1 or refer to an earlier layer"),
    "from out of range": ([-9, 1, "Conv", [32]], 3, "Conv", r"an index 0\.\.2 or an offset -1\.\.-3"),
    "number not int": ([-1, "two", "C3", [32]], 3, "C3", r"'number' must be an integer >= 1"),
    "args not list": ([-1, 1, "Conv", 32], 3, "Conv", r"'args' must be a list"),
    "stock module bad args": ([-1, 1, "C3", ["wide"]], 3, "C3", r"could not be built"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_rows_name_file_layer_module(case, tmp_path):
    row, index, module, expected = CASES[case]
    cfg = write_yaml(tmp_path / "bad-model.yaml", backbone_with(row), HEAD)
    for build in (lambda: DetectionModel(str(cfg), verbose=False), lambda: spd_yolo.YOLO(cfg)):
        with pytest.raises(SPDConfigError) as err:
            build()
        msg = str(err.value)
        assert msg.startswith(f"{cfg}: layer {index} ({module})"), msg
        assert __import__("re").search(expected, msg), msg


def test_first_layer_from_must_be_input(tmp_path):
    cfg = write_yaml(tmp_path / "m.yaml", [[0, 1, "SPDConv", [16]]], HEAD)
    with pytest.raises(SPDConfigError, match=r"layer 0 \(SPDConv\): 'from' must be -1 \(the input image\)"):
        DetectionModel(str(cfg), verbose=False)


def test_missing_head_and_bad_row_shape(tmp_path):
    cfg = write_yaml(tmp_path / "m.yaml", [STEM], None)
    message = rf"{cfg}: 'head' must be a non-empty list of \[from, number, module, args\] rows"
    with pytest.raises(SPDConfigError, match=message):
        DetectionModel(str(cfg), verbose=False)
    cfg = write_yaml(tmp_path / "m.yaml", [STEM, [-1, 1, "Conv"]], HEAD)
    with pytest.raises(SPDConfigError, match=r"layer 1: expected a row \[from, number, module, args\]"):
        DetectionModel(str(cfg), verbose=False)


def test_dict_config_without_file(tmp_path):
    d = {"nc": 2, "backbone": [[-1, 1, "SpaceToDepth", [1.5]]], "head": HEAD}
    with pytest.raises(SPDConfigError, match=r"^<model dict>: layer 0 \(SpaceToDepth\)"):
        spd_yolo.build_model(d)


def test_errors_do_not_leak_the_parser_state(tmp_path):
    """A failed build leaves the parser usable: the next good build works and logs normally."""
    import logging

    from ultralytics.nn.modules import Conv

    logger, act = logging.getLogger("ultralytics"), Conv.default_act
    filters, handlers = list(logger.filters), list(logger.handlers)
    cfg = write_yaml(tmp_path / "bad.yaml", backbone_with([-1, 1, "C3", ["wide"]]), HEAD, activation="nn.ReLU()")
    with pytest.raises(SPDConfigError, match=r"layer 3 \(C3\)"):
        DetectionModel(str(cfg), verbose=True)
    assert logger.filters == filters and logger.handlers == handlers and Conv.default_act is act
    assert spd_yolo.build_model("yolov5n-SPD").stride.tolist() == [8.0, 16.0, 32.0]


def test_model_that_cannot_run_names_the_running_layer(tmp_path):
    """A model that builds but fails in its first forward pass (here a Concat of 1/2- and 1/4-size maps) is an error
    naming the layer that was running, recorded by a forward pre-hook that is removed afterwards."""
    backbone = [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "SPDConv", [8, 3, 2]]]
    head = [[[-1, 0], 1, "Concat", [1]], [-1, 1, "Classify", ["nc"]]]
    cfg = write_yaml(tmp_path / "m.yaml", backbone, head)
    with pytest.raises(SPDConfigError, match=rf"^{cfg}: the model builds but cannot run a 256x256 input \(at layer 2, "
                                             r"Concat\): RuntimeError"):
        spd_yolo.build_model(str(cfg))
    assert not torch.nn.modules.module._global_forward_pre_hooks


def test_check_rows_normalises_our_args_and_leaves_the_dict_alone():
    """`yaml_args.check_rows` (plain Python, before ultralytics sees the dict): our rows' args normalised, the
    caller's dict unchanged, an unknown module named with the rules it knows."""
    import copy

    from spd_yolo.models import registry, yaml_args

    d = {"nc": 2, "yaml_file": "m.yaml", "backbone": [[-1, 1, "SpaceToDepth", []], [-1, 1, "space_to_depth", [1]]],
         "head": [[-1, 1, "SPDConv", [8]], [-1, 1, "Conv", [8, 1]]]}
    before = copy.deepcopy(d)
    rows = yaml_args.check_rows(d, registry.PARSER_RULES, registry._stock_name)
    assert [r[3] for r in rows] == [[2], [2], [8], [8, 1]] and d == before
    d["head"][1][2] = "Conve"
    with pytest.raises(SPDConfigError, match=r"^m\.yaml: layer 3 \(Conve\): unknown module 'Conve'.*SPDConv, "):
        yaml_args.check_rows(d, registry.PARSER_RULES, registry._stock_name)
    assert yaml_args.is_int(3) and not yaml_args.is_int(True) and yaml_args.yaml_name({}) == "<model dict>"
