"""Foreground alpha from a TorchScript segmentation model: the documented input/output contract
(logits or probabilities, one map or a list of maps, any output size), and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from ds4d_pl.data.segment import SegmenterConfig, load_segmenter
from ds4d_pl.weights import BadWeightsError, MissingWeightsError


class DarkIsForeground(nn.Module):
    """Logits of "darker than light grey", at half the input resolution (like real models)."""

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.avg_pool2d(x, 2)
        return (0.8 - x.mean(1, keepdim=True)) * 40.0


class InvertedDarkIsForeground(nn.Module):
    """The opposite mask (light is foreground), to show which alpha source was used."""

    def forward(self, x: Tensor) -> Tensor:
        return (x.mean(1, keepdim=True) - 0.8) * 40.0


class ProbabilityList(nn.Module):
    """U²-Net style: a tuple of probability maps, the final one first."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = (x.mean(1, keepdim=True) < 0.8).float()
        return p, 1.0 - p


def save_scripted(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def _image() -> Tensor:
    img = torch.ones(24, 36, 3)
    img[6:18, 10:30] = torch.tensor([0.1, 0.5, 0.2])
    return img


def test_logits_become_a_matte_at_the_image_size(tmp_path: Path) -> None:
    seg = load_segmenter(
        save_scripted(DarkIsForeground(), tmp_path / "seg.pt"), SegmenterConfig(input_size=32)
    )
    alpha = seg(_image())
    assert alpha.shape == (24, 36) and alpha.min() >= 0 and alpha.max() <= 1
    assert alpha[8:16, 12:28].min() > 0.99  # object interior
    assert alpha[:3].max() < 0.01 and alpha[:, :6].max() < 0.01  # background


def test_a_list_of_probability_maps_is_read_at_output_index(tmp_path: Path) -> None:
    path = save_scripted(ProbabilityList(), tmp_path / "u2net.pt")
    first = load_segmenter(path, SegmenterConfig(input_size=24))(_image())
    second = load_segmenter(path, SegmenterConfig(input_size=24, output_index=1))(_image())
    # Probabilities in [0, 1] are kept (no sigmoid): exactly 1 inside, 0 outside.
    assert first[10, 20] == 1.0 and first[1, 1] == 0.0
    assert torch.allclose(first + second, torch.ones_like(first))
    with pytest.raises(ValueError, match="returned 2 outputs; output_index 5"):
        load_segmenter(path, SegmenterConfig(input_size=24, output_index=5))(_image())


def test_missing_or_wrong_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match=r"nothere\.pt: segmentation model not found"):
        load_segmenter(tmp_path / "nothere.pt")
    bad = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(BadWeightsError, match=r"weights\.pt: not a TorchScript model"):
        load_segmenter(bad)
    with pytest.raises(ValueError, match="normalize"):
        SegmenterConfig(normalize="clip")
