"""FVD on I3D Kinetics-400 logits: the per-clip distance of published Consistent4D numbers, and a
proper set-level Fréchet distance (docs/design.md §7).

Both flavours embed a clip as the 400 I3D logits averaged over time
(:class:`~ds4d_pl.metrics.i3d.InceptionI3d`) after :func:`preprocess_clip`. They differ in what
is compared:

``consistent4d`` (:func:`consistent4d_fvd`)
    What Consistent4D's ``evaluation/compute_fvd.py`` (reorganised from DisCo) computes for one
    predicted and one ground-truth clip and averages over views and objects. It fits a
    "Gaussian" to each clip's single ``(1, 400)`` logit array with ``np.mean(feats, axis=0)``
    and ``np.cov(feats, rowvar=False)``. NumPy < 2.2 does not transpose a one-row array when
    ``rowvar=False`` (numpy issue #27658, changed by numpy PR #27661), so the "covariance" was
    the scalar variance, with ``ddof=1``, of the 400 logits of that clip, while the mean was
    the logit vector itself. The Fréchet formula with ``scipy.linalg.sqrtm`` then reduces
    exactly to ``||a - b||^2 + (std(a) - std(b))^2``. With NumPy >= 2.2 the same script
    yields a NaN 400 x 400 covariance, so the published numbers can only be reproduced by
    this closed form. It is not a distance between distributions of clips, and it is large
    in absolute value. Use it to compare with published tables only.

``set`` (:func:`frechet_distance`)
    The Fréchet distance between Gaussians fitted to the sets of predicted and of ground-truth
    clip embeddings (the FVD of Unterthiner et al. and of VideoGPT / StyleGAN-V), computed
    without a matrix square root. It needs at least 2 clips per set and is only meaningful
    with many; the clip count is reported with it.

Preprocessing follows the Consistent4D script (see :func:`preprocess_clip`).

Tests: ``tests/test_metrics_fvd.py``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.utilities import dim_zero_cat

from ds4d_pl.metrics.frozen import FrozenNetworkMetric
from ds4d_pl.metrics.i3d import InceptionI3d

__all__ = ["FVD", "FVDMode", "consistent4d_fvd", "frechet_distance", "preprocess_clip"]

FVDMode = Literal["consistent4d", "set"]

#: Frame size I3D takes.
I3D_RESOLUTION = 224

ArrayLike = np.ndarray | Tensor


def _float64(x: ArrayLike) -> np.ndarray:
    """``x`` as a float64 NumPy array (torch tensors are detached and moved to the CPU)."""
    if isinstance(x, Tensor):
        x = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def frechet_distance(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors.

    ``d = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)``, in float64.

    Covariances use ``ddof=1`` (divide by ``N - 1``), as ``np.cov`` in pytorch-fid and the
    ``cov`` of VideoGPT / StyleGAN-V's ``frechet_distance`` do.

    No matrix square root is formed. With centred data ``X_a`` (``N_a x D``),
    ``S_a = X_a^T X_a / (N_a - 1)``, and the trace term equals the nuclear norm (sum of
    singular values) of ``X_a X_b^T / sqrt((N_a - 1)(N_b - 1))``. That norm is computed from
    the triangular factors of ``X_a = Q_a R_a`` and ``X_b = Q_b R_b`` as the singular values of
    ``R_a R_b^T`` (at most ``min(N, D)`` square). Singular values are accurate down to zero,
    so the rank-deficient case ``N < D`` (few clips, 400 logits) needs no ``eps`` on the
    diagonal and gives no imaginary parts, unlike ``scipy.linalg.sqrtm(S_a @ S_b)``. Rounding
    can make an exact 0 come out slightly negative; the result is clamped at 0.

    Args:
        feats_a: ``(N_a, D)`` NumPy array or torch tensor, ``N_a >= 2``.
        feats_b: ``(N_b, D)``, ``N_b >= 2``.

    Returns:
        The distance (a Python float; 0 for identical sets, symmetric in its arguments).

    Raises:
        ValueError: Not two 2-D arrays with one feature width, fewer than 2 rows, or
            non-finite values.
    """
    a, b = _float64(feats_a), _float64(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N_a, D) and (N_b, D) features, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) < 2:
        raise ValueError(
            f"a Fréchet distance needs at least 2 samples per set (covariance with ddof=1), "
            f"got {len(a)} and {len(b)}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("features contain NaN or inf")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    xa, xb = a - mu_a, b - mu_b
    na, nb = len(a), len(b)
    r_a = np.linalg.qr(xa, mode="r")
    r_b = np.linalg.qr(xb, mode="r")
    nuclear = np.linalg.svd(r_a @ r_b.T, compute_uv=False).sum()
    tr_sqrt = nuclear / math.sqrt((na - 1) * (nb - 1))
    tr_a = float(np.sum(xa * xa)) / (na - 1)
    tr_b = float(np.sum(xb * xb)) / (nb - 1)
    d = float(np.sum((mu_a - mu_b) ** 2)) + tr_a + tr_b - 2.0 * float(tr_sqrt)
    return max(d, 0.0)


def _consistent4d(a: Tensor, b: Tensor) -> Tensor:
    """Per-clip Consistent4D distance on ``(..., D)`` float64 tensors (one formula for the
    function and the metric)."""
    # correction=1 is NumPy's ddof=1, the np.cov default the reference relied on.
    std_a, std_b = a.std(dim=-1, correction=1), b.std(dim=-1, correction=1)
    return (a - b).pow(2).sum(dim=-1) + (std_a - std_b).pow(2)


def consistent4d_fvd(logits_a: ArrayLike, logits_b: ArrayLike) -> float | np.ndarray:
    """The per-clip "FVD" of Consistent4D's published numbers.

    ``d(a, b) = ||a - b||^2 + (std(a) - std(b))^2``. Here ``a`` and ``b`` are the time-averaged
    I3D logits of one predicted and one ground-truth clip (400 values each). ``std`` is the
    sample standard deviation over those 400 values with ``ddof=1``. What the reference script
    does, and why it reduces to this, is in the module docstring. In short, the reference's
    "set" is the 400 logit entries of a single clip, treated as scalar observations: the
    "mean" is the logit vector and the "covariance" is the ``ddof=1`` variance of its entries.
    This equals the script's ``fid_from_feats(pred_feat, gt_feat)`` under NumPy < 2.2, up to
    ``sqrtm`` rounding.

    Args:
        logits_a: ``(D,)`` one clip's logits, or ``(B, D)`` for ``B`` clips (NumPy or torch).
        logits_b: Same shape as ``logits_a``.

    Returns:
        A float for ``(D,)`` inputs, else a float64 array of ``B`` per-clip distances. 0 for
        identical inputs; symmetric.
    """
    a, b = _float64(logits_a), _float64(logits_b)
    if a.shape != b.shape or a.ndim not in (1, 2) or a.shape[-1] < 2:
        raise ValueError(
            f"expected logits of one shape (D,) or (B, D) with D >= 2, got {a.shape} and {b.shape}"
        )
    d = _consistent4d(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    return float(d) if a.ndim == 1 else d


def _preprocess(clips: Tensor) -> Tensor:
    """``(N, T, H, W, 3)`` in [0, 1] -> ``(N, 3, T, 224, 224)`` in [-1, 1] (see
    :func:`preprocess_clip`)."""
    n, t, h, w, c = clips.shape
    x = clips.float().clamp(0.0, 1.0).reshape(n * t, h, w, c).permute(0, 3, 1, 2)
    if (h, w) != (I3D_RESOLUTION, I3D_RESOLUTION):
        x = F.interpolate(
            x,
            size=(I3D_RESOLUTION, I3D_RESOLUTION),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        )
    # x * 255 / 127.5 - 1, the reference's mapping of 8-bit values, without its rounding.
    x = x * 2.0 - 1.0
    return x.reshape(n, t, c, I3D_RESOLUTION, I3D_RESOLUTION).permute(0, 2, 1, 3, 4).contiguous()


def preprocess_clip(frames: ArrayLike) -> Tensor:
    """One clip as I3D input, resized the way Consistent4D's FVD script does.

    The reference resizes each frame directly to 224 x 224, with no aspect-preserving crop,
    channel by channel, using PIL bicubic (``resample=3``) on float images (mode ``"F"``). It
    then maps the 8-bit values ``v`` to ``v / 127.5 - 1``. The equivalent here is torch's
    ``bicubic`` with ``antialias=True``: PIL's cubic kernel (``a = -0.5``), widened when
    downscaling. It is applied to the float frames and matches PIL's float output to
    ~1e-5 of the range. This is not VideoGPT's preprocessing (bilinear, shorter side to 224,
    centre crop); the two coincide only for square frames and differ in the filter. Frames
    are clamped to [0, 1], as the reference's PNG inputs always are, but not rounded to 8
    bits.

    Args:
        frames: ``(T, H, W, 3)`` RGB in [0, 1], NumPy array or torch tensor.

    Returns:
        ``(1, 3, T, 224, 224)`` float32 tensor in [-1, 1] (bicubic overshoot at edges is kept,
        as in the reference).
    """
    x = torch.as_tensor(frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected a (T, H, W, 3) clip, got {tuple(x.shape)}")
    return _preprocess(x[None])


class FVD(FrozenNetworkMetric):
    """FVD between predicted and ground-truth clips, from I3D Kinetics-400 logits; lower is
    better.

    ``update(pred, target)`` takes one clip each, ``(T, H, W, 3)`` in [0, 1], or a batch
    ``(B, T, H, W, 3)`` of corresponding clips. Composite onto the background before calling.
    Both clips of a pair go through the network in one pass.

    Modes:

    ``"consistent4d"`` (default)
        Mean over clips of :func:`consistent4d_fvd` between each predicted clip and its GT
        clip: the number published on the Consistent4D benchmark. The reference averages over
        the 4 views of an object, then over objects; this equals the mean over clips when
        every object has the same number of views. States ``total`` (float64) and ``count``,
        reduced with ``sum``.
    ``"set"``
        :func:`frechet_distance` between the set of predicted and the set of GT clip
        embeddings. States ``pred_feats`` and ``target_feats`` (``(N, 400)`` float64), reduced
        with ``cat``. ``compute()`` raises ``ValueError`` with fewer than 2 clips.

    In ``"set"`` mode accumulate with ``update()`` and call ``compute()`` once at the end:
    calling the metric object (``forward``) also computes a value for the batch alone, which
    needs a batch of at least 2 clips.

    ``compute()`` returns the value as a 0-d float32 tensor and records the number of clips
    it used (over all processes after DDP sync) in :attr:`last_num_clips`. Report the value
    together with it: a set-level FVD over few clips is strongly biased.

    Keeping the network out of checkpoints: the I3D is held in a one-element list, not
    registered as a submodule, so it is not in ``state_dict()`` / ``parameters()`` of the
    metric or of a LightningModule holding it, never reaches the optimiser or DDP, and
    ``.train()`` cannot switch it out of eval mode. The metric's own states are torchmetrics'
    default non-persistent ones. The metric therefore adds no keys to a Lightning checkpoint.
    ``.to(device)`` still moves the network with the metric (see :meth:`_apply`).

    Args:
        net: An :class:`~ds4d_pl.metrics.i3d.InceptionI3d` (pretrained via
            :meth:`from_pretrained`, random in tests). Set to eval mode, gradients off.
        mode: ``"consistent4d"`` or ``"set"``.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Attributes:
        last_num_clips: Clips used by the last ``compute()`` (``None`` before).
        weights_sha256: sha256 of the I3D checkpoint (``None`` for a random network).
    """

    higher_is_better = False
    is_differentiable = False
    full_state_update = False
    plot_lower_bound = 0.0

    def __init__(self, net: nn.Module, mode: FVDMode = "consistent4d", **kwargs: Any) -> None:
        if mode not in ("consistent4d", "set"):
            raise ValueError(f"mode must be 'consistent4d' or 'set', got {mode!r}")
        super().__init__(net, **kwargs)
        self.mode: FVDMode = mode
        self.last_num_clips: int | None = None
        if mode == "consistent4d":
            self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        else:
            self.add_state("pred_feats", [], dist_reduce_fx="cat")
            self.add_state("target_feats", [], dist_reduce_fx="cat")

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        mode: FVDMode = "consistent4d",
        **kwargs: Any,
    ) -> FVD:
        """The metric with the public Kinetics-400 I3D (``i3d_pretrained_400.pt``).

        Args:
            path: The checkpoint or a directory holding it; ``None`` searches
                ``$DS4D_WEIGHTS_DIR`` and the torch hub cache
                (:func:`~ds4d_pl.weights.resolve`).
            mode: ``"consistent4d"`` or ``"set"``.
            **kwargs: Passed to :class:`torchmetrics.Metric`.

        Raises:
            MissingWeightsError: The file is not on this machine.
        """
        return cls(InceptionI3d.from_pretrained(path), mode=mode, **kwargs)

    def logits(self, clips: Tensor) -> Tensor:
        """Time-averaged I3D logits ``(N, 400)`` (float64) of ``(N, T, H, W, 3)`` clips in
        [0, 1]."""
        net = self.net
        p = next(net.parameters())
        x = _preprocess(clips.to(p.device)).to(p.dtype)
        with torch.no_grad():
            return net(x).double()

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add corresponding predicted and GT clips.

        Args:
            pred: ``(T, H, W, 3)`` or ``(B, T, H, W, 3)`` RGB in [0, 1].
            target: Same shape as ``pred``.
        """
        if pred.shape != target.shape or pred.ndim not in (4, 5) or pred.shape[-1] != 3:
            raise ValueError(
                f"expected pred and target of one shape (T, H, W, 3) or (B, T, H, W, 3), got "
                f"{tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if pred.ndim == 4:
            pred, target = pred[None], target[None]
        b = pred.shape[0]
        logits = self.logits(torch.cat([pred, target]))
        if self.mode == "consistent4d":
            self.total += _consistent4d(logits[:b], logits[b:]).sum().to(self.total.device)
            self.count += b
        else:
            self.pred_feats.append(logits[:b])
            self.target_feats.append(logits[b:])

    def compute(self) -> Tensor:
        """The FVD over all clips seen; sets :attr:`last_num_clips`.

        Returns:
            0-d float32 tensor (NaN in ``consistent4d`` mode before any update).

        Raises:
            ValueError: ``mode="set"`` with fewer than 2 clips.
        """
        if self.mode == "consistent4d":
            n = int(self.count)
            self.last_num_clips = n
            if n == 0:
                return torch.tensor(float("nan"))
            return (self.total / n).float()
        n = _num_rows(self.pred_feats)
        if n < 2:
            raise ValueError(
                f"FVD mode='set' needs at least 2 clips to fit a covariance, got {n}; use "
                f"mode='consistent4d' for a per-clip score"
            )
        self.last_num_clips = n
        value = frechet_distance(dim_zero_cat(self.pred_feats), dim_zero_cat(self.target_feats))
        return torch.tensor(value, dtype=torch.float32)


def _num_rows(state: list[Tensor] | Tensor) -> int:
    """Rows of a ``cat`` state (a list before sync, a tensor after)."""
    if isinstance(state, Tensor):
        return int(state.shape[0]) if state.ndim else 0
    return sum(int(t.shape[0]) for t in state)
