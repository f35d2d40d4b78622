"""The scoring level of :mod:`drmime_pl.core.ngf`: its fast warp agrees with warping the fixed level's points one by
one, and what it caches is what it would compute."""
import torch

from drmime_pl.core.ngf import Level, gradient_features, gray


def _level() -> Level:
    g = torch.Generator().manual_seed(0)
    # a fixed level and a moving level of other sizes and aspect ratios, with a partly invalid moving image
    valid = torch.ones(90, 150)
    valid[:, :20] = 0
    return Level(torch.rand(3, 100, 128, generator=g), torch.rand(100, 128, generator=g) > 0.3,
                 torch.rand(3, 90, 150, generator=g), valid, (400, 512), (360, 600), 240.0)


def _matrices() -> torch.Tensor:
    m = torch.eye(3, dtype=torch.float64).repeat(3, 1, 1)
    m[1, :2, :2] = torch.tensor([[0.9, -0.3], [0.25, 1.1]], dtype=torch.float64)
    m[1, :2, 2] = torch.tensor([0.1, -0.05], dtype=torch.float64)
    m[2, 2, :2] = torch.tensor([0.08, -0.05], dtype=torch.float64)  # a perspective part
    return m


def test_warped_by_matches_warping_the_mapped_fixed_points():
    level, matrices = _level(), _matrices()
    # every fixed level pixel (x, y, 1), taken to the fixed normalised frame and mapped one by one
    h, w = level.fixed.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # h x w x 3
    mapped = torch.einsum("nij,jk,hwk->nhwi", matrices, level.fixed_norm_trans_pix(), pixels)
    reference = level.warp_moving(mapped[..., :2] / mapped[..., 2:3])
    fast = level.warped_by(matrices)
    assert fast.shape == (3, 2, h, w)
    # float32 sampling coordinates: agreement to well under a hundredth of a grey level
    assert (fast - reference).abs().max() < 1e-3


def test_cached_features_and_swapped_level_are_what_they_would_be():
    level = _level()
    for centred in (False, True):
        direct = gradient_features(gray(level.fixed), level.mask.float(), centred=centred) * level.mask.float()
        assert torch.equal(level.fixed_features(centred), direct)
    swapped = level.swapped()
    assert swapped is level.swapped()  # made once
    assert torch.equal(swapped.fixed, level.moving) and torch.equal(swapped.moving, level.fixed)
    assert torch.equal(swapped.mask, level.valid > 0.5)
