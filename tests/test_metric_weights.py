"""Weights resolution of the metric networks: order, errors that say what to do, strict loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ds4d_pl.metrics import weights
from ds4d_pl.metrics.weights import (
    MissingWeightsError,
    load_strict,
    resolve,
    search_paths,
    sha256_file,
    status,
)


@pytest.fixture
def no_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty torch cache, no weights dir, offline HF: nothing can be found by accident."""
    monkeypatch.delenv("DS4D_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(weights, "_hf_cached", lambda repo: None)
    return tmp_path


def test_resolution_order_is_explicit_then_weights_dir_then_torch_cache(
    no_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = weights.REGISTRY["i3d"].filename
    cache = no_caches / "torch_hub" / "checkpoints" / name
    wdir = no_caches / "wdir" / name
    explicit = no_caches / "mine.pt"
    for p in (cache, wdir, explicit):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert resolve("i3d") == cache
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(no_caches / "wdir"))
    assert resolve("i3d") == wdir
    assert resolve("i3d", explicit) == explicit
    # A directory given explicitly is searched for the published file name.
    assert resolve("i3d", no_caches / "wdir") == wdir
    assert search_paths("i3d", explicit) == [explicit, wdir, cache]


def test_a_missing_explicit_path_is_an_error_even_if_a_cache_has_the_file(
    no_caches: Path,
) -> None:
    cache = no_caches / "torch_hub" / "checkpoints" / weights.REGISTRY["vgg16"].filename
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"x")
    with pytest.raises(MissingWeightsError, match="typo.pth"):
        resolve("vgg16", no_caches / "typo.pth")


def test_missing_weights_message_names_file_source_destination_and_search(
    no_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(no_caches / "w"))
    with pytest.raises(MissingWeightsError) as err:
        resolve("inception_fid")
    msg = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg
    assert "github.com/mseitzer/pytorch-fid" in msg
    assert f"put it at {no_caches / 'w'}/pt_inception" in msg
    assert "torch_hub/checkpoints" in msg
    with pytest.raises(MissingWeightsError, match="Hugging Face cache>/openai/clip-vit-base"):
        resolve("clip_vit_b32")
    with pytest.raises(KeyError, match="unknown network 'nope'"):
        resolve("nope")


def test_hf_models_resolve_to_a_directory_with_a_config(
    no_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = no_caches / "w" / "clip-vit-base-patch32"
    d.mkdir(parents=True)
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(no_caches / "w"))
    with pytest.raises(MissingWeightsError):
        resolve("clip_vit_b32")  # an empty directory is not a model
    (d / "config.json").write_text("{}")
    assert resolve("clip_vit_b32") == d


def test_status_lists_every_network_with_where_it_looked(no_caches: Path) -> None:
    rows = {r["name"]: r for r in status()}
    assert set(rows) == set(weights.REGISTRY)
    assert not any(r["found"] for r in rows.values())
    assert rows["i3d"]["looked_at"][-1].endswith("checkpoints/i3d_pretrained_400.pt")


def test_load_strict_round_trips_and_reports_mismatches(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    path = tmp_path / "net.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    other = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert load_strict(other, path) == sha256_file(path)
    for a, b in zip(net.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, wrapped)
    load_strict(other, wrapped, rename={"module.": ""})
    with pytest.raises(ValueError, match=r"missing \['0.bias'.*unexpected \[\]"):
        bad = dict(net.state_dict())
        del bad["0.bias"]
        torch.save(bad, tmp_path / "bad.pth")
        load_strict(other, tmp_path / "bad.pth")
    wrong = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ValueError, match="shape mismatch"):
        load_strict(wrong, path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: not a readable PyTorch checkpoint"):
        load_strict(other, tmp_path / "junk.pth")


def test_weights_subcommand_lists_every_network(
    no_caches: Path, capsys: pytest.CaptureFixture
) -> None:
    from ds4d_pl.commands.weights import main as weights_main

    assert weights_main([]) == 0
    out = capsys.readouterr().out
    for name in weights.REGISTRY:
        assert f"{name} " in out
    assert "MISSING  i3d_pretrained_400.pt" in out and "looked at" in out


def test_load_strict_tolerates_only_missing_batchnorm_counters(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    load_strict(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), tmp_path / "old.pth")
    del state["1.running_mean"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="1.running_mean"):
        load_strict(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), tmp_path / "broken.pth")
