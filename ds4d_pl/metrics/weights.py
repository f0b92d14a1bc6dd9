"""Where pretrained metric networks come from: one resolution order, strict loading, checksums.

Nothing is ever downloaded. Every network of the benchmark metrics has a :class:`WeightsSpec`
in :data:`REGISTRY` naming its file, what it is and where it is published. :func:`resolve`
looks, in this order, at

1. the explicit path given in the config (a file, or a directory holding the file),
2. ``$DS4D_WEIGHTS_DIR/<file>``,
3. the standard caches, offline: ``$TORCH_HOME/hub/checkpoints/<file>`` (torch's download
   cache, where e.g. torchvision's VGG16 lands) and, for Hugging Face models, the HF hub cache
   with ``local_files_only=True``,

and raises :class:`MissingWeightsError` naming the file, where it is published, where to put it
and every path it looked at. ``ds4d weights`` prints the same search for every network.

Tests: ``tests/test_metric_weights.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ds4d_pl.errors import WeightsError

__all__ = [
    "REGISTRY",
    "MissingWeightsError",
    "WeightsSpec",
    "find_file",
    "load_pretrained",
    "load_state_dict",
    "load_strict",
    "quiet_hub_loading",
    "resolve",
    "search_paths",
    "sha256_file",
    "status",
]


class MissingWeightsError(WeightsError, FileNotFoundError):
    """Pretrained weights were requested but are not on this machine.

    The message names the file or directory that was looked for, what it is, where it is
    published and where to put it. Nothing is ever downloaded at run time.
    """


def find_file(folder: str | os.PathLike, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that is a file in ``folder`` (checkpoint folders hold one of
    several accepted weight files, in the libraries' order of preference), else ``None``."""
    return next((Path(folder) / n for n in names if (Path(folder) / n).is_file()), None)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (checkpoints can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightsSpec:
    """One pretrained network a metric needs.

    Attributes:
        name: Registry key (also the config / ``ds4d weights`` name).
        filename: File name looked for in ``$DS4D_WEIGHTS_DIR`` and the torch cache. For a
            Hugging Face model, the directory name under ``$DS4D_WEIGHTS_DIR``.
        description: What the network is and which metric uses it.
        published: Where the file is published (URL or repository path).
        hf_repo: Hugging Face repository id for models loaded with ``from_pretrained``
            (``None`` for plain checkpoint files).
    """

    name: str
    filename: str
    description: str
    published: str
    hf_repo: str | None = None


#: Every network the benchmark metrics load. Public checkpoints, named as published.
REGISTRY: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in (
        WeightsSpec(
            name="vgg16",
            filename="vgg16-397923af.pth",
            description="VGG16 ImageNet features (torchvision layout), the LPIPS backbone",
            published="https://download.pytorch.org/models/vgg16-397923af.pth",
        ),
        WeightsSpec(
            name="lpips_vgg",
            filename="lpips_vgg_v0.1.pth",
            description="LPIPS v0.1 linear heads for VGG (save lpips/weights/v0.1/vgg.pth as "
            "lpips_vgg_v0.1.pth)",
            published="https://github.com/richzhang/PerceptualSimilarity "
            "(lpips/weights/v0.1/vgg.pth)",
        ),
        WeightsSpec(
            name="i3d",
            filename="i3d_pretrained_400.pt",
            description="I3D (Kinetics-400) state dict used for FVD by the Consistent4D "
            "evaluation (VideoGPT / StyleGAN-V lineage)",
            published="https://github.com/yanqinJiang/Consistent4D evaluation, file "
            "i3d_pretrained_400.pt (also distributed by VideoGPT and StyleGAN-V)",
        ),
        WeightsSpec(
            name="inception_fid",
            filename="pt_inception-2015-12-05-6726825d.pth",
            description="Inception-v3 FID network (TF 2015-12-05 graph ported to PyTorch), "
            "for FID-VID variant frame_fid",
            published="https://github.com/mseitzer/pytorch-fid/releases/download/"
            "fid_weights/pt_inception-2015-12-05-6726825d.pth",
        ),
        WeightsSpec(
            name="r3d50",
            filename="resnet-50-kinetics.pth",
            description="3D ResNet-50 trained on Kinetics-400 (Hara et al., 2017 release), the "
            "network DisCo's FID-VID loads (eval_fvd/resnet-50-kinetics.pth); for FID-VID "
            "variant r3d50. The later Kinetics-700 r3d50_K_200ep.pth also loads when passed "
            "explicitly, but gives different numbers",
            published="https://github.com/kenshohara/video-classification-3d-cnn-pytorch "
            "(resnet-50-kinetics.pth), as used by https://github.com/Wangt-CN/DisCo",
        ),
        WeightsSpec(
            name="clip_vit_b32",
            filename="clip-vit-base-patch32",
            description="CLIP ViT-B/32 image tower, for CLIP similarity",
            published="https://huggingface.co/openai/clip-vit-base-patch32",
            hf_repo="openai/clip-vit-base-patch32",
        ),
    )
}


def _spec(name: str) -> WeightsSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def _torch_cache() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hf_cached(repo: str) -> Path | None:
    """The cached snapshot directory of ``repo``, without touching the network."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        return None


def search_paths(name: str, explicit: str | os.PathLike | None = None) -> list[Path]:
    """The file-system locations :func:`resolve` tries for ``name``, in order.

    The Hugging Face cache is not a fixed path; it is tried after these (see :func:`resolve`).
    """
    spec = _spec(name)
    paths: list[Path] = []
    if explicit:
        p = Path(explicit).expanduser()
        paths.append(p / spec.filename if p.is_dir() and spec.hf_repo is None else p)
    env = os.environ.get("DS4D_WEIGHTS_DIR")
    if env:
        paths.append(Path(env).expanduser() / spec.filename)
    if spec.hf_repo is None:
        paths.append(_torch_cache() / spec.filename)
    return paths


def _exists(path: Path, spec: WeightsSpec) -> bool:
    if spec.hf_repo is not None:
        return path.is_dir() and (path / "config.json").is_file()
    return path.is_file()


def resolve(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """The weights file (or Hugging Face model directory) of network ``name``.

    Args:
        name: Key of :data:`REGISTRY`.
        explicit: Path from the config, tried first; if given and missing, that is an error
            even when another location holds the file (a typo must not silently pick up
            different weights).

    Raises:
        MissingWeightsError: Nothing found; the message says what to download and where.
    """
    spec = _spec(name)
    looked = search_paths(name, explicit)
    if explicit:
        if _exists(looked[0], spec):
            return looked[0]
        raise MissingWeightsError(_message(spec, looked[:1]))
    for path in looked:
        if _exists(path, spec):
            return path
    if spec.hf_repo is not None:
        cached = _hf_cached(spec.hf_repo)
        if cached is not None and _exists(cached, spec):
            return cached
        looked = [*looked, Path(f"<Hugging Face cache>/{spec.hf_repo}")]
    raise MissingWeightsError(_message(spec, looked))


def _message(spec: WeightsSpec, looked: list[Path]) -> str:
    where = os.environ.get("DS4D_WEIGHTS_DIR") or "$DS4D_WEIGHTS_DIR"
    kind = "model directory" if spec.hf_repo else "file"
    lines = [
        f"missing weights for {spec.name!r}: {spec.description}.",
        f"Download the {kind} {spec.filename!r} from {spec.published}",
        f"and put it at {where}/{spec.filename} (or pass its path explicitly in the config).",
        "Looked at: " + ", ".join(str(p) for p in looked),
    ]
    return "\n".join(lines)


def status() -> list[dict[str, Any]]:
    """For every registered network: found or not, the path used, and where it looked."""
    rows = []
    for name, spec in REGISTRY.items():
        try:
            path: Path | None = resolve(name)
        except MissingWeightsError:
            path = None
        looked = [str(p) for p in search_paths(name)]
        if spec.hf_repo is not None:
            looked.append(f"<Hugging Face cache>/{spec.hf_repo}")
        rows.append(
            {
                "name": name,
                "found": path is not None,
                "path": None if path is None else str(path),
                "looked_at": looked,
                "file": spec.filename,
                "published": spec.published,
            }
        )
    return rows


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (``.safetensors``, or a torch pickle loaded with
    ``weights_only``), unwrapping a top-level ``state_dict`` / ``model`` entry."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return obj


def load_strict(
    module: nn.Module, path: str | os.PathLike, rename: dict[str, str] | None = None
) -> str:
    """Load a checkpoint into ``module`` strictly; return the file's sha256.

    Args:
        module: Network whose parameter names match the public checkpoint.
        path: Checkpoint file.
        rename: Optional prefix renames applied to the checkpoint's keys (``{"module.": ""}``).

    Raises:
        ValueError: Missing or unexpected keys, or mismatched shapes, listing a few of each.
    """
    state = load_state_dict(path)
    if rename:
        for old, new in rename.items():
            state = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
    own = module.state_dict()
    # Checkpoints saved before PyTorch 0.4.1 lack BatchNorm's num_batches_tracked counters,
    # which torch itself tolerates; they hold no learned value (only the momentum=None path
    # reads them), so their absence is not a mismatch.
    missing = sorted(k for k in set(own) - set(state) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{path}: does not match {type(module).__name__} (missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}, shape mismatch {sorted(shapes)[:5]})"
        )
    for key in set(own) - set(state):
        state[key] = own[key]  # the counters kept as initialised
    module.load_state_dict(state, strict=True)
    return sha256_file(path)


@contextlib.contextmanager
def quiet_hub_loading() -> Iterator[None]:
    """Silence transformers' and diffusers' load reports, advice and progress bars; the callers
    check what was loaded themselves and raise with the file named."""
    from transformers.utils import logging as tlog

    loggers = [tlog]
    try:
        from diffusers.utils import logging as dlog

        loggers.append(dlog)
    except ImportError:  # diffusers is only needed by the priors
        pass
    levels = [log.get_verbosity() for log in loggers]
    bar = tlog.is_progress_bar_enabled()
    for log in loggers:
        log.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.set_verbosity(level)
        if bar:
            tlog.enable_progress_bar()


def load_pretrained(
    cls: Any, folder: str | os.PathLike, dtype: torch.dtype | None = None, **kwargs: Any
) -> Any:
    """``cls.from_pretrained(folder)`` for a diffusers or transformers model class, from local
    files only, quietly, and strict: both libraries fill missing parameters with random values
    and only warn, which would make a broken checkpoint look like a working one.

    Raises:
        ValueError: The weights lack parameters of ``cls`` (the first few are named).
        OSError: Files are missing or unreadable (from the library).
    """
    with quiet_hub_loading():
        model, info = cls.from_pretrained(
            folder, torch_dtype=dtype, local_files_only=True, output_loading_info=True, **kwargs
        )
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise ValueError(
            f"{folder}: its weights lack {len(missing)} parameters of {cls.__name__} "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
        )
    return model
