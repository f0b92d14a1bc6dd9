"""Spec of ds4d_pl.export.splat: the 32-byte ``.splat`` layout web viewers load, its ordering,
its quantisation, and a write / read round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ds4d_pl.export.splat import (
    SPLAT_DTYPE,
    read_splat,
    splat_records,
    write_splat,
    write_splat_frames,
)
from ds4d_pl.gaussians.canonical import CanonicalGaussians
from ds4d_pl.render.base import SH_C0, GaussianParams, rgb_to_sh0


def random_params(n: int = 50, seed: int = 0) -> GaussianParams:
    g = torch.Generator().manual_seed(seed)
    return GaussianParams(
        means=torch.randn(n, 3, generator=g),
        quats=torch.randn(n, 4, generator=g),  # not normalised: the writer must do it
        scales=torch.rand(n, 3, generator=g) * 0.1 + 1e-3,
        opacities=torch.rand(n, generator=g),
        sh=torch.randn(n, 4, 3, generator=g) * 0.5,  # degree 1; only the DC term is kept
    )


def importance_order(p: GaussianParams) -> torch.Tensor:
    return torch.argsort(-(p.scales.double().prod(dim=1) * p.opacities.double()), stable=True)


def test_one_gaussian_is_32_bytes_in_the_reference_layout(tmp_path) -> None:
    rgb = torch.tensor([[1.0, 0.0, 0.25]])
    p = GaussianParams(
        means=torch.tensor([[1.0, -2.0, 3.5]]),
        quats=torch.tensor([[0.0, 0.0, 0.0, 2.0]]),  # 180° about z, not unit
        scales=torch.tensor([[0.1, 0.2, 0.4]]),
        opacities=torch.tensor([0.5]),
        sh=rgb_to_sh0(rgb)[:, None, :],
    )
    raw = write_splat(tmp_path / "one.splat", p).read_bytes()
    assert len(raw) == 32 == SPLAT_DTYPE.itemsize
    assert np.frombuffer(raw[:12], "<f4").tolist() == [1.0, -2.0, 3.5]
    np.testing.assert_array_equal(np.frombuffer(raw[12:24], "<f4"), np.float32([0.1, 0.2, 0.4]))
    # RGBA: 255 * colour and 255 * opacity, rounded; rotation 128 * q + 128 in (w, x, y, z).
    assert list(raw[24:28]) == [255, 0, 64, 128]
    assert list(raw[28:32]) == [128, 128, 128, 255]


def test_round_trip_positions_exact_the_rest_within_quantisation(tmp_path) -> None:
    p = random_params()
    out = read_splat(write_splat(tmp_path / "g.splat", p))
    order = importance_order(p)
    assert out["means"].shape == (50, 3)
    assert torch.equal(out["means"], p.means[order])
    assert torch.equal(out["scales"], p.scales[order])
    colour = (0.5 + SH_C0 * p.sh[order, 0]).clamp(0, 1)
    assert (out["colors"] - colour).abs().max() <= 0.5 / 255 + 1e-6
    assert (out["opacities"] - p.opacities[order]).abs().max() <= 0.5 / 255 + 1e-6
    unit = torch.nn.functional.normalize(p.quats[order], dim=1)
    # Bytes hold 128 q + 128 rounded: 1/256 per component, except +1 which clips to 127/128.
    assert (out["quats"] - unit).abs().max() <= 1 / 128 + 1e-6
    assert (out["quats"] - unit)[unit < 0.99].abs().max() <= 0.5 / 128 + 1e-6


def test_gaussians_are_sorted_by_volume_times_opacity(tmp_path) -> None:
    p = random_params(n=200, seed=3)
    out = read_splat(write_splat(tmp_path / "g.splat", p))
    importance = out["scales"].double().prod(dim=1) * p.opacities[importance_order(p)].double()
    assert (importance[:-1] >= importance[1:]).all()
    assert not torch.equal(importance_order(p), torch.arange(200))  # the sort did something


def test_canonical_module_and_raw_tables_give_the_same_file(tmp_path) -> None:
    g = CanonicalGaussians.random_in_sphere(
        30, 0.5, sh_degree=1, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        g.logit_opacities.normal_()
        g.log_scales.normal_(-3, 0.5)
        g.sh_dc.normal_()
    a = write_splat(tmp_path / "module.splat", g).read_bytes()
    b = write_splat(tmp_path / "tables.splat", g.raw_tables()).read_bytes()
    c = write_splat(tmp_path / "params.splat", g.activated()).read_bytes()
    assert a == b == c and len(a) == 30 * 32


def test_frames_are_named_like_the_ply_export(tmp_path) -> None:
    frames = (random_params(n=5, seed=s) for s in range(3))
    paths = write_splat_frames(tmp_path / "export", frames, canonical=random_params(n=7))
    assert [p.name for p in paths] == [
        "canonical.splat",
        "frame_0000.splat",
        "frame_0001.splat",
        "frame_0002.splat",
    ]
    assert [p.stat().st_size for p in paths] == [7 * 32, 5 * 32, 5 * 32, 5 * 32]
    assert torch.equal(read_splat(paths[2])["means"].sort(dim=0).values,
                       random_params(n=5, seed=1).means.sort(dim=0).values)  # fmt: skip


def test_an_empty_set_writes_an_empty_file(tmp_path) -> None:
    p = random_params(n=0)
    assert splat_records(p).shape == (0,)
    assert read_splat(write_splat(tmp_path / "none.splat", p))["means"].shape == (0, 3)


def test_bad_input_is_refused_and_nothing_is_written(tmp_path) -> None:
    p = random_params(n=4)
    p.means[2, 1] = float("nan")
    with pytest.raises(ValueError, match="means of Gaussian 2 is not finite"):
        write_splat(tmp_path / "nan.splat", p)
    assert not (tmp_path / "nan.splat").exists()
    tables = CanonicalGaussians.random_in_sphere(3, 0.5).raw_tables()
    del tables["log_scales"]
    with pytest.raises(KeyError, match="log_scales"):
        write_splat(tmp_path / "x.splat", tables)
    with pytest.raises(TypeError, match="GaussianParams"):
        write_splat(tmp_path / "x.splat", torch.zeros(3, 3))
    assert not (tmp_path / "x.splat").exists()


def test_reader_names_the_file_it_cannot_read(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.splat"):
        read_splat(tmp_path / "absent.splat")
    odd = tmp_path / "odd.splat"
    odd.write_bytes(b"\0" * 33)
    with pytest.raises(ValueError, match="odd.splat: 33 bytes is not a whole number of 32-byte"):
        read_splat(odd)
