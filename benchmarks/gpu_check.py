"""Verify the CUDA code paths on a GPU machine, and record what they measure.

    python benchmarks/gpu_check.py                       # every check
    python benchmarks/gpu_check.py --only render         # one check (repeat --only for more)
    python benchmarks/gpu_check.py --strict              # a skipped check counts as a failure

Checks (each a function of this module, run alone with ``--only NAME``):

* ``render``: gsplat's CUDA rasteriser against the torch reference (``ds4d_pl/render/``) on
  random scenes: images, alpha, depth, projected centres, and the gradients of a fixed random
  loss with respect to every Gaussian parameter;
* ``hashgrid``: the tinycudann 4D hash grid against the torch grid (``ds4d_pl/fields/hashgrid.py``)
  of the same sizes. tcnn rounds its level resolutions its own way and keeps fp16 tables, so the
  two are not bit-identical; the check fits both (same head, same data, same optimiser) to one
  smooth space-time function and compares the held-out errors, and times both;
* ``demo``: ``ds4d fit -c configs/demo.yaml`` on one GPU: wall time, PSNR, peak GPU memory;
* ``ddp``: a short single-node DDP fit over every visible GPU (NCCL), only with 2+ GPUs.

Writes ``benchmarks/results/gpu_check.json`` (``--out``) and exits 1 when any check fails. On a
machine without CUDA it says so, writes nothing (a committed GPU result stays intact) and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ds4d_pl.cameras import look_at, orbit_position
from ds4d_pl.render.base import GaussianParams, Renderer, rgb_to_sh0

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu_check.json"

#: Images and alpha: the bound tests/test_render.py puts on gsplat vs the reference.
IMAGE_ATOL = 2e-3
#: Depth where the pixel is mostly covered (alpha > 0.5), relative to the depth.
DEPTH_RTOL = 1e-2
#: Projected centres of Gaussians both backends keep, in pixels.
MEANS2D_ATOL = 1e-2
#: Gradients: both backends differentiate the same piecewise-smooth function, but pairs at the
#: 1/255 alpha cut-off and the early stop can fall on either side, so gradients agree in
#: direction and size, not bit for bit. A convention error (axis, sign, SH basis) gives a cosine
#: far below this.
GRAD_MIN_COSINE = 0.97
GRAD_MAX_REL_ERR = 0.25
#: Hash grid: the candidate's held-out error may exceed the reference's by this factor (plus 1%
#: of the target's variance, so two near-perfect fits are not failed on noise).
HASH_MAX_MSE_RATIO = 1.5
#: Demo: the PSNR target of the demo job (benchmarks/results/demo.json, issue 2).
DEMO_PSNR_TARGET = 26.0


@dataclass(frozen=True)
class SceneSpec:
    """A random object-like scene: ``n`` Gaussians in a ball, seen by ``cameras`` cameras."""

    name: str
    n: int
    sh_degree: int
    cameras: int
    width: int
    height: int
    seed: int


SCENES = (
    SceneSpec("small_sh1", 300, 1, 2, 64, 48, 0),
    SceneSpec("object_sh3", 3000, 3, 3, 128, 128, 1),
    SceneSpec("wide_sh0", 5000, 0, 1, 256, 160, 2),
)


def _status(ok: bool) -> str:
    return "pass" if ok else "fail"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_scene(spec: SceneSpec, device: torch.device) -> tuple[dict[str, Tensor], object]:
    """Leaf tensors of a random scene and its cameras (on ``device``)."""
    from ds4d_pl.cameras import Cameras, intrinsics_from_fov

    gen = torch.Generator().manual_seed(spec.seed)
    n = spec.n
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    radius = 0.5 * torch.rand(n, 1, generator=gen) ** (1.0 / 3.0)
    k = (spec.sh_degree + 1) ** 2
    sh = 0.1 * torch.randn(n, k, 3, generator=gen)
    sh[:, 0] = rgb_to_sh0(0.1 + 0.8 * torch.rand(n, 3, generator=gen))
    params = {
        "means": direction * radius,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": 0.01 + 0.04 * torch.rand(n, 3, generator=gen),
        "opacities": 0.2 + 0.7 * torch.rand(n, generator=gen),
        "sh": sh,
    }
    el = -20.0 + 50.0 * torch.rand(spec.cameras, generator=gen)
    az = 360.0 * torch.rand(spec.cameras, generator=gen)
    eye = orbit_position(el, az, 1.6 + 0.8 * torch.rand(spec.cameras, generator=gen))
    fov = 40.0 + 20.0 * float(torch.rand(1, generator=gen))
    K = intrinsics_from_fov(fov, spec.width, spec.height).expand(spec.cameras, 3, 3).clone()
    cams = Cameras(look_at(eye), K, spec.width, spec.height).to(device)
    leaves = {name: t.to(device).requires_grad_(True) for name, t in params.items()}
    return leaves, cams


def _render_and_backward(
    renderer: Renderer, leaves: dict[str, Tensor], cams: object, weights: dict[str, Tensor]
) -> tuple[object, dict[str, Tensor]]:
    params = {name: t.detach().clone().requires_grad_(True) for name, t in leaves.items()}
    out = renderer(GaussianParams(**params), cams, weights["background"])
    loss = (out.rgb * weights["rgb"]).sum() + (out.alpha * weights["alpha"]).sum()
    loss.backward()
    # A parameter the loss does not reach has no gradient: compare it as zeros.
    return out, {
        name: t.grad.detach() if t.grad is not None else torch.zeros_like(t)
        for name, t in params.items()
    }


def _grad_agreement(ref: Tensor, cand: Tensor) -> dict[str, float]:
    ref, cand = ref.double().flatten(), cand.double().flatten()
    norm = float(ref.norm())
    cosine = float(torch.nn.functional.cosine_similarity(ref, cand, dim=0)) if norm > 0 else 1.0
    rel = float((cand - ref).norm() / max(norm, 1e-12))
    return {"cosine": cosine, "rel_err": rel}


@torch.no_grad()
def _compare_outputs(ref: object, cand: object) -> dict[str, float]:
    """Largest differences between two :class:`~ds4d_pl.render.base.RenderOutput`."""
    both = (ref.radii > 0) & (cand.radii > 0)
    covered = (ref.alpha[..., 0] > 0.5) & (cand.alpha[..., 0] > 0.5)
    depth_rel = (cand.depth - ref.depth).abs()[..., 0] / ref.depth[..., 0].clamp_min(1e-6)
    return {
        "rgb_max_abs": float((cand.rgb - ref.rgb).abs().max()),
        "alpha_max_abs": float((cand.alpha - ref.alpha).abs().max()),
        "depth_max_rel": float(depth_rel[covered].max()) if covered.any() else 0.0,
        "means2d_max_abs": float((cand.means2d - ref.means2d).abs()[both].max())
        if both.any()
        else 0.0,
        # Share of (camera, Gaussian) pairs that both keep or both cull.
        "radii_agree": float((both == ((ref.radii > 0) | (cand.radii > 0))).float().mean()),
    }


def compare_renderers(
    reference: Renderer,
    candidate: Renderer,
    device: torch.device | str,
    scenes: tuple[SceneSpec, ...] = SCENES,
) -> dict:
    """Render random scenes with both renderers and compare outputs and gradients.

    Args:
        reference: The trusted renderer (the torch reference).
        candidate: The renderer under test (gsplat).
        device: Where both run.
        scenes: Scene specifications.

    Returns:
        ``{"status": "pass" | "fail", "scenes": {name: measurements}, "tolerances": ...}``.
    """
    device = torch.device(device)
    results, ok_all = {}, True
    for spec in scenes:
        leaves, cams = random_scene(spec, device)
        gen = torch.Generator().manual_seed(100 + spec.seed)
        shape = (spec.cameras, spec.height, spec.width)
        weights = {
            "rgb": torch.randn(*shape, 3, generator=gen).to(device),
            "alpha": torch.randn(*shape, 1, generator=gen).to(device),
            "background": torch.rand(3, generator=gen).to(device),
        }
        ref, ref_grads = _render_and_backward(reference, leaves, cams, weights)
        cand, cand_grads = _render_and_backward(candidate, leaves, cams, weights)
        m = _compare_outputs(ref, cand)
        m["grads"] = {name: _grad_agreement(ref_grads[name], cand_grads[name]) for name in leaves}
        ok = (
            m["rgb_max_abs"] <= IMAGE_ATOL
            and m["alpha_max_abs"] <= IMAGE_ATOL
            and m["depth_max_rel"] <= DEPTH_RTOL
            and m["means2d_max_abs"] <= MEANS2D_ATOL
            and all(
                g["cosine"] >= GRAD_MIN_COSINE and g["rel_err"] <= GRAD_MAX_REL_ERR
                for g in m["grads"].values()
            )
        )
        m["status"] = _status(ok)
        ok_all &= ok
        results[spec.name] = m
    return {
        "status": _status(ok_all),
        "scenes": results,
        "tolerances": {
            "image_atol": IMAGE_ATOL,
            "depth_rtol": DEPTH_RTOL,
            "means2d_atol_px": MEANS2D_ATOL,
            "grad_min_cosine": GRAD_MIN_COSINE,
            "grad_max_rel_err": GRAD_MAX_REL_ERR,
        },
    }


def time_render(renderer: Renderer, device: torch.device, repeats: int = 5) -> float:
    """Median milliseconds of one forward+backward render of the largest scene."""
    spec = max(SCENES, key=lambda s: s.n * s.width * s.height)
    leaves, cams = random_scene(spec, device)
    background = torch.ones(3, device=device)

    def step() -> None:
        out = renderer(GaussianParams(**leaves), cams, background)
        (out.rgb.sum() + out.alpha.sum()).backward()
        for t in leaves.values():
            t.grad = None

    step()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def check_render(device: torch.device) -> dict:
    """gsplat against the torch reference renderer (images and gradients), and their speed."""
    from ds4d_pl.render import TorchRasterizer, build_renderer

    try:
        candidate = build_renderer("gsplat")
    except (RuntimeError, ImportError) as e:
        return {"status": "skipped", "reason": str(e)}
    reference = TorchRasterizer()
    result = compare_renderers(reference, candidate, device)
    result["ms_forward_backward"] = {
        "torch": time_render(reference, device),
        "gsplat": time_render(candidate, device),
    }
    return result


def _target(points: Tensor, t: Tensor) -> Tensor:
    """A smooth space-time function in ``[-1.5, 1.5]`` for the hash grids to learn."""
    x, y, z = points.unbind(-1)
    phase = 2 * math.pi * t[:, 0]
    return (
        torch.sin(3 * x + 1) * torch.cos(2 * y)
        + 0.5 * torch.sin(4 * z + phase)
        + 0.3 * torch.cos(5 * x * y - phase)
    )[:, None]


def fit_encoding(
    encoding: torch.nn.Module,
    device: torch.device,
    steps: int = 300,
    batch: int = 1 << 14,
    seed: int = 0,
) -> dict[str, float]:
    """Fit ``encoding`` + a linear head to :func:`_target`; held-out MSE and time per step."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(encoding.out_dim, 1).to(device)
    encoding = encoding.to(device)
    params = list(encoding.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-2, eps=1e-15)
    test_x = (2 * torch.rand(batch, 3, generator=gen) - 1).to(device)
    test_t = torch.rand(batch, 1, generator=gen).to(device)
    test_y = _target(test_x, test_t)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        x = (2 * torch.rand(batch, 3, generator=gen) - 1).to(device)
        tt = torch.rand(batch, 1, generator=gen).to(device)
        loss = (head(encoding(x, tt).float()) - _target(x, tt)).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    ms = 1e3 * (time.perf_counter() - start) / max(steps, 1)
    with torch.no_grad():
        out = encoding(test_x, test_t).float()
        mse = float((head(out) - test_y).square().mean())
    return {
        "mse": mse,
        "target_var": float(test_y.var()),
        "ms_per_step": ms,
        "finite": bool(torch.isfinite(out).all()),
        "out_dim": int(out.shape[-1]),
    }


def compare_encodings(
    make_reference: Callable[[], torch.nn.Module],
    make_candidate: Callable[[], torch.nn.Module],
    device: torch.device | str,
    steps: int = 300,
    batch: int = 1 << 14,
) -> dict:
    """Fit a reference and a candidate encoding to the same function and compare held-out errors.

    Passes when the candidate's output is finite and as wide as the reference's, and its
    held-out MSE is at most ``HASH_MAX_MSE_RATIO`` × the reference's + 1% of the variance.
    """
    device = torch.device(device)
    bounds = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    # The same seed before each construction: backends that draw their initial tables alike
    # start alike, so two identical backends give identical errors.
    torch.manual_seed(0)
    reference = make_reference()
    torch.manual_seed(0)
    candidate = make_candidate()
    for enc in (reference, candidate):
        if hasattr(enc, "set_bounds"):
            enc.set_bounds(bounds, margin=0.0)
    ref = fit_encoding(reference, device, steps, batch)
    cand = fit_encoding(candidate, device, steps, batch)
    bound = HASH_MAX_MSE_RATIO * ref["mse"] + 0.01 * ref["target_var"]
    ok = cand["finite"] and cand["out_dim"] == ref["out_dim"] and cand["mse"] <= bound
    return {
        "status": _status(ok),
        "reference": ref,
        "candidate": cand,
        "mse_bound": bound,
        "speedup": ref["ms_per_step"] / max(cand["ms_per_step"], 1e-9),
    }


def check_hashgrid(device: torch.device) -> dict:
    """tinycudann's hash grid against the torch grid of the same sizes."""
    from ds4d_pl.fields.hashgrid import HashGrid4D

    sizes = {
        "levels": 8,
        "features_per_level": 2,
        "log2_table_size": 15,
        "base_resolution": 8,
        "max_resolution": 128,
    }
    try:
        probe = HashGrid4D(**sizes, backend="tcnn")
    except ImportError as e:
        return {"status": "skipped", "reason": _first_line(str(e))}
    del probe
    result = compare_encodings(
        lambda: HashGrid4D(**sizes, backend="torch"),
        lambda: HashGrid4D(**sizes, backend="tcnn"),
        device,
    )
    result["sizes"] = sizes
    return result


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), text)


#: Runs a ``ds4d`` command in a child process and records its peak GPU memory (argv[1] is the
#: JSON file to write, the rest is the ds4d command line).
_PEAK_MEMORY_RUNNER = """
import json, sys, torch
from ds4d_pl.cli import main
try:
    main(sys.argv[2:])
finally:
    peak = {
        "peak_gpu_allocated_gb": torch.cuda.max_memory_allocated() / 1024**3,
        "peak_gpu_reserved_gb": torch.cuda.max_memory_reserved() / 1024**3,
    }
    with open(sys.argv[1], "w") as f:
        json.dump(peak, f)
"""


def _run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out = -1, f"timed out after {timeout} s\n{e.stdout or ''}{e.stderr or ''}"
    return code, out, time.perf_counter() - start


def _metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def check_demo(device: torch.device, extra: tuple[str, ...] = (), timeout: float = 3600) -> dict:
    """The demo job on one GPU: wall time, PSNR against the demo's target, peak GPU memory."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, peak_file = Path(tmp) / "demo", Path(tmp) / "peak.json"
        fit = [
            "fit",
            "-c",
            str(REPO / "configs" / "demo.yaml"),
            "--trainer.accelerator=gpu",
            "--trainer.devices=1",
            f"--trainer.default_root_dir={run_dir}",
            *extra,
        ]
        cmd = [sys.executable, "-c", _PEAK_MEMORY_RUNNER, str(peak_file), *fit]
        code, out, wall = _run(cmd, timeout)
        metrics = _metrics(run_dir)
        peak = json.loads(peak_file.read_text()) if peak_file.is_file() else {}
        info_file = run_dir / "run_info.json"
        renderer = (
            json.loads(info_file.read_text()).get("renderer") if info_file.is_file() else None
        )
    cpu_file = REPO / "benchmarks" / "results" / "demo.json"
    cpu = json.loads(cpu_file.read_text()) if cpu_file.is_file() else {}
    psnr = metrics.get("psnr")
    ok = code == 0 and isinstance(psnr, float) and math.isfinite(psnr) and psnr >= DEMO_PSNR_TARGET
    result = {
        "status": _status(ok),
        "command": "ds4d " + " ".join(fit[:3] + fit[3:5] + list(extra)),
        "exit_code": code,
        "wall_time_s": round(wall, 1),
        "psnr": psnr,
        "ssim": metrics.get("ssim"),
        "dyn_psnr": metrics.get("dyn_psnr"),
        "num_gaussians": metrics.get("num_gaussians"),
        "renderer": renderer,
        **peak,
        "psnr_target": DEMO_PSNR_TARGET,
        "cpu_reference": {k: cpu.get(k) for k in ("wall_time_s", "psnr", "dyn_psnr")},
    }
    if code != 0:
        result["log_tail"] = out[-3000:]
    return result


def check_ddp(device: torch.device, timeout: float = 3600) -> dict:
    """A short DDP fit (``configs/trainer/ddp.yaml`` + ``fast.yaml``) over every visible GPU."""
    count = torch.cuda.device_count()
    if count < 2:
        return {"status": "skipped", "reason": f"{count} GPU visible; DDP needs 2 or more"}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "ddp"
        cmd = [
            sys.executable,
            "-m",
            "ds4d_pl.cli",
            "fit",
            "-c",
            str(REPO / "configs" / "demo.yaml"),
            "-c",
            str(REPO / "configs" / "trainer" / "ddp.yaml"),
            "-c",
            str(REPO / "configs" / "trainer" / "fast.yaml"),
            f"--trainer.default_root_dir={run_dir}",
        ]
        code, out, wall = _run(cmd, timeout)
        metrics = _metrics(run_dir)
        has_ckpt = (run_dir / "checkpoints" / "last.ckpt").is_file()
    psnr = metrics.get("psnr")
    nccl = "distributed_backend=nccl" in out
    ok = code == 0 and has_ckpt and isinstance(psnr, float) and math.isfinite(psnr) and nccl
    result = {
        "status": _status(ok),
        "devices": count,
        "backend_nccl": nccl,
        "exit_code": code,
        "wall_time_s": round(wall, 1),
        "psnr": psnr,
        "checkpoint": has_ckpt,
    }
    if not ok:
        result["log_tail"] = out[-3000:]
    return result


CHECKS: dict[str, Callable[[torch.device], dict]] = {
    "render": check_render,
    "hashgrid": check_hashgrid,
    "demo": check_demo,
    "ddp": check_ddp,
}


def environment() -> dict:
    """Versions and devices the results were measured with."""
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
    for package in ("gsplat", "tinycudann"):
        try:
            module = __import__(package)
            env[package] = getattr(module, "__version__", "installed")
        except Exception:  # a broken CUDA extension raises more than ImportError
            env[package] = None
    return env


def main(argv: list[str] | None = None) -> int:
    """Run the selected checks; 0 when all pass (or there is no CUDA), 1 otherwise."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", choices=sorted(CHECKS), help="run only this check")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--strict", action="store_true", help="a skipped check fails the run")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to "
            f"check. Run it on a GPU machine; {a.out} was left untouched."
        )
        return 0
    device = torch.device("cuda")
    names = a.only or list(CHECKS)
    results = {"environment": environment(), "checks": {}}
    failed = []
    for name in names:
        print(f"gpu_check: {name} ...", flush=True)
        start = time.perf_counter()
        try:
            result = CHECKS[name](device)
        except Exception as e:  # noqa: BLE001 - a crashing check is a failed check, recorded
            result = {"status": "fail", "error": f"{type(e).__name__}: {_first_line(str(e))}"}
        result["seconds"] = round(time.perf_counter() - start, 1)
        results["checks"][name] = result
        line = f"gpu_check: {name}: {result['status']}"
        if "reason" in result or "error" in result:
            line += f" ({result.get('reason') or result.get('error')})"
        print(line, flush=True)
        if result["status"] == "fail" or (a.strict and result["status"] == "skipped"):
            failed.append(name)
    results["passed"] = not failed
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"gpu_check: wrote {a.out}; " + (f"FAILED: {', '.join(failed)}" if failed else "all ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
