"""The compiled CPU compositing kernel (``cpu_raster.cpp``): build on first use, cache, call.

The kernel is plain C++ with a C ABI, called through :mod:`ctypes` on buffers that torch owns,
so building it needs only a C++17 compiler (``$CXX``, else ``c++``/``g++``/``clang++``): no
Python or torch headers, no CUDA, a few seconds. Nothing compiles at import time. The first
:func:`load_kernel` call looks for a cached library and compiles one when there is none:

* cache: ``$DS4D_CACHE_DIR/kernels`` (default ``~/.cache/ds4d_pl/kernels``), one file per
  (source, compiler, flags, CPU) so machines sharing a home directory never load a library
  built for another CPU;
* a compile writes a temporary file and renames it into place, so concurrent first runs are
  safe (the loser's rename replaces an identical file);
* ``DS4D_CPU_KERNEL=torch`` turns the kernel off for every renderer whose ``kernel`` is
  ``"auto"`` (the pure-PyTorch path then runs; same image and gradients, slower), and
  ``DS4D_CPU_KERNEL=compiled`` makes it required (an error instead of the fallback).

:class:`CompiledComposite` is the autograd function over it.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "ABI_VERSION",
    "KernelUnavailable",
    "TileBins",
    "CompiledComposite",
    "bin_tiles",
    "kernel_cache_dir",
    "kernel_from_env",
    "load_kernel",
    "warn_unavailable_once",
]

log = logging.getLogger(__name__)

#: Must match ``ds4d_raster_abi()`` in the C++ source.
ABI_VERSION = 1
SOURCE = Path(__file__).with_name("cpu_raster.cpp")
#: ``-ffp-contract=off`` keeps the forward and backward passes' alpha bit-identical (the
#: backward pass recomputes it and must take the same skip decisions); ``-march=native`` lets
#: the compiler use the CPU's vector units, which is why the CPU is part of the cache key.
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=off")
NATIVE_FLAG = "-march=native"

_lock = threading.Lock()
_cache: dict[str, ctypes.CDLL | KernelUnavailable] = {}


class KernelUnavailable(RuntimeError):
    """The compiled kernel cannot be built or loaded here (the message says why)."""


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: ``$DS4D_CACHE_DIR/kernels`` or
    ``~/.cache/ds4d_pl/kernels``."""
    root = os.environ.get("DS4D_CACHE_DIR") or Path.home() / ".cache" / "ds4d_pl"
    return Path(root) / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_fingerprint() -> str:
    """Model and feature flags of this CPU (what ``-march=native`` compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [
        line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))
    ]
    return "\n".join(sorted(set(keep))) or platform.machine()


def library_path(cxx: str, flags: Sequence[str] = (*FLAGS, NATIVE_FLAG)) -> Path:
    """Cache file of the kernel built by ``cxx`` with ``flags``: keyed by the source, the
    compiler's version, the flags and this CPU."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), " ".join(flags).encode()):
        key.update(part)
        key.update(b"\0")
    key.update(_cpu_fingerprint().encode())
    key.update(platform.machine().encode())
    return kernel_cache_dir() / f"cpu_raster-{key.hexdigest()[:16]}.so"


def _build(cxx: str) -> Path:
    """Compile the kernel into the cache (or find it there) and return the library path.

    A cached library costs one ``cxx --version`` call; a compiler that rejects ``-march=native``
    is retried without it on the first build only.
    """
    lib = library_path(cxx)
    if lib.is_file():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_name(f".{lib.name}.{os.getpid()}.tmp")
    start = time.perf_counter()
    for flags in ((*FLAGS, NATIVE_FLAG), FLAGS):
        proc = subprocess.run(
            [cxx, *flags, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True
        )
        if proc.returncode == 0:
            break
    else:
        tmp.unlink(missing_ok=True)
        raise KernelUnavailable(
            f"compiling {SOURCE} with {cxx} failed (exit {proc.returncode}):\n"
            + (proc.stderr or proc.stdout)[-2000:]
        )
    os.replace(tmp, lib)
    log.info("compiled the CPU rasteriser kernel in %.1f s: %s", time.perf_counter() - start, lib)
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    lib.ds4d_raster_abi.restype = ctypes.c_int
    lib.ds4d_raster_abi.argtypes = []
    lib.ds4d_raster_bin.restype = None
    lib.ds4d_raster_bin.argtypes = [p, p, i64, i64, i64, i64, i64, p, p]
    for suffix in ("f32", "f64"):
        fwd = getattr(lib, f"ds4d_raster_forward_{suffix}")
        fwd.restype = None
        fwd.argtypes = [p, p, p, i64, p, p, i64, i64, i64, i64, f64, f64, f64, i32, p, p, p]
        bwd = getattr(lib, f"ds4d_raster_backward_{suffix}")
        bwd.restype = None
        bwd.argtypes = [p, p, p, i64, p, p, i64, i64, i64, i64, f64, f64, i32, p, p, p, p]


def load_kernel() -> ctypes.CDLL:
    """The compiled kernel, built and cached on the first call of the process.

    Raises:
        KernelUnavailable: No C++ compiler, a failed compile, or a library that does not load
            (the same error is raised again on later calls without retrying).
    """
    with _lock:
        cached = _cache.get("lib")
        if cached is None:
            try:
                cxx = _compiler()
                if cxx is None:
                    raise KernelUnavailable(
                        "no C++ compiler found ($CXX, c++, g++ or clang++); install one (e.g. "
                        "Debian's g++) for the fast CPU rasteriser"
                    )
                lib = ctypes.CDLL(str(_build(cxx)))
                _declare(lib)
                if lib.ds4d_raster_abi() != ABI_VERSION:
                    raise KernelUnavailable(
                        f"kernel library reports ABI {lib.ds4d_raster_abi()}, expected "
                        f"{ABI_VERSION}; delete {kernel_cache_dir()} and retry"
                    )
                cached = lib
            except KernelUnavailable as err:
                cached = err
            except OSError as err:  # a library that does not load
                cached = KernelUnavailable(f"loading the compiled CPU rasteriser failed: {err}")
            _cache["lib"] = cached
    if isinstance(cached, KernelUnavailable):
        raise cached
    return cached


#: Values of ``DS4D_CPU_KERNEL`` (empty: unset).
ENV_CHOICES = ("", "auto", "compiled", "torch")


def kernel_from_env() -> str:
    """The compositing choice for renderers built with ``kernel="auto"``: ``DS4D_CPU_KERNEL``.

    Returns:
        ``"auto"`` when the variable is unset, empty or ``auto``; else ``"compiled"`` or
        ``"torch"``.

    Raises:
        ValueError: Any other value (named in the message).
    """
    value = os.environ.get("DS4D_CPU_KERNEL", "").strip().lower()
    if value not in ENV_CHOICES:
        raise ValueError(
            f"DS4D_CPU_KERNEL={os.environ['DS4D_CPU_KERNEL']!r} is not one of auto, compiled, torch"
        )
    return value or "auto"


_warned = False


def warn_unavailable_once(err: KernelUnavailable) -> None:
    """Warn, once per process, that ``auto`` renderers fall back to the pure-PyTorch path."""
    global _warned
    with _lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        "the compiled CPU rasteriser is unavailable, so rendering uses the slower pure-PyTorch "
        f"compositing (same results; set DS4D_CPU_KERNEL=torch to silence this): {err}",
        stacklevel=4,
    )


def _ptr(t: Tensor) -> int:
    return t.data_ptr()


@dataclass
class TileBins:
    """Visible Gaussians binned into square tiles, front to back within each tile.

    Attributes:
        rows: ``(V,)`` int64 feature row (``camera * N + gaussian``) of each visible Gaussian,
            camera by camera, front to back.
        boxes: ``(V, 4)`` int32 inclusive pixel box ``x0, y0, x1, y1`` of each.
        offsets: ``(C * TY * TX + 1,)`` int64 start of each tile's list in :attr:`items`.
        items: ``(L,)`` int32 positions in :attr:`rows`, tile by tile.
        cameras: ``C``.
        width: Image width.
        height: Image height.
        tile: Tile edge in pixels.
    """

    rows: Tensor
    boxes: Tensor
    offsets: Tensor
    items: Tensor
    cameras: int
    width: int
    height: int
    tile: int

    @property
    def tiles_x(self) -> int:
        return (self.width + self.tile - 1) // self.tile

    @property
    def tiles_y(self) -> int:
        return (self.height + self.tile - 1) // self.tile


def bin_tiles(
    rows: Tensor, cams: Tensor, boxes: Tensor, cameras: int, width: int, height: int, tile: int
) -> TileBins:
    """Bin visible Gaussians into tiles with the compiled kernel.

    Args:
        rows: ``(V,)`` feature rows, camera by camera, front to back.
        cams: ``(V,)`` camera of each row.
        boxes: ``(V, 4)`` inclusive, non-empty, in-image pixel boxes ``x0, y0, x1, y1``.
        cameras: Number of cameras ``C``.
        width: Image width.
        height: Image height.
        tile: Tile edge in pixels.
    """
    lib = load_kernel()
    rows = rows.contiguous().long()
    cams = cams.contiguous().long()
    boxes = boxes.to(torch.int32).contiguous()
    tx, ty = (width + tile - 1) // tile, (height + tile - 1) // tile
    per = (boxes[:, 2] // tile - boxes[:, 0] // tile + 1) * (
        boxes[:, 3] // tile - boxes[:, 1] // tile + 1
    )
    total = int(per.sum()) if per.numel() else 0
    offsets = torch.zeros(cameras * tx * ty + 1, dtype=torch.int64)
    items = torch.empty(total, dtype=torch.int32)
    lib.ds4d_raster_bin(
        _ptr(boxes), _ptr(cams), rows.numel(), tile, tx, ty, cameras, _ptr(offsets), _ptr(items)
    )
    return TileBins(rows, boxes, offsets, items, cameras, width, height, tile)


class CompiledComposite(torch.autograd.Function):
    """Front-to-back compositing of binned Gaussians: ``(R, 10)`` features → ``(C, H, W, 5)``.

    Channels of the result: premultiplied rgb, alpha-weighted depth, alpha. Gradients flow to
    every feature column (means, conics, opacity, colour, depth).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        feats: Tensor,
        bins: TileBins,
        alpha_threshold: float,
        max_alpha: float,
        min_transmittance: float,
        threads: int,
    ) -> Tensor:
        lib = load_kernel()
        feats = feats.detach().contiguous()
        suffix = _suffix(feats.dtype)
        c, h, w = bins.cameras, bins.height, bins.width
        out = torch.empty(c, h, w, 5, dtype=feats.dtype)
        final = torch.empty(c * h * w, dtype=feats.dtype)
        last = torch.empty(c * h * w, dtype=torch.int32)
        getattr(lib, f"ds4d_raster_forward_{suffix}")(
            _ptr(feats),
            _ptr(bins.rows),
            _ptr(bins.boxes),
            bins.rows.numel(),
            _ptr(bins.offsets),
            _ptr(bins.items),
            c,
            w,
            h,
            bins.tile,
            alpha_threshold,
            max_alpha,
            min_transmittance,
            threads,
            _ptr(out),
            _ptr(final),
            _ptr(last),
        )
        ctx.save_for_backward(feats, final, last)
        ctx.bins = bins
        ctx.knobs = (alpha_threshold, max_alpha, threads)
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, None, None, None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        lib = load_kernel()
        feats, final, last = ctx.saved_tensors
        bins: TileBins = ctx.bins
        alpha_threshold, max_alpha, threads = ctx.knobs
        grad_out = grad_out.to(feats.dtype).contiguous()
        grad_feats = torch.zeros_like(feats)
        getattr(lib, f"ds4d_raster_backward_{_suffix(feats.dtype)}")(
            _ptr(feats),
            _ptr(bins.rows),
            _ptr(bins.boxes),
            bins.rows.numel(),
            _ptr(bins.offsets),
            _ptr(bins.items),
            bins.cameras,
            bins.width,
            bins.height,
            bins.tile,
            alpha_threshold,
            max_alpha,
            threads,
            _ptr(grad_out),
            _ptr(final),
            _ptr(last),
            _ptr(grad_feats),
        )
        return grad_feats, None, None, None, None, None


def _suffix(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "f32"
    if dtype == torch.float64:
        return "f64"
    raise TypeError(f"the compiled CPU rasteriser takes float32 or float64, got {dtype}")
