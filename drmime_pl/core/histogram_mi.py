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

from .ngf import Level, gray, overlap_needed


def joint_histogram_mi(fixed: torch.Tensor, moving: torch.Tensor, weights: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """MI (nats) of weighted samples: ``fixed`` ``P`` and ``moving`` ``N x P`` values in [0, 1], ``weights``
    ``N x P``. Each sample is shared between its two nearest bins on each axis (linear Parzen window), so MI is a
    continuous function of the warp. Returns ``N``."""
    n = moving.shape[0]
    f = fixed.clamp(0, 1).float() * (bins - 1)
    m = moving.clamp(0, 1).float() * (bins - 1)
    f0, m0 = f.floor().clamp_(max=bins - 2), m.floor().clamp_(max=bins - 2)
    fa, ma = (f - f0)[None], m - m0  # 1 x P, N x P: the shares of the upper bins
    # Candidate k's bin (i, j) is entry k * bins^2 + i * bins + j of one flat histogram; each sample adds to the four
    # bins (i or i+1, j or j+1) around it. The shares are float32 products (their sum per bin is exact to ~1e-7
    # relative); the histogram adds them in float64 with bincount, which is 2-3x faster than index_add_.
    corner = ((torch.arange(n) * (bins * bins))[:, None] + (f0.long() * bins)[None] + m0.long()).reshape(-1)
    high_f = weights.float() * fa
    low_f = weights.float() - high_f
    low_high, high_high = low_f * ma, high_f * ma
    size = n * bins * bins
    hist = (torch.bincount(corner, (low_f - low_high).reshape(-1).double(), size)
            + torch.bincount(corner + 1, low_high.reshape(-1).double(), size)
            + torch.bincount(corner + bins, (high_f - high_high).reshape(-1).double(), size)
            + torch.bincount(corner + (bins + 1), high_high.reshape(-1).double(), size))
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
    mask = level.mask.float().reshape(-1)
    weights = mask[None] * (warped[:, 1].reshape(n, -1) > 0.5).float()
    fixed = gray(level.fixed).float().reshape(-1)
    inside = fixed[mask > 0] if bool((mask > 0).any()) else fixed
    fixed = (fixed - inside.min()) / (inside.max() - inside.min()).clamp_min(1e-8)
    mi = joint_histogram_mi(fixed, warped[:, 0].reshape(n, -1), weights, bins)
    enough = weights.sum(1) >= overlap_needed(level, matrices, min_overlap)
    return torch.where(enough, mi, torch.full_like(mi, float("-inf")))


def symmetric_histogram_mi(level: Level, matrices: torch.Tensor) -> torch.Tensor:
    """The mean of :func:`histogram_mi` both ways (fixed vs warped moving, moving vs fixed warped by the inverse),
    so that neither image's zoom is favoured. ``N``."""
    return 0.5 * (histogram_mi(level, matrices) + histogram_mi(level.swapped(), torch.linalg.inv(matrices.double())))
