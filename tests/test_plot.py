"""``success.png`` is drawn with Pillow (:mod:`drmime_pl.evaluation.plot`): curves where their values say, and no
plotting library needed."""
import sys

import numpy as np
from PIL import Image

from drmime_pl.evaluation.metrics import PairResult
from drmime_pl.evaluation.plot import Curve, step_plot
from drmime_pl.evaluation.reports import plot_success

RED = (214, 39, 40)


def colours_near(image, xy):
    """The colours of the 3 x 3 pixels around ``xy`` (a line falls on one of them, however it rounds)."""
    x, y = int(round(xy[0])), int(round(xy[1]))
    return {image.getpixel((x + dx, y + dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}


def test_a_step_curve_is_drawn_where_its_values_are():
    # 0.25 up to x = 0.5, then 0.75: steps "post", as matplotlib's step(where="post")
    curve = Curve(np.array([0.0, 0.5, 1.0]), np.array([0.25, 0.75, 0.75]), "", RED, width=1)
    image, axes = step_plot([curve], 1.0, 1.0, "x", "y", "title")
    assert image.size == (704, 484) and image.mode == "RGB"

    def red_at(x, y):
        return RED in colours_near(image, axes.to_pixel(x, y))

    assert red_at(0.2, 0.25) and red_at(0.8, 0.75)
    assert red_at(0.5, 0.5)  # the step up at x = 0.5
    assert not red_at(0.8, 0.25) and not red_at(0.2, 0.75)  # nowhere else
    assert axes.to_pixel(0.0, 0.0) == (axes.box[0], axes.box[3]) and axes.to_pixel(1.0, 1.0) == (axes.box[2],
                                                                                                 axes.box[1])


def test_success_png_needs_no_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # any import of it now fails
    results = [PairResult("a", "lung", rtre_median=0.001), PairResult("b", "lung", rtre_median=0.02),
               PairResult("c", "kidney", status="failed")]
    axes = plot_success(results, "anhir", tmp_path / "success.png")
    with Image.open(tmp_path / "success.png") as image:
        assert image.format == "PNG" and image.size == (704, 484)
        image = image.convert("RGB")

    def black_at(x, y):
        return (0, 0, 0) in colours_near(image, axes.to_pixel(x, y))

    # the curve of all pairs (black): 1 of 3 succeed from 0.001 on, 2 of 3 from 0.02 (the failed pair never)
    assert black_at(0.01, 1 / 3) and black_at(0.03, 2 / 3)
    assert not black_at(0.01, 2 / 3) and not black_at(0.03, 1.0)
