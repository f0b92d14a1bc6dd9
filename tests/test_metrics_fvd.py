"""FVD: the I3D with the public checkpoint's layout, both distances against their references, the
Consistent4D preprocessing, and the metric on a random I3D (no weights needed).

A random I3D forward of one 224 x 224 clip costs ~0.4 s on a busy CPU. The architecture accepts
any T >= 1 (three stride-2 "SAME" reductions of time), so metric tests use T = 2 frames, upsampled
from 32 x 32 by the preprocessing, and only the shape test runs T = 8.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from torch import nn

from ds4d_pl.metrics.fvd import (
    FVD,
    consistent4d_fvd,
    frechet_distance,
    preprocess_clip,
)
from ds4d_pl.metrics.i3d import InceptionI3d, same_padding
from ds4d_pl.weights import MissingWeightsError, load_strict, sha256_file

T, SIZE = 2, 32


@pytest.fixture(scope="module")
def net() -> InceptionI3d:
    torch.manual_seed(0)
    return InceptionI3d().eval()


def clip(phase: float) -> torch.Tensor:
    """A smooth moving pattern, ``(T, SIZE, SIZE, 3)`` in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    frames = [
        torch.stack(
            [(torch.sin(6 * xx + t + phase) + 1) / 2, yy, (torch.cos(5 * xx * yy + t) + 1) / 2], -1
        )
        for t in range(T)
    ]
    return torch.stack(frames)


def noisy(x: torch.Tensor, std: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + std * torch.randn(x.shape, generator=g)).clamp(0, 1)


# --- I3D -----------------------------------------------------------------------------------


def test_parameter_names_and_shapes_are_the_public_checkpoints(net: InceptionI3d) -> None:
    sd = net.state_dict()
    # 57 conv + BatchNorm units (weight, BN weight/bias/running stats/counter) + the classifier.
    assert len(sd) == 57 * 6 + 2
    assert sd["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert sd["Conv3d_1a_7x7.bn.running_mean"].shape == (64,)
    assert sd["Conv3d_2c_3x3.conv3d.weight"].shape == (192, 64, 3, 3, 3)
    assert sd["Mixed_3b.b1b.conv3d.weight"].shape == (128, 96, 3, 3, 3)
    assert sd["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    assert sd["logits.conv3d.bias"].shape == (400,)
    assert not any(k.startswith("logits.bn") for k in sd)
    assert not any(k.endswith("conv3d.bias") for k in sd if not k.startswith("logits"))
    # Input widths of the mixed blocks: the concatenated outputs of the previous block, as in
    # the public definition (e.g. Mixed_4b takes 128 + 192 + 96 + 64).
    widths = {"3b": 192, "3c": 256, "4b": 480, "4c": 512, "4d": 512, "4e": 512, "4f": 528}
    widths |= {"5b": 832, "5c": 832}
    for block, width in widths.items():
        assert sd[f"Mixed_{block}.b0.conv3d.weight"].shape[1] == width
        assert sd[f"Mixed_{block}.b3b.conv3d.weight"].shape[1] == width


def test_state_dict_round_trips_strictly_and_a_renamed_key_is_named(
    net: InceptionI3d, tmp_path: Path
) -> None:
    path = tmp_path / "i3d.pt"
    torch.save(net.state_dict(), path)
    other = InceptionI3d()
    assert load_strict(other, path) == sha256_file(path)
    for k, v in net.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k

    # from_pretrained on an explicit file: eval mode, frozen, checksum recorded.
    loaded = InceptionI3d.from_pretrained(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert loaded.weights_sha256 == sha256_file(path)
    assert torch.equal(loaded.Mixed_5c.b0.conv3d.weight, net.Mixed_5c.b0.conv3d.weight)

    # A checkpoint saved before BatchNorm had counters still loads (PyTorch allows it too).
    legacy = tmp_path / "legacy.pt"
    torch.save({k: v for k, v in net.state_dict().items() if "num_batches" not in k}, legacy)
    assert InceptionI3d.from_pretrained(legacy).weights_sha256 == sha256_file(legacy)

    state = net.state_dict()
    state["Mixed_3b.b0.conv.weight"] = state.pop("Mixed_3b.b0.conv3d.weight")
    bad = tmp_path / "renamed.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"missing \['Mixed_3b\.b0\.conv3d\.weight'\]") as err:
        load_strict(InceptionI3d(), bad)
    assert "unexpected ['Mixed_3b.b0.conv.weight']" in str(err.value)
    with pytest.raises(ValueError, match="Mixed_3b.b0.conv3d.weight"):
        InceptionI3d.from_pretrained(bad)


def test_logits_are_one_finite_400_vector_per_clip(net: InceptionI3d) -> None:
    x = torch.rand(2, 3, 8, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 400) and torch.isfinite(out).all() and out.std() > 0
    with pytest.raises(ValueError, match="224 x 224"):
        net(torch.zeros(1, 3, 2, 112, 112))
    # Time is reduced 8x ("SAME"): T = 8 leaves one position, T = 9 two (averaged).
    assert [InceptionI3d.temporal_positions(t) for t in (1, 8, 9, 16, 32)] == [1, 1, 2, 2, 4]


def test_same_padding_is_tensorflows() -> None:
    for size in range(1, 20):
        for k in (1, 2, 3, 7):
            for s in (1, 2):
                out = math.ceil(size / s)
                total = max((out - 1) * s + k - size, 0)
                assert same_padding(size, k, s) == (total // 2, total - total // 2)


# --- distances -----------------------------------------------------------------------------


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The pytorch-fid / DisCo formula with scipy's sqrtm (ddof=1 covariances)."""
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize(
    ("dim", "na", "nb"),
    [(1, 30, 40), (5, 50, 60), (32, 200, 150), (16, 10, 8), (100, 12, 9)],
    ids=["1d", "5d", "32d", "rank-deficient-16d", "rank-deficient-100d"],
)
def test_frechet_distance_equals_the_sqrtm_formula(dim: int, na: int, nb: int) -> None:
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(na, dim))
    b = rng.normal(0.3, 1.5, size=(nb, dim)) @ rng.normal(size=(dim, dim)) / math.sqrt(dim)
    d = frechet_distance(a, b)
    # sqrtm of a singular product is itself only accurate to ~1e-8 relative.
    assert d == pytest.approx(scipy_frechet(a, b), rel=1e-6)
    assert frechet_distance(b, a) == pytest.approx(d, rel=1e-12)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9 * a.var(axis=0).sum())
    assert frechet_distance(torch.from_numpy(a).float(), torch.from_numpy(b)) == pytest.approx(
        frechet_distance(a.astype(np.float32), b), rel=1e-12
    )


def test_frechet_distance_grows_with_feature_noise_and_rejects_bad_input() -> None:
    # Set-level monotonicity is checked on features: with a random I3D and few clips the
    # ordering of set FVDs is not a property worth asserting.
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(64, 16))
    noise = rng.normal(size=feats.shape)
    ds = [frechet_distance(feats, feats + s * noise) for s in (0.0, 0.1, 0.3, 1.0)]
    assert ds[0] == pytest.approx(0, abs=1e-9) and ds[0] < ds[1] < ds[2] < ds[3]
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(feats[:1], feats)
    with pytest.raises(ValueError, match=r"\(N_a, D\)"):
        frechet_distance(feats, feats[:, :3])


def test_consistent4d_fvd_is_the_legacy_single_clip_frechet_distance() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=400), rng.normal(0.2, 1.3, size=400)
    expected = np.sum((a - b) ** 2) + (np.std(a, ddof=1) - np.std(b, ddof=1)) ** 2
    assert consistent4d_fvd(a, b) == pytest.approx(expected, rel=1e-12)

    # The reference script on one clip's (1, 400) features: np.mean(axis=0) is the vector
    # itself; np.cov(rowvar=False) of a single row was, before NumPy 2.2, the scalar ddof=1
    # variance of its 400 entries (written version-independently as np.cov(row)); then the
    # sqrtm Fréchet formula.
    fa, fb = a[None], b[None]
    s1, s2 = np.atleast_2d(np.cov(fa)), np.atleast_2d(np.cov(fb))
    assert s1[0, 0] == pytest.approx(np.var(a, ddof=1))
    diff = fa.mean(0) - fb.mean(0)
    legacy = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2))
    assert consistent4d_fvd(a, b) == pytest.approx(float(np.real(legacy)), rel=1e-12)

    assert consistent4d_fvd(a, a) == 0.0
    assert consistent4d_fvd(b, a) == pytest.approx(consistent4d_fvd(a, b), rel=1e-15)
    batch = consistent4d_fvd(torch.from_numpy(np.stack([a, b])), np.stack([b, b]))
    assert isinstance(batch, np.ndarray) and batch.shape == (2,)
    assert batch[0] == pytest.approx(expected, rel=1e-12) and batch[1] == 0.0


# --- preprocessing -------------------------------------------------------------------------


def test_preprocess_resizes_like_the_reference_pil_bicubic() -> None:
    rng = np.random.default_rng(0)
    for h, w in ((300, 200), (48, 64)):  # down- and up-sampling, non-square (no crop)
        frames = rng.random((2, h, w, 3)).astype(np.float32)
        out = preprocess_clip(frames)
        assert out.shape == (1, 3, 2, 224, 224) and out.dtype == torch.float32
        # The reference: 8-bit values resized per channel by PIL (mode "F", bicubic), / 127.5 - 1.
        ref = np.asarray(
            Image.fromarray(frames[1, :, :, 2] * 255, mode="F").resize((224, 224), resample=3)
        )
        np.testing.assert_allclose(out[0, 2, 1].numpy(), ref / 127.5 - 1, atol=1e-4)
    x = torch.rand(3, 224, 224, 3)
    assert torch.equal(preprocess_clip(x)[0], x.permute(3, 0, 1, 2) * 2 - 1)
    # The resampling weights sum to one: a constant frame stays constant (up to rounding).
    torch.testing.assert_close(
        preprocess_clip(torch.ones(1, 50, 50, 3)), torch.ones(1, 3, 1, 224, 224)
    )
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        preprocess_clip(torch.zeros(2, 8, 8))


# --- the metric ----------------------------------------------------------------------------


def test_consistent4d_mode_is_zero_on_identical_clips_symmetric_and_batchable(
    net: InceptionI3d,
) -> None:
    a, b = clip(0.0), clip(1.0)
    same = FVD(net)
    same.update(a, a)
    assert same.compute().item() == pytest.approx(0.0, abs=1e-6)
    assert same.last_num_clips == 1

    ab, ba = FVD(net), FVD(net)
    ab.update(a, b)
    ba.update(b, a)
    d = ab.compute().item()
    assert d > 0 and ba.compute().item() == pytest.approx(d, rel=1e-5)

    both = FVD(net)
    both.update(torch.stack([a, b]), torch.stack([b, b]))  # d(a, b) and 0, averaged
    assert both.compute().item() == pytest.approx(d / 2, rel=1e-4)
    assert both.last_num_clips == 2


def test_consistent4d_mode_grows_with_noise_on_the_gt_clip(net: InceptionI3d) -> None:
    gt = clip(0.0)
    values = []
    for std in (0.05, 0.15, 0.4):
        m = FVD(net)
        m.update(noisy(gt, std), gt)
        values.append(m.compute().item())
    # Measured with this seed: ~0.002, ~0.03, ~0.25 (each level ~10x the previous).
    assert 0 < values[0] < values[1] < values[2]
    assert values[1] > 3 * values[0] and values[2] > 3 * values[1]


def test_set_mode_is_zero_on_identical_sets_symmetric_and_counts_clips(
    net: InceptionI3d,
) -> None:
    preds = torch.stack([clip(0.0), clip(1.0)])
    gts = torch.stack([noisy(clip(0.0), 0.3), clip(2.0)])

    same = FVD(net, mode="set")
    same.update(preds, preds)
    assert same.compute().item() == pytest.approx(0.0, abs=1e-6)
    assert same.last_num_clips == 2

    pg, gp = FVD(net, mode="set"), FVD(net, mode="set")
    pg.update(preds[0], gts[0])  # clip by clip ...
    pg.update(preds[1], gts[1])
    gp.update(gts, preds)  # ... or as a batch
    d = pg.compute().item()
    assert d > 0 and gp.compute().item() == pytest.approx(d, rel=1e-4)
    # The value is frechet_distance of the stored (N, 400) logits.
    feats = [torch.cat(pg.pred_feats), torch.cat(pg.target_feats)]
    assert feats[0].shape == (2, 400) and d == pytest.approx(frechet_distance(*feats), rel=1e-6)
    assert pg.last_num_clips == gp.last_num_clips == 2


def test_set_mode_with_fewer_than_two_clips_is_an_error(net: InceptionI3d) -> None:
    m = FVD(net, mode="set")
    with pytest.raises(ValueError, match="at least 2 clips"), pytest.warns(UserWarning):
        m.compute()  # torchmetrics also warns that compute() runs before update()
    m.update(clip(0.0), clip(1.0))
    with pytest.raises(ValueError, match="at least 2 clips.*got 1"):
        m.compute()
    with pytest.raises(ValueError, match="mode must be"):
        FVD(net, mode="frechet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one shape"):
        m.update(clip(0.0), clip(0.0)[:1])


def test_the_network_stays_out_of_state_dicts_and_parameters(net: InceptionI3d) -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(2, 2)
            self.fvd = FVD(net, mode="set")
            self.fvd_c4d = FVD(net)

    holder = Holder()
    assert set(holder.state_dict()) == {"head.weight", "head.bias"}
    assert len(list(holder.parameters())) == 2
    holder.train()
    assert not holder.fvd.net.training
    holder.to("cpu")  # device moves carry the network along
    assert holder.fvd.net is net and holder.fvd.higher_is_better is False


def test_from_pretrained_without_weights_names_the_file(no_weights: Path) -> None:
    with pytest.raises(MissingWeightsError, match="i3d_pretrained_400.pt") as err:
        FVD.from_pretrained()
    assert str(no_weights / "weights") in str(err.value)
    with pytest.raises(MissingWeightsError, match="nowhere.pt"):
        FVD.from_pretrained(no_weights / "nowhere.pt", mode="set")
