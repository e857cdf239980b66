# SPD-YOLO, AGPL-3.0 license
"""Checks of a model YAML's content before ultralytics parses it: top-level keys, every row's layout and the
arguments of our layers. Each error is one `SPDConfigError` naming the file, the layer and what is expected.

Plain Python: no ultralytics import; `spd_yolo.models.registry` passes in its parser rules and which module names the
stock parser resolves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

from torch import nn

from spd_yolo.errors import SPDConfigError

__all__ = (
    "authors_spd_args",
    "check_model_dict",
    "check_rows",
    "is_int",
    "resnet_stage_args",
    "resnet_stem_args",
    "spd_args",
    "spdconv_args",
    "spdgroupconv_args",
    "yaml_name",
)


# ---------------------------------------------------------------------------------------------------------------------
# Arguments of our layers: each returns the normalised argument list or raises ValueError with what is expected.


def is_int(x) -> bool:
    """Whether x is an int and not a bool (YAML true/false)."""
    return isinstance(x, int) and not isinstance(x, bool)


def spdconv_args(args: list, g_default: str = "1") -> list:
    """[c2, k=3, s=2, p=None, g=1, d=1, act=True] -> validated copy."""
    names = ("c2", "k", "s", "p", "g", "d", "act")
    if not 1 <= len(args) <= len(names):
        raise ValueError(f"expected [c2, k=3, s=2, p=None, g={g_default}, d=1, act=True] (1 to 7 values), got {args!r}")
    for name, value in zip(names, args):
        if name == "p":
            ok = value is None or (is_int(value) and value >= 0)
        elif name == "act":
            ok = isinstance(value, (bool, nn.Module))
        else:
            ok = is_int(value) and value >= 1
        if not ok:
            want = {"p": "None or an integer >= 0", "act": "true/false"}.get(name, "an integer >= 1")
            raise ValueError(f"argument {name}={value!r} must be {want} (args {args!r})")
    return list(args)


def spdgroupconv_args(args: list) -> list:
    """SPDGroupConv [c2, k=3, s=2, p=None, g=s*s, d=1, act=True] -> validated copy."""
    return spdconv_args(args, g_default="s*s")


def spd_args(args: list) -> list:
    """SpaceToDepth [s=2] -> [s]."""
    if len(args) > 1 or (args and not (is_int(args[0]) and args[0] >= 1)):
        raise ValueError(f"expected [] or [s] with the block size s an integer >= 1, got {args!r}")
    return [args[0] if args else 2]


def authors_spd_args(args: list) -> list:
    """space_to_depth [dimension=1] (the paper authors' signature; dimension is unused) -> [2]."""
    if len(args) > 1 or (args and not is_int(args[0])):
        raise ValueError(f"expected [] or [dimension] with an integer dimension (unused), got {args!r}")
    return [2]


def resnet_stem_args(args: list) -> list:
    """ResNetStem [c2, k=3, spd=true] -> validated [c2, k, spd]."""
    if not 1 <= len(args) <= 3:
        raise ValueError(f"expected [c2, k=3, spd=true] (1 to 3 values), got {args!r}")
    c2, k, spd = [*args, *(3, True)[len(args) - 1:]]
    for name, value in (("c2", c2), ("k", k)):
        if not (is_int(value) and value >= 1):
            raise ValueError(f"argument {name}={value!r} must be an integer >= 1 (args {args!r})")
    if k % 2 == 0:
        raise ValueError(f"argument k={k} must be odd (same padding keeps the size) (args {args!r})")
    if not isinstance(spd, bool):
        # a ValueError, as from every argument check here (the parser turns them into one SPDConfigError)
        raise ValueError(f"argument spd={spd!r} must be true/false (args {args!r})")  # noqa: TRY004
    return [c2, k, spd]


def resnet_stage_args(args: list) -> list:
    """ResNetStage [c2, n=1, s=1, bottleneck=false, spd=true] -> validated [c2, n, s, bottleneck, spd]."""
    names, defaults = ("c2", "n", "s", "bottleneck", "spd"), (None, 1, 1, False, True)
    if not 1 <= len(args) <= len(names):
        raise ValueError(f"expected [c2, n=1, s=1, bottleneck=false, spd=true] (1 to 5 values), got {args!r}")
    full = [*args, *defaults[len(args):]]
    for name, value in zip(names, full):
        ok = isinstance(value, bool) if name in ("bottleneck", "spd") else is_int(value) and value >= 1
        if not ok:
            want = "true/false" if name in ("bottleneck", "spd") else "an integer >= 1"
            raise ValueError(f"argument {name}={value!r} must be {want} (args {args!r})")
    if full[3] and full[0] % 4:
        raise ValueError(f"argument c2={full[0]} must be divisible by 4 for bottleneck blocks (args {args!r})")
    return full


# ---------------------------------------------------------------------------------------------------------------------
# The model dict and its rows.


def yaml_name(d: dict) -> str:
    """The file a model dict was read from, for error messages (``<model dict>`` if none)."""
    return str(d.get("yaml_file") or "<model dict>")


def valid_from(x, i: int) -> bool:
    """Whether `x` is a valid 'from' entry of layer i: -1 for layer 0, else an earlier index or negative offset."""
    if not is_int(x):
        return False
    return x == -1 if i == 0 else (-i <= x < i)


def check_model_dict(d) -> None:
    """Top-level checks of a model YAML: backbone/head lists, nc, scales and the chosen scale. Errors name the file."""
    src = yaml_name(d) if isinstance(d, dict) else "<model>"
    if not isinstance(d, dict):
        raise SPDConfigError(
            f"{src}: a model YAML must be a mapping with 'nc', 'backbone' and 'head', got {type(d).__name__}"
        )
    for key in ("backbone", "head"):
        if not isinstance(d.get(key), list) or not d[key]:
            raise SPDConfigError(
                f"{src}: '{key}' must be a non-empty list of [from, number, module, args] rows, got {d.get(key)!r}"
            )
    nc = d.get("nc")
    if nc is not None and not (is_int(nc) and nc >= 1):
        raise SPDConfigError(f"{src}: 'nc' (number of classes) must be an integer >= 1, got {nc!r}")
    scales, scale = d.get("scales"), d.get("scale")
    if scales is not None:
        if not isinstance(scales, dict) or not all(
            isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
            for v in scales.values()
        ):
            raise SPDConfigError(
                f"{src}: 'scales' must map a scale name to [depth, width, max_channels], got {scales!r}"
            )
        if scale and scale not in scales:
            raise SPDConfigError(
                f"{src}: scale '{scale}' does not exist; this YAML defines {', '.join(map(str, scales))}"
            )


def check_rows(d: dict, rules: Mapping, is_stock: Callable[[str], bool]) -> list:
    """Validate every row of model dict `d` before any layer is built; return its rows, ours with normalised args.

    Args:
        d: the model dict (``backbone`` + ``head`` rows ``[from, number, module, args]``); not modified.
        rules: our module names -> rule with ``check_args(args) -> args`` (raises ValueError saying what is expected).
        is_stock: whether a module name is one the stock parser resolves (torch.nn, torchvision.ops, ultralytics).

    Raises:
        SPDConfigError: naming the file, the layer index and its module.
    """
    src = yaml_name(d)
    check_model_dict(d)
    rows = [list(r) if isinstance(r, (list, tuple)) else r for r in d["backbone"] + d["head"]]
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise SPDConfigError(f"{src}: layer {i}: expected a row [from, number, module, args], got {row!r}")
        f, n, m, args = row
        where = f"{src}: layer {i} ({m})"
        if not isinstance(m, str):
            raise SPDConfigError(f"{src}: layer {i}: module must be a name, got {m!r}")
        froms = f if isinstance(f, list) else [f]
        if not froms or not all(valid_from(x, i) for x in froms):
            raise SPDConfigError(
                f"{where}: 'from' {f!r} must be -1 or refer to an earlier layer: an index 0..{i - 1} or an offset "
                f"-1..-{i}; a layer can only take inputs from layers before it"
                if i
                else f"{where}: 'from' must be -1 (the input image) for the first layer, got {f!r}"
            )
        if not (is_int(n) and n >= 1):
            raise SPDConfigError(f"{where}: 'number' must be an integer >= 1, got {n!r}")
        if not isinstance(args, list):
            raise SPDConfigError(f"{where}: 'args' must be a list, got {args!r}")
        if m not in rules and not is_stock(m):
            ours = ", ".join(rules)
            raise SPDConfigError(
                f"{where}: unknown module '{m}'. Expected an ultralytics module (e.g. Conv, C3, C2f, Concat, Detect), "
                f"nn.<torch.nn class>, torchvision.ops.<op>, or an SPD layer ({ours})"
            )
        if m in rules:
            rows[i] = [f, n, m, _check_spd_row(where, rules[m], f, n, args)]
    return rows


def _check_spd_row(where: str, rule, f, n, args: list) -> list:
    """One SPD row: a single input, number 1, args as the rule's ``check_args`` wants them; returns the args."""
    if not is_int(f):
        raise SPDConfigError(f"{where}: takes exactly one input, so 'from' must be one index (e.g. -1), got {f!r}")
    if n != 1:
        raise SPDConfigError(f"{where}: 'number' must be 1 for an SPD layer (repeat it with separate rows), got {n}")
    try:
        return rule.check_args(args)
    except ValueError as e:
        raise SPDConfigError(f"{where}: {e}") from None
