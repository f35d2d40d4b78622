"""Step curves drawn with Pillow: the success-rate plot of an evaluation (``success.png``).

Pillow, not matplotlib: drmime_pl needs no plotting library, and Lightning's torchmetrics imports matplotlib's pyplot
whenever it is installed, which added about 0.5 s to the start of every run (fourteenth round,
``benchmarks/RESULTS.md``).

Convention: a curve is ``(x, y)``, the values ``y[i]`` from ``x[i]`` up to ``x[i + 1]`` (matplotlib's
``step(where="post")``); data coordinates map to pixels by :meth:`Axes.to_pixel` (y up, the origin at the lower left
corner of the axes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Curve colours in order (matplotlib's default cycle), for the curves not drawn in a colour of their own.
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
GRID = (222, 222, 222)
INK = (0, 0, 0)


@dataclass
class Curve:
    """One step curve (the module's convention): its legend ``label`` (empty: none), RGB ``colour`` and line
    ``width`` in pixels."""

    x: np.ndarray  # N thresholds, increasing
    y: np.ndarray  # N values
    label: str
    colour: Tuple[int, int, int]
    width: int = 1


@dataclass
class Axes:
    """Where the data rectangle ``[0, x_max] x [0, y_max]`` lies in the image: its pixel box ``(left, top, right,
    bottom)``."""

    box: Tuple[int, int, int, int]
    x_max: float
    y_max: float

    def to_pixel(self, x: float, y: float) -> Tuple[float, float]:
        left, top, right, bottom = self.box
        return left + (right - left) * x / self.x_max, bottom - (bottom - top) * y / self.y_max


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> Tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _put(draw: ImageDraw.ImageDraw, xy, text: str, font, align: str) -> None:
    """``text`` with its top centre (``"top"``), right middle (``"right"``) or left middle (``"left"``) at ``xy``
    (by hand: bitmap fonts take no ``anchor``)."""
    w, h = _text_size(draw, text, font)
    x, y = xy
    x, y = {"top": (x - w / 2, y), "right": (x - w, y - h / 2), "left": (x, y - h / 2)}[align]
    draw.text((x, y), text, fill=INK, font=font)


def _tick_labels(values: Sequence[float]):
    """The values with as many decimals as the finest of them needs (0, 0.2, ..., 1 -> 0.0, 0.2, ..., 1.0)."""
    decimals = max(len(f"{float(v):g}".partition(".")[2]) for v in values)
    return [f"{float(v):.{decimals}f}" for v in values]


def step_plot(curves: Sequence[Curve], x_max: float, y_max: float, x_label: str, y_label: str, title: str,
              size: Tuple[int, int] = (704, 484), ticks: int = 5,
              y_ticks: Optional[Sequence[float]] = None) -> Tuple[Image.Image, Axes]:
    """Draw ``curves`` as steps over ``[0, x_max] x [0, y_max]`` with a grid, ``ticks`` + 1 labelled ticks on the x
    axis (and on the y axis unless ``y_ticks`` are given), the axis labels, a title and a legend in the lower right
    corner: ``(RGB image of size (width, height), Axes)``."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font, title_font = _font(12), _font(14)
    axes = Axes((72, 34, width - 18, height - 52), float(x_max), float(y_max))
    left, top, right, bottom = axes.box

    x_ticks = [x_max * i / ticks for i in range(ticks + 1)]
    y_ticks = [y_max * i / ticks for i in range(ticks + 1)] if y_ticks is None else list(y_ticks)
    for x_value, text in zip(x_ticks, _tick_labels(x_ticks)):
        px, _ = axes.to_pixel(x_value, 0.0)
        draw.line([(px, top), (px, bottom)], fill=GRID)
        _put(draw, (px, bottom + 6), text, font, "top")
    for y_value, text in zip(y_ticks, _tick_labels(y_ticks)):
        _, py = axes.to_pixel(0.0, y_value)
        draw.line([(left, py), (right, py)], fill=GRID)
        _put(draw, (left - 6, py), text, font, "right")
    draw.rectangle(axes.box, outline=INK)

    for curve in curves:
        points = []
        for k, (x, y) in enumerate(zip(curve.x, curve.y)):
            if not np.isfinite(y):
                continue
            x_next = curve.x[k + 1] if k + 1 < len(curve.x) else x
            points += [axes.to_pixel(float(x), float(y)), axes.to_pixel(float(x_next), float(y))]
        if len(points) >= 2:
            draw.line(points, fill=curve.colour, width=curve.width)

    _put(draw, ((left + right) / 2, 10), title, title_font, "top")
    _put(draw, ((left + right) / 2, height - 24), x_label, font, "top")
    label_w, label_h = _text_size(draw, y_label, font)
    rotated = Image.new("RGB", (label_w + 4, label_h + 6), "white")
    ImageDraw.Draw(rotated).text((2, 0), y_label, fill=INK, font=font)
    rotated = rotated.rotate(90, expand=True)
    image.paste(rotated, (8, int((top + bottom - rotated.height) / 2)))

    labelled = [c for c in curves if c.label]
    if labelled:
        line_h = max(_text_size(draw, c.label, font)[1] for c in labelled) + 6
        box_w = max(_text_size(draw, c.label, font)[0] for c in labelled) + 44
        x0, y1 = right - box_w - 8, bottom - 8
        y0 = y1 - line_h * len(labelled) - 6
        draw.rectangle((x0, y0, right - 8, y1), fill="white", outline=GRID)
        for i, c in enumerate(labelled):
            y = y0 + 6 + line_h * i + line_h / 2
            draw.line([(x0 + 6, y), (x0 + 30, y)], fill=c.colour, width=max(2, c.width))
            _put(draw, (x0 + 36, y), c.label, font, "left")
    return image, axes
