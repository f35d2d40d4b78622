"""Initialisation: moments of the foreground masks and the global search (drmime_pl/search.py)."""
import math

import torch

from drmime_pl.config import load_config
from drmime_pl.core.geometry import pixel_matrix_from_normalised, generator_basis, matrix_from_coefficients, transform_points
from drmime_pl.core.init import moments_init
from drmime_pl.training.prepare import prepare_pair

from .conftest import textured_image


def disc_image(hw, centre_xy, radius):
    img = torch.ones(3, *hw)  # white glass
    yy, xx = torch.meshgrid(torch.arange(hw[0]).float(), torch.arange(hw[1]).float(), indexing="ij")
    inside = (xx - centre_xy[0]) ** 2 + (yy - centre_xy[1]) ** 2 < radius**2
    img[:, inside] = 0.3 + 0.2 * torch.rand(int(inside.sum()))
    return img


def test_moments_init_maps_centroid_and_scale():
    fixed = disc_image((200, 300), (100.0, 80.0), 50)
    moving = disc_image((240, 260), (170.0, 150.0), 25)  # half the radius: scale 0.5
    cfg = load_config(None, ["data.mask_margin=0"])
    pair = prepare_pair(fixed, moving, cfg.data, init="moments", model="similarity")
    h = matrix_from_coefficients(pair.init.double(), generator_basis("similarity").double())
    pix = pixel_matrix_from_normalised(h, pair.fixed_hw, pair.moving_hw, pair.scale)
    centre = transform_points(pix, torch.tensor([[100.0, 80.0]], dtype=torch.float64))[0]
    assert (centre - torch.tensor([170.0, 150.0], dtype=torch.float64)).norm() < 3.0
    assert abs(float(pix[0, 0]) - 0.5) < 0.05


def test_moments_init_is_identity_without_background():
    cfg = load_config(None, [])
    pair = prepare_pair(textured_image(128), textured_image(128, seed=1), cfg.data, init="moments", model="affine")
    assert torch.equal(pair.init, torch.zeros(6))


def test_search_init_finds_a_rotation_that_moments_miss():
    # A textured square rotated by 30 degrees inside a white frame: moments see the same centroid and area, so only
    # the NMI search can find the rotation.
    from drmime_pl.core.geometry import warp_image

    tex = textured_image(96, seed=2)
    fixed = torch.ones(1, 192, 192)
    fixed[:, 48:144, 48:144] = tex
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    centre = 95.5
    rot = torch.tensor([[c, -s, centre - c * centre + s * centre], [s, c, centre - s * centre - c * centre], [0, 0, 1]],
                       dtype=torch.float64)
    moving = 1.0 - warp_image(1.0 - fixed, torch.linalg.inv(rot), (192, 192))  # moving(rot p) = fixed(p)
    cfg = load_config(None, ["data.mask_margin=0"])
    for init, expect_rotation in (("moments", False), ("search", True)):
        pair = prepare_pair(fixed, moving, cfg.data, init=init, model="rigid")
        angle = math.degrees(float(pair.init[2]))
        assert (abs(angle - 30) < 1) == expect_rotation, (init, angle)


def test_translation_model_gets_no_scale():
    fixed = torch.zeros(10, 10, dtype=torch.bool)
    fixed[2:6, 2:6] = True
    moving = torch.zeros(10, 10, dtype=torch.bool)
    moving[4:6, 4:6] = True
    v = moments_init(fixed, moving, (10, 10), (10, 10), 5.0, "translation")
    assert v.shape == (2,)
