"""Initial transforms, so that large shifts and scale changes start inside MI's capture range."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .geometry import TRANSFORM_DOFS, norm_trans_pix


def mask_moments(mask: torch.Tensor, hw_full: Sequence[int], scale: float):
    """Centroid (normalised frame of the full-size image) and area (full-size pixels) of an ``h x w`` bool mask."""
    h, w = mask.shape
    ys, xs = torch.nonzero(mask, as_tuple=True)
    full_h, full_w = int(hw_full[0]), int(hw_full[1])
    # mask pixel centre -> full-resolution pixel (edge-to-edge resize)
    x_pix = (xs.double() + 0.5) * full_w / w - 0.5
    y_pix = (ys.double() + 0.5) * full_h / h - 0.5
    centroid_pix = torch.tensor([x_pix.mean(), y_pix.mean(), 1.0], dtype=torch.float64)
    centroid = (norm_trans_pix(hw_full, scale) @ centroid_pix)[:2]
    area = xs.numel() * (full_h / h) * (full_w / w)
    return centroid, area


def moments_init(fixed_mask, moving_mask, fixed_hw, moving_hw, scale: float, model: str) -> torch.Tensor:
    """Shared coefficients that map the fixed foreground's centroid onto the moving one's and, for models with a
    scale (similarity and up), match the foreground areas: ``p_m = a (p_f - c_f) + c_m``.

    Returns:
        ``K`` float32 coefficients for :class:`~drmime_pl.transforms.MatrixExpTransform`.
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


def normalised_mutual_information(a: torch.Tensor, b: torch.Tensor, bins: int = 32) -> float:
    """NMI ``(H(A) + H(B)) / H(A, B)`` of two 1-D samples in [0, 1]: 1 for independent, 2 for identical."""
    ia = (a.clamp(0, 1) * (bins - 1)).round().long()
    ib = (b.clamp(0, 1) * (bins - 1)).round().long()
    joint = torch.bincount(ia * bins + ib, minlength=bins * bins).double()
    joint = joint / joint.sum()
    pa, pb = joint.view(bins, bins).sum(1), joint.view(bins, bins).sum(0)
    entropy = lambda p: float(-(p[p > 0] * p[p > 0].log()).sum())  # noqa: E731
    h_joint = entropy(joint)
    return (entropy(pa) + entropy(pb)) / h_joint if h_joint > 0 else 1.0


def search_init(candidates, fixed_level: torch.Tensor, fixed_mask: torch.Tensor, moving_level: torch.Tensor,
                moving_weight, fixed_hw, moving_hw, scale: float, min_overlap: float = 0.3):
    """Pick the candidate normalised matrix (fixed -> moving) with the highest NMI on a coarse pyramid level.

    Histogram NMI is cheap and needs no training, and, unlike the foreground moments alone, it looks at the image
    content: a wrong moments estimate (an intensity remap that hides part of the object) loses to identity or to a
    rotated candidate. Candidates that put less than ``min_overlap`` of the fixed foreground on valid moving
    pixels are skipped.

    Args:
        candidates: list of ``3 x 3`` float64 normalised matrices.
        fixed_level, moving_level: ``C x h x w`` pyramid levels (compared channels).
        fixed_mask: ``h x w`` bool; moving_weight: ``h' x w'`` in [0, 1] or None.

    Returns:
        (index of the best candidate, list of scores).
    """
    from .geometry import grid_trans_norm, warp_grid

    fixed_gray = fixed_level.mean(0)[fixed_mask]
    moving_stack = moving_level.mean(0, keepdim=True)
    weight = torch.ones_like(moving_stack) if moving_weight is None else moving_weight[None].to(moving_stack)
    moving_stack = torch.cat([moving_stack, weight])
    to_fixed_norm = torch.linalg.inv(grid_trans_norm(fixed_hw, scale))
    to_moving_grid = grid_trans_norm(moving_hw, scale)
    scores = []
    for h in candidates:
        warped = warp_grid(moving_stack, to_moving_grid @ h @ to_fixed_norm, fixed_level.shape[-2:])
        valid = warped[1][fixed_mask] > 0.5
        if float(valid.float().mean()) < min_overlap:
            scores.append(float("-inf"))
            continue
        scores.append(normalised_mutual_information(fixed_gray[valid], warped[0][fixed_mask][valid]))
    return int(torch.tensor(scores).argmax()), scores


def candidate_matrices(moments_coefficients: torch.Tensor, fixed_centroid: torch.Tensor, model: str,
                       angles_deg=(-30.0, -15.0, 15.0, 30.0)):
    """Starting points for :func:`search_init`, normalised ``3 x 3`` float64 matrices: the moments estimate first
    (index 1 after identity), then identity, the moments' shift alone (no scale), and, for models with rotation,
    each of those three rotated by ``angles_deg`` about the fixed foreground's centroid."""
    from .geometry import generator_basis, matrix_from_coefficients

    basis = generator_basis(model).double()
    moments = matrix_from_coefficients(moments_coefficients.double(), basis)
    shift_only = torch.eye(3, dtype=torch.float64)
    shift_only[:2, 2] = moments[:2, :2] @ fixed_centroid.double() + moments[:2, 2] - fixed_centroid.double()
    bases = [torch.eye(3, dtype=torch.float64), moments, shift_only]
    out = list(bases)
    if TRANSFORM_DOFS[model] >= 3:
        cx, cy = float(fixed_centroid[0]), float(fixed_centroid[1])
        for angle in angles_deg:
            c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            rot = torch.tensor([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0, 0, 1]],
                               dtype=torch.float64)
            out += [base @ rot for base in bases]
    return out
