"""End-to-end recovery of known transforms, in and across modalities, and on a real landmark pair."""
import math

import numpy as np
import pytest
import torch

import drmime_pl
from drmime_pl.core.geometry import (
    generator_basis,
    matrix_from_coefficients,
    mean_corner_error,
    pair_scale,
    pixel_matrix_from_normalised,
    warp_image,
)
from drmime_pl.evaluation.datasets import pair_up
from drmime_pl.evaluation.metrics import tre
from drmime_pl.io.landmarks import read_landmarks_csv
from drmime_pl.core.pyramid import gaussian_pyramid

from .conftest import FAST, nonmonotonic, rat_kidney_paths, textured_image

SIZE = 192
AFFINE = torch.tensor([[1.04, 0.06, 5.0], [-0.05, 0.97, -4.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
HOMOGRAPHY = torch.tensor([[1.02, 0.05, 4.0], [-0.04, 0.99, 3.0], [2.5e-4, -2.0e-4, 1.0]], dtype=torch.float64)


def synthetic_pair(true_matrix, remap=None, seed=0):
    """moving = texture; fixed(p) = moving(true p), so ``true_matrix`` maps fixed px -> moving px."""
    moving = textured_image(SIZE, seed)
    fixed = warp_image(moving, true_matrix, (SIZE, SIZE))
    if remap is not None:
        fixed = remap(fixed)
    return fixed, moving


@pytest.mark.parametrize("transform,true_matrix", [("affine", AFFINE), ("perspective", HOMOGRAPHY)])
@pytest.mark.parametrize("remap", [None, nonmonotonic], ids=["same", "nonmonotonic"])
def test_register_recovers_known_transform(transform, true_matrix, remap):
    fixed, moving = synthetic_pair(true_matrix, remap)
    reg = drmime_pl.register(fixed, moving, transform=transform, overrides=FAST)
    error = mean_corner_error(reg.matrix, true_matrix, (SIZE, SIZE))
    assert error < 1.0, f"mean corner error {error:.2f} px"
    # identity would be far off: the test is not passing by doing nothing
    assert mean_corner_error(np.eye(3), true_matrix, (SIZE, SIZE)) > 5.0


def mse_register(fixed, moving, steps=300, levels=4):
    """Baseline: the same matrix-exponential affine model and pyramid, optimised for mean squared error."""
    basis = generator_basis("affine").float()
    v = torch.zeros(6, requires_grad=True)
    opt = torch.optim.Adam([v], lr=3e-3)
    scale = pair_scale(fixed.shape[-2:])
    pyr_f, pyr_m = gaussian_pyramid(fixed, levels), gaussian_pyramid(moving, levels)
    for _ in range(steps):
        loss = 0.0
        for f, m in zip(pyr_f, pyr_m):
            h = matrix_from_coefficients(v, basis)
            # normalised -> pixel matrix at this level's size keeps the normalised frame shared by all levels
            level_scale = scale * f.shape[-1] / fixed.shape[-1]
            pix = pixel_matrix_from_normalised(h, f.shape[-2:], m.shape[-2:], level_scale).float()
            loss = loss + ((warp_image(m, pix, f.shape[-2:]) - f) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return pixel_matrix_from_normalised(matrix_from_coefficients(v.detach().double(), basis.double()),
                                        fixed.shape[-2:], moving.shape[-2:], scale)


def test_mse_succeeds_in_one_modality_and_fails_across_a_nonmonotonic_remap():
    fixed, moving = synthetic_pair(AFFINE)
    assert mean_corner_error(mse_register(fixed, moving), AFFINE, (SIZE, SIZE)) < 1.0
    fixed, moving = synthetic_pair(AFFINE, nonmonotonic)
    mse_error = mean_corner_error(mse_register(fixed, moving), AFFINE, (SIZE, SIZE))
    assert mse_error > 3.0, f"MSE unexpectedly recovered the remapped pair ({mse_error:.2f} px)"
    # ... where MI succeeds on the very same pair (test_register_recovers_known_transform[nonmonotonic-affine]).


def test_rat_kidney_landmarks_median_rtre():
    fixed, moving, fixed_csv, moving_csv = rat_kidney_paths()
    reg = drmime_pl.register(fixed, moving, transform="affine")
    fixed_points, moving_points = pair_up(read_landmarks_csv(fixed_csv), read_landmarks_csv(moving_csv))
    errors = tre(reg.matrix, fixed_points, moving_points)
    rtre = float(np.median(errors) / math.hypot(*reg.fixed_shape))
    identity_rtre = float(np.median(tre(np.eye(3), fixed_points, moving_points)) / math.hypot(*reg.fixed_shape))
    assert rtre < 0.005, f"median rTRE {rtre:.4f}"
    assert identity_rtre > 0.015  # the pair really needs registering
