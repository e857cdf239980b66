# SPD-YOLO, AGPL-3.0 license
"""Exact SPD upgrade of a stock checkpoint: the SPD twin that computes what the stock model computes (the inverse of
`spd_yolo.rewrite.rewrite_spd`).

Two identities make it exact (real arithmetic; float32 changes only the summation order):

- A k x k stride-s convolution with padding p equals SpaceToDepth(s) followed by a stride-1 K x K convolution with
  padding P whose weight is the stock kernel re-indexed: stock tap ``a`` lands at ``A, i = divmod(a + s*P - p, s)``
  (tap A of the new kernel, row phase i; columns alike), in SPD block ``s*j + i`` (`SpaceToDepth`'s channel order).
  Taps no stock weight lands on start at zero. For yolov8/yolo11/yolo26 (3x3, s=2, p=1 into ``SPDConv [c2, 3, 2]``)
  five of the nine taps of each phase are zero; YOLOv5's 6x6 stem fills ``SPDConv [64, 3, 2]`` completely.
- A stride-s convolution equals the same convolution at stride 1 read at phase (0, 0). yolov5-SPD's ``Conv [c2, 3, 1]``
  + ``SpaceToDepth`` rows therefore take the stock ``Conv [c2, 3, 2]`` weights as they are, and the layer that reads
  the SPD output (a ``C3``, directly or through a ``Concat``) reads block 0 with the stock weights and the other three
  phases with zeros.

BatchNorm and activations are per channel and carry over. Every other layer must be the same row in both YAMLs
(family, scale and head: the *twin*), and takes the stock tensors unchanged. `upgrade_model` checks the result: the
twin's detection head inputs and raw outputs on a fixed random input must equal the stock ones within `TOLERANCE` of
their largest value.

The ``-lite`` models cannot hold a dense strided convolution (their convolutions are grouped), so they are refused.

Usage::

    python -m spd_yolo.upgrade yolo11n.pt yolo11n-SPD.pt            # --to defaults to the stock model's SPD twin
    spd-upgrade yolov5nu.pt v5-spd.pt --to yolov5n-SPD --overwrite

    from spd_yolo.upgrade import upgrade_checkpoint
    result = upgrade_checkpoint("yolo11n.pt", "yolo11n-SPD.pt")     # result.max_diff, result.record

Loading a stock checkpoint into its SPD twin elsewhere (``YOLO("yolo11n-SPD.yaml").load("yolo11n.pt")``, ``train.py
--cfg yolo11n-SPD --weights yolo11n.pt``, ``spd-yolo train model=yolo11n-SPD.yaml pretrained=yolo11n.pt``) goes through
`load_pretrained`, which upgrades exactly first and then lets ultralytics transfer the tensors (its rules for another
class count). Checkpoints record the upgrade under `RECORD_KEY`, with the masks of the zero-started weights that the
fine-tuning rule (`spd_yolo.engine`) uses.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch
from torch import nn
from ultralytics.nn.modules import Concat, Conv, Detect
from ultralytics.nn.tasks import guess_model_task, load_checkpoint
from ultralytics.utils import LOGGER

from spd_yolo.atomic import atomic_torch_save
from spd_yolo.checkpoint import checkpoint_errors
from spd_yolo.errors import SPDConfigError, SPDError, UpgradeError
from spd_yolo.layers import SPDConv
from spd_yolo.models.configs import available_models, build_model, load_model_yaml
from spd_yolo.models.registry import SCALED_NAME, has_spd
from spd_yolo.rewrite import input_convs

__all__ = (
    "DEFAULT_FINETUNE",
    "FINETUNE_RULES",
    "RECORD_KEY",
    "TOLERANCE",
    "FinetuneRule",
    "LayerPair",
    "Upgrade",
    "UpgradeResult",
    "cli",
    "load_pretrained",
    "main",
    "plan_upgrade",
    "prepare_pretrained",
    "spd_kernel",
    "twin_name",
    "upgrade_checkpoint",
    "upgrade_model",
)

RECORD_KEY = "spd_upgrade"
"""Checkpoint key (and model attribute) of an upgraded model: source file and SHA-256, target, tool version, layers
re-indexed, measured output difference, the masks of the zero-started weights and, once trained, the fine-tuning
rule."""
TOLERANCE = 1e-4
"""Largest accepted |stock - SPD| of what the detection head reads and returns (its input feature maps; box regression
and class logits of every branch), as a fraction of the largest such stock value (at least 1)."""
_CHECK_SHAPE = (256, 320)  # the verification input: non-square, a multiple of every stride (4 to 32)


@dataclass(frozen=True)
class FinetuneRule:
    """How training that starts from an exact SPD upgrade treats the weights the upgrade started at zero.

    optimizer: used instead of ultralytics' ``optimizer=auto`` ("auto": keep ultralytics' choice; an optimizer the
        user names always wins). hold: the fraction of the epochs during which those weights get no gradient, so they
        stay zero and the model trains exactly as the stock model would; then they are released.
    """

    optimizer: str
    hold: float

    def hold_epochs(self, epochs: int) -> int:
        return round(self.hold * epochs)


FINETUNE_RULES = {
    "none": FinetuneRule("auto", 0.0),  # ultralytics' defaults, every weight trained from the first step
    "sgd": FinetuneRule("SGD", 0.0),
    "sgd-hold": FinetuneRule("SGD", 0.5),
    "auto-hold": FinetuneRule("auto", 0.5),
}
"""Fine-tuning rules for a model that starts from an exact SPD upgrade (``train.py --upgrade-rule``)."""
DEFAULT_FINETUNE = "sgd"
"""The rule used unless another is asked for. Measured (benchmarks/bench_finetune.py, docs/benchmarks.md): under SGD the
upgraded yolov8n fine-tuned above stock fine-tuned alike (AP_S +0.8 ± 0.7, 3 seeds), under ultralytics' auto (AdamW)
not; holding the new taps first (sgd-hold) showed no difference from sgd, which had the higher mean."""


@dataclass(frozen=True)
class LayerPair:
    """One stock layer and the SPD layer that outputs the same thing.

    kind: "same" (identical row), "spdconv" (stride-s Conv -> SPDConv) or "conv+spd" (stride-s Conv -> stride-1 Conv,
    then SpaceToDepth at index ``spd``, whose phase (0, 0) block is the stock output).
    """

    kind: str
    stock: int
    spd: int


@dataclass
class Upgrade:
    """What `upgrade_model` made: the SPD model, what it re-indexed, and how closely it matches the stock model."""

    model: nn.Module
    reindexed: list[str]
    max_diff: float
    scale: float  # the largest |stock output|, to which TOLERANCE is relative
    new_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # state_dict name -> bool mask (broadcastable)

    @property
    def tolerance(self) -> float:
        return TOLERANCE * max(1.0, self.scale)

    def summary(self, source: str, target: str) -> str:
        """The one log line: which checkpoint, how many layers were re-indexed, the output difference."""
        return (f"SPD upgrade: {source} -> {target}, exact: {len(self.reindexed)} layers re-indexed, largest output "
                f"difference {self.max_diff:.2g} (tolerance {self.tolerance:.2g}; head inputs and outputs up to "
                f"{self.scale:.3g})")


# ---------------------------------------------------------------------------------------------------------------------
# The kernel identity.


def spd_kernel(weight: torch.Tensor, s: int, padding: tuple[int, int], kernel: tuple[int, int],
               spd_padding: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The stride-1 (kernel) weight after SpaceToDepth(s) equal to a stride-s convolution with `weight` and `padding`.

    weight (c2, c1, kh, kw) -> (weight (c2, s*s*c1, Kh, Kw), mask (1, s*s*c1, Kh, Kw): True where a stock tap landed).
    Stock tap (a, b) goes to tap (A, B) of block ``s*j + i`` with ``A, i = divmod(a + s*Ph - ph, s)`` and
    ``B, j = divmod(b + s*Pw - pw, s)``. Raises ValueError if a tap falls outside the new kernel or the two
    convolutions would not give the same output size.
    """
    c2, c1, kh, kw = weight.shape
    (ph, pw), (Kh, Kw), (Ph, Pw) = padding, kernel, spd_padding
    for k, p, K, P, dim in ((kh, ph, Kh, Ph, "rows"), (kw, pw, Kw, Pw, "columns")):
        if (2 * p - k) // s != 2 * P - K:  # output size floor((H + 2p - k)/s) + 1 vs H/s + 2P - K + 1, H = s*h
            raise ValueError(f"a {k}-tap stride-{s} conv padded by {p} and SPD + a {K}-tap conv padded by {P} give "
                             f"different output sizes ({dim})")
        if not (0 <= s * P - p and (k - 1 + s * P - p) // s < K):
            raise ValueError(f"a {k}-tap stride-{s} conv padded by {p} does not fit SPD + a {K}-tap conv padded by "
                             f"{P} ({dim})")
    out = weight.new_zeros(c2, s * s * c1, Kh, Kw)
    mask = torch.zeros(1, s * s * c1, Kh, Kw, dtype=torch.bool)
    for a in range(kh):
        A, i = divmod(a + s * Ph - ph, s)
        for b in range(kw):
            B, j = divmod(b + s * Pw - pw, s)
            block = slice((s * j + i) * c1, (s * j + i + 1) * c1)
            out[:, block, A, B] = weight[:, :, a, b]
            mask[:, block, A, B] = True
    return out, mask


# ---------------------------------------------------------------------------------------------------------------------
# Which SPD row is which stock row.


def _rows(d: dict) -> list:
    return list(d.get("backbone", [])) + list(d.get("head", []))


def _conv_stride(args: list) -> int:
    """The stride of a YAML ``Conv [c2, k=1, s=1, ...]`` row."""
    return args[2] if len(args) > 2 else 1


def _absolute(f, i: int) -> list[int]:
    return [x if x >= 0 else i + x for x in (f if isinstance(f, list) else [f])]


def _name(d: dict) -> str:
    return Path(str(d.get("yaml_file") or "<model dict>")).name


def _scale_of(d: dict) -> tuple:
    """The (depth, width, max_channels) a model YAML builds with."""
    scales, scale = d.get("scales"), d.get("scale")
    if scales:
        return tuple(scales[scale] if scale in scales else next(iter(scales.values())))
    return d.get("depth_multiple", 1.0), d.get("width_multiple", 1.0), None


def _is_spd_row(m: str) -> bool:
    return m in ("SPDConv", "SPDGroupConv", "SpaceToDepth", "space_to_depth")


def plan_upgrade(stock: dict, spd: dict) -> list[LayerPair]:
    """Pair every row of the stock model YAML `stock` with the row(s) of the SPD YAML `spd` that compute it.

    Raises UpgradeError naming the first row that keeps `spd` from being the stock model's exact SPD twin.
    """
    src, dst = _name(stock), _name(spd)
    prefix = f"{dst} is not the SPD twin of {src}"
    rows, spd_rows = _rows(stock), _rows(spd)
    if not any(_is_spd_row(r[2]) for r in spd_rows):
        raise UpgradeError(f"{dst} has no SPD layer: give an SPD model ({', '.join(available_models()[:3])}, ...)")
    if any(r[2] == "SPDGroupConv" for r in spd_rows):
        twin = Path(dst).stem.replace("-lite", "")
        raise UpgradeError(
            f"{dst}: the -lite models' grouped SPD convolutions (SPDGroupConv) cannot hold a dense strided convolution "
            f"exactly; upgrade to its dense twin {twin} instead"
        )
    for key, default in (("end2end", False), ("reg_max", 16), ("channels", 3)):  # ultralytics' defaults
        if stock.get(key, default) != spd.get(key, default):
            raise UpgradeError(f"{prefix}: {key} {stock.get(key, default)!r} vs {spd.get(key, default)!r}")
    pairs, index, j = [], {-1: -1}, 0  # index: stock layer -> SPD layer with the same output (-1: the image)
    for i, (f, n, m, args) in enumerate(rows):
        if j >= len(spd_rows):
            raise UpgradeError(f"{prefix}: {src} has more layers ({len(rows)})")
        sf, sn, sm, sargs = spd_rows[j]
        where = f"{prefix}: stock layer {i} {m} {args} vs {dst} layer {j} {sm} {sargs}"
        if [index.get(x, -99) for x in _absolute(f, i)] != _absolute(sf, j):
            raise UpgradeError(f"{where}: they read different layers")
        if m == "Conv" and _conv_stride(args) > 1 and args[4:5] not in ([], [1]):
            raise UpgradeError(f"{where}: a grouped strided Conv has no exact SPD equivalent here")
        if m == "Conv" and _conv_stride(args) > 1 and sm != "Conv":
            s = _conv_stride(args)
            spd_s = sargs[2] if len(sargs) > 2 else 2
            if sm != "SPDConv" or sargs[0] != args[0] or spd_s != s or sargs[4:] != args[4:]:
                raise UpgradeError(f"{where}: a stride-{s} Conv becomes SPDConv [{args[0]}, k, {s}]")
            pairs.append(LayerPair("spdconv", i, j))
        elif m == "Conv" and _conv_stride(args) > 1:  # -> Conv at stride 1, then SpaceToDepth
            s = _conv_stride(args)
            nxt = spd_rows[j + 1] if j + 1 < len(spd_rows) else None
            same = sargs[:2] == args[:2] and _conv_stride(sargs) == 1 and sargs[3:] == args[3:]
            if not (same and nxt is not None and nxt[2] in ("SpaceToDepth", "space_to_depth") and nxt[0] == -1
                    and (nxt[3][:1] or [2])[0] == s):
                raise UpgradeError(f"{where}: a stride-{s} Conv becomes the same Conv at stride 1 followed by "
                                   f"SpaceToDepth [{s}]")
            j += 1
            pairs.append(LayerPair("conv+spd", i, j))
        elif (n, m, args) != (sn, sm, sargs):
            raise UpgradeError(f"{where}")
        else:
            pairs.append(LayerPair("same", i, j))
        index[i] = j
        j += 1
    if j != len(spd_rows):
        raise UpgradeError(f"{prefix}: {dst} has more layers ({len(spd_rows)})")
    if _scale_of(stock) != _scale_of(spd):
        raise UpgradeError(f"{prefix}: scale {stock.get('scale')} {list(_scale_of(stock))} vs scale "
                           f"{spd.get('scale')} {list(_scale_of(spd))} [depth, width, max_channels]")
    return pairs


def twin_name(d: dict) -> str:
    """The name of our SPD twin of a stock model YAML (``yolo11n.yaml`` -> ``yolo11n-SPD``, ``yolov5nu`` ->
    ``yolov5n-SPD``, ``yolov8s-p2`` -> ``yolov8s-SPD-p2``); UpgradeError if we have none."""
    stem = Path(str(d.get("yaml_file", ""))).stem
    match = SCALED_NAME.search(stem)
    scale = d.get("scale") or (match.group(2) if match else "")
    base = SCALED_NAME.sub(r"\1\3", stem) if match else stem  # yolov5nu -> yolov5u, yolo11n-p2 -> yolo11-p2
    family, _, rest = base.partition("-")
    family = family[:-1] if family.startswith("yolov5") and family.endswith("u") else family
    name = f"{family}{scale}-SPD{'-' + rest if rest else ''}"
    if "-SPD" in stem or name not in available_models():
        raise UpgradeError(f"{stem or 'the model'} has no SPD twin here; give --to, one of "
                           f"{', '.join(n for n in available_models() if '-lite' not in n)}")
    return name


# ---------------------------------------------------------------------------------------------------------------------
# The upgrade.


def _channels(model: nn.Module, x: torch.Tensor) -> list[int]:
    """Output channels of every layer of an ultralytics model, from one forward pass."""
    found = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: found.__setitem__(k, o.shape[1] if torch.is_tensor(o) else 0))
             for k, m in enumerate(model.model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [found.get(k, 0) for k in range(len(model.model))]


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """What the detection head reads and returns in eval mode, raw: its input feature maps (the neck's outputs, which
    the whole network before the head computes) and the box regression and class logits of every branch (both of an
    end-to-end head). Every prediction is decoded from these (an end-to-end head's decoded top-k is left out: rounding
    may swap near-equal scores in it)."""
    with torch.no_grad():
        _, raw = model(x)
    branches = [raw[k] for k in ("one2many", "one2one") if k in raw] or [raw]
    return [*(f.float() for f in branches[0]["feats"]), *(b[k].float() for b in branches for k in ("boxes", "scores"))]


def _check_source(model: nn.Module, source: str) -> None:
    yaml = getattr(model, "yaml", None)
    task = guess_model_task(yaml if isinstance(yaml, dict) else model)  # by its head (args["task"] may be a default)
    if task != "detect" or type(getattr(model, "model", [None])[-1]) is not Detect:
        raise UpgradeError(f"{source}: a '{task}' model; the SPD upgrade takes detection models")
    if has_spd(model):
        raise UpgradeError(f"{source}: already an SPD model (it has SPD layers); the upgrade takes a stock checkpoint")
    if getattr(model, "is_fused", lambda: False)():
        raise UpgradeError(f"{source}: fused for inference (BatchNorm folded); upgrade the unfused checkpoint")
    if not isinstance(getattr(model, "yaml", None), dict):
        raise UpgradeError(f"{source}: holds no model YAML, so its SPD twin cannot be found")


def _transfer_spdconv(src: Conv, dst: SPDConv) -> torch.Tensor:
    """Stock stride-s `Conv` -> `SPDConv`: the kernel re-indexed (`spd_kernel`), BatchNorm as it is. Returns the
    mask of the zero-started taps of ``dst.conv.conv.weight``."""
    conv = src.conv
    w, used = spd_kernel(conv.weight.detach(), dst.spd.s, conv.padding, dst.conv.conv.kernel_size,
                         dst.conv.conv.padding)
    dst.conv.load_state_dict({**src.state_dict(), "conv.weight": w})
    return ~used


def _embedded_inputs(src: nn.Module, dst: nn.Module, index: torch.Tensor, channels: int, where: str
                     ) -> tuple[dict, dict]:
    """The state of `dst` (the stock layer `src` on an input with `channels` channels, stock channel c at index[c]):
    the convolutions reading the input take the stock weights at those channels and zeros elsewhere. Returns
    (state, {weight name in dst: mask of its zero-started input channels})."""
    convs = input_convs(dst)
    if convs is None:
        raise UpgradeError(f"{where} ({type(dst).__name__}) reads an SPD output, and the upgrade does not know which "
                           f"of its convolutions read it")
    names, src_modules = {id(m): n for n, m in dst.named_modules()}, dict(src.named_modules())
    state, masks = src.state_dict(), {}
    for conv in convs:
        name = names[id(conv)]
        w = src_modules[name].conv.weight.detach()
        new = w.new_zeros(w.shape[0], channels, *w.shape[2:])
        new[:, index] = w
        mask = torch.ones(1, channels, 1, 1, dtype=torch.bool)
        mask[:, index] = False
        key = f"{name}.conv.weight".lstrip(".")
        state[key], masks[key] = new, mask
    return state, masks


def upgrade_model(stock: nn.Module, spd_cfg: dict | str, source: str = "the stock model") -> Upgrade:
    """The exact SPD twin of `stock` (an unfused ultralytics detection model), built from `spd_cfg` (a model YAML
    dict or name) with the stock model's classes. Raises UpgradeError if `spd_cfg` is not its twin or the outputs
    differ by more than `TOLERANCE`."""
    _check_source(stock, source)
    try:
        cfg = copy.deepcopy(spd_cfg) if isinstance(spd_cfg, dict) else load_model_yaml(spd_cfg)
    except SPDConfigError as e:
        raise UpgradeError(f"--to {spd_cfg}: {e}") from None
    pairs = plan_upgrade(stock.yaml, cfg)
    cfg["nc"] = stock.model[-1].nc  # built with the stock model's classes (silently: no "Overriding nc" line)
    stock = copy.deepcopy(stock).float().eval()
    model = build_model(cfg, nc=cfg["nc"]).float().eval()
    x = torch.rand(1, int(stock.yaml.get("channels", 3)), *_CHECK_SHAPE, generator=torch.Generator().manual_seed(0))
    channels = _channels(model, x)
    # SPD layer -> the SPD-model channel of each stock channel, for outputs that hold more than the stock one (an SPD
    # layer's phase (0, 0) block and whatever carries it: Upsample, Concat); absent: the same channels
    embedding: dict[int, torch.Tensor] = {}
    reindexed, masks = [], {}
    for pair in pairs:
        src, i = stock.model[pair.stock], pair.spd
        dst = model.model[i]
        if pair.kind == "spdconv":
            masks[f"model.{i}.conv.conv.weight"] = _transfer_spdconv(src, dst)
            reindexed.append(f"{i}: {src.conv.kernel_size[0]}x{src.conv.kernel_size[1]} stride-{dst.spd.s} Conv -> "
                             f"SPDConv")
            continue
        if pair.kind == "conv+spd":  # the Conv at stride 1 before the SpaceToDepth: stock weights as they are
            model.model[i - 1].load_state_dict(src.state_dict())
            embedding[i] = torch.arange(channels[i - 1])  # block 0 = phase (0, 0): the stock stride-s output
            reindexed.append(f"{i - 1}-{i}: stride-{dst.s} Conv -> Conv + SpaceToDepth")
            continue
        froms = _absolute(dst.f, i)
        state = src.state_dict()
        if isinstance(dst, Concat) and any(f in embedding for f in froms):
            offsets = [0, *torch.tensor([channels[f] for f in froms]).cumsum(0).tolist()]
            embedding[i] = torch.cat([embedding.get(f, torch.arange(channels[f])) + o for f, o in zip(froms, offsets)])
        elif isinstance(dst, nn.Upsample) and froms[0] in embedding:
            embedding[i] = embedding[froms[0]]
        elif any(f in embedding for f in froms):
            where = f"{source}: layer {i}"
            if len(froms) != 1:
                raise UpgradeError(f"{where} ({type(dst).__name__}) reads an SPD output among several inputs")
            state, new = _embedded_inputs(src, dst, embedding[froms[0]], channels[froms[0]], where)
            masks.update({f"model.{i}.{k}": m for k, m in new.items()})
            reindexed.append(f"{i}: {type(dst).__name__} reads phase (0, 0) of the SPD output")
        try:
            dst.load_state_dict(state)
        except RuntimeError as e:
            raise UpgradeError(f"{source}: layer {pair.stock} does not fit SPD layer {i}: {e}") from None
    ref, out = _outputs(stock, x), _outputs(model, x)
    if [a.shape for a in ref] != [b.shape for b in out]:
        raise UpgradeError(f"{source}: the SPD model's outputs have other shapes than the stock model's")
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, out))
    result = Upgrade(model, reindexed, diff, max(float(a.abs().max()) for a in ref), masks)
    if not diff <= result.tolerance:  # also NaN
        raise UpgradeError(f"{source}: the upgraded model's outputs differ from the stock model's by {diff:.3g} "
                           f"(tolerance {result.tolerance:.3g}): not exact, nothing written")
    for attr in ("names", "args"):
        if hasattr(stock, attr):
            setattr(model, attr, copy.deepcopy(getattr(stock, attr)))
    return result


def _version() -> str:
    try:
        return metadata.version("spd-yolo")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "(not installed)"


def _record(up: Upgrade, source: str, sha256: str | None, target: str) -> dict:
    return {
        "source": source,
        "sha256": sha256,
        "target": target,
        "by": f"upgraded by spd-yolo {_version()}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reindexed": list(up.reindexed),
        "max_diff": up.max_diff,
        "tolerance": up.tolerance,
        "new_weights": up.new_weights,
    }


def prepare_pretrained(model: nn.Module, weights: nn.Module) -> tuple[nn.Module, dict | None]:
    """What to load into `model` for fine-tuning from `weights` (a model): when `model` is the SPD twin of stock
    `weights`, their exact SPD upgrade (logged in one line) and its record; otherwise `weights` itself, for ultralytics'
    name-and-shape transfer, and the upgrade record it carries, if any."""
    record = getattr(weights, RECORD_KEY, None)
    if not (has_spd(model) and not has_spd(weights) and isinstance(getattr(weights, "yaml", None), dict)):
        return weights, record
    source = Path(str(getattr(weights, "pt_path", None) or "pretrained weights")).name
    try:
        plan_upgrade(weights.yaml, model.yaml)
        _check_source(weights, source)
    except UpgradeError as e:
        LOGGER.info(f"SPD upgrade: not exact ({e}); ultralytics' name-and-shape transfer instead")
        return weights, record
    up = upgrade_model(weights, model.yaml, source)
    LOGGER.info(up.summary(source, _name(model.yaml)))
    path = Path(str(getattr(weights, "pt_path", "")))
    return up.model, _record(up, source, _sha256(path) if path.is_file() else None, _name(model.yaml))


def load_pretrained(model: nn.Module, weights: nn.Module) -> dict | None:
    """Load `weights` into `model` as `prepare_pretrained` says, through ultralytics' ``model.load`` (its rules for
    another class count apply). Returns the upgrade record, also set as ``model.spd_upgrade``, or None."""
    weights, record = prepare_pretrained(model, weights)
    model.load(weights)
    if isinstance(record, dict):
        setattr(model, RECORD_KEY, copy.deepcopy(record))
    return record


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class UpgradeResult:
    """What `upgrade_checkpoint` wrote."""

    path: Path
    target: str
    upgrade: Upgrade
    record: dict


def upgrade_checkpoint(src: str | Path, dst: str | Path, to: str | None = None, overwrite: bool = False
                       ) -> UpgradeResult:
    """Upgrade the stock checkpoint `src` to its SPD twin (`to`, default `twin_name`) and write it to `dst`.

    The new checkpoint keeps nc, names and train args, drops the optimizer (it is a start, not a run to resume) and
    records `RECORD_KEY`. Nothing is written unless the outputs match (UpgradeError otherwise); the write is atomic.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise UpgradeError(f"{src}: no such file")
    if dst.exists() and not overwrite:
        raise UpgradeError(f"{dst} exists; give --overwrite to replace it")
    if dst.is_dir():
        raise UpgradeError(f"{dst} is a folder; give the output file name (e.g. {dst / 'model-SPD.pt'})")
    with checkpoint_errors(src):
        try:
            stock, ckpt = load_checkpoint(src)
        except (AttributeError, KeyError, TypeError) as e:
            raise UpgradeError(f"{src}: not an ultralytics checkpoint ({type(e).__name__}: {e})") from None
    _check_source(stock, str(src))
    target = to or twin_name(stock.yaml)
    up = upgrade_model(stock, target, str(src))
    record = _record(up, src.name, _sha256(src), target)
    model = up.model
    setattr(model, RECORD_KEY, record)
    model.pt_path = str(dst)
    out = {k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer", "updates")}
    out.update(model=copy.deepcopy(model).half(), ema=None, optimizer=None, updates=None, epoch=-1,
               date=datetime.now().isoformat(), **{RECORD_KEY: record})
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(out, dst)
    return UpgradeResult(dst, target, up, record)


# ---------------------------------------------------------------------------------------------------------------------
# Command line.


def main(argv: list[str] | None = None, prog: str = "python -m spd_yolo.upgrade") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="stock checkpoint (yolov5nu.pt, yolov8n.pt, yolo11n.pt, yolo26n.pt, "
                        "a -p2 model, or your own best.pt of one)")
    parser.add_argument("dst", type=Path, help="output checkpoint")
    parser.add_argument("--to", default=None, help="SPD model to upgrade to (default: the stock model's SPD twin, "
                        "e.g. yolo11n-SPD for yolo11n.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    args = parser.parse_args(argv)
    try:
        result = upgrade_checkpoint(args.src, args.dst, to=args.to, overwrite=args.overwrite)
    except SPDError as e:  # UpgradeError, CheckpointError, SPDConfigError
        print(f"error: {e}", file=sys.stderr)
        return 1
    up = result.upgrade
    print(up.summary(args.src.name, result.target))
    for line in up.reindexed:
        print(f"  {line}")
    print(f"{result.path}: {result.target}, {len(up.model.names)} classes, SHA-256 of the source "
          f"{result.record['sha256'][:16]}...")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """Console script ``spd-upgrade``."""
    return main(argv, prog="spd-upgrade")

