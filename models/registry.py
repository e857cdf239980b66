# SPD-YOLO, AGPL-3.0 license
"""The one place that makes SPD layers visible to ultralytics: YAML parser rules, GFLOPs, safe loading.

ultralytics' `parse_model` keeps its channel bookkeeping in local variables, so a new module cannot take part in it
directly. Instead each of our YAML rows is first rewritten into a *surrogate* stock row whose bookkeeping is exactly
ours, the stock parser builds the whole model, and the surrogate layers are then swapped for our modules:

- ``SPDConv [c2, k, s, ...]`` -> ``Conv [c2]``: input channels ch[f]; output channels scaled by width, made
  divisible by 8 and capped by max_channels, as for every ``Conv``. Built as ``SPDConv(ch[f], c2, k, s, ...)``.
- ``SPDGroupConv [c2, k, s, p, g, d, act]`` (g defaults to s*s) -> ``Conv [c2]`` as SPDConv. Built as
  ``SPDGroupConv(ch[f], c2, k, s, ...)``: SPD, phases interleaved, grouped conv (the stride-s conv's cost at g=s*s).
- ``SpaceToDepth [s]`` -> ``Concat`` of ``s*s`` copies of the input: output channels ``s*s*ch[f]``.
- ``space_to_depth [dimension]`` (the paper authors' row; dimension unused) -> as ``SpaceToDepth [2]``.
- ``ResNetStem [c2, k, spd]`` and ``ResNetStage [c2, n, s, bottleneck, spd]`` (the classification ResNets for small
  inputs) -> ``Conv [c2]`` as SPDConv; built as ``ResNetStem(ch[f], c2, ...)`` / ``ResNetStage(ch[f], c2, ...)``.

Stock YAMLs never reach that path and build exactly as without the plugin. `register()` patches five points of
ultralytics and is idempotent: ``tasks.parse_model`` (wrapped), ``torch_utils.get_flops`` (input channels taken from
the model YAML instead of the first weight, which an SPD stem makes 4x too large), ``yaml_model_load`` (wrapped: the
scale is taken off the file name, not the whole path, see `yaml_model_load`), ``checks.check_font`` (wrapped: no
font download while offline, see `check_font`) and torch's safe-globals allow-list (so ``ULTRALYTICS_SAFE_LOAD=1``
loads our checkpoints). `apply_settings()` makes an ultralytics that was
imported before us follow ``YOLO_OFFLINE`` / ``YOLO_AUTOINSTALL`` as the environment now says (ultralytics reads them
once, at its import).

Every row is checked before the stock parser runs (`spd_yolo.models.yaml_args`), so a bad row is an error naming
its file, layer and what is expected; a stock row that still fails to build is found by building prefixes of the
rows (`_failing_layer`). With SPD rows the layer table is printed from the built model, not the stock parser's log.
Every point where this module (or any other) reaches into ultralytics is listed in docs/layout.md and tested in
tests/test_ultralytics_compat.py.

Dependencies: this module imports the layers (`spd_yolo.layers`), `yaml_args` and ultralytics; the rest of the project
imports it.
"""

from __future__ import annotations

import copy
import re
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from ultralytics import utils as ul_utils
from ultralytics.nn import tasks
from ultralytics.nn.modules import Conv
from ultralytics.utils import LOGGER, checks, torch_utils

from spd_yolo import layers
from spd_yolo.errors import SPDConfigError
from spd_yolo.models.yaml_args import (
    authors_spd_args,
    check_rows,
    resnet_stage_args,
    resnet_stem_args,
    spd_args,
    spdconv_args,
    spdgroupconv_args,
    yaml_name,
)

__all__ = (
    "PARSER_RULES",
    "apply_settings",
    "check_font",
    "get_flops",
    "has_spd",
    "is_registered",
    "parse_model",
    "register",
    "yaml_model_load",
)


def _builder(cls: type) -> Callable[[nn.Module, list], tuple]:
    """Build `cls(c1, c2, *args[1:])` from a surrogate Conv(c1, c2): c1 and c2 carry the parser's bookkeeping."""

    def build(conv: nn.Module, args: list) -> tuple:
        resolved = [conv.conv.in_channels, conv.conv.out_channels, *args[1:]]
        return cls(*resolved), resolved

    build.__name__ = f"_build_{cls.__name__}"
    return build


# ---------------------------------------------------------------------------------------------------------------------
# Rules: one per YAML name.


@dataclass(frozen=True)
class ParserRule:
    """How one YAML module name of ours is parsed and built.

    Attributes:
        check_args: validates and normalises the YAML args (raises ValueError saying what is expected).
        surrogate: (f, args) -> the stock row whose channel bookkeeping equals ours.
        build: (built surrogate, args) -> (our module, its resolved args as the model summary shows them).
    """

    check_args: Callable[[list], list]
    surrogate: Callable[[int, list], list]
    build: Callable[[nn.Module, list], tuple]


def _build_spd(_: nn.Module, args: list) -> tuple:
    return layers.SpaceToDepth(args[0]), args


def _concat_of_copies(f: int, args: list) -> list:
    """s*s copies of the input concatenated: the parser then counts s*s*ch[f] output channels."""
    return [[f] * args[0] ** 2, 1, "Concat", [1]]


def _conv_of(f: int, args: list) -> list:
    """A 1x1 Conv to c2: the parser then applies width, make-divisible and max_channels to c2 as for any Conv."""
    return [f, 1, "Conv", [args[0], 1]]


def _rules() -> dict[str, ParserRule]:
    return {
        "SPDConv": ParserRule(spdconv_args, _conv_of, _builder(layers.SPDConv)),
        "SPDGroupConv": ParserRule(spdgroupconv_args, _conv_of, _builder(layers.SPDGroupConv)),
        "SpaceToDepth": ParserRule(spd_args, _concat_of_copies, _build_spd),
        "space_to_depth": ParserRule(authors_spd_args, _concat_of_copies, _build_spd),
        # ResNet for small inputs (classification): output channels c2 scaled like a Conv, input channels ch[f]
        "ResNetStem": ParserRule(resnet_stem_args, _conv_of, _builder(layers.ResNetStem)),
        "ResNetStage": ParserRule(resnet_stage_args, _conv_of, _builder(layers.ResNetStage)),
    }


PARSER_RULES: dict[str, ParserRule] = {}  # filled by register()


# ---------------------------------------------------------------------------------------------------------------------
# The parse_model wrapper.


def _stock_name(m: str) -> bool:
    """Whether the stock parser resolves module name `m` (torch.nn.*, torchvision.ops.*, a class in its module)."""
    if m.startswith("nn."):
        return isinstance(getattr(nn, m[3:], None), type)
    if m.startswith("torchvision.ops."):
        import torchvision  # as ultralytics imports it: only for a row that names one of its ops

        return hasattr(torchvision.ops, m[16:])
    return isinstance(vars(tasks).get(m), type)


def _rewrite_spd_rows(d: dict, rows: list) -> dict[int, tuple]:
    """Replace our rows (already checked by `check_rows`) in `d` by surrogate stock rows; return {index: (rule, f,
    args)}."""
    ours, nb = {}, len(d["backbone"])
    for i, (f, _, m, args) in enumerate(rows):
        rule = PARSER_RULES.get(m)
        if rule is not None:
            part, j = ("backbone", i) if i < nb else ("head", i - nb)
            d[part][j] = rule.surrogate(f, args)
            ours[i] = (rule, f, args)
    return ours


@contextmanager
def _default_act_kept():
    """Restore ``Conv.default_act`` on leaving: the stock parser sets it from the YAML's 'activation' and restores it
    only when it returns, so a failed build would leave every later Conv with that activation."""
    default_act = Conv.default_act
    try:
        yield
    finally:
        Conv.default_act = default_act


def _failing_layer(d: dict, ch) -> int | None:
    """Index of the row the stock parser fails on: the shortest prefix of rows that does not build ends with it.

    Rows only take inputs from earlier rows (`check_rows`), so every prefix is a model dict of its own; bisection
    needs about log2(rows) stock builds, made only after a build failed. None if the whole dict builds here.
    """
    rows = d["backbone"] + d["head"]

    def fails(k: int) -> bool:
        prefix = copy.deepcopy({**d, "backbone": rows[:k], "head": []})
        try:
            with _default_act_kept():
                _STOCK["parse_model"](prefix, ch, verbose=False)
        except Exception:  # noqa: BLE001 - the prefix that fails first, whatever the error
            return True
        return False

    if not fails(len(rows)):
        return None
    lo, hi = 0, len(rows)  # prefix of lo rows builds, of hi rows fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fails(mid) else (mid, hi)
    return hi - 1


def _depth_gain(d: dict) -> float:
    """The YAML's depth multiple at its scale (the first scale when none is chosen, as ultralytics assumes)."""
    scales = d.get("scales")
    if scales:
        return scales[d.get("scale") or next(iter(scales))][0]
    return d.get("depth_multiple", 1.0)


def _log_summary(model: nn.Sequential, rows: list, shown: dict[int, list], depth: float) -> None:
    """The per-layer table ultralytics prints, made from the built modules (index, from, params, type): repeats
    scaled by depth, arguments as resolved for our layers and as the YAML writes them for stock ones."""
    head = "arguments (SPD rows resolved, stock rows as the YAML writes them)"
    LOGGER.info(f"\n{'':>3}{'from':>20}{'n':>3}{'params':>10}  {'module':<45}{head}")
    for i, (m, (_, n, _, args)) in enumerate(zip(model, rows)):
        n_ = max(round(n * depth), 1) if n > 1 else n
        LOGGER.info(f"{i:>3}{m.f!s:>20}{n_:>3}{m.np:10.0f}  {m.type:<45}{shown.get(i, args)!s:<30}")


def parse_model(d, ch, verbose=True):
    """ultralytics `parse_model` that also understands SPD rows (see the module docstring). Same signature/returns.

    Every row is checked first (`yaml_args.check_rows`); a stock row the stock parser still cannot build is found by
    `_failing_layer`. With SPD rows and ``verbose``, the layer table is printed from the built model (`_log_summary`),
    since the stock parser's own table would show the surrogates.
    """
    stock = _STOCK["parse_model"]
    rows = check_rows(d, PARSER_RULES, _stock_name)
    d = copy.deepcopy({**d, "backbone": list(d["backbone"]), "head": list(d["head"])})  # the caller's dict unchanged
    ours = _rewrite_spd_rows(d, rows)
    pristine = copy.deepcopy(d)  # the stock parser edits the rows' args in place; `_failing_layer` needs them as read
    try:
        with _default_act_kept():
            model, save = stock(d, ch, verbose=verbose and not ours)
    except SPDConfigError:
        raise
    except Exception as e:
        i = _failing_layer(pristine, ch)
        where = f"layer {i} ({rows[i][2]}) with args {rows[i][3]!r}" if i is not None else "a layer"
        raise SPDConfigError(f"{yaml_name(d)}: {where} could not be built: {type(e).__name__}: {e}") from e

    shown = {}
    for i, (rule, f, args) in ours.items():
        try:
            new, shown[i] = rule.build(model[i], args)
        except Exception as e:  # e.g. groups that do not divide the channels the parser worked out
            raise SPDConfigError(
                f"{yaml_name(d)}: layer {i} ({rows[i][2]}) with args {rows[i][3]!r} could not be built: "
                f"{type(e).__name__}: {e}"
            ) from e
        new.np = sum(p.numel() for p in new.parameters())
        new.i, new.f, new.type = i, f, f"{layers.__name__}.{type(new).__name__}"  # its public name
        for layer in new.modules():
            if isinstance(layer, layers.SpaceToDepth):  # its size error then names the model layer
                layer.spd_layer_index = i
        model[i] = new
    if verbose and ours:
        if d.get("activation"):
            LOGGER.info(f"activation: {d['activation']}")
        _log_summary(model, rows, shown, _depth_gain(d))
    return model, sorted(set(save)) if ours else save  # a surrogate Concat lists its input s*s times


# ---------------------------------------------------------------------------------------------------------------------
# GFLOPs with the right number of input channels.


def has_spd(model: nn.Module) -> bool:
    """Whether `model` holds an SPD layer (every one of them, SPDConv and SPDGroupConv too, holds a SpaceToDepth)."""
    return any(isinstance(m, layers.SpaceToDepth) for m in model.modules())


def get_flops(model, imgsz=640):
    """GFLOPs as ultralytics computes them, with the input channels of the model YAML for SPD models.

    Stock `get_flops` builds its dummy input from the first weight's input channels, which an SPD stem makes 12
    instead of 3, so profiling fails and it reports 0.0. Non-SPD models go to the stock function unchanged.
    """
    stock = _STOCK["get_flops"]
    inner = torch_utils.unwrap_model(model)
    if not has_spd(inner):
        return stock(model, imgsz)
    try:
        import thop

        p = next(inner.parameters())
        ch = int(getattr(inner, "yaml", {}).get("channels", 3))
        imgsz = list(imgsz) if isinstance(imgsz, (list, tuple)) else [imgsz, imgsz]
        stride = max(int(inner.stride.max()), 32) if hasattr(inner, "stride") else 32
        im = torch.empty((1, ch, *imgsz), device=p.device, dtype=p.dtype)
        return thop.profile(inner, inputs=[im], stride=stride, verbose=False)[0] / 1e9 * 2
    except Exception:  # noqa: BLE001 - the stock counter's contract: 0.0 when the model cannot be profiled here
        return 0.0


SCALED_NAME = re.compile(r"(\d+)([nslmx])(.+)?$")  # ultralytics' rule: yolov5s-SPD.yaml -> yolov5-SPD.yaml, scale s


def yaml_model_load(path):
    """ultralytics' `yaml_model_load`, with a scaled name's family file found from the file name alone.

    ultralytics maps ``yolov5n-SPD.yaml`` to ``yolov5-SPD.yaml`` with a regex over the whole path string, so any folder
    with a digit followed by n, s, m, l or x in the path (``/tmp/env.4mTV/``, ``/home/me/2nd/``) breaks every scaled
    name in it, our installed ones included. When `path` names no file but its family file exists beside it, that file
    is loaded and the scale and ``yaml_file`` are set as ultralytics sets them; anything else goes to ultralytics.
    """
    p = Path(path)
    family = p.with_name(SCALED_NAME.sub(r"\1\3", p.name))
    if p.parent != Path(".") and family != p and not p.is_file() and family.is_file():
        d = _STOCK["yaml_model_load"](family)
        d["scale"], d["yaml_file"] = tasks.guess_model_scale(p), str(p)
        return d
    return _STOCK["yaml_model_load"](path)


def check_font(font: str = "Arial.ttf"):
    """ultralytics' `check_font`, which while ``YOLO_OFFLINE`` is set only looks on this machine.

    The stock function asks the network for a font it has not cached (a HEAD request to ultralytics' assets, then a
    download), whatever ``YOLO_OFFLINE`` says; it runs in every dataset check (``check_det_dataset``) and plot. Offline,
    a font that is neither in ultralytics' settings folder nor among matplotlib's fonts is None, which both of its
    callers take as "use PIL's default font". Online, the stock function runs unchanged.
    """
    if not ul_utils.env_bool("YOLO_OFFLINE"):
        return _STOCK["check_font"](font)
    file = ul_utils.USER_CONFIG_DIR / Path(font).name
    if file.exists():
        return file
    from matplotlib import font_manager  # as ultralytics imports it: only when a font is needed

    return next((f.fname for f in font_manager.fontManager.ttflist if font in f.fname and Path(f.fname).exists()), None)


# ---------------------------------------------------------------------------------------------------------------------
# Registration.

_STOCK: dict[str, Callable] = {}
_LOCK = threading.Lock()


def is_registered() -> bool:
    """Whether `register()` has run in this process."""
    return tasks.parse_model is parse_model


def apply_settings() -> None:
    """Make ultralytics follow ``YOLO_OFFLINE`` and ``YOLO_AUTOINSTALL`` as the environment says now.

    ultralytics reads both once, when it is imported, into module globals (``AUTOINSTALL``, ``ONLINE``, copied by
    ``from ... import`` into its other modules). When ultralytics was imported before us (e.g. it is unpickling one of
    our checkpoints), `spd_yolo` sets the variables' defaults too late for that read, so the globals are set here.
    """
    autoinstall, offline = ul_utils.env_bool("YOLO_AUTOINSTALL", True), ul_utils.env_bool("YOLO_OFFLINE")
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "ultralytics" or name.startswith("ultralytics.")):
            continue
        if isinstance(getattr(module, "AUTOINSTALL", None), bool):
            module.AUTOINSTALL = autoinstall
        if offline and getattr(module, "ONLINE", None) is True:
            module.ONLINE = False
    events = getattr(sys.modules.get("ultralytics.utils.events"), "events", None)
    if offline and events is not None:
        events.enabled = False  # usage events are decided when ultralytics loads; offline means none are sent


def register() -> None:
    """Make SPD layers usable in ultralytics (parser, GFLOPs, safe loading, settings). Idempotent and thread-safe."""
    with _LOCK:
        apply_settings()
        if not PARSER_RULES:
            PARSER_RULES.update(_rules())
        if tasks.parse_model is not parse_model:
            _STOCK["parse_model"] = tasks.parse_model
            tasks.parse_model = parse_model
        if torch_utils.get_flops is not get_flops:
            _STOCK["get_flops"] = torch_utils.get_flops
            torch_utils.get_flops = get_flops
        if tasks.yaml_model_load is not yaml_model_load:
            _STOCK["yaml_model_load"] = tasks.yaml_model_load
            tasks.yaml_model_load = yaml_model_load  # modules importing it from now on get ours
        if checks.check_font is not check_font:
            _STOCK["check_font"] = checks.check_font
            checks.check_font = check_font
        for name, module in list(sys.modules.items()):  # those that imported them already (ultralytics.engine.model)
            if not name.startswith("ultralytics"):
                continue
            if getattr(module, "yaml_model_load", None) is _STOCK["yaml_model_load"]:
                module.yaml_model_load = yaml_model_load
            if getattr(module, "check_font", None) is _STOCK["check_font"]:
                module.check_font = check_font  # ultralytics.data.utils, ultralytics.utils.plotting
        # ULTRALYTICS_SAFE_LOAD=1 unpickles with weights_only=True against an allow-list: add our layers to it.
        torch.serialization.add_safe_globals(list(layers.LAYERS))
