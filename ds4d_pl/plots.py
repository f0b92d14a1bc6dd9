"""Figures drawn with PIL and numpy (matplotlib is not a runtime dependency): a perceptual colour
map, a labelled image grid with a colour bar, and a line plot.

Every function returns ``uint8`` ``(H, W, 3)`` arrays, the form image loggers (W&B,
TensorBoard) and PNG writers take without rescaling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Anchor colours of an "inferno"-like map (black → purple → red → orange → pale yellow): dark for
# low values, bright for high, readable in grey and by colour-blind readers.
_ANCHORS = np.array(
    [
        [0, 0, 4],
        [40, 11, 84],
        [101, 21, 110],
        [159, 42, 99],
        [212, 72, 66],
        [245, 125, 21],
        [250, 193, 39],
        [252, 255, 164],
    ],
    dtype=np.float64,
)
_WHITE = (255, 255, 255)
_INK = (20, 20, 20)
_GRID = (210, 210, 210)


def colormap(values: np.ndarray) -> np.ndarray:
    """``values`` in ``[0, 1]`` (any shape) → ``uint8`` RGB of shape ``values.shape + (3,)``."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    pos = v * (len(_ANCHORS) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _ANCHORS[lo] * (1.0 - frac) + _ANCHORS[lo + 1] * frac
    return rgb.round().astype(np.uint8)


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float ``[0, 1]`` or ``uint8`` images → ``uint8`` (a float image cast directly would be
    all 0 and 1: black)."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return (
        (np.clip(np.nan_to_num(image.astype(np.float64)), 0.0, 1.0) * 255.0)
        .round()
        .astype(np.uint8)
    )


def colour_bar(height: int, vmin: float, vmax: float, label: str) -> np.ndarray:
    """A vertical colour bar with its end values and a label, ``height`` pixels tall."""
    font = _font(11)
    bar_w, pad = 14, 6
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    ticks = [f"{vmax:.3g}", f"{(vmin + vmax) / 2:.3g}", f"{vmin:.3g}"]
    text_w = max(_text_size(probe, t, font)[0] for t in ticks)
    label_w, label_h = _text_size(probe, label, font)
    width = pad + bar_w + pad + text_w + pad + label_h + pad
    canvas = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    top, bottom = pad, height - pad
    ramp = colormap(np.linspace(1.0, 0.0, max(bottom - top, 2)))[:, None, :]
    canvas.paste(Image.fromarray(np.repeat(ramp, bar_w, axis=1)), (pad, top))
    draw.rectangle([pad, top, pad + bar_w - 1, bottom - 1], outline=_INK)
    for frac, tick in zip((0.0, 0.5, 1.0), ticks, strict=True):
        y = int(top + frac * (bottom - top - 1))
        draw.line([pad + bar_w, y, pad + bar_w + 3, y], fill=_INK)
        th = _text_size(draw, tick, font)[1]
        ty = min(max(y - th // 2, 0), height - th - 1)
        draw.text((pad + bar_w + 5, ty), tick, fill=_INK, font=font)
    rotated = Image.new("RGB", (label_w + 2, label_h + 4), _WHITE)
    ImageDraw.Draw(rotated).text((1, 0), label, fill=_INK, font=font)
    rotated = rotated.rotate(90, expand=True)
    x = width - pad - rotated.width
    canvas.paste(rotated, (x, max((height - rotated.height) // 2, 0)))
    return np.asarray(canvas)


def labelled_grid(
    tiles: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    bar: np.ndarray | None = None,
) -> np.ndarray:
    """Tiles ``(R, C, h, w, 3)`` (``uint8``) in a grid with row and column labels, a title and
    an optional colour bar on the right."""
    rows, cols, h, w, _ = tiles.shape
    font, title_font = _font(11), _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 8 + max(_text_size(probe, s, font)[0] for s in row_labels)
    top = 8 + _text_size(probe, title, title_font)[1] + 6 + _text_size(probe, "Ag", font)[1] + 4
    gap = 2
    grid_w, grid_h = cols * (w + gap) - gap, rows * (h + gap) - gap
    bar_w = 0 if bar is None else bar.shape[1] + 6
    width = max(left + grid_w + bar_w + 6, 8 + _text_size(probe, title, title_font)[0] + 8)
    canvas = Image.new("RGB", (width, top + grid_h + 8), _WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((8, 6), title, fill=_INK, font=title_font)
    for c, text in enumerate(col_labels):
        tw, th = _text_size(draw, text, font)
        x = left + c * (w + gap) + (w - tw) // 2
        draw.text((x, top - th - 4), text, fill=_INK, font=font)
    for r, text in enumerate(row_labels):
        tw, th = _text_size(draw, text, font)
        y = top + r * (h + gap) + (h - th) // 2
        draw.text((left - tw - 4, y), text, fill=_INK, font=font)
        for c in range(cols):
            canvas.paste(Image.fromarray(tiles[r, c]), (left + c * (w + gap), top + r * (h + gap)))
    if bar is not None:
        bar_img = Image.fromarray(bar[: min(bar.shape[0], grid_h)])
        canvas.paste(bar_img, (left + grid_w + 6, top))
    return np.asarray(canvas)


def line_plot(
    xs: Sequence[float],
    ys: Sequence[float],
    title: str,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (640, 360),
    log_y: bool = True,
    markers: Sequence[tuple[float, str]] = (),
) -> np.ndarray:
    """A line plot of ``ys`` against ``xs`` with axes, ticks and labels; vertical ``markers``
    (``(x, text)``) name events such as the start of the fine stage. Non-finite and (with
    ``log_y``) non-positive values are left out."""
    width, height = size
    font = _font(11)
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
    x, y = x[keep], y[keep]
    canvas = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 6), title, fill=_INK, font=_font(13))
    left, right, top, bottom = 64, width - 16, 30, height - 40
    draw.rectangle([left, top, right, bottom], outline=_INK)
    tw, _ = _text_size(draw, x_label, font)
    draw.text(((left + right - tw) // 2, height - 18), x_label, fill=_INK, font=font)
    label = Image.new("RGB", (_text_size(draw, y_label, font)[0] + 2, 16), _WHITE)
    ImageDraw.Draw(label).text((1, 0), y_label, fill=_INK, font=font)
    label = label.rotate(90, expand=True)
    canvas.paste(label, (2, (top + bottom - label.height) // 2))
    if len(x) == 0:
        draw.text((left + 10, (top + bottom) // 2), "no finite values", fill=_INK, font=font)
        return np.asarray(canvas)
    ty = np.log10(y) if log_y else y
    x0, x1 = float(x.min()), float(x.max())
    y0, y1 = float(ty.min()), float(ty.max())
    x1 = x1 if x1 > x0 else x0 + 1.0
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def px(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * (right - left)

    def py(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * (bottom - top)

    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        yy = py(v)
        draw.line([left, yy, right, yy], fill=_GRID)
        text = f"{10**v:.3g}" if log_y else f"{v:.3g}"
        tw, th = _text_size(draw, text, font)
        draw.text((left - tw - 4, yy - th // 2), text, fill=_INK, font=font)
    for k in range(5):
        v = x0 + (x1 - x0) * k / 4
        xx = px(v)
        draw.line([xx, bottom, xx, bottom + 3], fill=_INK)
        text = f"{v:.0f}" if abs(x1 - x0) >= 10 else f"{v:.3g}"
        tw, _ = _text_size(draw, text, font)
        draw.text((xx - tw / 2, bottom + 5), text, fill=_INK, font=font)
    for at, text in markers:
        if x0 <= at <= x1:
            xx = px(at)
            draw.line([xx, top, xx, bottom], fill=(90, 140, 220))
            draw.text((xx + 3, top + 3), text, fill=(40, 80, 170), font=font)
    # At most one point per pixel column, so a 20k-step curve stays a line, not a smear.
    stride = max(1, math.ceil(len(x) / max(right - left, 1)))
    points = [(px(a), py(b)) for a, b in zip(x[::stride], ty[::stride], strict=True)]
    if len(points) == 1:
        (cx, cy) = points[0]
        draw.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=_INK)
    else:
        draw.line(points, fill=(200, 60, 40), width=2)
    return np.asarray(canvas)
