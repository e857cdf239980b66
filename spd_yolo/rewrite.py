# SPD-YOLO, AGPL-3.0 license
"""Exact inference rewrite: space-to-depth followed by a convolution as one strided convolution.

SPD with block size s followed by a k x k convolution (stride 1, padding p, no groups or dilation) is the same
function as an (s*k) x (s*k) convolution with stride s and padding s*p on the original resolution, as YOLOv5's 6x6
stem is to ``Focus``: output block ``s*j + i`` of SPD holds ``x[..., i::s, j::s]``, so

    W'[o, c, s*a + i, s*b + j] = W[o, (s*j + i) * C + c, a, b]        (C = input channels of the SPD)

and zero padding of the SPD output by p is zero padding of the input by s*p. The rewrite is exact in real
arithmetic; in floating point only the summation order changes (outputs agree to rounding).

With the phases interleaved (channel ``c*s*s + s*j + i``, as `SPDGroupConv` orders them) the same holds per group, so
a grouped convolution stays grouped: ``W'[o, c, s*a + i, s*b + j] = W[o, c*s*s + s*j + i, a, b]`` (c counted within
the group).

What is rewritten (`rewrite_spd`):
- every ``SPDConv`` (SPD then ultralytics ``Conv``) becomes that ``Conv`` with the strided kernel: all strided
  layers of yolov8-SPD / yolo11-SPD / yolo26-SPD, and the stem of yolov5-SPD;
- every ``SPDGroupConv`` likewise becomes its ``Conv`` with a grouped strided kernel (6x6 stride 2 for a 3x3): the
  strided layers of the ``-lite`` models;
- a ``SpaceToDepth`` layer of an ultralytics model whose output only the next layer reads, when that layer is a
  ``Conv`` or a ``C3`` / ``C2f`` (whose input convolutions then take the strided kernel) and the SPD layer becomes
  an identity: the four backbone SPD layers of yolov5-SPD. The two neck SPD layers of yolov5-SPD feed a ``Concat``
  and are left as they are.

Usage (inference / export only; the rewritten model is not meant for training)::

    from spd_yolo.rewrite import rewrite_spd
    fast_model, changed = rewrite_spd(model.fuse().eval())   # a rewritten copy and what was rewritten

For export (`export_form`): `rewrite_spd`, then every SPD layer left (the neck SPDs of yolov5-SPD, the ResNet
stem's SpaceToDepth / DepthToSpace) in its 4-D form (`spd_yolo.layers.four_d`), so no exported tensor has a rank
above 4 and the outputs stay those of the original model up to rounding.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from ultralytics.nn.modules.block import C3, C2f
from ultralytics.nn.modules.conv import Conv

from spd_yolo.layers import DepthToSpace, SpaceToDepth, SPDConv, SPDGroupConv
from spd_yolo.layers.four_d import ChannelGather, DepthToSpace4D, SpaceToDepth4D

__all__ = ("can_rewrite_conv", "export_form", "four_d_spd", "input_convs", "rewrite_spd", "strided_equivalent")


def can_rewrite_conv(conv: nn.Module, s: int, interleaved: bool = False) -> bool:
    """Whether SPD(s) followed by `conv` (an nn.Conv2d) has an exact single-convolution equivalent (grouped convs:
    only after interleaved phases, where every group sees all phases of its channels)."""
    return (
        type(conv) is nn.Conv2d
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and (conv.groups == 1 or interleaved)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.in_channels % (s * s * conv.groups) == 0
    )


def strided_equivalent(conv: nn.Conv2d, s: int = 2, interleaved: bool = False) -> nn.Conv2d:
    """The (s*kh, s*kw) stride-s convolution equal to ``conv(space_to_depth(x, s))`` (with `interleaved`:
    ``conv(space_to_depth_interleaved(x, s))``, groups kept).

    conv: weight (c2, s*s*c1/g, kh, kw), stride 1, padding (ph, pw) -> weight (c2, c1/g, s*kh, s*kw), stride s,
    padding (s*ph, s*pw), g groups.
    """
    if not can_rewrite_conv(conv, s, interleaved):
        raise ValueError(f"no exact strided equivalent of SPD(s={s}) followed by {conv}")
    c2, c4, kh, kw = conv.weight.shape
    c1 = c4 // (s * s)  # input channels per group of the strided conv
    w = conv.weight.detach()
    if interleaved:  # input channel c*s*s + s*j + i, tap (a, b) -> channel c, tap (s*a + i, s*b + j)
        w = w.reshape(c2, c1, s, s, kh, kw).permute(0, 1, 4, 3, 5, 2)
    else:  # input channel (s*j + i)*c1 + c, tap (a, b) -> channel c, tap (s*a + i, s*b + j)
        w = w.reshape(c2, s, s, c1, kh, kw).permute(0, 3, 4, 2, 5, 1)
    w = w.reshape(c2, c1, s * kh, s * kw)
    ph, pw = conv.padding
    out = nn.Conv2d(c1 * conv.groups, c2, (s * kh, s * kw), s, (s * ph, s * pw), groups=conv.groups,
                    bias=conv.bias is not None)
    out = out.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
        if conv.bias is not None:
            out.bias.copy_(conv.bias.detach())
    out.weight.requires_grad_(conv.weight.requires_grad)
    return out


def _layer_attrs(src: nn.Module, dst: nn.Module, type_name: str) -> nn.Module:
    """Copy the ultralytics layer bookkeeping (index, from, type, params) of `src` onto `dst`."""
    for name in ("i", "f", "np"):
        if hasattr(src, name):
            setattr(dst, name, getattr(src, name))
    if hasattr(src, "type"):
        dst.type = type_name
    return dst


def _rewrite_spdconv(m: SPDConv | SPDGroupConv) -> nn.Module | None:
    """SPDConv / SPDGroupConv -> its Conv with the strided kernel (BN and activation kept as they are); None if not
    exact."""
    s, interleaved = m.spd.s, isinstance(m, SPDGroupConv)
    if not can_rewrite_conv(m.conv.conv, s, interleaved):
        return None
    m.conv.conv = strided_equivalent(m.conv.conv, s, interleaved)
    return _layer_attrs(m, m.conv, f"{Conv.__module__}.Conv")


def input_convs(layer: nn.Module) -> list[Conv] | None:
    """The Conv modules that read `layer`'s input directly, for the layer types whose forward we know."""
    if type(layer) is Conv or (isinstance(layer, Conv) and type(layer).forward is Conv.forward):
        return [layer]
    if isinstance(layer, C3) and type(layer).forward is C3.forward:
        return [layer.cv1, layer.cv2]
    if isinstance(layer, C2f) and type(layer).forward is C2f.forward:
        return [layer.cv1]
    return None


def _fold_spd_layer(layers: nn.Sequential, i: int, save: set) -> bool:
    """Fold SpaceToDepth layer i into layer i+1's input convolutions if only layer i+1 reads it; True if done."""
    spd, nxt = layers[i], layers[i + 1] if i + 1 < len(layers) else None
    if nxt is None or i in save or getattr(nxt, "f", None) != -1:
        return False
    convs = input_convs(nxt)
    if not convs or not all(isinstance(c, Conv) and can_rewrite_conv(c.conv, spd.s) for c in convs):
        return False
    for c in convs:
        c.conv = strided_equivalent(c.conv, spd.s)
    layers[i] = _layer_attrs(spd, nn.Identity(), "torch.nn.modules.linear.Identity")
    return True


def _replace_spdconvs(root: nn.Module) -> list[str]:
    """Replace every SPDConv and SPDGroupConv below `root` (any nesting) in place; names of those replaced."""
    done = []
    for name, child in list(root.named_children()):
        if isinstance(child, (SPDConv, SPDGroupConv)):
            new = _rewrite_spdconv(child)
            if new is not None:
                setattr(root, name, new)
                kh, kw = new.conv.kernel_size
                groups = f" {new.conv.groups}-group" if new.conv.groups > 1 else ""
                done.append(f"{type(child).__name__} {name}: {kh}x{kw} stride-{child.spd.s}{groups} conv")
                continue
        done += [f"{name}.{d}" for d in _replace_spdconvs(child)]
    return done


def rewrite_spd(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, list[str]]:
    """Rewrite SPD + convolution pairs of `model` into strided convolutions (see the module docstring).

    Returns (model, descriptions of the rewritten layers). Works on fused and unfused models; a copy unless
    `inplace`. Meant for inference and export: outputs equal the original's up to floating-point rounding.
    """
    model = model if inplace else copy.deepcopy(model)
    layers = getattr(model, "model", None)
    done = []
    if isinstance(layers, nn.Sequential):
        save = set(getattr(model, "save", ()))
        for i, layer in enumerate(layers):
            if type(layer) is SpaceToDepth and _fold_spd_layer(layers, i, save):
                done.append(f"SpaceToDepth {i} folded into layer {i + 1} ({type(layers[i + 1]).__name__})")
    done += _replace_spdconvs(model)
    return model, done


def _four_d(m: nn.Module) -> nn.Module | None:
    """The 4-D form of one SPD module (None if it has none or is in it already)."""
    if type(m) is SpaceToDepth:
        new = SpaceToDepth4D(m.s)
    elif type(m) is DepthToSpace:
        new = DepthToSpace4D(m.s)
    elif isinstance(m, SPDGroupConv):  # interleaved phases = SpaceToDepth's blocks, channels regrouped
        n, c = m.spd.s**2, m.conv.conv.in_channels // m.spd.s**2
        order = torch.arange(n * c).reshape(n, c).t().reshape(-1)  # interleaved channel c*n + p <- block p*C + c
        new = nn.Sequential(SpaceToDepth4D(m.spd.s), ChannelGather(order), m.conv)
    else:
        return None
    for name in ("i", "f", "type", "np", "spd_layer_index"):
        if hasattr(m, name):
            setattr(new, name, getattr(m, name))
    return new


def four_d_spd(model: nn.Module, prefix: str = "") -> list[str]:
    """Replace, in place, every SpaceToDepth, DepthToSpace and SPDGroupConv below `model` by its 4-D form (equal
    outputs, no tensor above rank 4 when traced); names of those replaced."""
    done = []
    for name, child in list(model.named_children()):
        where = f"{prefix}{name}"
        new = _four_d(child)
        if new is None:
            done += four_d_spd(child, f"{where}.")
        else:
            setattr(model, name, new)
            done.append(f"{type(child).__name__} {where}: 4-D form")
    return done


def export_form(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, list[str], list[str]]:
    """The model as exported by default: `rewrite_spd`, then `four_d_spd` for the SPD layers that cannot fold.

    Returns (model, folded, four_d): descriptions of the layers rewritten as strided convolutions and of those
    written in 4-D form. A copy unless `inplace`.
    """
    model, folded = rewrite_spd(model, inplace)
    return model, folded, four_d_spd(model)
