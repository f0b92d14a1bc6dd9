"""Foreground alpha from a local segmentation model (for inputs and pseudo views without alpha).

The format is the one salient-object / background-removal models are commonly exported to and
run from: a **TorchScript file** (``torch.jit.save`` of a traced or scripted model such as
BiRefNet, U²-Net, RMBG or ISNet). Its contract:

* input: one ``(1, 3, S, S)`` float32 RGB batch in ``[0, 1]`` (``S`` =
  :attr:`SegmenterConfig.input_size`; with ``normalize="imagenet"`` the batch is standardised
  with the ImageNet mean/std first, for exports that do not do it themselves);
* output: foreground logits or probabilities as a ``(1, 1, h, w)``, ``(1, h, w)`` or ``(h, w)``
  tensor, at any resolution (it is resized back to the image bilinearly). A model that returns
  a list or tuple of maps (U²-Net returns ``(d0, d1, ...)`` with the final map first, BiRefNet a
  list with the final map last) is read at :attr:`SegmenterConfig.output_index`.
* ``activation="auto"`` applies a sigmoid when the output leaves ``[0, 1]`` (logits) and keeps
  it otherwise (probabilities); ``"sigmoid"`` / ``"none"`` force either.

The alpha is kept soft (a matte); callers threshold it where they need a hard mask. Nothing is
downloaded: the file is found like every other network (:func:`ds4d_pl.weights.resolve`,
registry name ``segmenter``: the path given, else ``$DS4D_WEIGHTS_DIR/segmenter.pt``); a
missing file raises :class:`~ds4d_pl.weights.MissingWeightsError`, an empty, truncated or
non-TorchScript one :class:`~ds4d_pl.weights.BadWeightsError`, each naming the file.

Tests: ``tests/test_segment.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ds4d_pl.weights import MissingWeightsError, load_torchscript, resolve

__all__ = ["Segmenter", "SegmenterConfig", "load_segmenter"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SegmenterConfig:
    """How a TorchScript segmentation model is fed and read (contract in the module docstring).

    Attributes:
        input_size: Square side the image is resized to (1024 for BiRefNet / RMBG-1.4, 320 for
            U²-Net).
        normalize: ``"none"`` (the export takes ``[0, 1]``) or ``"imagenet"``.
        output_index: Which map to read when the model returns a list or tuple.
        activation: ``"auto"``, ``"sigmoid"`` or ``"none"``.
        device: Device to run on (``"auto"``: CUDA when available).
    """

    input_size: int = 1024
    normalize: str = "none"
    output_index: int = 0
    activation: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ValueError(f"SegmenterConfig.input_size must be >= 8, got {self.input_size}")
        if self.normalize not in ("none", "imagenet"):
            raise ValueError(
                f"SegmenterConfig.normalize must be 'none' or 'imagenet', got {self.normalize!r}"
            )
        if self.activation not in ("auto", "sigmoid", "none"):
            raise ValueError(
                "SegmenterConfig.activation must be 'auto', 'sigmoid' or 'none', got "
                f"{self.activation!r}"
            )


class Segmenter:
    """A loaded TorchScript foreground model; call it on ``(H, W, 3)`` images in ``[0, 1]``."""

    def __init__(self, model: torch.jit.ScriptModule, cfg: SegmenterConfig, path: Path) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.path = path
        dev = cfg.device
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if dev == "auto" else dev
        )
        self.model.to(self.device)

    @torch.no_grad()
    def __call__(self, rgb: Tensor) -> Tensor:
        """Foreground alpha of one image.

        Args:
            rgb: ``(H, W, 3)`` (or ``(H, W, 4)``; alpha ignored) float in ``[0, 1]``.

        Returns:
            ``(H, W)`` float32 alpha in ``[0, 1]`` on the CPU.
        """
        h, w = rgb.shape[:2]
        x = rgb[..., :3].permute(2, 0, 1)[None].float().to(self.device)
        s = self.cfg.input_size
        x = F.interpolate(x, (s, s), mode="bilinear", align_corners=False, antialias=True)
        if self.cfg.normalize == "imagenet":
            mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        out = self.model(x)
        if isinstance(out, (list, tuple)):
            try:
                out = out[self.cfg.output_index]
            except IndexError as err:
                raise ValueError(
                    f"{self.path}: the model returned {len(out)} outputs; output_index "
                    f"{self.cfg.output_index} is out of range"
                ) from err
        if not isinstance(out, Tensor):
            raise ValueError(f"{self.path}: the model returned {type(out).__name__}, not a tensor")
        if out.ndim == 2:
            out = out[None, None]
        elif out.ndim == 3:
            out = out[:, None] if out.shape[0] == 1 else out[None]
        if out.ndim != 4 or out.shape[:2] != (1, 1):
            raise ValueError(
                f"{self.path}: expected a (1, 1, h, w) foreground map, got {tuple(out.shape)}"
            )
        out = out.float()
        act = self.cfg.activation
        if act == "sigmoid" or (act == "auto" and (out.min() < 0 or out.max() > 1)):
            out = out.sigmoid()
        out = F.interpolate(out, (h, w), mode="bilinear", align_corners=False)
        return out[0, 0].clamp(0, 1).cpu()


def load_segmenter(path: str | Path | None, cfg: SegmenterConfig | None = None) -> Segmenter:
    """Load a TorchScript foreground model from a local file.

    Args:
        path: The TorchScript file; ``None`` looks for ``$DS4D_WEIGHTS_DIR/segmenter.pt``.
        cfg: How the model is fed and read.

    Raises:
        MissingWeightsError: The file does not exist.
        BadWeightsError: The file is empty, truncated or not a TorchScript archive.
    """
    cfg = SegmenterConfig() if cfg is None else cfg
    try:
        p = resolve("segmenter", path)
    except MissingWeightsError as err:
        where = Path(path) if path is not None else "segmenter.pt"
        raise MissingWeightsError(f"{where}: segmentation model not found.\n{err}") from err
    return Segmenter(load_torchscript(p, "segmentation model"), cfg, p)
