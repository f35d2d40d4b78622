"""Histogram (Parzen) mutual information: the low-variance MI of the final polish."""
import math

import torch

from drmime_pl.core.histogram_mi import histogram_mi, joint_histogram_mi, symmetric_histogram_mi
from drmime_pl.core.ngf import Level
from drmime_pl.core.quality import refine

from .conftest import nonmonotonic, textured_image


def test_mi_of_identical_independent_and_remapped_samples():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20000, generator=g)
    noise = torch.rand(1, 20000, generator=g)
    ones = torch.ones(1, 20000)
    same = float(joint_histogram_mi(x, x[None], ones, bins=16)[0])
    independent = float(joint_histogram_mi(x, noise, ones, bins=16)[0])
    remapped = float(joint_histogram_mi(x, 1 - x[None], ones, bins=16)[0])
    # Uniform values in 16 linear Parzen bins: MI of a variable with itself is log(16) less what the kernel's
    # blur takes (two neighbouring bins share each sample: about 0.7 of it remains); of independent samples, ~0.
    assert 0.6 * math.log(16) < same <= math.log(16)
    assert abs(independent) < 0.02
    assert abs(remapped - same) < 1e-6  # MI is blind to an intensity inversion


def test_joint_histogram_mi_matches_a_plain_parzen_histogram():
    g = torch.Generator().manual_seed(1)
    bins = 8
    fixed = torch.rand(500, generator=g)
    moving = torch.stack([(fixed + 0.1 * torch.rand(500, generator=g)).clamp(0, 1), torch.rand(500, generator=g)])
    weights = (torch.rand(2, 500, generator=g) > 0.2).float()
    for k in range(2):
        hist = torch.zeros(bins, bins, dtype=torch.float64)
        for f, m, w in zip(fixed.tolist(), moving[k].tolist(), weights[k].tolist()):
            i, j = min(int(f * (bins - 1)), bins - 2), min(int(m * (bins - 1)), bins - 2)
            a, b = f * (bins - 1) - i, m * (bins - 1) - j  # shares of the upper bins (linear Parzen window)
            hist[i, j] += w * (1 - a) * (1 - b)
            hist[i, j + 1] += w * (1 - a) * b
            hist[i + 1, j] += w * a * (1 - b)
            hist[i + 1, j + 1] += w * a * b
        p = hist / hist.sum()
        outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
        expected = float((p[p > 0] * (p[p > 0] / outer[p > 0]).log()).sum())
        assert abs(float(joint_histogram_mi(fixed, moving, weights, bins)[k]) - expected) < 1e-6


def _level(fixed: torch.Tensor, moving: torch.Tensor) -> Level:
    hw = tuple(fixed.shape[-2:])
    return Level(fixed, torch.ones(hw, dtype=torch.bool), moving, None, hw, hw, max(hw) / 2.0)


def _shift(dx_px: float, level: Level) -> torch.Tensor:
    """``moving_norm_trans_fixed_norm`` of a shift by ``dx_px`` level pixels along x."""
    m = torch.eye(3, dtype=torch.float64)
    m[0, 2] = dx_px / level.scale
    return m


def test_histogram_mi_peaks_at_the_true_shift_of_a_remapped_image():
    image = textured_image(96, seed=4)
    level = _level(image, image)
    shifted = level.warped_by(_shift(2.0, level)[None])[0, :1]  # the image moved by 2 px
    level = _level(nonmonotonic(shifted), image)  # a non-monotonic remap: MSE could not align these
    shifts = torch.arange(-4.0, 8.5, 0.5)
    scores = histogram_mi(level, torch.stack([_shift(float(s), level) for s in shifts]))
    assert float(shifts[int(scores.argmax())]) == 2.0
    both = symmetric_histogram_mi(level, torch.stack([_shift(float(s), level) for s in shifts]))
    assert float(shifts[int(both.argmax())]) == 2.0


def test_refine_on_histogram_mi_recovers_a_subpixel_shift():
    image = textured_image(96, seed=5)
    level = _level(image, image)
    true = _shift(1.3, level)
    level = _level(nonmonotonic(level.warped_by(true[None])[0, :1]), image)
    got = refine(level, torch.eye(3, dtype=torch.float64), "translation", score=symmetric_histogram_mi)
    assert abs(float((got[0, 2] - true[0, 2]) * level.scale)) < 0.15  # level pixels


def test_refine_with_growing_steps_travels_farther_in_the_same_iterations():
    # A start 14 level pixels off: one-pixel steps that never grow cover at most 10 px in 10 iterations; steps that
    # double after each kept move (up to 4 px) get there, and still end within a fraction of a pixel.
    image = textured_image(96, seed=6)
    level = _level(image, image)
    true = _shift(14.0, level)
    level = _level(nonmonotonic(level.warped_by(true[None])[0, :1]), image)
    start = torch.eye(3, dtype=torch.float64)

    def error(grow: float) -> float:  # level pixels along x
        got = refine(level, start, "translation", iterations=10, score=symmetric_histogram_mi, grow=grow)
        return abs(float((got[0, 2] - true[0, 2]) * level.scale))

    assert error(1.0) > 3.0
    assert error(2.0) < 0.3
