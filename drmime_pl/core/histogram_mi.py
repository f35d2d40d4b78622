"""Mutual information from a joint histogram (Parzen windowing with a linear kernel, as Mattes MI in ITK/elastix).

MINE estimates MI from a few thousand samples per step, which steers the optimisation well but leaves its optimum
noisy by a fraction of a pixel or more. Once the transform is close, a joint histogram over *every* pixel of a
~256 px level is a low-variance MI: the final polish (:func:`drmime_pl.core.quality.refine`) climbs it after the NGF
polish, which finds the edges, so that intensity relations MI sees and edges do not (blurred SPECT or PET, a
near-infrared band against RGB) finish the alignment. It is also the classic baseline beside MINE.

Convention: matrices are ``moving_norm_trans_fixed_norm`` (normalised frames of :mod:`drmime_pl.core.geometry`),
float64 ``N x 3 x 3``.
"""
from __future__ import annotations

import torch

from .ngf import Level, both_ways, gray, overlap_needed


def joint_histogram_mi(fixed: torch.Tensor, moving: torch.Tensor, weights: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """MI (nats) of weighted samples: ``fixed`` ``P`` and ``moving`` ``N x P`` values in [0, 1], ``weights``
    ``N x P``. Each sample is shared between its two nearest bins on each axis (linear Parzen window), so MI is a
    continuous function of the warp. Returns ``N``."""
    return _parzen_mi(*_fixed_bins(fixed, bins), moving, weights, bins)


def _fixed_bins(fixed: torch.Tensor, bins: int):
    """The fixed samples' lower bins (times ``bins``: their row offset in a ``bins x bins`` histogram, ``P`` int64)
    and their shares of the upper bins (``P`` float32)."""
    f = fixed.clamp(0, 1).float() * (bins - 1)
    f0 = f.floor().clamp_(max=bins - 2)
    return f0.int() * bins, f - f0


def _parzen_mi(fixed_offset: torch.Tensor, fixed_share: torch.Tensor, moving: torch.Tensor, weights: torch.Tensor,
               bins: int) -> torch.Tensor:
    """:func:`joint_histogram_mi` from the fixed samples' :func:`_fixed_bins` (``P`` each), ``moving`` and
    ``weights`` ``N x P``: ``N``."""
    n = moving.shape[0]
    m = moving.clamp(0, 1) * (bins - 1)
    m0 = m.floor().clamp_(max=bins - 2)
    moving_share = m.sub_(m0)  # N x P: the share of the upper moving bin
    # Candidate k's bin (i, j) is entry k * bins^2 + i * bins + j of one flat histogram. Each sample adds to the four
    # bins around its lower corner c: c, c + 1, c + bins and c + bins + 1. Each of the four is a bincount at c
    # shifted by its offset (a bin + 1 stays in its row and candidate, as the lower bins are at most bins - 2).
    # The shares are float32 products, and so are the bincounts' sums: MI moves by about 1e-8 against float64 sums,
    # no candidate's rank changed in a probe (24 candidates, 155 x 256 px), nor any of the 202 real benchmark pairs'
    # results. int32 bins and float32 shares make MI 2.3x faster than converting them to int64 and float64 (twelfth
    # round); bincount is 2-3x faster than index_add_. Only the small histograms are normalised in float64.
    corner = m0.int().add_(fixed_offset).add_((torch.arange(n, dtype=torch.int32) * (bins * bins))[:, None])
    corner = corner.reshape(-1)
    high_f = weights.float() * fixed_share
    low_f = weights.float() - high_f
    low_high, high_high = low_f * moving_share, high_f * moving_share
    size = n * bins * bins
    hist = torch.bincount(corner, low_f.sub_(low_high).reshape(-1), size).double()
    for offset, share in ((1, low_high), (bins, high_f.sub_(high_high)), (bins + 1, high_high)):
        hist[offset:] += torch.bincount(corner, share.reshape(-1), size)[:-offset]
    p = hist.view(n, bins, bins)
    p = p / p.sum((1, 2), keepdim=True).clamp_min(1e-12)
    p_fixed, p_moving = p.sum(2, keepdim=True), p.sum(1, keepdim=True)
    ratio = torch.log(p.clamp_min(1e-300)) - torch.log((p_fixed * p_moving).clamp_min(1e-300))
    return (p * ratio).sum((1, 2))


def histogram_mi(level: Level, matrices: torch.Tensor, bins: int = 32, min_overlap: float = 0.5) -> torch.Tensor:
    """MI of the fixed level and the moving level warped by each matrix: ``N`` scores, ``-inf`` where the overlap
    is smaller than :func:`~drmime_pl.core.ngf.overlap_needed`. Intensities are the levels' own [0, 1] range (gray:
    the mean of the compared channels)."""
    warped = level.warped_by(matrices)  # N x 2 x h x w
    n = warped.shape[0]
    mask, fixed_offset, fixed_share = level.derived(("histogram_mi", bins), lambda: _fixed_side(level, bins))
    weights = (warped[:, 1].reshape(n, -1) > 0.5).float().mul_(mask)
    mi = _parzen_mi(fixed_offset, fixed_share, warped[:, 0].reshape(n, -1), weights, bins)
    enough = weights.sum(1) >= overlap_needed(level, matrices, min_overlap)
    return torch.where(enough, mi, torch.full_like(mi, float("-inf")))


def _fixed_side(level: Level, bins: int):
    """The flat fixed mask and :func:`_fixed_bins` of the fixed level, its gray values scaled to [0, 1] inside the
    mask: what every :func:`histogram_mi` of the level shares."""
    mask = level.mask.float().reshape(-1)
    fixed = gray(level.fixed).float().reshape(-1)
    inside = fixed[mask > 0] if bool((mask > 0).any()) else fixed
    fixed = (fixed - inside.min()) / (inside.max() - inside.min()).clamp_min(1e-8)
    return (mask, *_fixed_bins(fixed, bins))


def symmetric_histogram_mi(level: Level, matrices: torch.Tensor) -> torch.Tensor:
    """The mean of :func:`histogram_mi` both ways (fixed vs warped moving, moving vs fixed warped by the inverse),
    so that neither image's zoom is favoured (:func:`~drmime_pl.core.ngf.both_ways`). ``N``."""
    return both_ways(histogram_mi, level, matrices)
