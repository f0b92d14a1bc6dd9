"""``ds4d``: LightningCLI for fit / validate / test / predict, plus ``ds4d synth``.

Configs compose by repeating ``-c`` (later files win); every key is type-checked at parse time,
so a typo or a wrong type stops the run before anything is built, naming the key.

Run directory (``trainer.default_root_dir``) contract: ``config.yaml``, ``checkpoints/`` (written
atomically, ``last.ckpt`` for ``--ckpt_path last``), ``renders/*.mp4``, ``export/*.ply`` and
``metrics.json`` after testing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from ds4d_pl.atomic import atomic_path
from ds4d_pl.callbacks.checkpoint import RunCheckpoint
from ds4d_pl.callbacks.export import ExportAssets
from ds4d_pl.callbacks.render_videos import RenderVideos
from ds4d_pl.config import StageSchedule
from ds4d_pl.data.datamodule import DS4DDataModule
from ds4d_pl.system import DS4DSystem


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints to a sibling temp file and renames it into place.

    Lightning's default writes through an fsspec transaction whose temp file may live on another
    filesystem, so the final move is a copy that a kill can interrupt; a rename in the same
    directory cannot leave a truncated checkpoint behind.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class RunDirConfig(SaveConfigCallback):
    """Saves the resolved config as ``<default_root_dir>/config.yaml`` when fitting starts."""

    def __init__(self, parser: LightningArgumentParser, config: Any, **kwargs: Any) -> None:
        kwargs["save_to_log_dir"] = False
        super().__init__(parser, config, **kwargs)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        text = self.parser.dump(self.config, skip_none=False)
        with atomic_path(Path(trainer.default_root_dir) / self.config_filename) as tmp:
            tmp.write_text(text)


class DS4DCLI(LightningCLI):
    """LightningCLI wired for DS4D runs (see the module docstring for the run directory)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, evaluate on the evaluation views and write metrics.json.",
        )
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 250,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "step{step:06d}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(RenderVideos, "videos")
        parser.add_lightning_class_args(ExportAssets, "export")

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(str(self.subcommand), self.config)
        # One source of truth for the run length: the stage schedule, unless the user (or a
        # smoke test) caps it explicitly with trainer.max_steps.
        if cfg.trainer.max_steps in (None, -1):
            sched = cfg.model.schedule
            schedule = StageSchedule(**sched.as_dict()) if sched else StageSchedule()
            cfg.trainer.max_steps = schedule.total_steps

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                cb.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))
        return trainer

    def _resolve_eval_ckpt(self) -> None:
        """``test``/``validate``/``predict`` without a checkpoint would score an untrained model:
        default to the run's last checkpoint and fail loudly when there is none."""
        cfg = self.config_init[self.subcommand]
        ckpt = cfg.get("ckpt_path")
        if ckpt in (None, "last"):
            last = Path(self.trainer.default_root_dir) / "checkpoints" / "last.ckpt"
            if not last.is_file():
                raise FileNotFoundError(
                    f"{last}: no checkpoint to evaluate; pass --ckpt_path or point "
                    "--trainer.default_root_dir at a finished run"
                )
            cfg["ckpt_path"] = str(last)

    def before_test(self) -> None:
        self._resolve_eval_ckpt()

    def before_validate(self) -> None:
        self._resolve_eval_ckpt()

    def before_predict(self) -> None:
        self._resolve_eval_ckpt()

    def after_fit(self) -> None:
        cfg = self.config_init[self.subcommand]
        if self.datamodule.scene is None:
            # ddp_spawn: the scene was loaded in the worker processes, not in this one.
            self.datamodule.setup("test")
        scene = self.datamodule.scene
        if cfg.get("test_after_fit") and not self.trainer.interrupted and scene.eval is not None:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)
        if self.trainer.is_global_zero:
            print(f"run directory: {os.path.realpath(self.trainer.default_root_dir)}")


def synth_main(argv: list[str]) -> int:
    """``ds4d synth``: write the embedded synthetic object to disk in a real dataset format."""
    from ds4d_pl.data.parsers.synthetic import SyntheticConfig, write_synthetic
    from ds4d_pl.data.parsers.synthetic_scenes import write_dnerf, write_n3dv

    p = argparse.ArgumentParser(
        prog="ds4d synth",
        description="Write the embedded synthetic object in a dataset layout: consistent4d "
        "(DIR/<obj>/{t}.png, DIR/eval_gt/<obj>/eval_{0..3}/{t}.png, oracle pseudo views in "
        "DIR/<obj>_mv), dnerf (DIR/transforms_*.json, a camera that moves every frame) or n3dv "
        "(DIR/poses_bounds.npy + DIR/camXX, a fixed forward-facing rig).",
    )
    p.add_argument(
        "--out", required=True, help="output directory (the scene folder for dnerf/n3dv)"
    )
    p.add_argument("--format", default="consistent4d", choices=["consistent4d", "dnerf", "n3dv"])
    p.add_argument(
        "--motion",
        default="mostly_static",
        choices=["static_only", "mostly_static", "dynamic_only"],
    )
    p.add_argument(
        "--num_frames",
        type=int,
        default=None,
        help="frames of the clip (consistent4d: 16, n3dv: 12) or training images (dnerf: 60)",
    )
    p.add_argument("--resolution", type=int, default=128, help="image size (n3dv: width)")
    p.add_argument("--eval_resolution", type=int, default=128, help="consistent4d only")
    p.add_argument("--num_cameras", type=int, default=6, help="n3dv only")
    p.add_argument("--num_test", type=int, default=20, help="dnerf only: test images")
    p.add_argument("--video", action="store_true", help="n3dv only: camXX.mp4 instead of PNGs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="object folder name (consistent4d)")
    a = p.parse_args(argv)
    if a.format == "consistent4d":
        cfg = SyntheticConfig(
            motion=a.motion,
            num_frames=a.num_frames or 16,
            resolution=a.resolution,
            eval_resolution=a.eval_resolution,
            seed=a.seed,
            name=a.name,
        )
        path = write_synthetic(cfg, a.out)
    elif a.format == "dnerf":
        cfg = SyntheticConfig(motion=a.motion, seed=a.seed)
        path = write_dnerf(
            cfg,
            a.out,
            num_train=a.num_frames or 60,
            num_test=a.num_test,
            resolution=a.resolution,
            seed=a.seed,
        )
    else:
        cfg = SyntheticConfig(motion=a.motion, seed=a.seed)
        # 4:3 like the N3DV rig, rounded to even sizes so the video option can encode it.
        height = 2 * round(a.resolution * 3 / 8)
        path = write_n3dv(
            cfg,
            a.out,
            num_cameras=a.num_cameras,
            num_frames=a.num_frames or 12,
            resolution=(a.resolution, height),
            as_video=a.video,
        )
    print(f"wrote {path}")
    return 0


def weights_main(argv: list[str]) -> int:
    """``ds4d weights``: which pretrained metric networks are present, and where each was sought."""
    from ds4d_pl.metrics.weights import status

    p = argparse.ArgumentParser(
        prog="ds4d weights",
        description="List every pretrained network the metrics use: found or missing, the path "
        "used or every path looked at, and where the file is published. Nothing is downloaded; "
        "put files in $DS4D_WEIGHTS_DIR.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    a = p.parse_args(argv)
    rows = status()
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        if r["found"]:
            print(f"{r['name']:<14} found    {r['path']}")
        else:
            print(f"{r['name']:<14} MISSING  {r['file']}  (published: {r['published']})")
            for path in r["looked_at"]:
                print(f"{'':<24}looked at {path}")
    return 0


def eval_main(argv: list[str]) -> int:
    """``ds4d eval``: score renders in the eval_gt layout against ground truth."""
    from ds4d_pl.metrics.evaluate import evaluate_dirs
    from ds4d_pl.metrics.protocol import BenchmarkConfig, write_report

    p = argparse.ArgumentParser(
        prog="ds4d eval",
        description="Score any method's renders laid out like Consistent4D's eval_gt "
        "(DIR/<obj>/eval_{k}/{t}.png) against the ground truth, with the same metrics as "
        "ds4d test. Writes metrics.json and metrics.md to --out.",
    )
    p.add_argument("--pred", required=True, help="predicted renders: <obj>/eval_{k}/{t}.png")
    p.add_argument("--gt", required=True, help="ground truth in the same layout (eval_gt)")
    p.add_argument("--out", default=None, help="report directory (default: --pred)")
    p.add_argument("--objects", nargs="*", default=None, help="object folders (default: all)")
    p.add_argument("--resolution", type=int, default=None, help="compare at this square size")
    p.add_argument("--fvd_mode", default="consistent4d", choices=["consistent4d", "set"])
    p.add_argument("--fid_vid_variant", default="frame_fid", choices=["frame_fid", "r3d50"])
    p.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="explicit weights path of a network (see ds4d weights), repeatable",
    )
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    explicit = {}
    for item in a.weights:
        if "=" not in item:
            p.error(f"--weights expects NAME=PATH, got {item!r}")
        name, path = item.split("=", 1)
        explicit[name] = path
    cfg = BenchmarkConfig(
        fvd_mode=a.fvd_mode,
        fid_vid_variant=a.fid_vid_variant,
        resolution=a.resolution,
        weights=explicit,
    )
    results = evaluate_dirs(a.pred, a.gt, cfg, objects=a.objects, device=a.device)
    out = Path(a.out or a.pred)
    write_report(out, results, title=f"ds4d eval: {a.pred}")
    print((out / "metrics.md").read_text())
    return 0


def prepare_main(argv: list[str]) -> int:
    """``ds4d prepare``: a video or frames → centred RGBA frames in the Consistent4D layout,
    optionally with Zero123++ pseudo views in the multi-view sequence layout."""
    from ds4d_pl.data.prepare import prepare_video, write_pseudo_views
    from ds4d_pl.data.segment import SegmenterConfig

    p = argparse.ArgumentParser(
        prog="ds4d prepare",
        description="Read a video or a folder of numbered frames, take the foreground alpha from "
        "the input (RGBA), from --masks or from a --segmenter model (in that order), centre and "
        "rescale the object over the whole clip, and write OUT/<name>/{t}.png for "
        "`data.dataset: consistent4d`. With --zero123pp, also run Zero123++ on every frame and "
        "write OUT/<name>_mv/{ref,zero123}/ for `data.dataset: multiview_sequence`.",
    )
    p.add_argument("--input", required=True, help="video file or folder of numbered frames")
    p.add_argument("--out", required=True, help="dataset root to write into")
    p.add_argument("--name", default=None, help="object name (default: the input's name)")
    p.add_argument("--masks", default=None, help="folder of numbered foreground masks")
    p.add_argument("--size", type=int, default=512, help="side of the square output frames")
    p.add_argument("--fill", type=float, default=0.8, help="fraction of the side the object fills")
    p.add_argument("--max_frames", type=int, default=None)
    g = p.add_argument_group(
        "segmentation model",
        "A TorchScript file (torch.jit.save of e.g. BiRefNet, RMBG, U2-Net) taking a (1,3,S,S) "
        "RGB batch in [0,1] and returning foreground logits or probabilities; used for inputs "
        "without alpha and without --masks.",
    )
    g.add_argument("--segmenter", default=None, help="TorchScript foreground model file")
    g.add_argument("--segmenter_size", type=int, default=1024, help="model input side S")
    g.add_argument("--segmenter_normalize", choices=("none", "imagenet"), default="none")
    g.add_argument(
        "--segmenter_output_index",
        type=int,
        default=0,
        help="map to read when the model returns several (U2-Net: 0, BiRefNet: -1)",
    )
    z = p.add_argument_group("Zero123++ pseudo views")
    z.add_argument("--zero123pp", default=None, help="local Zero123++ directory (hub layout)")
    z.add_argument("--zero123pp_version", choices=("v1.1", "v1.2"), default="v1.1")
    z.add_argument("--zero123pp_steps", type=int, default=28)
    z.add_argument("--zero123pp_guidance", type=float, default=4.0)
    z.add_argument("--zero123pp_seed", type=int, default=0)
    z.add_argument("--zero123pp_resolution", type=int, default=320, help="side of each view")
    z.add_argument(
        "--no_temporal_anchor",
        action="store_true",
        help="do not let later frames attend to the first frame's reference tokens",
    )
    z.add_argument(
        "--zero123pp_alpha",
        choices=("threshold", "segmenter"),
        default="threshold",
        help="views' alpha: background-colour threshold, or the --segmenter model",
    )
    z.add_argument(
        "--zero123pp_background",
        type=float,
        default=0.5,
        help="grey level of the generated background for the threshold alpha (0.5: the "
        "published models' grey; 1.0: white)",
    )
    z.add_argument("--device", default="auto", help="device for Zero123++ (auto: CUDA if any)")
    a = p.parse_args(argv)
    seg_cfg = SegmenterConfig(
        input_size=a.segmenter_size,
        normalize=a.segmenter_normalize,
        output_index=a.segmenter_output_index,
    )
    path = prepare_video(
        a.input,
        a.out,
        a.name,
        a.masks,
        a.size,
        a.fill,
        a.max_frames,
        segmenter=a.segmenter,
        segmenter_cfg=seg_cfg,
    )
    print(f"wrote {path}")
    if a.zero123pp is not None:
        from ds4d_pl.priors.zero123pp import Zero123ppConfig

        if a.zero123pp_alpha == "segmenter" and a.segmenter is None:
            p.error("--zero123pp_alpha segmenter needs --segmenter")
        cfg = Zero123ppConfig(
            version=a.zero123pp_version,
            steps=a.zero123pp_steps,
            guidance_scale=a.zero123pp_guidance,
            seed=a.zero123pp_seed,
            resolution=a.zero123pp_resolution,
            temporal_anchor=not a.no_temporal_anchor,
            alpha=a.zero123pp_alpha,
            alpha_background=a.zero123pp_background,
            segmenter=a.segmenter,
            device=a.device,
        )
        mv = write_pseudo_views(
            path,
            a.zero123pp,
            cfg,
            progress=lambda i, n: print(f"zero123++ frame {i}/{n}"),
            segmenter_cfg=seg_cfg,
        )
        print(f"wrote {mv}")
    return 0


EXTRA_COMMANDS = {
    "synth": synth_main,
    "weights": weights_main,
    "eval": eval_main,
    "prepare": prepare_main,
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ds4d`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in EXTRA_COMMANDS:
        sys.exit(EXTRA_COMMANDS[args[0]](args[1:]))
    # Lightning warns that manual optimisation checkpoints hold the post-step state; that is
    # exactly what a resume needs here.
    warnings.filterwarnings("ignore", message=".*manual optimization and every_n_train_steps.*")
    # Upstream deprecation noise that a user can do nothing about.
    warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*tensorboardX.* has been removed as a dependency.*")
    DS4DCLI(
        DS4DSystem,
        DS4DDataModule,
        save_config_callback=RunDirConfig,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": "DS4D: video-to-4D Gaussians (fit|validate|test|predict)"},
        args=argv,  # None: LightningCLI reads sys.argv itself
    )


if __name__ == "__main__":
    main()
