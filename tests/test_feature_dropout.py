"""Feature dropout (``conditioning.feature_dropout``): training steps that condition on the
time-constant maps, so the deformation field must carry the motion itself.

Spec:
  * ``0`` (the default) draws nothing and conditions exactly as before;
  * on a dropped training step the conditioner's output equals the ``placebo: time_constant``
    conditioner's at every time; the draw is a function of the generator alone;
  * eval mode never drops, even right after a dropped training step;
  * bad probabilities and per-frame cameras are refused, naming the key.
"""

from __future__ import annotations

import pytest
import torch

from ds4d_pl.cameras import orbit_cameras, zero123pp_cameras
from ds4d_pl.conditioning.build import Conditioner
from ds4d_pl.config import AblationConfig, ConditioningConfig
from ds4d_pl.data.sampler import step_generator
from ds4d_pl.model import DS4DModel

C, T, V = 8, 5, 3


def _features() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(V, T, C, 6, 6, generator=g) + 0.1


def _cameras():
    front = orbit_cameras([0.0], [0.0], 32, 32)
    return front.cat([front, zero123pp_cameras(32, 32)[:2]])


def _conditioner(**cfg) -> Conditioner:
    torch.manual_seed(0)  # the same projection weights for every conditioner built here
    cond = Conditioner(C, ConditioningConfig(width=5, **cfg), dsfd=True, tssf="da")
    cond.set_features(_features(), torch.linspace(0, 1, T))
    return cond


def _points() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(64, 3, generator=g) - 0.5) * 0.4


def _out(cond: Conditioner, t: float) -> torch.Tensor:
    return cond(_points(), t, _cameras())[0]


def test_zero_dropout_draws_nothing_and_conditions_as_before() -> None:
    plain, off = _conditioner(), _conditioner(feature_dropout=0.0)
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    assert off.draw_feature_dropout(g) is False
    assert torch.equal(g.get_state(), state)  # no random number consumed
    for t in (0.0, 0.37, 1.0):
        assert torch.equal(_out(off, t), _out(plain, t))


def test_a_dropped_training_step_conditions_like_the_placebo() -> None:
    cond = _conditioner(feature_dropout=0.99)
    placebo = _conditioner(placebo="time_constant")
    cond.train()
    assert cond.draw_feature_dropout(torch.Generator().manual_seed(0))
    real = _conditioner()
    for t in (0.0, 0.37, 1.0):
        assert torch.allclose(_out(cond, t), _out(placebo, t), atol=1e-6)
    # The real features do change over time, so the equality above is not trivial.
    assert not torch.allclose(_out(real, 0.0), _out(real, 1.0), atol=1e-3)
    assert not torch.allclose(_out(cond, 0.0), _out(real, 0.0), atol=1e-3)


def test_eval_mode_never_drops() -> None:
    cond, real = _conditioner(feature_dropout=0.99), _conditioner()
    cond.train()
    assert cond.draw_feature_dropout(torch.Generator().manual_seed(0))
    cond.eval()  # validation right after a dropped step
    for t in (0.0, 0.37, 1.0):
        assert torch.equal(_out(cond, t), _out(real, t))


def test_the_draw_follows_the_step_generator_at_the_rate_asked() -> None:
    cond = _conditioner(feature_dropout=0.5)
    draws = [cond.draw_feature_dropout(step_generator(9, step)) for step in range(400)]
    again = [cond.draw_feature_dropout(step_generator(9, step)) for step in range(400)]
    assert draws == again  # resumed runs and DDP ranks (same seed and step) agree
    assert 0.4 < sum(draws) / len(draws) < 0.6
    assert cond.features_dropped == draws[-1]


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_probabilities_are_refused_naming_the_key(p: float) -> None:
    with pytest.raises(ValueError, match="conditioning.feature_dropout"):
        ConditioningConfig(feature_dropout=p)


def test_per_frame_cameras_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from ds4d_pl.config import FieldConfig, GaussianInit

    row_h = AblationConfig("points", True, True, "da")
    cfg = ConditioningConfig(feature_dropout=0.5)
    # No encoder is needed to reach the check: it comes before any frame is encoded.
    monkeypatch.setattr("ds4d_pl.model.build_conditioner", lambda a, c: (_conditioner(), None))
    model = DS4DModel(GaussianInit(), FieldConfig(), row_h, cfg)

    class MovingCamera:
        per_frame_cameras = True

    with pytest.raises(ValueError, match="conditioning.feature_dropout needs fixed cameras"):
        model.prepare_conditioning(MovingCamera())
