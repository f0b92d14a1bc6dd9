"""Spec of ds4d_pl.export: 3DGS PLY round trip / header, H.264 mp4 writing."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from ds4d_pl.data.io import read_video
from ds4d_pl.export import video as video_mod
from ds4d_pl.export.ply import load_ply, ply_property_names, save_ply
from ds4d_pl.export.video import write_video
from ds4d_pl.gaussians.canonical import CanonicalGaussians


def random_gaussians(n: int = 12, sh_degree: int = 1) -> CanonicalGaussians:
    g = CanonicalGaussians.random_in_sphere(
        n, 0.5, sh_degree=sh_degree, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        for name in g.TABLES:
            getattr(g, name).normal_()
    return g


# ---------------------------------------------------------------------------------------- PLY
def test_ply_round_trip_exact(tmp_path):
    g = random_gaussians(sh_degree=2)
    path = save_ply(tmp_path / "out" / "canonical.ply", g)
    loaded = load_ply(path)
    assert set(loaded) == set(CanonicalGaussians.TABLES)
    for name, value in g.raw_tables().items():
        assert loaded[name].shape == value.shape, name
        assert torch.equal(loaded[name], value), name
    # Raw tables in → same file content out.
    save_ply(tmp_path / "again.ply", loaded)
    assert (tmp_path / "again.ply").read_bytes() == path.read_bytes()


def test_ply_header_standard_names_in_order(tmp_path):
    path = save_ply(tmp_path / "g.ply", random_gaussians(n=3, sh_degree=1))
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    names = [p.name for p in ply["vertex"].properties]
    expected = (
        ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
        + [f"f_rest_{i}" for i in range(9)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )
    assert names == expected == ply_property_names(1)
    assert all(p.val_dtype in ("f4", "float32", "float") for p in ply["vertex"].properties)
    assert (np.asarray(ply["vertex"]["nx"]) == 0).all()
    assert len(ply_property_names(0)) == 17 and len(ply_property_names(3)) == 17 + 45


def test_ply_f_rest_is_channel_major(tmp_path):
    g = random_gaussians(n=2, sh_degree=1)
    with torch.no_grad():
        g.sh_rest.copy_(torch.arange(18.0).reshape(2, 3, 3))  # (N, K-1=3, 3 channels)
    ply = PlyData.read(str(save_ply(tmp_path / "g.ply", g)))
    row0 = [float(ply["vertex"][f"f_rest_{i}"][0]) for i in range(9)]
    # Red of bands 1..3, then green, then blue.
    assert row0 == [0.0, 3.0, 6.0, 1.0, 4.0, 7.0, 2.0, 5.0, 8.0]


def test_ply_from_activated_params(tmp_path):
    g = random_gaussians(sh_degree=0)
    params = g.activated()
    loaded = load_ply(save_ply(tmp_path / "a.ply", params))
    assert torch.allclose(loaded["log_scales"], g.log_scales.detach(), atol=1e-5)
    assert torch.allclose(loaded["logit_opacities"], g.logit_opacities.detach(), atol=1e-4)
    assert torch.allclose(loaded["means"], g.means.detach())
    assert torch.allclose(loaded["quats"], params.quats.detach())
    assert loaded["sh_rest"].shape == (12, 0, 3)


def test_ply_rejects_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.ply"):
        load_ply(tmp_path / "absent.ply")
    garbled = tmp_path / "garbled.ply"
    garbled.write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="garbled.ply"):
        load_ply(garbled)
    # A plain point cloud is not a Gaussian PLY: the message lists what is missing.
    v = np.zeros(2, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "cloud.ply"))
    with pytest.raises(ValueError, match=r"cloud.ply.*opacity"):
        load_ply(tmp_path / "cloud.ply")
    with pytest.raises(KeyError, match="sh_rest"):
        save_ply(tmp_path / "x.ply", {k: v for k, v in random_gaussians().raw_tables().items()
                                       if k != "sh_rest"})  # fmt: skip
    assert not (tmp_path / "x.ply").exists()


# -------------------------------------------------------------------------------------- video
def test_video_round_trip_frame_count_and_size(tmp_path):
    t = torch.linspace(0, 1, 6)[:, None, None, None]
    frames = t.expand(6, 32, 48, 3).clone()
    path = write_video(tmp_path / "vid" / "turntable.mp4", frames, fps=12)
    decoded = read_video(path)
    assert decoded.shape == (6, 32, 48, 3)
    assert (decoded.mean(dim=(1, 2, 3)) - t.flatten()).abs().max() < 0.05
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 12


def test_video_odd_size_padded_to_even(tmp_path):
    frames = torch.rand(3, 17, 25, 3)
    decoded = read_video(write_video(tmp_path / "odd.mp4", frames))
    assert decoded.shape == (3, 18, 26, 3)


def test_video_bad_input_and_unreadable_file(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        write_video(tmp_path / "a.mp4", torch.zeros(4, 4, 3))
    with pytest.raises(ValueError, match="NaN"):
        write_video(tmp_path / "a.mp4", torch.full((1, 4, 4, 3), float("nan")))
    assert not (tmp_path / "a.mp4").exists()
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="broken.mp4"):
        read_video(bad)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")


def test_video_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "v.mp4"
    write_video(path, torch.zeros(2, 8, 8, 3))
    original = path.read_bytes()

    calls = {"n": 0}
    real = av.VideoFrame.from_ndarray

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("encoder died")
        return real(*args, **kwargs)

    monkeypatch.setattr(video_mod.av.VideoFrame, "from_ndarray", failing)
    with pytest.raises(RuntimeError, match="encoder died"):
        write_video(path, torch.ones(5, 8, 8, 3))
    with pytest.raises(RuntimeError, match="encoder died"):
        calls["n"] = 0
        write_video(tmp_path / "new.mp4", torch.ones(5, 8, 8, 3))
    # The old file is untouched, no partial new file and no temporary left behind.
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
