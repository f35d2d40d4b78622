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
    f0, m0 = f.floor().clamp(max=bins - 2), m.floor().clamp(max=bins - 2)
    fa, ma = (f - f0).double()[None], (m - m0).double()  # 1 x P, N x P
    # Candidate k's bin (i, j) is entry k * bins^2 + i * bins + j of one flat histogram; each sample adds to the four
    # bins (i or i+1, j or j+1) around it. int32 indices and four index_add_ calls: building int64 index tensors
    # cost more than the additions.
    corner = ((torch.arange(n, dtype=torch.int32) * (bins * bins))[:, None] + (f0.int() * bins)[None]
              + m0.int()).reshape(-1)
    w = weights.double()
    low_f, high_f = w * (1 - fa), w * fa
    hist = torch.zeros(n * bins * bins, dtype=torch.float64)
    hist.index_add_(0, corner, (low_f * (1 - ma)).reshape(-1))
    hist.index_add_(0, corner + 1, (low_f * ma).reshape(-1))
    hist.index_add_(0, corner + bins, (high_f * (1 - ma)).reshape(-1))
    hist.index_add_(0, corner + (bins + 1), (high_f * ma).reshape(-1))
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
