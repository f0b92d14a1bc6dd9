"""Where a fit's time goes: every training step split into its phases, and the post-fit phases.

Usage::

    python benchmarks/profile_step.py [--config configs/demo.yaml] [--threads 1]
        [--json out.json] [-- extra ds4d fit arguments]
    python benchmarks/profile_step.py --compare before.json after.json   # side-by-side table

It runs ``ds4d fit`` in this process with timers wrapped around the model's, renderer's and
system's methods from outside (nothing in the package is edited), so the timed run is the real
one: same config, same Lightning loop, same post-fit videos, exports and test.

* **Forward phases** are wall-time intervals of the wrapped calls; a nested call's time is taken
  out of its caller's (each instant is charged to the innermost running phase).
* **Backward phases** come from identity autograd nodes put on each phase's inputs and outputs:
  the one on an output runs when that output's gradient is complete (the phase's backward
  starts), the one on an input when the phase has produced that input's gradient (control goes
  back to the caller). The autograd engine runs one graph node at a time on CPU, in nearly
  reverse creation order, so these events cut the backward pass into consecutive phases.
* Time inside a step that no wrapped call covers is ``step: other`` (glue in the training step);
  time between steps is the Lightning loop (progress bar, hooks, checkpoints are timed apart).

Timer overhead is a few microseconds per wrapped call (tens per step). The script works on any
commit of the package (methods it does not find are skipped and listed), so the same file
profiles an older checkout: ``PYTHONPATH=/path/to/old/checkout python benchmarks/profile_step.py``.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import functools
import importlib
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
_now = time.perf_counter
#: Setup time counts from here: after ``import torch``, before Lightning and the package.
_T_START = _now()


# ----------------------------------------------------------------------------- recording
@dataclasses.dataclass
class _Interval:
    label: str
    start: float
    end: float


class Recorder:
    """Collects forward intervals, backward events and the step boundaries of one run."""

    def __init__(self) -> None:
        self.intervals: list[_Interval] = []
        self.steps: list[tuple[int, bool, float, float]] = []  # (step, fine, start, end)
        self.stack: list[str] = []  # labels of the wrapped calls now running
        self.events: list[tuple[float, str]] = []  # backward: (time, label from then on)
        self.backward_open: float | None = None
        self.missing: list[str] = []

    def add(self, label: str, start: float, end: float) -> None:
        self.intervals.append(_Interval(label, start, end))

    def parent_label(self) -> str:
        return self.stack[-1] if self.stack else "step: other"


REC = Recorder()

#: Phases reported outside the training steps (everything else there is setup or loop time).
OUTSIDE_PHASES = (
    "checkpoints",
    "validation",
    "post-fit: videos",
    "post-fit: export",
    "post-fit: test (metrics.json)",
)


class _Stamp(torch.autograd.Function):
    """Identity whose backward records ``(time, label)``: from then on the backward pass is in
    the phase ``label``."""

    @staticmethod
    def forward(ctx: Any, label: str, x: torch.Tensor) -> torch.Tensor:
        ctx.label = label
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        REC.events.append((_now(), ctx.label))
        return None, grad


def _stamp(label: str, x: Any) -> Any:
    """Stamp a tensor, or the tensor fields of a dataclass / values of a dict, that need grad."""
    if isinstance(x, torch.Tensor):
        return _Stamp.apply(label, x) if x.requires_grad and torch.is_grad_enabled() else x
    if isinstance(x, dict):
        return {k: _stamp(label, v) for k, v in x.items()}
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return tuple(_stamp(label, v) for v in x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        changes = {
            f.name: _stamp(label, getattr(x, f.name))
            for f in dataclasses.fields(x)
            # means2d keeps its identity: the renderer called retain_grad() on it and the
            # densification reads its .grad.
            if f.name != "means2d" and isinstance(getattr(x, f.name), torch.Tensor)
        }
        return dataclasses.replace(x, **changes)
    return x


def wrap(
    module: str,
    qualname: str,
    label: str,
    stamp_inputs: tuple[int, ...] = (),
    stamp_output: bool = False,
) -> None:
    """Time ``module.qualname`` (a function or ``Class.method``) under ``label``.

    Args:
        stamp_inputs: Positions (after ``self``) of the arguments whose backward ends this phase.
        stamp_output: Stamp the return value, so its backward starts this phase.
    """
    try:
        owner: Any = importlib.import_module(module)
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
    except (ImportError, AttributeError, KeyError):
        REC.missing.append(f"{module}.{qualname}")
        return
    is_method = isinstance(owner, type)

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if stamp_inputs:
            parent = f"backward: {REC.parent_label()}"
            args = list(args)
            for i in stamp_inputs:
                j = i + 1 if is_method else i
                if j < len(args):
                    args[j] = _stamp(parent, args[j])
        REC.stack.append(label)
        start = _now()
        try:
            out = fn(*args, **kwargs)
        finally:
            REC.add(label, start, _now())
            REC.stack.pop()
        return _stamp(f"backward: {label}", out) if stamp_output else out

    setattr(owner, name, timed)


def install() -> None:
    """Wrap every phase; names missing in the profiled checkout are recorded and skipped."""
    w = wrap
    # One training step and what happens in it.
    w("ds4d_pl.system", "photometric_terms", "losses")
    w("ds4d_pl.system", "weigh", "losses")
    w("ds4d_pl.system", "scale_ratio_term", "losses")
    w("ds4d_pl.data.sampler", "FrameSampler.sample", "data: frame sampling")
    w("ds4d_pl.model", "DS4DModel.refresh_visibility", "conditioning: visibility renders")
    w("ds4d_pl.model", "DS4DModel.at", "deformation: offsets, activations", stamp_output=True)
    w("ds4d_pl.conditioning.build", "Conditioner.forward", "conditioning", stamp_output=True)
    w(
        "ds4d_pl.fields.deformation",
        "DeformationField.forward",
        "field: encoding + MLP",
        stamp_inputs=(0, 2),
        stamp_output=True,
    )
    w("ds4d_pl.fields.deformation", "DeformationField.regularizers", "losses")
    raster = "ds4d_pl.render.torch_raster"
    w(raster, "TorchRasterizer.__call__", "render: SH colours, glue", (0,), stamp_output=True)
    w(raster, "TorchRasterizer.project", "render: projection", (0,), stamp_output=True)
    w(raster, "TorchRasterizer._rasterize", "render: compositing", (0,), stamp_output=True)
    w(raster, "TorchRasterizer._list_pairs", "render: sorting/binning")  # torch path
    w(raster, "TorchRasterizer._bin", "render: sorting/binning")  # compiled path
    w("ds4d_pl.gaussians.densify", "DensifyStrategy.accumulate", "densification")
    w("ds4d_pl.gaussians.densify", "DensifyStrategy.step", "densification")
    w("lightning.pytorch.core.optimizer", "LightningOptimizer.step", "optimiser")
    w("ds4d_pl.system", "DS4DSystem._log_step", "logging")
    w("lightning.pytorch.core.module", "LightningModule.log", "logging")
    w("lightning.pytorch.core.module", "LightningModule.log_dict", "logging")
    w("lightning.pytorch.core.module", "LightningModule.manual_backward", "backward: step: other")
    # Outside the steps.
    w("lightning.pytorch.trainer.trainer", "Trainer.save_checkpoint", "checkpoints")
    w("ds4d_pl.system", "DS4DSystem.validation_step", "validation")
    w("ds4d_pl.system", "DS4DSystem.on_validation_epoch_end", "validation")
    w("ds4d_pl.callbacks.render_videos", "RenderVideos.on_fit_end", "post-fit: videos")
    w("ds4d_pl.callbacks.export", "ExportAssets.on_fit_end", "post-fit: export")
    w("lightning.pytorch.trainer.trainer", "Trainer.test", "post-fit: test (metrics.json)")
    _wrap_training_step()


def _wrap_training_step() -> None:
    from ds4d_pl.system import DS4DSystem

    step_fn = DS4DSystem.training_step

    @functools.wraps(step_fn)
    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        step = int(self.global_step)
        fine = bool(self.model.deformable) and not self.is_coarse(step)
        start = _now()
        try:
            return step_fn(self, *args, **kwargs)
        finally:
            REC.steps.append((step, fine, start, _now()))

    DS4DSystem.training_step = timed


# ----------------------------------------------------------------------------- analysis
def backward_intervals(rec: Recorder) -> list[_Interval]:
    """Cut each ``manual_backward`` interval at the recorded backward events."""
    out = []
    events = sorted(rec.events)
    times = [t for t, _ in events]
    for iv in rec.intervals:
        if iv.label != "backward: step: other":
            continue
        lo = bisect.bisect_left(times, iv.start)
        hi = bisect.bisect_right(times, iv.end)
        label, t = iv.label, iv.start
        for t_event, next_label in events[lo:hi]:
            out.append(_Interval(label, t, t_event))
            label, t = next_label, t_event
        out.append(_Interval(label, t, iv.end))
    return out


def paint(intervals: list[_Interval], start: float, end: float) -> dict[str, float]:
    """Seconds per label in ``[start, end]``, each instant charged to its shortest interval."""
    inside = [iv for iv in intervals if iv.end > start and iv.start < end]
    cuts = sorted(
        {start, end, *(max(start, min(end, x)) for iv in inside for x in (iv.start, iv.end))}
    )
    totals: dict[str, float] = defaultdict(float)
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        if b <= a:
            continue
        mid = 0.5 * (a + b)
        cover = [iv for iv in inside if iv.start <= mid <= iv.end]
        label = min(cover, key=lambda iv: iv.end - iv.start).label if cover else ""
        totals[label] += b - a
    return totals


def summarise(rec: Recorder, t_begin: float, t_end: float) -> dict[str, Any]:
    """Per-step milliseconds by phase (coarse and fine steps) and seconds outside the steps."""
    intervals = rec.intervals + backward_intervals(rec)
    intervals.sort(key=lambda iv: iv.start)
    per_stage: dict[str, dict[str, float]] = {
        "coarse": defaultdict(float),
        "fine": defaultdict(float),
    }
    totals_ms: dict[str, list[float]] = {"coarse": [], "fine": []}
    for _, fine, s, e in rec.steps:
        stage = "fine" if fine else "coarse"
        for label, sec in paint(intervals, s, e).items():
            per_stage[stage][label or "step: other"] += sec
        totals_ms[stage].append(1e3 * (e - s))
    # Outside the steps only the phases a user would name count (videos, test, ...); the
    # renders and field calls inside them belong to them.
    top = [iv for iv in intervals if iv.label in OUTSIDE_PHASES]
    outside: dict[str, float] = defaultdict(float)
    steps = sorted((s, e) for _, _, s, e in rec.steps)
    first = steps[0][0] if steps else t_end
    last = steps[-1][1] if steps else t_end
    for label, sec in paint(top, t_begin, first).items():
        outside[label or "setup: data, encoders, initialisation"] += sec
    for (_, e0), (s1, _) in zip(steps[:-1], steps[1:], strict=True):
        for label, sec in paint(top, e0, s1).items():
            outside[label or "loop: Lightning between steps"] += sec
    for label, sec in paint(top, last, t_end).items():
        outside[label or "post-fit: other"] += sec
    result: dict[str, Any] = {"steps": {}, "outside_steps_s": {}}
    for stage in ("coarse", "fine"):
        n = len(totals_ms[stage])
        if n == 0:
            continue
        result["steps"][stage] = {
            "count": n,
            "median_ms": round(statistics.median(totals_ms[stage]), 2),
            "mean_ms": round(statistics.fmean(totals_ms[stage]), 2),
            "phases_ms": {
                k: round(1e3 * v / n, 2)
                for k, v in sorted(per_stage[stage].items(), key=lambda kv: -kv[1])
            },
        }
    result["outside_steps_s"] = {
        k: round(v, 2) for k, v in sorted(outside.items(), key=lambda kv: -kv[1])
    }
    return result


# ----------------------------------------------------------------------------- reporting
def markdown(results: list[dict[str, Any]]) -> str:
    """Side-by-side tables of one or more profiles (first column: the phase)."""
    names = [r["name"] for r in results]
    lines = []
    for stage in ("fine", "coarse"):
        have = [r for r in results if stage in r["steps"]]
        if not have:
            continue
        labels: list[str] = []
        for r in have:
            labels += [k for k in r["steps"][stage]["phases_ms"] if k not in labels]
        lines += [
            f"**{stage.capitalize()} step**, mean ms per step by phase:",
            "",
            "| phase | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for label in labels:
            cells = [
                f"{r['steps'][stage]['phases_ms'].get(label, 0.0):.1f}"
                if stage in r["steps"]
                else "–"
                for r in results
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        means = [
            f"**{r['steps'][stage]['mean_ms']:.1f}** (median {r['steps'][stage]['median_ms']:.1f})"
            if stage in r["steps"]
            else "–"
            for r in results
        ]
        counts = [str(r["steps"][stage]["count"]) if stage in r["steps"] else "–" for r in results]
        lines += ["| **step (mean)** | " + " | ".join(means) + " |"]
        lines += ["| steps | " + " | ".join(counts) + " |", ""]
    labels = []
    for r in results:
        labels += [k for k in r["outside_steps_s"] if k not in labels]
    lines += [
        "**Outside the steps**, seconds in the whole run:",
        "",
        "| phase | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for label in labels:
        lines.append(
            f"| {label} | "
            + " | ".join(f"{r['outside_steps_s'].get(label, 0.0):.1f}" for r in results)
            + " |"
        )
    lines.append(
        "| **wall time of the run** | "
        + " | ".join(f"**{r['wall_s']:.1f}**" for r in results)
        + " |"
    )
    lines.append(
        "| PSNR (eval views) | " + " | ".join(str(r.get("psnr", "–")) for r in results) + " |"
    )
    lines.append(
        "| load average (1 min) before → after | "
        + " | ".join(f"{r['loadavg'][0]} → {r['loadavg'][1]}" for r in results)
        + " |"
    )
    lines.append("| torch threads | " + " | ".join(str(r["threads"]) for r in results) + " |")
    return "\n".join(lines)


def _checkout_commit() -> str:
    import ds4d_pl

    root = Path(ds4d_pl.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "ds4d_pl"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{root} (not a git checkout)"
    return f"{root} @ {sha}" + (" + uncommitted changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, help="write the profile as JSON here")
    parser.add_argument("--name", default=None, help="column title (default: the checkout)")
    parser.add_argument("--compare", type=Path, nargs="+", help="print profiles side by side")
    parser.add_argument("extra", nargs="*", help="extra ds4d fit arguments (after --)")
    args = parser.parse_args()
    if args.compare:
        print(markdown([json.loads(p.read_text()) for p in args.compare]))
        return

    torch.set_num_threads(args.threads)
    install()
    from ds4d_pl.commands.train import run

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        argv = ["fit", "-c", args.config, f"--trainer.default_root_dir={run_dir}", *args.extra]
        run(argv)
        t_end = _now()
        metrics_file = run_dir / "metrics.json"
        psnr = json.loads(metrics_file.read_text()).get("psnr") if metrics_file.is_file() else None
    result = {
        "name": args.name or _checkout_commit(),
        "checkout": _checkout_commit(),
        "command": "ds4d " + " ".join(argv[:3] + argv[4:]),
        "wall_s": round(t_end - _T_START, 1),
        "psnr": None if psnr is None else round(float(psnr), 2),
        "threads": torch.get_num_threads(),
        "loadavg": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "not_found": REC.missing,
        **summarise(REC, _T_START, t_end),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown([result]))


if __name__ == "__main__":
    main()
