# SPD-YOLO, AGPL-3.0 license
"""Fast space-to-depth (s=2) on CPU: a small C kernel that reads each input row once and de-interleaves it.

The plain torch version (`spd_modules.space_to_depth_reference`: four strided slices and ``torch.cat``) stays the
reference and the fallback. This module compiles a ~100-line C kernel with the system C compiler on first use
(under a second, no torch headers, no ninja), caches the shared library under the user cache directory and
calls it through ``ctypes`` (the GIL is released during the call). The kernel only moves bytes, so its output is
bit-identical to the reference for every dtype of 1, 2, 4 or 8 bytes, in forward and backward (its backward is the
inverse scatter, itself differentiable, so double backward works too).

When is the fast path used? `usable(x)` says yes only for: block size 2, a 4-D CPU tensor (plain ``torch.Tensor``
or ``nn.Parameter``, strided layout, not quantized, not complex) of even H and W, contiguous in NCHW or in
channels-last (NHWC) memory format, while not tracing, scripting, exporting (ONNX or torch.export), compiling
(``torch.compile``) or inside a functorch transform (vmap, grad), when the kernel built and passed its self-check,
and unless ``SPD_YOLO_FAST_SPD=0`` (or ``false``/``off``/``no``) is set. Everything else takes the reference, so
exported graphs keep the plain slicing ops.

Environment:
    SPD_YOLO_FAST_SPD=0      always use the reference (read at every call).
    SPD_YOLO_CACHE_DIR=DIR   where the compiled kernel is cached (default: $XDG_CACHE_HOME/spd_yolo or
                             ~/.cache/spd_yolo; a temp folder if that is not writable).
    CC=compiler              the C compiler (default: the first of cc, gcc, clang on PATH).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Optional

import torch

__all__ = ("usable", "space_to_depth", "depth_to_space", "kernel_available", "build_error", "enabled", "forced_off")

LOGGER = logging.getLogger(__name__)
_ENV_SWITCH = "SPD_YOLO_FAST_SPD"
_GRAIN = 32768  # elements per thread before a second thread pays off (torch's own grain size for copies)

# x (B, C, 2*h2, 2*w2) <-> y (B, 4*C, h2, w2); output block k = 2*j + i holds x[..., i::2, j::2] (authors' order).
# inverse=1 scatters y back into x (the backward / depth-to-space). One work item is one output row.
_C_SOURCE = r"""
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* One kernel pair per element type T and element transform F: a plain copy, or "+ 0" as the reference's
   backward does (it sums four zero-padded gradients, which turns -0.0 into +0.0 and quiets signalling NaNs). */
#define KERNELS(NAME, T, F)                                                                                  \
static void nchw_##NAME(T *restrict x, T *restrict y, int64_t c, int64_t h2, int64_t w2, int inverse,      \
                        int64_t begin, int64_t end) {                                                       \
    const int64_t plane = h2 * w2, blk = c * plane;                                                         \
    int64_t p = begin / h2, r = begin - p * h2; /* plane (b*C + ch) and output row; no division per row */  \
    int64_t b = p / c, ch = p - b * c;                                                                      \
    for (int64_t t = begin; t < end; ++t) {                                                                 \
        T *restrict r0 = x + (p * 2 * h2 + 2 * r) * (2 * w2);                                               \
        T *restrict r1 = r0 + 2 * w2;                                                                       \
        T *restrict o0 = y + (b * 4 * c + ch) * plane + r * w2;                                             \
        T *restrict o1 = o0 + blk;                                                                          \
        T *restrict o2 = o1 + blk;                                                                          \
        T *restrict o3 = o2 + blk;                                                                          \
        if (!inverse) {                                                                                     \
            for (int64_t q = 0; q < w2; ++q) { o0[q] = F(r0[2 * q]); o2[q] = F(r0[2 * q + 1]); }            \
            for (int64_t q = 0; q < w2; ++q) { o1[q] = F(r1[2 * q]); o3[q] = F(r1[2 * q + 1]); }            \
        } else {                                                                                            \
            for (int64_t q = 0; q < w2; ++q) { r0[2 * q] = F(o0[q]); r0[2 * q + 1] = F(o2[q]); }            \
            for (int64_t q = 0; q < w2; ++q) { r1[2 * q] = F(o1[q]); r1[2 * q + 1] = F(o3[q]); }            \
        }                                                                                                   \
        if (++r == h2) { r = 0; ++p; if (++ch == c) { ch = 0; ++b; } }                                      \
    }                                                                                                       \
}                                                                                                           \
static void nhwc_##NAME(T *restrict x, T *restrict y, int64_t c, int64_t h2, int64_t w2, int inverse,      \
                        int64_t begin, int64_t end) {                                                       \
    for (int64_t t = begin; t < end; ++t) {                                                                 \
        const int64_t b = t / h2, r = t - b * h2;                                                           \
        T *r0 = x + (b * 2 * h2 + 2 * r) * (2 * w2) * c, *r1 = r0 + 2 * w2 * c;                             \
        T *o = y + t * w2 * 4 * c;                                                                          \
        for (int64_t q = 0; q < w2; ++q, o += 4 * c) {                                                      \
            T *src[4] = {r0 + 2 * q * c, r1 + 2 * q * c, r0 + (2 * q + 1) * c, r1 + (2 * q + 1) * c};      \
            for (int k = 0; k < 4; ++k) {                                                                   \
                T *restrict a = src[k], *restrict z = o + k * c;                                            \
                if (!inverse) for (int64_t e = 0; e < c; ++e) z[e] = F(a[e]);                               \
                else for (int64_t e = 0; e < c; ++e) a[e] = F(z[e]);                                        \
            }                                                                                               \
        }                                                                                                   \
    }                                                                                                       \
}

#define SAME(v) (v)
#define ADD0F(v) ((v) + 0.0f)
#define ADD0D(v) ((v) + 0.0)
#define ZERO16(v) ((uint16_t)((v) == 0x8000u ? 0u : (v))) /* fp16/bf16 -0.0 -> +0.0 */
KERNELS(u8, uint8_t, SAME)
KERNELS(u16, uint16_t, SAME)
KERNELS(u32, uint32_t, SAME)
KERNELS(u64, uint64_t, SAME)
KERNELS(f32, float, ADD0F)
KERNELS(f64, double, ADD0D)
KERNELS(h16, uint16_t, ZERO16)

typedef void (*kernel_t)(void *, void *, int64_t, int64_t, int64_t, int, int64_t, int64_t);

/* kind: 0 plain copy of es-byte elements; 1 float32 "+0"; 2 float64 "+0"; 3 fp16/bf16 "+0" (signed zero only). */
static kernel_t pick(int es, int kind, int cl) {
#define PICK(NAME) return cl ? (kernel_t)nhwc_##NAME : (kernel_t)nchw_##NAME
    if (kind == 1 && es == 4) PICK(f32);
    if (kind == 2 && es == 8) PICK(f64);
    if (kind == 3 && es == 2) PICK(h16);
    if (kind != 0) return 0;
    switch (es) {
    case 1: PICK(u8);
    case 2: PICK(u16);
    case 4: PICK(u32);
    case 8: PICK(u64);
    }
    return 0;
#undef PICK
}

/* x (B, C, 2*h2, 2*w2) <-> y (B, 4*C, h2, w2), both contiguous NCHW, or both channels-last when cl.
   Returns 0 on success, 1 for an element size / kind the kernel does not cover. */
int spd_yolo_s2d(void *x, void *y, int64_t b, int64_t c, int64_t h2, int64_t w2, int es, int kind, int cl,
                 int inverse, int nthreads) {
    kernel_t k = pick(es, kind, cl);
    if (!k) return 1;
    const int64_t total = cl ? b * h2 : b * c * h2; /* work items: output rows */
#ifdef _OPENMP
    if (nthreads > 1 && total > 1) {
        if (nthreads > total) nthreads = (int)total;
#pragma omp parallel num_threads(nthreads)
        {
            const int64_t n = omp_get_num_threads(), i = omp_get_thread_num();
            k(x, y, c, h2, w2, inverse, total * i / n, total * (i + 1) / n);
        }
        return 0;
    }
#endif
    (void)nthreads;
    k(x, y, c, h2, w2, inverse, 0, total);
    return 0;
}
"""

_SERIAL_FLAGS = ["-O3", "-std=c99", "-shared", "-fPIC"]
_OPENMP_FLAGS = [*_SERIAL_FLAGS, "-fopenmp"]


def _flag_sets() -> list[list[str]]:
    """Compiler flags to try in order; the first build that compiles and loads wins.

    With OpenMP only where torch has already loaded GNU libgomp: the kernel's libgomp.so.1 then resolves to that same
    library, so it shares torch's thread pool. Elsewhere (no libgomp in the process, e.g. an Intel-OpenMP torch or
    macOS) a second OpenMP runtime would compete with torch's threads, so the kernel is built serial.
    """
    try:
        with open("/proc/self/maps") as f:
            has_gomp = "libgomp" in f.read()
    except OSError:
        has_gomp = False
    return [_OPENMP_FLAGS, _SERIAL_FLAGS] if has_gomp else [_SERIAL_FLAGS]


# ---------------------------------------------------------------------------------------------------------------------
# Building and loading the kernel (lazily, once per process; the library is cached on disk across processes).


def _cache_dir() -> Path:
    """Folder for the compiled library: SPD_YOLO_CACHE_DIR, $XDG_CACHE_HOME/spd_yolo or ~/.cache/spd_yolo."""
    if os.environ.get("SPD_YOLO_CACHE_DIR"):
        return Path(os.environ["SPD_YOLO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spd_yolo"


def _compiler() -> Optional[str]:
    """The C compiler to use: $CC, else cc, gcc or clang on PATH; None when there is none."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc.split()[0]) and cc
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _library_name(cc: str, flags: list[str]) -> str:
    """File name that changes with the source, flags, compiler and platform (so a stale build is never loaded)."""
    key = "\n".join([_C_SOURCE, " ".join(flags), cc, sys.platform, platform.machine()])
    suffix = ".dll" if sys.platform == "win32" else ".so"
    return f"fast_spd_{hashlib.sha256(key.encode()).hexdigest()[:16]}{suffix}"


def _compile(cc: str, flags: list[str], target: Path) -> None:
    """Compile the kernel into `target` atomically (temp file + os.replace); raise on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, src = tempfile.mkstemp(suffix=".c", prefix="fast_spd-", dir=target.parent)
    tmp = src[:-2] + ".tmp-so"
    try:
        with os.fdopen(fd, "w") as f:
            f.write(_C_SOURCE)
        cmd = [*cc.split(), *flags, src, "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        for leftover in (src, tmp):
            with contextlib.suppress(OSError):
                os.remove(leftover)


def _load(path: Path):
    lib = ctypes.CDLL(str(path))
    fn = lib.spd_yolo_s2d
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 4 + [ctypes.c_int] * 5
    return fn


def _build() -> tuple[Optional[object], str]:
    """(kernel function, '') or (None, why not). Reuses a cached build; compiles it otherwise."""
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set CC, or install cc/gcc/clang)"
    errors = []
    for flags in _flag_sets():
        name = _library_name(cc, flags)
        user = os.getuid() if hasattr(os, "getuid") else "user"
        for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"spd_yolo-{user}"):
            path = folder / name
            try:
                if not path.is_file():
                    _compile(cc, flags, path)
                return _load(path), ""
            except Exception as e:  # unwritable cache, compiler error, library that does not load: try the next
                errors.append(f"{path}: {type(e).__name__}: {e}")
    return None, "could not build the fast SPD kernel:\n" + "\n".join(errors)


_STATE: dict = {}
_LOCK = threading.Lock()


def _kernel():
    """The loaded kernel function, building it on first call; None when it cannot be built or fails its self-check."""
    if "fn" not in _STATE:
        with _LOCK:
            if "fn" not in _STATE:
                fn, why = _build()
                if fn is not None and not _self_check(fn):
                    fn, why = None, "the compiled kernel disagreed with the reference on its self-check"
                if why:
                    LOGGER.debug("SPD-YOLO fast SPD disabled: %s", why)
                _STATE["why"] = why
                _STATE["fn"] = fn
    return _STATE["fn"]


def _self_check(fn) -> bool:
    """Run the freshly loaded kernel on small inputs of every covered element size and layout, against slicing."""
    x = torch.arange(2 * 3 * 6 * 10, dtype=torch.int64).reshape(2, 3, 6, 10)
    for dtype in (torch.uint8, torch.int16, torch.int32, torch.int64):
        for cl in (False, True):
            xi = x.to(dtype).contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
            want = _reference(xi)
            if not (torch.equal(_run(fn, xi, inverse=False), want) and torch.equal(_run(fn, want, inverse=True), xi)):
                return False
    for dtype in _GRAD_KIND:  # gradient mode: -0.0 becomes +0.0, every other value moves unchanged
        g = torch.tensor([-0.0, 1.5, -2.0, 0.0] * 8, dtype=dtype).reshape(1, 8, 2, 2)
        if torch.signbit(_run(fn, g, inverse=True, as_gradient=True)).sum() != 8:
            return False
    return True


def kernel_available() -> bool:
    """Whether the compiled kernel is (or can be) loaded in this process. Builds it on first call."""
    return _kernel() is not None


def build_error() -> str:
    """Why the kernel is not available ('' when it is)."""
    _kernel()
    return _STATE.get("why", "")


# ---------------------------------------------------------------------------------------------------------------------
# The switch.

_OVERRIDE: list[Optional[bool]] = [None]


def forced_off() -> bool:
    """Whether SPD_YOLO_FAST_SPD (0/false/off/no) or `enabled(False)` forces the reference."""
    if _OVERRIDE[0] is not None:
        return not _OVERRIDE[0]
    return os.environ.get(_ENV_SWITCH, "1").strip().lower() in ("0", "false", "off", "no")


@contextlib.contextmanager
def enabled(flag: bool) -> Iterator[None]:
    """``with enabled(False):`` forces the reference; ``enabled(True)`` the automatic choice even if the environment
    variable says 0. This process only."""
    old, _OVERRIDE[0] = _OVERRIDE[0], bool(flag)
    try:
        yield
    finally:
        _OVERRIDE[0] = old


# ---------------------------------------------------------------------------------------------------------------------
# The dispatch and the autograd functions.


def _reference(x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """The plain s=2 rearrangement of `spd_modules` (imported here: spd_modules imports this module lazily)."""
    import spd_modules

    return spd_modules.depth_to_space(x, 2) if inverse else spd_modules.space_to_depth_reference(x, 2)


def _compiler_flag(name: str):
    """torch.compiler.<name> where this torch version has it, else a function returning False."""
    return getattr(getattr(torch, "compiler", None), name, None) or (lambda: False)


_IS_COMPILING, _IS_EXPORTING = _compiler_flag("is_compiling"), _compiler_flag("is_exporting")
_IS_ONNX_EXPORT = getattr(torch.onnx, "is_in_onnx_export", lambda: False)
_FUNCTORCH_LEVEL = getattr(getattr(torch._C, "_functorch", None), "maybe_current_level", lambda: None)
_FORWARD_AD = torch.autograd.forward_ad


def _in_graph_capture() -> bool:
    """Forward AD, tracing, scripting, ONNX export, torch.export, torch.compile, functorch: keep plain ops."""
    return bool(
        _IS_COMPILING()
        or _IS_EXPORTING()
        or torch.jit.is_tracing()
        or _IS_ONNX_EXPORT()
        or _FUNCTORCH_LEVEL() is not None  # vmap, grad, jacrev, ...
        or getattr(_FORWARD_AD, "_current_level", -1) >= 0  # forward-mode AD: dual tensors
    )


def _layout(x: torch.Tensor) -> Optional[bool]:
    """False for contiguous NCHW, True for contiguous channels-last, None for any other strides."""
    if x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    return None


def _kernel_can_read(x: torch.Tensor, even: bool) -> bool:
    """A plain 4-D CPU tensor the kernel reads as raw bytes (of even H and W if `even`), outside graph capture."""
    if _in_graph_capture() or type(x) not in _PLAIN or forced_off():
        return False  # graph capture first: under tracing, even reading the shape would warn
    if x.dim() != 4 or not x.is_cpu or x.layout != torch.strided or x.is_quantized or x.is_complex() or x.is_neg():
        return False
    if (even and (x.shape[2] % 2 or x.shape[3] % 2)) or x.element_size() not in (1, 2, 4, 8):
        return False
    return _layout(x) is not None and _kernel() is not None


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def usable(x: torch.Tensor, s: int = 2) -> bool:
    """Whether the fast kernel may compute space_to_depth(x, s) (see the module docstring for the rules)."""
    return s == 2 and _kernel_can_read(x, even=True)


def _threads(numel: int) -> int:
    return max(1, min(torch.get_num_threads(), numel // _GRAIN))


_GRAD_KIND = {torch.float32: 1, torch.float64: 2, torch.float16: 3, torch.bfloat16: 3}


def _run(fn, x: torch.Tensor, inverse: bool, as_gradient: bool = False) -> torch.Tensor:
    """Call the kernel: (B, C, H, W) -> (B, 4C, H/2, W/2), or back when `inverse`. Keeps x's memory format.

    `as_gradient` computes what the reference's backward computes: the values "+ 0" (-0.0 becomes +0.0), since
    autograd sums the four zero-padded slice gradients there; a plain move otherwise.
    """
    cl = _layout(x)
    b, c, h, w = x.shape
    shape = (b, c // 4, h * 2, w * 2) if inverse else (b, c * 4, h // 2, w // 2)
    out = torch.empty(shape, dtype=x.dtype, memory_format=torch.channels_last if cl else torch.contiguous_format)
    if x.numel():
        full, small = (out, x) if inverse else (x, out)
        kind = _GRAD_KIND.get(x.dtype, 0) if as_gradient else 0
        rc = fn(full.data_ptr(), small.data_ptr(), b, full.shape[1], small.shape[2], small.shape[3],
                x.element_size(), kind, int(cl), int(inverse), _threads(x.numel()))
        if rc:
            raise RuntimeError(f"fast SPD kernel refused dtype {x.dtype} (element size {x.element_size()})")
    return out


def _prepare_grad(g: torch.Tensor) -> torch.Tensor:
    """A gradient in a layout the kernel reads (NCHW or channels-last contiguous), copying only if needed."""
    return g if _layout(g) is not None and type(g) is torch.Tensor else g.contiguous()


class _Rearrange(torch.autograd.Function):
    """Fast space-to-depth (or, with `inverse`, depth-to-space) with autograd; its backward is the fast opposite
    rearrangement (itself differentiable, so double backward works)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inverse: bool, as_gradient: bool) -> torch.Tensor:
        ctx.inverse = inverse
        return _run(_kernel(), x, inverse=inverse, as_gradient=as_gradient)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        return _apply(_prepare_grad(g), not ctx.inverse, as_gradient=True), None, None

    @staticmethod
    def jvp(ctx, t: torch.Tensor, *_) -> torch.Tensor:
        return _reference(t, ctx.inverse)


def _apply(x: torch.Tensor, inverse: bool, as_gradient: bool = False) -> torch.Tensor:
    """Through autograd only when a graph is recorded; else straight to the kernel (less overhead)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _Rearrange.apply(x, inverse, as_gradient)
    return _run(_kernel(), x, inverse=inverse, as_gradient=as_gradient)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """Fast s=2 space-to-depth, (B, C, H, W) -> (B, 4C, H/2, W/2), bit-identical to the reference. Needs `usable(x)`."""
    return _apply(x, inverse=False)


def depth_to_space(y: torch.Tensor) -> torch.Tensor:
    """Fast inverse, (B, 4C, h, w) -> (B, C, 2h, 2w) in the same channel order; the reference where not usable."""
    if y.dim() != 4 or y.shape[1] % 4:
        raise ValueError(f"depth_to_space needs a (B, 4C, h, w) tensor, got shape {tuple(y.shape)}")
    return _apply(y, inverse=True) if _kernel_can_read(y, even=False) else _reference(y, inverse=True)
