"""The judge level's resolution matching (drmime_pl/core/sharpness.py): the blur it measures and what it changes."""
from __future__ import annotations

import math

import torch

from drmime_pl.core.ngf import Level
from drmime_pl.core.pyramid import gaussian_blur
from drmime_pl.core.sharpness import MAX_BLUR, WIDTH_RATIO, edge_width, match_sharpness

SIZE = 128
MASK = torch.ones(SIZE, SIZE, dtype=torch.bool)


def _checkerboard(square: int = 16) -> torch.Tensor:
    """``1 x SIZE x SIZE`` squares of 0 and 1: sharp steps, one pixel wide."""
    i = torch.arange(SIZE) // square
    return ((i[:, None] + i[None, :]) % 2).float()[None]


def _level(fixed: torch.Tensor, moving: torch.Tensor) -> Level:
    return Level(fixed, MASK, moving, None, (SIZE, SIZE), (SIZE, SIZE), SIZE / 2)


def test_the_edge_width_of_a_blurred_step_is_sqrt_2pi_sigma():
    assert abs(edge_width(_checkerboard(), MASK) - 1.0) < 0.05
    for sigma in (2.0, 4.0):
        width = edge_width(gaussian_blur(_checkerboard(), sigma), MASK)
        assert abs(width - math.sqrt(2 * math.pi) * sigma) < 0.15 * width, (sigma, width)


def test_the_sharper_image_is_blurred_to_the_others_edge_width_and_the_other_kept():
    sharp = _checkerboard()
    blurred = gaussian_blur(sharp, 2.0)  # edges ~5 px wide against 1: beyond WIDTH_RATIO, within MAX_BLUR
    for fixed, moving, changed, kept in ((sharp, blurred, "fixed", "moving"), (blurred, sharp, "moving", "fixed")):
        level = _level(fixed, 1.0 - moving)  # another modality: inverted contrast
        out = match_sharpness(level)
        assert getattr(out, kept) is getattr(level, kept)
        target = edge_width(blurred, MASK)
        assert abs(edge_width(getattr(out, changed), MASK) - target) < 0.15 * target
        assert out.mask is level.mask and out.fixed_hw == level.fixed_hw and out.scale == level.scale


def test_images_of_similar_resolution_are_left_alone():
    sharp = _checkerboard()
    for other in (1.0 - sharp, gaussian_blur(sharp, 1.0)):  # the same edges; edges ~2.5 px wide
        assert edge_width(other, MASK) < WIDTH_RATIO * edge_width(sharp, MASK)
        level = _level(sharp, other)
        assert match_sharpness(level) is level


def test_the_blur_stops_at_max_blur():
    sharp = _checkerboard()
    level = _level(sharp, gaussian_blur(sharp, 2 * MAX_BLUR))
    out = match_sharpness(level)
    capped = edge_width(gaussian_blur(sharp, MAX_BLUR), MASK)
    assert abs(edge_width(out.fixed, MASK) - capped) < 0.1 * capped
