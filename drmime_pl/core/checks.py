"""Sanity checks on a transform: is it still a registration, or has it degenerated?"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .geometry import image_corners

#: A transform that shrinks or grows the fixed image's area by more than this factor is considered degenerate.
MAX_AREA_CHANGE = 50.0
#: Fewer than this fraction of the fixed image's points landing inside the moving image: "warped out of view".
MIN_OVERLAP = 0.05


def _quad_area(points: torch.Tensor) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(torch.abs((x * torch.roll(y, -1) - torch.roll(x, -1) * y).sum()))


def degeneracy(moving_pix_trans_fixed_pix: torch.Tensor, fixed_hw: Sequence[int], moving_hw: Sequence[int]) -> Optional[str]:
    """Why a ``moving_pix_trans_fixed_pix`` matrix is not a usable registration, or None when it is.

    Checks: finite entries; the fixed image does not cross the homography's line at infinity (all homogeneous
    coordinates of a point grid keep one sign); its area changes by less than ``MAX_AREA_CHANGE`` times; at least
    ``MIN_OVERLAP`` of a grid of fixed points lands inside the moving image.
    """
    m = torch.as_tensor(moving_pix_trans_fixed_pix, dtype=torch.float64)
    if not torch.isfinite(m).all():
        return "the matrix has NaN or infinite entries"
    h, w = int(fixed_hw[0]), int(fixed_hw[1])
    ys, xs = torch.meshgrid(torch.linspace(0, h - 1, 24, dtype=torch.float64),
                            torch.linspace(0, w - 1, 24, dtype=torch.float64), indexing="ij")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(xs.numel(), dtype=torch.float64)], -1)  # N x 3
    mapped = grid @ m.t()
    wcoord = mapped[:, 2]
    if not (bool((wcoord > 1e-9).all()) or bool((wcoord < -1e-9).all())):
        return "the perspective folds the fixed image through infinity (near-singular homography)"
    points = mapped[:, :2] / wcoord.unsqueeze(1)
    corners = image_corners(fixed_hw)
    mapped_corners = torch.cat([corners, torch.ones(4, 1, dtype=torch.float64)], 1) @ m.t()
    mapped_corners = mapped_corners[:, :2] / mapped_corners[:, 2:3]
    ratio = _quad_area(mapped_corners) / max(_quad_area(corners), 1e-12)
    if not (1.0 / MAX_AREA_CHANGE < ratio < MAX_AREA_CHANGE):
        return f"the transform changes the image's area {ratio:.3g} times (near-singular matrix)"
    hm, wm = int(moving_hw[0]), int(moving_hw[1])
    inside = (points[:, 0] >= -0.5) & (points[:, 0] <= wm - 0.5) & (points[:, 1] >= -0.5) & (points[:, 1] <= hm - 0.5)
    overlap = float(inside.double().mean())
    if overlap < MIN_OVERLAP:
        return f"the fixed image is warped out of view (only {overlap:.0%} of it lands inside the moving image)"
    return None
