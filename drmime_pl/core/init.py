"""The moments initial transform: match the foregrounds' centroids and areas (see also :mod:`drmime_pl.core.search`)."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .geometry import TRANSFORM_DOFS, frame_matrix


def mask_moments(mask: torch.Tensor, hw_full: Sequence[int], scale: float):
    """Centroid (normalised frame of the full-size image) and area (full-size pixels) of an ``h x w`` bool mask."""
    h, w = mask.shape
    ys, xs = torch.nonzero(mask, as_tuple=True)
    full_h, full_w = int(hw_full[0]), int(hw_full[1])
    # mask pixel -> the full-size image's normalised frame, through the grid frame (the mask is resized edge to edge)
    norm_trans_mask_pix = frame_matrix(hw_full, "grid", "norm", scale) @ frame_matrix((h, w), "pix", "grid")
    centroid_mask_pix = torch.tensor([xs.double().mean(), ys.double().mean(), 1.0], dtype=torch.float64)
    centroid = (norm_trans_mask_pix @ centroid_mask_pix)[:2]
    area = xs.numel() * (full_h / h) * (full_w / w)
    return centroid, area


def moments_init(fixed_mask, moving_mask, fixed_hw, moving_hw, scale: float, model: str) -> torch.Tensor:
    """Shared coefficients that map the fixed foreground's centroid onto the moving one's and, for models with a
    scale (similarity and up), match the foreground areas: ``p_m = a (p_f - c_f) + c_m``.

    Returns:
        ``K`` float32 coefficients for :class:`~drmime_pl.core.transforms.MatrixExpTransform`.
    """
    k = TRANSFORM_DOFS[model]
    coefficients = torch.zeros(k, dtype=torch.float64)
    c_f, area_f = mask_moments(fixed_mask, fixed_hw, scale)
    c_m, area_m = mask_moments(moving_mask, moving_hw, scale)
    log_a = 0.5 * math.log(area_m / area_f) if (k >= 4 and area_f > 0 and area_m > 0) else 0.0
    a = math.exp(log_a)
    shift = c_m - a * c_f
    # expm([[l, 0, b], [0, l, b'], [0, 0, 0]]) has translation b (e^l - 1) / l: invert that factor.
    factor = 1.0 if abs(log_a) < 1e-9 else log_a / (a - 1.0)
    coefficients[0:2] = shift * factor
    if k >= 4:
        coefficients[3] = log_a
    return coefficients.float()
