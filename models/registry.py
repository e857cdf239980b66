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

Dependencies: this module imports the layers (`spd_yolo.layers`) and ultralytics; the rest of the project imports it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from ultralytics import utils as ul_utils
from ultralytics.nn import tasks
from ultralytics.utils import LOGGER, checks, torch_utils

from spd_yolo import layers
from spd_yolo.errors import SPDConfigError

__all__ = (
    "PARSER_RULES",
    "register",
    "is_registered",
    "apply_settings",
    "parse_model",
    "get_flops",
    "yaml_model_load",
    "check_model_dict",
    "check_font",
    "has_spd",
)


# ---------------------------------------------------------------------------------------------------------------------
# Argument checks: each returns the normalised argument list or raises with what is expected.


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _spdconv_args(args: list, g_default: str = "1") -> list:
    """[c2, k=3, s=2, p=None, g=1, d=1, act=True] -> validated copy."""
    names = ("c2", "k", "s", "p", "g", "d", "act")
    if not 1 <= len(args) <= len(names):
        raise ValueError(f"expected [c2, k=3, s=2, p=None, g={g_default}, d=1, act=True] (1 to 7 values), got {args!r}")
    for name, value in zip(names, args):
        if name == "p":
            ok = value is None or (_is_int(value) and value >= 0)
        elif name == "act":
            ok = isinstance(value, (bool, nn.Module))
        else:
            ok = _is_int(value) and value >= 1
        if not ok:
            want = {"p": "None or an integer >= 0", "act": "true/false"}.get(name, "an integer >= 1")
            raise ValueError(f"argument {name}={value!r} must be {want} (args {args!r})")
    return list(args)


def _spdgroupconv_args(args: list) -> list:
    """SPDGroupConv [c2, k=3, s=2, p=None, g=s*s, d=1, act=True] -> validated copy."""
    return _spdconv_args(args, g_default="s*s")


def _spd_args(args: list) -> list:
    """SpaceToDepth [s=2] -> [s]."""
    if len(args) > 1 or (args and not (_is_int(args[0]) and args[0] >= 1)):
        raise ValueError(f"expected [] or [s] with the block size s an integer >= 1, got {args!r}")
    return [args[0] if args else 2]


def _authors_spd_args(args: list) -> list:
    """space_to_depth [dimension=1] (the paper authors' signature; dimension is unused) -> [2]."""
    if len(args) > 1 or (args and not _is_int(args[0])):
        raise ValueError(f"expected [] or [dimension] with an integer dimension (unused), got {args!r}")
    return [2]


def _resnet_stem_args(args: list) -> list:
    """ResNetStem [c2, k=3, spd=true] -> validated [c2, k, spd]."""
    if not 1 <= len(args) <= 3:
        raise ValueError(f"expected [c2, k=3, spd=true] (1 to 3 values), got {args!r}")
    c2, k, spd = [*args, *(3, True)[len(args) - 1:]]
    for name, value in (("c2", c2), ("k", k)):
        if not (_is_int(value) and value >= 1):
            raise ValueError(f"argument {name}={value!r} must be an integer >= 1 (args {args!r})")
    if k % 2 == 0:
        raise ValueError(f"argument k={k} must be odd (same padding keeps the size) (args {args!r})")
    if not isinstance(spd, bool):
        raise ValueError(f"argument spd={spd!r} must be true/false (args {args!r})")
    return [c2, k, spd]


def _resnet_stage_args(args: list) -> list:
    """ResNetStage [c2, n=1, s=1, bottleneck=false, spd=true] -> validated [c2, n, s, bottleneck, spd]."""
    names, defaults = ("c2", "n", "s", "bottleneck", "spd"), (None, 1, 1, False, True)
    if not 1 <= len(args) <= len(names):
        raise ValueError(f"expected [c2, n=1, s=1, bottleneck=false, spd=true] (1 to 5 values), got {args!r}")
    full = [*args, *defaults[len(args):]]
    for name, value in zip(names, full):
        ok = isinstance(value, bool) if name in ("bottleneck", "spd") else _is_int(value) and value >= 1
        if not ok:
            want = "true/false" if name in ("bottleneck", "spd") else "an integer >= 1"
            raise ValueError(f"argument {name}={value!r} must be {want} (args {args!r})")
    if full[3] and full[0] % 4:
        raise ValueError(f"argument c2={full[0]} must be divisible by 4 for bottleneck blocks (args {args!r})")
    return full


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
        "SPDConv": ParserRule(_spdconv_args, _conv_of, _builder(layers.SPDConv)),
        "SPDGroupConv": ParserRule(_spdgroupconv_args, _conv_of, _builder(layers.SPDGroupConv)),
        "SpaceToDepth": ParserRule(_spd_args, _concat_of_copies, _build_spd),
        "space_to_depth": ParserRule(_authors_spd_args, _concat_of_copies, _build_spd),
        # ResNet for small inputs (classification): output channels c2 scaled like a Conv, input channels ch[f]
        "ResNetStem": ParserRule(_resnet_stem_args, _conv_of, _builder(layers.ResNetStem)),
        "ResNetStage": ParserRule(_resnet_stage_args, _conv_of, _builder(layers.ResNetStage)),
    }


PARSER_RULES: dict[str, ParserRule] = {}  # filled by register()


# ---------------------------------------------------------------------------------------------------------------------
# The parse_model wrapper.


def _yaml_name(d: dict) -> str:
    return str(d.get("yaml_file") or "<model dict>")


def _resolvable(m: str) -> bool:
    """Whether the stock parser can resolve module name `m` (torch.nn.*, torchvision.ops.*, ultralytics)."""
    if m.startswith("nn."):
        return isinstance(getattr(nn, m[3:], None), type)
    if m.startswith("torchvision.ops."):
        import torchvision

        return hasattr(torchvision.ops, m[16:])
    return m in PARSER_RULES or isinstance(vars(tasks).get(m), type)


def _valid_from(x, i: int) -> bool:
    """Whether `x` is a valid 'from' entry of layer i: -1 for layer 0, else an earlier index or negative offset."""
    if not _is_int(x):
        return False
    return x == -1 if i == 0 else (-i <= x < i)


def check_model_dict(d) -> None:
    """Top-level checks of a model YAML: backbone/head lists, nc, scales and the chosen scale. Errors name the file."""
    src = _yaml_name(d) if isinstance(d, dict) else "<model>"
    if not isinstance(d, dict):
        raise SPDConfigError(f"{src}: a model YAML must be a mapping with 'nc', 'backbone' and 'head', got {type(d).__name__}")
    for key in ("backbone", "head"):
        if not isinstance(d.get(key), list) or not d[key]:
            raise SPDConfigError(f"{src}: '{key}' must be a non-empty list of [from, number, module, args] rows, got {d.get(key)!r}")
    nc = d.get("nc")
    if nc is not None and not (_is_int(nc) and nc >= 1):
        raise SPDConfigError(f"{src}: 'nc' (number of classes) must be an integer >= 1, got {nc!r}")
    scales, scale = d.get("scales"), d.get("scale")
    if scales is not None:
        if not isinstance(scales, dict) or not all(
            isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
            for v in scales.values()
        ):
            raise SPDConfigError(f"{src}: 'scales' must map a scale name to [depth, width, max_channels], got {scales!r}")
        if scale and scale not in scales:
            raise SPDConfigError(f"{src}: scale '{scale}' does not exist; this YAML defines {', '.join(map(str, scales))}")


def _check_rows(d: dict) -> list:
    """Validate the layout of every row (any YAML); return the rows. Errors name file, layer and module."""
    src = _yaml_name(d)
    check_model_dict(d)
    rows = d["backbone"] + d["head"]
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise SPDConfigError(f"{src}: layer {i}: expected a row [from, number, module, args], got {row!r}")
        f, n, m, args = row
        where = f"{src}: layer {i} ({m})"
        if not isinstance(m, str):
            raise SPDConfigError(f"{src}: layer {i}: module must be a name, got {m!r}")
        froms = f if isinstance(f, list) else [f]
        if not froms or not all(_valid_from(x, i) for x in froms):
            raise SPDConfigError(
                f"{where}: 'from' {f!r} must be -1 or refer to an earlier layer: an index 0..{i - 1} or an offset "
                f"-1..-{i}; a layer can only take inputs from layers before it"
                if i
                else f"{where}: 'from' must be -1 (the input image) for the first layer, got {f!r}"
            )
        if not (_is_int(n) and n >= 1):
            raise SPDConfigError(f"{where}: 'number' must be an integer >= 1, got {n!r}")
        if not isinstance(args, list):
            raise SPDConfigError(f"{where}: 'args' must be a list, got {args!r}")
        if not _resolvable(m):
            ours = ", ".join(PARSER_RULES)
            raise SPDConfigError(
                f"{where}: unknown module '{m}'. Expected an ultralytics module (e.g. Conv, C3, C2f, Concat, Detect), "
                f"nn.<torch.nn class>, torchvision.ops.<op>, or an SPD layer ({ours})"
            )
    return rows


def _rewrite_spd_rows(d: dict, rows: list) -> dict[int, tuple]:
    """Replace our rows in `d` by surrogate stock rows; return {index: (rule, f, args)}."""
    src, ours, nb = _yaml_name(d), {}, len(d["backbone"])
    for i, (f, n, m, args) in enumerate(rows):
        rule = PARSER_RULES.get(m)
        if rule is None:
            continue
        where = f"{src}: layer {i} ({m})"
        if not _is_int(f):
            raise SPDConfigError(f"{where}: takes exactly one input, so 'from' must be one index (e.g. -1), got {f!r}")
        if n != 1:
            raise SPDConfigError(f"{where}: 'number' must be 1 for an SPD layer (repeat it with separate rows), got {n}")
        try:
            args = rule.check_args(args)
        except ValueError as e:
            raise SPDConfigError(f"{where}: {e}") from None
        part, j = ("backbone", i) if i < nb else ("head", i - nb)
        d[part][j] = rule.surrogate(f, args)
        ours[i] = (rule, f, args)
    return ours


class _RowLog(logging.Filter):
    """Hold back the parser's log records of this thread, so our rows can be rewritten before they are shown."""

    def __init__(self):
        super().__init__()
        self.thread, self.records = threading.get_ident(), []

    def filter(self, record):
        if record.thread != self.thread:
            return True
        self.records.append(record)
        return False


def _failing_layer(tb):
    """Index of the row the stock parser was building when it raised, read from its frame (None if unknown)."""
    frame_locals = None
    while tb is not None:
        if tb.tb_frame.f_code is _STOCK["parse_model"].__code__:
            frame_locals = tb.tb_frame.f_locals
        tb = tb.tb_next
    i = (frame_locals or {}).get("i")
    return i if _is_int(i) else None


def parse_model(d, ch, verbose=True):
    """ultralytics `parse_model` that also understands SPD rows (see the module docstring). Same signature/returns."""
    stock = _STOCK["parse_model"]
    rows = _check_rows(d)
    d = {**d, "backbone": list(d["backbone"]), "head": list(d["head"])}  # surrogates never leak into the caller's dict
    ours = _rewrite_spd_rows(d, rows)
    capture = _RowLog() if verbose and ours else None
    if capture:
        LOGGER.addFilter(capture)
    try:
        model, save = stock(d, ch, verbose=verbose)
    except SPDConfigError:
        raise
    except Exception as e:
        i = _failing_layer(e.__traceback__)
        where = f"layer {i} ({rows[i][2]}) with args {rows[i][3]!r}" if i is not None and i < len(rows) else "a layer"
        raise SPDConfigError(f"{_yaml_name(d)}: {where} could not be built: {type(e).__name__}: {e}") from e
    finally:
        if capture:
            LOGGER.removeFilter(capture)

    shown = {}
    for i, (rule, f, args) in ours.items():
        try:
            new, shown[i] = rule.build(model[i], args)
        except Exception as e:  # e.g. groups that do not divide the channels the parser worked out
            raise SPDConfigError(
                f"{_yaml_name(d)}: layer {i} ({rows[i][2]}) with args {rows[i][3]!r} could not be built: "
                f"{type(e).__name__}: {e}"
            ) from e
        new.np = sum(p.numel() for p in new.parameters())
        new.i, new.f, new.type = i, f, f"{layers.__name__}.{type(new).__name__}"  # its public name
        for layer in new.modules():
            if isinstance(layer, layers.SpaceToDepth):  # its size error then names the model layer
                layer.spd_layer_index = i
        model[i] = new
    if capture:  # show the held-back summary, with our rows instead of their surrogates
        for record in capture.records:
            msg = record.getMessage()
            i = int(msg[:3]) if msg[:3].strip().isdigit() else None
            if i in shown:
                m_ = model[i]
                msg = f"{i:>3}{m_.f!s:>20}{1:>3}{m_.np:10.0f}  {m_.type:<45}{shown[i]!s:<30}"
            LOGGER.log(record.levelno, msg)
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
    except Exception:  # same contract as the stock counter: 0.0 when the model cannot be profiled at this size
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
