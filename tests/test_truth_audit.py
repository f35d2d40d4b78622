"""The benchmark's ground-truth check (:mod:`drmime_pl.evaluation.truth_audit`): a true alignment of two differently
rendered images stands out from misaligned copies, a ground truth that misses a rotation does not."""
import math

import numpy as np
import torch

from drmime_pl.core.geometry import normalised_matrix_from_pixel, warp_image
from drmime_pl.core.ngf import Level
from drmime_pl.evaluation.truth_audit import STANDS_OUT, landmark_affine, truth_support

from .conftest import nonmonotonic, textured_image


def _rotation_about_centre(size: int, degrees: float) -> torch.Tensor:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    centre = (size - 1) / 2.0
    to_centre = torch.tensor([[1.0, 0.0, -centre], [0.0, 1.0, -centre], [0.0, 0.0, 1.0]], dtype=torch.float64)
    rotate = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.linalg.inv(to_centre) @ rotate @ to_centre


def test_landmark_affine_recovers_the_affine_that_maps_the_points():
    rng = np.random.default_rng(0)
    fixed = rng.uniform(0, 300, (12, 2))
    truth = np.array([[0.9, -0.2, 12.0], [0.25, 1.1, -7.0], [0.0, 0.0, 1.0]])
    moving = fixed @ truth[:2, :2].T + truth[:2, 2]
    assert np.allclose(landmark_affine(fixed, moving), truth, atol=1e-9)


def test_the_true_alignment_stands_out_and_a_truth_missing_a_rotation_does_not():
    size = 128
    fixed = textured_image(size, seed=5)
    moving_pix_trans_fixed_pix = _rotation_about_centre(size, 20.0)
    # The moving image is another rendering (a non-monotonic intensity map) of the fixed one, rotated by 20 degrees.
    moving = nonmonotonic(warp_image(fixed, torch.linalg.inv(moving_pix_trans_fixed_pix), (size, size)))
    hw = (size, size)
    level = Level(fixed, torch.ones(hw, dtype=torch.bool), moving, None, hw, hw, size / 2.0)

    def normalised(pixel_matrix):
        return normalised_matrix_from_pixel(pixel_matrix, hw, hw, level.scale)

    right = normalised(moving_pix_trans_fixed_pix)
    wrong = normalised(_rotation_about_centre(size, -25.0))  # a ground truth off by 45 degrees
    (right_ngf, right_mi), (wrong_ngf, wrong_mi) = truth_support(level, torch.stack([right, wrong]))
    assert right_ngf > 2 * STANDS_OUT and right_mi > 2 * STANDS_OUT
    assert wrong_ngf < STANDS_OUT and wrong_mi < STANDS_OUT
