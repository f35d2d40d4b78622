"""Issue 8: wide capture range (global search), no harm to aligned pairs, and a verdict that flags failures.

Pairs are built from a synthetic texture; the moving image is the fixed one rotated and scaled about its centre on
a larger black canvas (as rotated remote-sensing images are delivered), with a non-monotonic intensity remap, so
that only MI-like measures can align them.
"""
import math

import pytest
import torch

import drmime_pl
from drmime_pl.core.geometry import generator_basis, matrix_from_coefficients, mean_corner_error, warp_image
from drmime_pl.core.search import Candidate

from .conftest import FAST, SAMPLES, nonmonotonic, textured_image


def similarity_about_centres(angle_deg, scale, fixed_hw, moving_hw):
    """``moving_pix_trans_fixed_pix``: rotate by ``angle_deg`` and scale by ``scale`` about the fixed image's centre,
    which lands on the moving image's centre."""
    c, s = math.cos(math.radians(angle_deg)) * scale, math.sin(math.radians(angle_deg)) * scale
    cf = ((fixed_hw[1] - 1) / 2.0, (fixed_hw[0] - 1) / 2.0)
    cm = ((moving_hw[1] - 1) / 2.0, (moving_hw[0] - 1) / 2.0)
    return torch.tensor([[c, -s, cm[0] - c * cf[0] + s * cf[1]], [s, c, cm[1] - s * cf[0] - c * cf[1]], [0, 0, 1]],
                        dtype=torch.float64)


def make_pair(angle_deg, scale, size=160, canvas=200, seed=3):
    fixed = textured_image(size, seed=seed)
    truth = similarity_about_centres(angle_deg, scale, (size, size), (canvas, canvas))
    # moving(truth p) = remap(fixed(p)); zero (black) outside the content
    moving = warp_image(nonmonotonic(fixed).clamp(0.02, 1), torch.linalg.inv(truth), (canvas, canvas))
    return fixed, moving, truth


@pytest.mark.parametrize("angle_deg, scale", [(90.0, 1.0), (180.0, 1.0), (0.0, 0.6)])
def test_large_rotation_and_scale_are_recovered(angle_deg, scale):
    fixed, moving, truth = make_pair(angle_deg, scale)
    reg = drmime_pl.register(fixed, moving, overrides=FAST)
    error = mean_corner_error(reg.matrix, truth, reg.fixed_shape)
    assert error < 1.0, (angle_deg, scale, error, reg.quality)
    assert not reg.quality["suspect"], reg.quality
    assert "second_opinion" not in reg.quality  # a result that stands out is not registered again


def test_aligned_multimodal_pair_stays_aligned():
    fixed = textured_image(160, seed=4)
    moving = nonmonotonic(fixed)
    reg = drmime_pl.register(fixed, moving, overrides=FAST)
    error = mean_corner_error(reg.matrix, torch.eye(3, dtype=torch.float64), reg.fixed_shape)
    assert error < 0.5, (error, reg.quality)


def test_unrelated_images_are_flagged():
    # Two shipped photographs of different tissue: whatever transform is found, its edges do not stand out.
    # (Two random blob textures are not used: a polished transform of such smooth fields stands out from its
    # shifted copies although nothing matches; see drmime_pl/quality.py.)
    reg = drmime_pl.register(str(SAMPLES / "birl" / "images" / "artificial_reference.jpg"),
                             str(SAMPLES / "birl" / "rat-kidney_" / "scale-5pc" / "Rat-Kidney_HE.jpg"),
                             overrides=FAST + ["model.second_opinion=false",  # the opinions: test_second_opinion.py
                                               "model.rigid_opinion=false"])
    assert reg.quality["suspect"] is True, reg.quality
    assert reg.quality["reason"]


@pytest.mark.parametrize("angle", [0.0, 1.0, math.pi, -math.pi / 2, 3.0])
def test_candidate_coefficients_reproduce_its_matrix(angle):
    # Closed-form coefficients, exact even at 180 degrees where a principal matrix logarithm is ambiguous.
    cand = Candidate(angle, 0.7, torch.tensor([0.2, -0.1], dtype=torch.float64))
    for model in ("similarity", "affine", "perspective"):
        v = cand.coefficients(model).double()
        h = matrix_from_coefficients(v, generator_basis(model).double())
        assert torch.allclose(h, cand.matrix, atol=1e-5), (model, h, cand.matrix)
