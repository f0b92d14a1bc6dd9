"""FID-VID: the FID Inception and the 3D ResNet-50 with their public checkpoints' layouts, both
variants of the metric on random networks (no weights needed), and missing-weights errors.

Cost, one thread: a random Inception forward is ~0.2 s per 299 x 299 image and a random R3D-50
~0.5 s per 16 x 112 x 112 clip on a busy CPU. Inputs are drawn small (32 x 32) and upsampled by each
network's own preprocessing, features are computed once per input set, and the metric
properties (zero, symmetry, growth with noise) are checked through ``update(..., features=True)``
on those features; one test per variant runs the whole ``update`` path on pixels. The noise
levels are a factor ~3 apart and give distances >10x apart with these seeds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from ds4d_pl.metrics.fid_vid import FIDVID, split_clips
from ds4d_pl.metrics.fvd import frechet_distance
from ds4d_pl.metrics.inception import InceptionV3
from ds4d_pl.metrics.r3d import R3D50
from ds4d_pl.weights import MissingWeightsError, load_strict, sha256_file

SIZE = 32
NOISE = (0.03, 0.1, 0.3)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for these big convolutions: on a 2-core machine shared with other
    jobs, two OpenMP threads wait on each other at every layer (measured ~10x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inception() -> InceptionV3:
    torch.manual_seed(0)
    return InceptionV3().eval()


@pytest.fixture(scope="module")
def r3d() -> R3D50:
    torch.manual_seed(0)
    return R3D50().eval()


def clips(n: int, t: int, seed: int) -> torch.Tensor:
    """``n`` smooth moving patterns with random phases, ``(n, t, SIZE, SIZE, 3)`` in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    out = []
    for _ in range(n):
        ph = torch.rand(3, generator=g) * 6
        frames = [
            torch.stack(
                [
                    (torch.sin(6 * xx + 0.5 * k + ph[0]) + 1) / 2,
                    (torch.cos(4 * yy + 0.3 * k + ph[1]) + 1) / 2,
                    (torch.sin(5 * xx * yy + ph[2]) + 1) / 2,
                ],
                -1,
            )
            for k in range(t)
        ]
        out.append(torch.stack(frames))
    return torch.stack(out)


def noisy(x: torch.Tensor, sigma: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return x + sigma * torch.randn(x.shape, generator=g)


def distance(metric: FIDVID, pred: torch.Tensor, target: torch.Tensor) -> float:
    metric.reset()
    metric.update(pred, target, features=True)
    return float(metric.compute())


def assert_same_params(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --- networks -------------------------------------------------------------------------------


def test_inception_has_the_fid_checkpoint_layout_and_round_trips(
    inception: InceptionV3, tmp_path: Path
) -> None:
    state = inception.state_dict()
    # 94 conv units (conv + BatchNorm) and the 1008-way fc, as in pt_inception-2015-12-05;
    # parameters = torchvision's aux-free Inception-v3 at 1008 classes.
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 94 * 5 + 2
    assert sum(p.numel() for p in inception.parameters()) == 23_850_960
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert state["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert state["fc.weight"].shape == (1008, 2048)
    assert inception.Mixed_5b.branch1x1.bn.eps == 1e-3

    file = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, file)
    fresh = InceptionV3()
    assert load_strict(fresh, file) == sha256_file(file)
    assert_same_params(fresh, inception)

    # The published file was converted from TF constants: no BatchNorm step counters.
    converted = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(converted, file)
    loaded = InceptionV3.from_pretrained(tmp_path)  # a directory holding the published name
    assert loaded.weights_sha256 == sha256_file(file) and not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert_same_params(loaded, inception)

    converted["Mixed_5b.branch1x1.conv.kernel"] = converted.pop("Mixed_5b.branch1x1.conv.weight")
    torch.save(converted, file)
    with pytest.raises(ValueError, match=r"missing \['Mixed_5b\.branch1x1\.conv\.weight'\]"):
        load_strict(fresh, file)
    with pytest.raises(ValueError, match=r"unexpected \['Mixed_5b\.branch1x1\.conv\.kernel'\]"):
        InceptionV3.from_pretrained(file)


def test_r3d50_has_the_kenshohara_layout_and_loads_the_published_format(
    r3d: R3D50, tmp_path: Path
) -> None:
    state = r3d.state_dict()
    assert state["conv1.weight"].shape == (64, 3, 7, 7, 7)
    assert r3d.conv1.stride == (1, 2, 2)
    assert [len(getattr(r3d, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1, 1)  # shortcut B
    assert "layer1.1.downsample.0.weight" not in state
    assert state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1, 1)
    assert state["fc.weight"].shape == (700, 2048)  # r3d50_K_200ep: Kinetics-700
    assert "bn1.num_batches_tracked" in state

    # As published: a training checkpoint whose state dict was saved through DataParallel.
    file = tmp_path / "r3d50_K_200ep.pth"
    published = {
        "epoch": 200,
        "arch": "resnet-50",
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
    }
    torch.save(published, file)
    fresh = R3D50()
    assert load_strict(fresh, file, rename={"module.": ""}) == sha256_file(file)
    assert_same_params(fresh, r3d)
    loaded = R3D50.from_pretrained(file)
    assert (loaded.n_classes, loaded.normalization) == (700, "kinetics")
    assert loaded.weights_sha256 == sha256_file(file) and not loaded.training
    assert_same_params(loaded, r3d)

    with pytest.raises(ValueError, match="missing"):
        load_strict(fresh, file)  # the prefix must be renamed
    published["state_dict"]["module.layer2.0.conv2.kernel"] = published["state_dict"].pop(
        "module.layer2.0.conv2.weight"
    )
    torch.save(published, file)
    with pytest.raises(ValueError, match=r"missing \['layer2\.0\.conv2\.weight'\]"):
        load_strict(fresh, file, rename={"module.": ""})
    with pytest.raises(ValueError, match=r"unexpected \['layer2\.0\.conv2\.kernel'\]"):
        R3D50.from_pretrained(file)


def test_r3d50_reads_disco_s_kinetics_400_file_without_step_counters(tmp_path: Path) -> None:
    net = R3D50(n_classes=400)
    old = {
        f"module.{k}": v
        for k, v in net.state_dict().items()
        if not k.endswith("num_batches_tracked")  # saved by PyTorch < 0.4.1
    }
    torch.save({"state_dict": old}, tmp_path / "resnet-50-kinetics.pth")
    loaded = R3D50.from_pretrained(tmp_path / "resnet-50-kinetics.pth")
    # DisCo's preprocessing for that file: 0-255 values minus the ActivityNet mean, no std.
    assert (loaded.n_classes, loaded.normalization) == (400, "disco")
    x = torch.full((1, 3, 1, 2, 2), 0.5)
    expected = 127.5 - torch.tensor([114.7748, 107.7354, 99.4750])
    assert torch.allclose(loaded.preprocess(x)[0, :, 0, 0, 0], expected, atol=1e-3)


def test_feature_shapes(inception: InceptionV3, r3d: R3D50) -> None:
    video = clips(1, 2, seed=5)  # (1, T=2, H, W, 3)
    with torch.no_grad():
        f = inception(video[0].permute(0, 3, 1, 2))
        g = r3d(torch.rand(1, 3, 16, 112, 112))
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    assert g.shape == (1, 2048) and torch.isfinite(g).all()
    assert r3d.preprocess(torch.rand(1, 3, 2, SIZE, SIZE)).shape == (1, 3, 2, 112, 112)
    # The metric's frame features keep clip and frame order.
    per_frame = FIDVID(inception, "frame_fid").features(video)
    assert torch.allclose(per_frame, f.double()[None], rtol=1e-4, atol=1e-5)


# --- metric ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["frame_fid", "r3d50"])
def test_fid_vid_is_zero_symmetric_and_grows_with_noise(
    variant: str, inception: InceptionV3, r3d: R3D50
) -> None:
    net = inception if variant == "frame_fid" else r3d
    metric = FIDVID(net, variant=variant)
    gt = clips(2, 2 if variant == "frame_fid" else 16, seed=0)  # r3d50: one 16-frame clip
    f_gt = metric.features(gt)
    assert f_gt.shape == ((2, 2, 2048) if variant == "frame_fid" else (2, 2048))
    f_noisy = [metric.features(noisy(gt, s)) for s in NOISE]

    assert abs(distance(metric, f_gt, f_gt)) < 1e-6
    d = [distance(metric, f, f_gt) for f in f_noisy]
    assert d == pytest.approx([distance(metric, f_gt, f) for f in f_noisy], rel=1e-9)
    assert metric.last_num_clips == 2
    assert d[0] > 0 and 5 * d[0] < d[1] and 5 * d[1] < d[2], d

    # The pixel path: update() stores the same features, and identical clips give 0.
    metric.reset()
    metric.update(gt[0], gt[0])
    metric.update(gt[1:], gt[1:])
    assert abs(float(metric.compute())) < 1e-6
    stored = torch.cat(metric.pred_feats)
    assert torch.allclose(stored, f_gt, rtol=1e-5, atol=1e-6)


def test_frame_fid_averages_per_frame_fids_over_clips(inception: InceptionV3) -> None:
    torch.manual_seed(0)
    metric = FIDVID(inception, "frame_fid")
    a, b = torch.randn(3, 4, 8), torch.randn(3, 4, 8) + 0.5
    metric.update(a[:1], b[:1], features=True)
    metric.update(a[1:], b[1:], features=True)
    value = float(metric.compute())
    per_frame = [frechet_distance(a[:, t], b[:, t]) for t in range(4)]
    assert metric.last_per_frame == pytest.approx(per_frame)
    assert value == pytest.approx(sum(per_frame) / 4, rel=1e-6)
    assert metric.last_num_clips == 3
    with pytest.raises(ValueError, match="same feature shape"):
        metric.update(a[:, :2], b[:, :2], features=True)


def test_pooling_is_per_frame_index_across_all_clips_and_counts_every_sample(
    inception: InceptionV3,
) -> None:
    """What frame_fid pools: the t-th frames of every clip; each clip is a sample, so listing
    clips twice changes the value (the protocol therefore refuses duplicates)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, 6, generator=g), torch.randn(4, 3, 6, generator=g) + 0.3
    metric = FIDVID(inception, "frame_fid")
    assert (metric.num_clips(), metric.num_frames()) == (0, None)
    metric.update(a, b, features=True)
    once = float(metric.compute())
    assert (metric.num_clips(), metric.num_frames()) == (4, 3)
    expected = sum(frechet_distance(a[:, t], b[:, t]) for t in range(3)) / 3
    assert once == pytest.approx(expected, rel=1e-6)
    metric.update(a, b, features=True)
    twice = float(metric.compute())
    assert metric.num_clips() == 8 and abs(twice - once) > 1e-3 * once


@pytest.mark.parametrize("n", [3, 6])
def test_frechet_equals_the_eigenvalue_formula_of_torchmetrics_fid(n: int, r3d: R3D50) -> None:
    # STAG4D computed its per-frame FIDs with torchmetrics; n = 3 < d = 5 is the rank-deficient
    # case of few evaluation views.
    g = torch.Generator().manual_seed(n)
    a, b = torch.randn(n, 5, generator=g).double(), torch.randn(n, 5, generator=g).double() + 1
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    c = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    ref = (a.mean(0) - b.mean(0)).square().sum() + s1.trace() + s2.trace() - 2 * c
    metric = FIDVID(r3d, "r3d50")
    metric.update(a, b, features=True)
    assert float(metric.compute()) == pytest.approx(float(ref), rel=1e-5, abs=1e-6)


def test_r3d50_pads_with_the_last_frame_and_averages_16_frame_clips(
    r3d: R3D50, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = torch.arange(2 * 20, dtype=torch.float32).reshape(2, 20, 1)
    s = split_clips(x, 16)
    assert s.shape == (2, 2, 16, 1)
    assert torch.equal(s[:, 1, 4:], x[:, -1:].expand(2, 12, 1))
    assert split_clips(x[:, :5], 16).shape == (2, 1, 16, 1)

    monkeypatch.setattr(r3d, "size", SIZE)  # small frames: only the clip arithmetic is tested
    net = r3d
    metric = FIDVID(net, "r3d50")
    video = clips(1, 20, seed=2)
    got = metric.features(video)
    segs = split_clips(video, 16)[0].permute(0, 4, 1, 2, 3)  # (2, 3, 16, H, W)
    with torch.no_grad():
        expected = net(segs).double().mean(0, keepdim=True)
        short = net(segs[:1, :, [0, 1, 2, 3, 4] + [4] * 11]).double()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(metric.features(video[:, :5]), short, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric FIDVID was called before")
def test_too_few_clips_and_bad_inputs_are_clear_errors(r3d: R3D50) -> None:
    metric = FIDVID(r3d, "r3d50")
    with pytest.raises(ValueError, match="at least 2 clips per set, got 0"):
        metric.compute()
    metric.update(torch.randn(1, 8), torch.randn(1, 8), features=True)
    with pytest.raises(ValueError, match="at least 2 clips per set, got 1"):
        metric.compute()
    with pytest.raises(ValueError, match="one shape"):
        metric.update(torch.rand(4, 8, 8, 3), torch.rand(5, 8, 8, 3))
    with pytest.raises(TypeError, match="needs a InceptionV3"):
        FIDVID(r3d, "frame_fid")
    with pytest.raises(ValueError, match="variant must be one of"):
        FIDVID(r3d, "fvd")  # type: ignore[arg-type]


def test_states_concatenate_across_processes_and_stay_out_of_checkpoints(r3d: R3D50) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(5, 8).double(), torch.randn(5, 8).double()
    one, two, whole = (FIDVID(r3d, "r3d50") for _ in range(3))
    assert one._reductions["pred_feats"] is not None  # "cat", DDP-synced
    one.update(a[:2], b[:2], features=True)
    two.update(a[2:], b[2:], features=True)
    whole.update(a, b, features=True)
    one.merge_state(two)
    assert float(one.compute()) == pytest.approx(float(whole.compute()), rel=1e-9)
    assert one.last_num_clips == 5

    owner = nn.Module()
    owner.fid_vid = whole
    assert owner.state_dict() == {}  # no network weights, no metric states
    assert list(owner.parameters()) == []
    owner.train()
    assert not whole.net.training


def test_missing_weights_name_the_file_and_unknown_variants_are_rejected(
    no_weights: Path,
) -> None:
    with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        FIDVID.from_pretrained("frame_fid")
    with pytest.raises(MissingWeightsError, match="resnet-50-kinetics.pth"):
        FIDVID.from_pretrained("r3d50")
    with pytest.raises(MissingWeightsError, match="typo.pth"):
        FIDVID.from_pretrained("r3d50", no_weights / "typo.pth")
    with pytest.raises(ValueError, match="variant must be one of"):
        FIDVID.from_pretrained("i3d")  # type: ignore[arg-type]
