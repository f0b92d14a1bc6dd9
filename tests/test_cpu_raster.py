"""Spec of the compiled CPU compositing kernel (``ds4d_pl/render/cpu_raster.*``).

The compiled path must be a drop-in for the pure-PyTorch one: same image, alpha, depth and
gradients for every input on any scene (overlap, saturation, off-screen and behind-camera
Gaussians, several cameras, sizes that are not tile multiples), chosen by ``kernel`` or
``DS4D_CPU_KERNEL``, falling back with one warning when it cannot be built, and built into a
keyed cache with an atomic rename.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from ds4d_pl.cameras import Cameras, look_at
from ds4d_pl.render import cpu_raster, torch_raster
from ds4d_pl.render.base import GaussianParams, rgb_to_sh0
from ds4d_pl.render.cpu_raster import KernelUnavailable, kernel_from_env, load_kernel
from ds4d_pl.render.torch_raster import TorchRasterizer

NAMES = ("means", "quats", "scales", "opacities", "sh")

needs_compiler = pytest.mark.skipif(
    cpu_raster._compiler() is None, reason="no C++ compiler ($CXX, c++, g++, clang++)"
)


def scene(
    n: int, seed: int, dtype: torch.dtype, opacity: tuple[float, float] = (0.2, 0.99)
) -> dict[str, torch.Tensor]:
    """Gaussians around the origin: overlapping, some huge, some tiny, SH degree 1."""
    gen = torch.Generator().manual_seed(seed)
    sh = 0.2 * torch.randn(n, 4, 3, generator=gen)
    sh[:, 0] = rgb_to_sh0(0.1 + 0.8 * torch.rand(n, 3, generator=gen))
    lo, hi = opacity
    scales = 0.01 + 0.12 * torch.rand(n, 3, generator=gen) ** 2
    scales[: n // 10] *= 4.0  # a few wide ones span many tiles
    params = {
        "means": 0.5 * (2 * torch.rand(n, 3, generator=gen) - 1),
        "quats": torch.randn(n, 4, generator=gen),
        "scales": scales,
        "opacities": lo + (hi - lo) * torch.rand(n, generator=gen),
        "sh": sh,
    }
    return {k: v.to(dtype).requires_grad_(True) for k, v in params.items()}


def cameras(c: int, width: int, height: int, seed: int, dtype: torch.dtype) -> Cameras:
    """Random poses looking at the origin, off-centre principal points, fx != fy."""
    gen = torch.Generator().manual_seed(seed)
    eye = torch.nn.functional.normalize(torch.randn(c, 3, generator=gen), dim=-1)
    eye = eye * (1.5 + 0.6 * torch.rand(c, 1, generator=gen))
    c2w = torch.stack([look_at(eye[i : i + 1], torch.zeros(3))[0] for i in range(c)])
    K = torch.zeros(c, 3, 3)
    K[:, 0, 0] = width * (0.8 + 0.4 * torch.rand(c, generator=gen))
    K[:, 1, 1] = width * (0.8 + 0.4 * torch.rand(c, generator=gen))
    K[:, 0, 2] = width * (0.35 + 0.3 * torch.rand(c, generator=gen))
    K[:, 1, 2] = height * (0.35 + 0.3 * torch.rand(c, generator=gen))
    K[:, 2, 2] = 1.0
    return Cameras(c2w.to(dtype), K.to(dtype), width, height)


def place_outside(p: dict[str, torch.Tensor], cams: Cameras) -> None:
    """Move some Gaussians behind camera 0, between it and its near plane, and off-screen."""
    with torch.no_grad():
        centre = cams.centers[0].to(p["means"])
        forward = cams.c2w[0, :3, 2].to(p["means"])
        right = cams.c2w[0, :3, 0].to(p["means"])
        p["means"][:6] = centre - 0.4 * forward + 0.05 * p["means"][:6]
        p["means"][6:8] = centre + 0.004 * forward
        p["means"][8:14] = centre + 1.5 * forward + 2.5 * right + 0.1 * p["means"][8:14]
        # Partly on screen: the centre just outside the left edge, the footprint inside.
        p["means"][14:18] = centre + 1.5 * forward - 1.0 * right + 0.05 * p["means"][14:18]
        p["scales"][14:18] = 0.3


def render_and_grads(
    renderer: TorchRasterizer, p: dict[str, torch.Tensor], cams: Cameras, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs and the gradient of a random weighting of rgb, alpha and depth."""
    for t in p.values():
        t.grad = None
    out = renderer(GaussianParams(**p), cams, torch.tensor([0.3, 0.6, 0.9]).to(p["means"]))
    gen = torch.Generator().manual_seed(seed)
    loss = sum(
        (getattr(out, k) * torch.rand(getattr(out, k).shape, generator=gen).to(out.rgb)).sum()
        for k in ("rgb", "alpha", "depth")
    )
    loss.backward()
    grads = {k: p[k].grad.clone() for k in NAMES}
    grads["means2d"] = out.means2d.grad.clone()
    images = {k: getattr(out, k).detach() for k in ("rgb", "alpha", "depth")}
    return images, grads


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float) -> None:
    for k in a:
        scale = max(1.0, float(a[k].abs().max()))
        torch.testing.assert_close(
            a[k], b[k], rtol=tol, atol=tol * scale, msg=lambda m, k=k: f"{k}: {m}"
        )


# ------------------------------------------------------------------------ same results


@needs_compiler
@pytest.mark.parametrize(
    ("n", "c", "width", "height", "tile", "dtype", "tol"),
    [
        (300, 3, 45, 29, 16, torch.float64, 1e-9),  # tile edges cut the image and Gaussians
        (300, 2, 32, 48, 5, torch.float64, 1e-9),  # small tiles: every Gaussian spans many
        (200, 1, 1, 40, 16, torch.float64, 1e-9),  # one pixel wide
        (400, 2, 37, 23, 16, torch.float32, 2e-4),
    ],
)
def test_compiled_and_torch_paths_agree_on_images_and_every_gradient(
    n: int, c: int, width: int, height: int, tile: int, dtype: torch.dtype, tol: float
) -> None:
    p = scene(n, seed=n + c, dtype=dtype)
    cams = cameras(c, width, height, seed=c, dtype=dtype)
    place_outside(p, cams)
    ref_img, ref_grad = render_and_grads(TorchRasterizer(kernel="torch"), p, cams)
    img, grad = render_and_grads(TorchRasterizer(kernel="compiled", tile_size=tile), p, cams)
    assert_same(ref_img, img, tol)
    assert_same(ref_grad, grad, tol)
    # The scene reaches what it is meant to: culled, visible and saturated Gaussians.
    proj = TorchRasterizer().project(GaussianParams(**p), cams)
    assert not proj.valid[0, :8].any() and proj.valid.any()
    assert all(g.abs().sum() > 0 for g in grad.values())


@needs_compiler
@pytest.mark.parametrize("min_transmittance", [1e-4, 0.0])
def test_saturating_layers_stop_early_the_same_way(min_transmittance: float) -> None:
    """Dense, nearly opaque layers: most pixels reach the early stop (or all layers count)."""
    p = scene(600, seed=3, dtype=torch.float64, opacity=(0.9, 0.999))
    with torch.no_grad():
        p["means"] *= 0.4
    cams = cameras(2, 24, 20, seed=5, dtype=torch.float64)
    kw = {"min_transmittance": min_transmittance}
    ref_img, ref_grad = render_and_grads(TorchRasterizer(kernel="torch", **kw), p, cams)
    img, grad = render_and_grads(TorchRasterizer(kernel="compiled", tile_size=8, **kw), p, cams)
    # With the early stop a pixel's alpha ends between 1 - 1e-2 and 1 - 1e-4.
    assert (ref_img["alpha"] > 0.999).float().mean() > 0.3
    assert_same(ref_img, img, 1e-9)
    assert_same(ref_grad, grad, 1e-9)


@needs_compiler
def test_thread_count_does_not_change_a_single_bit() -> None:
    p = scene(300, seed=11, dtype=torch.float64)
    cams = cameras(2, 40, 36, seed=12, dtype=torch.float64)
    one = render_and_grads(TorchRasterizer(kernel="compiled", threads=1, tile_size=8), p, cams)
    three = render_and_grads(TorchRasterizer(kernel="compiled", threads=3, tile_size=8), p, cams)
    # Bit-identical, not just close: seeded runs reproduce on any machine.
    for a, b in zip(one, three, strict=True):
        for k in a:
            assert torch.equal(a[k], b[k]), k


@needs_compiler
def test_compiled_gradients_match_finite_differences() -> None:
    p = scene(6, seed=13, dtype=torch.float64, opacity=(0.3, 0.9))
    with torch.no_grad():
        p["means"] *= 0.3
        p["scales"].clamp_(0.04, 0.15)
    cams = cameras(2, 18, 13, seed=14, dtype=torch.float64)
    renderer = TorchRasterizer(kernel="compiled", tile_size=4)
    gen = torch.Generator().manual_seed(15)
    w = {
        k: torch.rand(2, 13, 18, d, generator=gen, dtype=torch.float64)
        for k, d in (("rgb", 3), ("alpha", 1), ("depth", 1))
    }
    bg = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)

    def loss(*tensors: torch.Tensor) -> torch.Tensor:
        out = renderer(GaussianParams(**dict(zip(NAMES, tensors, strict=True))), cams, bg)
        return sum((getattr(out, k) * w[k]).sum() for k in w)

    inputs = tuple(p[k] for k in NAMES)
    assert loss(*inputs).item() != 0
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------ choosing the path


class _Spy:
    """Stands in for ``CompiledComposite`` in the renderer module and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def apply(self, *args: object) -> torch.Tensor:
        self.calls += 1
        return cpu_raster.CompiledComposite.apply(*args)


def _render_small(renderer: TorchRasterizer) -> torch.Tensor:
    p = scene(40, seed=1, dtype=torch.float32)
    return renderer(GaussianParams(**p), cameras(1, 16, 12, 2, torch.float32), torch.ones(3)).rgb


@needs_compiler
def test_kernel_knob_and_environment_choose_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy()
    monkeypatch.setattr(torch_raster, "CompiledComposite", spy)
    monkeypatch.delenv("DS4D_CPU_KERNEL", raising=False)
    _render_small(TorchRasterizer(kernel="torch"))
    assert spy.calls == 0
    _render_small(TorchRasterizer())  # auto, compiler present
    assert spy.calls == 1
    monkeypatch.setenv("DS4D_CPU_KERNEL", "torch")
    renderer = TorchRasterizer()
    assert renderer.kernel == "torch"
    _render_small(renderer)
    assert spy.calls == 1
    # An explicit knob is not overridden by the environment.
    _render_small(TorchRasterizer(kernel="compiled"))
    assert spy.calls == 2
    monkeypatch.setenv("DS4D_CPU_KERNEL", "compiled")
    assert TorchRasterizer().kernel == "compiled"


def test_other_dtypes_and_devices_use_the_torch_path() -> None:
    renderer = TorchRasterizer()
    assert not renderer.uses_compiled_kernel(torch.zeros(1, dtype=torch.bfloat16))
    assert not renderer.uses_compiled_kernel(torch.zeros(1, device="meta"))


def test_bad_environment_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DS4D_CPU_KERNEL", "fast")
    with pytest.raises(ValueError, match="DS4D_CPU_KERNEL='fast' is not one of"):
        kernel_from_env()
    with pytest.raises(ValueError, match="DS4D_CPU_KERNEL"):
        TorchRasterizer()
    with pytest.raises(ValueError, match="kernel must be"):
        TorchRasterizer(kernel="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads must be positive"):
        TorchRasterizer(threads=0)


@pytest.fixture
def fresh_kernel_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty kernel cache directory and no kernel loaded or warned about in this process."""
    monkeypatch.setenv("DS4D_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_raster, "_cache", {})
    monkeypatch.setattr(cpu_raster, "_warned", False)
    monkeypatch.delenv("DS4D_CPU_KERNEL", raising=False)
    return tmp_path / "kernels"


def test_a_failing_compiler_warns_once_and_auto_falls_back(
    fresh_kernel_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CXX", "/bin/false")
    with pytest.warns(UserWarning, match="compiled CPU rasteriser is unavailable") as record:
        first = _render_small(TorchRasterizer())
        second = _render_small(TorchRasterizer())  # a second renderer: no second warning
    ours = [str(w.message) for w in record if "rasteriser" in str(w.message)]
    assert len(ours) == 1 and "/bin/false failed" in ours[0]
    torch.testing.assert_close(first, _render_small(TorchRasterizer(kernel="torch")))
    torch.testing.assert_close(first, second)
    assert not list(fresh_kernel_state.glob("*.so")) and not list(fresh_kernel_state.glob(".*"))
    with pytest.raises(KernelUnavailable, match=r"kernel='compiled' was requested but compiling"):
        TorchRasterizer(kernel="compiled")


def test_no_compiler_at_all_is_a_clear_error_under_compiled(
    fresh_kernel_state: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no c++, g++ or clang++ on it
    with pytest.raises(KernelUnavailable, match="no C\\+\\+ compiler found"):
        TorchRasterizer(kernel="compiled")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _render_small(TorchRasterizer())
    assert len(record) == 1 and "no C++ compiler found" in str(record[0].message)


# ------------------------------------------------------------------------ the build cache


@needs_compiler
def test_the_cache_is_keyed_by_source_and_written_by_an_atomic_rename(
    fresh_kernel_state: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        renames.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(cpu_raster.os, "replace", recording_replace)
    lib = load_kernel()
    assert lib.ds4d_raster_abi() == cpu_raster.ABI_VERSION
    built = sorted(p.name for p in fresh_kernel_state.iterdir())
    assert len(built) == 1 and built[0].startswith("cpu_raster-") and built[0].endswith(".so")
    # Compiled under a temporary name in the same directory, then renamed into place.
    ((src, dst),) = renames
    assert Path(dst).name == built[0] and Path(src).parent == Path(dst).parent and src != dst

    # Found again without compiling (a second process): same file, no rename.
    cxx = cpu_raster._compiler()
    assert cxx is not None
    stamp = (fresh_kernel_state / built[0]).stat().st_mtime_ns
    assert cpu_raster._build(cxx).name == built[0]
    assert len(renames) == 1 and (fresh_kernel_state / built[0]).stat().st_mtime_ns == stamp

    # The key: another source, other flags or another compiler get another file.
    assert cpu_raster.library_path(cxx).name == built[0]
    assert cpu_raster.library_path(cxx, [*cpu_raster.FLAGS, "-DX"]).name != built[0]
    edited = tmp_path / "cpu_raster.cpp"
    edited.write_text(cpu_raster.SOURCE.read_text() + "\n// edited\n")
    monkeypatch.setattr(cpu_raster, "SOURCE", edited)
    assert cpu_raster.library_path(cxx).name != built[0]
    assert cpu_raster.library_path(cxx).parent == fresh_kernel_state
