"""No silent random weights: every pretrained loader refuses damaged weights with one error that
names the file.

For each loader (frame encoders, metric networks, priors, segmentation model) a good file or
directory is built from the tiny / random models of the real architectures; it must load (the
positive control), and each damaged copy must raise :class:`BadWeightsError` whose message
names the damaged file: empty, truncated, garbage, wrong keys (the issue's DINOv2 directory
whose ``model.safetensors`` holds none of the model's parameters), wrong shapes, and a
``config.json`` that is not JSON for directory models.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from ds4d_pl.weights import BadWeightsError, read_state_dict

DAMAGES = ("empty", "truncated", "garbage", "wrong_keys", "wrong_shapes", "config_not_json")


@dataclass
class Case:
    """A loader and the good weights it loads.

    Attributes:
        build: Writes the good file or directory under the given folder; returns its path.
        weights: The weights file inside the good path (the path itself for a file).
        config: The ``config.json`` to damage (directories only).
        load: Loads a file or directory the way the package does.
        keyed: Whether the file is a state dict (wrong keys / shapes apply).
    """

    build: Callable[[Path], Path]
    weights: Callable[[Path], Path]
    config: Callable[[Path], Path] | None
    load: Callable[[Path], Any]
    keyed: bool = True


def _save_half(module: torch.nn.Module, path: Path) -> Path:
    """A state dict in half precision: loads into the float32 network and halves the disk
    traffic of the large random networks."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in module.state_dict().items()}
    torch.save(state, path)
    return path


def _efficientnet(d: Path) -> Path:
    from ds4d_pl.conditioning.encoders import default_efficientnet_weights

    return Path(shutil.copy(default_efficientnet_weights(), d / "lite0.pth"))


def _dinov2(d: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        patch_size=14,
        image_size=28,
    )
    Dinov2Model(cfg).save_pretrained(d / "dinov2-small")
    return d / "dinov2-small"


def _clip(d: Path) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=1,
        num_attention_heads=4,
        image_size=64,
        patch_size=32,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(cfg).save_pretrained(d / "clip")
    return d / "clip"


def _module_file(factory: Callable[[], torch.nn.Module], name: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        torch.manual_seed(0)
        return _save_half(factory(), d / name)

    return build


def _segmenter(d: Path) -> Path:
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 1, 3, padding=1))
    torch.jit.save(torch.jit.script(net), str(d / "segmenter.pt"))
    return d / "segmenter.pt"


def _zero123pp(d: Path) -> Path:
    from ds4d_pl.priors.tiny import write_tiny_zero123pp

    return write_tiny_zero123pp(d / "zero123plus-v1.1")


def _zero123(d: Path) -> Path:
    from ds4d_pl.priors.tiny import write_tiny_zero123

    return write_tiny_zero123(d / "zero123")


def _load_i3d(p: Path) -> Any:
    from ds4d_pl.metrics.i3d import InceptionI3d

    return InceptionI3d.from_pretrained(p)


def _load_inception(p: Path) -> Any:
    from ds4d_pl.metrics.inception import InceptionV3

    return InceptionV3.from_pretrained(p)


def _load_r3d(p: Path) -> Any:
    from ds4d_pl.metrics.r3d import R3D50

    return R3D50.from_pretrained(p)


def _load_vgg(p: Path) -> Any:
    from ds4d_pl.metrics.lpips import VGG16Features

    return VGG16Features().load_checkpoint(p)


def _load_heads(p: Path) -> Any:
    from ds4d_pl.metrics.lpips import LPIPSHeads
    from ds4d_pl.weights import load_strict

    return load_strict(LPIPSHeads(), p)


def _load_dinov2(p: Path) -> Any:
    from ds4d_pl.conditioning.encoders import Dinov2Encoder

    return Dinov2Encoder(weights=str(p), input_size=28)


def _load_clip(p: Path) -> Any:
    from ds4d_pl.metrics.clip import CLIPSimilarity

    return CLIPSimilarity.from_pretrained(p)


def _load_efficientnet(p: Path) -> Any:
    from ds4d_pl.conditioning.encoders import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(weights=str(p), input_size=32)


def _load_zero123pp(p: Path) -> Any:
    from ds4d_pl.priors.zero123pp import Zero123ppConfig, load_zero123pp

    return load_zero123pp(p, Zero123ppConfig(resolution=16, device="cpu"))


def _load_zero123(p: Path) -> Any:
    from ds4d_pl.priors.sds import SDSConfig, Zero123Guidance

    return Zero123Guidance.from_pretrained(SDSConfig(path=str(p), resolution=32))


def _load_segmenter(p: Path) -> Any:
    from ds4d_pl.data.segment import load_segmenter

    return load_segmenter(p)


def _i3d() -> torch.nn.Module:
    from ds4d_pl.metrics.i3d import InceptionI3d

    return InceptionI3d()


def _inception() -> torch.nn.Module:
    from ds4d_pl.metrics.inception import InceptionV3

    return InceptionV3()


def _r3d() -> torch.nn.Module:
    from ds4d_pl.metrics.r3d import R3D50

    return R3D50(n_classes=400)


def _vgg() -> torch.nn.Module:
    from ds4d_pl.metrics.lpips import VGG16Features

    return VGG16Features()


def _heads() -> torch.nn.Module:
    from ds4d_pl.metrics.lpips import LPIPSHeads

    return LPIPSHeads()


def _itself(p: Path) -> Path:
    return p


CASES: dict[str, Case] = {
    "efficientnet_lite0": Case(_efficientnet, _itself, None, _load_efficientnet),
    "dinov2": Case(
        _dinov2, lambda p: p / "model.safetensors", lambda p: p / "config.json", _load_dinov2
    ),
    "clip_vit_b32": Case(
        _clip, lambda p: p / "model.safetensors", lambda p: p / "config.json", _load_clip
    ),
    "vgg16": Case(_module_file(_vgg, "vgg16.pth"), _itself, None, _load_vgg),
    "lpips_vgg": Case(_module_file(_heads, "heads.pth"), _itself, None, _load_heads),
    "i3d": Case(_module_file(_i3d, "i3d.pt"), _itself, None, _load_i3d),
    "inception_fid": Case(
        _module_file(_inception, "inception.pth"), _itself, None, _load_inception
    ),
    "r3d50": Case(_module_file(_r3d, "r3d.pth"), _itself, None, _load_r3d),
    "zero123plus": Case(
        _zero123pp,
        lambda p: p / "vae" / "diffusion_pytorch_model.safetensors",
        lambda p: p / "vae" / "config.json",
        _load_zero123pp,
    ),
    "zero123": Case(
        _zero123,
        lambda p: p / "unet" / "diffusion_pytorch_model.safetensors",
        lambda p: p / "unet" / "config.json",
        _load_zero123,
    ),
    "segmenter": Case(_segmenter, _itself, None, _load_segmenter, keyed=False),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The good file or directory of a case, built once per module."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = CASES[name].build(tmp_path_factory.mktemp(name))
        return built[name]

    return get


def _read(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path)) if path.suffix == ".safetensors" else read_state_dict(path)


def _write(state: dict[str, torch.Tensor], path: Path) -> None:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


def _damage(kind: str, case: Case, good_path: Path, tmp: Path) -> tuple[Path, Path]:
    """A damaged copy of ``good_path``: (what to load, the damaged file)."""
    if good_path.is_dir():
        root = Path(shutil.copytree(good_path, tmp / good_path.name))
    else:
        root = tmp / good_path.name
        shutil.copy(good_path, root)
    target = case.weights(root)
    if kind == "config_not_json":
        assert case.config is not None
        target = case.config(root)
        target.write_text('{"hidden_size": 32,')  # cut off mid-object
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        target.write_bytes(bytes(range(256)) * 64)
    elif kind == "wrong_keys":
        # The case: a well-formed file holding none of the model's parameters.
        _write({"not_a_parameter.weight": torch.zeros(4, 4)}, target)
    elif kind == "wrong_shapes":
        state = _read(target)
        key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim >= 1)
        shape = list(state[key].shape)
        shape[0] += 1
        state[key] = torch.zeros(shape, dtype=state[key].dtype)
        _write(state, target)
    return root, target


_EXPECT = {
    "empty": "empty (0 bytes)",
    "truncated": "truncated",
    "garbage": "",
    "wrong_keys": "none of the",
    "wrong_shapes": "shape mismatch",
    "config_not_json": "not valid JSON",
}


def _params() -> list[Any]:
    out = []
    for name, case in CASES.items():
        out.append(pytest.param(name, "good", id=f"{name}-good"))
        for kind in DAMAGES:
            if kind == "config_not_json" and case.config is None:
                continue
            if kind in ("wrong_keys", "wrong_shapes") and not case.keyed:
                continue
            out.append(pytest.param(name, kind, id=f"{name}-{kind}"))
    out.append(pytest.param("segmenter", "state_dict", id="segmenter-state_dict"))
    return out


@pytest.mark.parametrize(("name", "kind"), _params())
def test_damaged_weights_raise_one_error_naming_the_file(
    name: str, kind: str, good: Callable[[str], Path], tmp_path: Path
) -> None:
    case = CASES[name]
    if kind == "good":
        assert case.load(good(name)) is not None  # the positive control loads
        return
    if kind == "state_dict":  # a plain checkpoint where TorchScript is expected
        root = target = tmp_path / "segmenter.pt"
        torch.save({"weight": torch.zeros(1, 3, 3, 3)}, target)
    else:
        root, target = _damage(kind, case, good(name), tmp_path)
    with pytest.raises(BadWeightsError) as err:
        case.load(root)
    message = str(err.value)
    assert str(target) in message, message
    assert _EXPECT.get(kind, "") in message, message
    # One readable error: no raw library exception type leaks as the error itself.
    assert type(err.value) is BadWeightsError
