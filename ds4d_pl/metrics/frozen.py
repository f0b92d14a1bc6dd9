"""Base of the metrics that run a frozen pretrained network (LPIPS, CLIP, FVD, FID-VID).

The network is kept in a one-element list instead of being a registered submodule. A metric is
usually an attribute of a LightningModule, and a registered network would put hundreds of MB of
frozen weights into every training checkpoint, make checkpoints written with and without the
metric mutually unloadable (strict ``load_state_dict``), expose the weights to the optimiser /
DDP parameter broadcast, and be switched to training mode by ``module.train()``. Hidden this
way, it is none of those; :meth:`FrozenNetworkMetric._apply` still moves it with the metric
across devices (``.to(device)``, ``.cuda()``), while dtype casts (``.half()``) leave it in
float32, as torchmetrics does for metric states, because casting would silently change the
reported numbers.

Tests: ``tests/test_metrics_lpips_clip.py``, ``tests/test_metrics_fvd.py``,
``tests/test_metrics_fid_vid.py`` (state dicts exclude the network, ``train()`` leaves it in
eval mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torchmetrics import Metric

__all__ = ["FrozenNetworkMetric"]


class FrozenNetworkMetric(Metric):
    """A torchmetrics ``Metric`` holding a frozen network outside its module tree.

    Args:
        net: The network; set to eval mode with gradients off.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    def __init__(self, net: nn.Module, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        net.eval().requires_grad_(False)
        self._net: list[nn.Module] = [net]

    @property
    def net(self) -> nn.Module:
        """The (unregistered) network, in eval mode even if someone called ``.train()`` on it
        directly."""
        net = self._net[0]
        if net.training:
            net.eval()
        return net

    @property
    def weights_sha256(self) -> Any:
        """sha256 of the network's checkpoint(s) (``None`` for random weights)."""
        return getattr(self._net[0], "weights_sha256", None)

    def _apply(self, fn: Any, exclude_state: Sequence[str] = "") -> nn.Module:
        this = super()._apply(fn, exclude_state)
        # torchmetrics updates ``device`` only for device moves, not for dtype casts. The guard
        # covers a call made before ``__init__`` has stored the network.
        if getattr(this, "_net", None):
            this._net[0].to(this.device)
        return this
