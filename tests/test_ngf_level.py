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
    # affine matrices only: the division by the bottom row is skipped
    assert (level.warped_by(matrices[:2]) - reference[:2]).abs().max() < 1e-3


def _features_by_definition(gray_image: torch.Tensor, valid: torch.Tensor, eps_rel: float = 0.2) -> torch.Tensor:
    """(nx^2, sqrt(2) nx ny, ny^2) with n = g / sqrt(|g|^2 + eps^2), central differences, written plainly: zero
    on the image border and next to an invalid pixel; eps = eps_rel times the mean |g| where the features count."""
    h, w = gray_image.shape
    g = gray_image.double()
    gx, gy = torch.zeros_like(g), torch.zeros_like(g)
    gx[:, 1:-1] = (g[:, 2:] - g[:, :-2]) / 2
    gy[1:-1, :] = (g[2:, :] - g[:-2, :]) / 2
    ok = torch.zeros(h, w, dtype=torch.bool)
    for y in range(1, h - 1):
        for x in range(1, w - 1):
            ok[y, x] = bool((valid[y - 1:y + 2, x - 1:x + 2][[0, 1, 1, 1, 2], [1, 0, 1, 2, 1]] >= 0.999).all())
    magnitude = (gx ** 2 + gy ** 2).sqrt()
    eps = eps_rel * magnitude[ok].mean()
    nx, ny = gx / (magnitude ** 2 + eps ** 2).sqrt() * ok, gy / (magnitude ** 2 + eps ** 2).sqrt() * ok
    return torch.stack([nx * nx, 2 ** 0.5 * nx * ny, ny * ny])


def test_gradient_features_are_normalised_gradients_by_their_definition():
    g = torch.Generator().manual_seed(3)
    image = torch.rand(2, 24, 31, generator=g)
    valid = torch.ones(2, 24, 31)
    valid[1, 5:9, 10:20] = 0  # a hole: no feature at it or next to it
    fast = gradient_features(image, valid)
    assert fast.shape == (2, 3, 24, 31)
    for k in range(2):
        assert torch.allclose(fast[k].double(), _features_by_definition(image[k], valid[k]), atol=1e-6)
    assert fast[1, :, 4:10, 10:20].abs().max() == 0 and fast[1, :, 5:9, 9:21].abs().max() == 0


def test_cached_features_and_swapped_level_are_what_they_would_be():
    level = _level()
    for centred in (False, True):
        direct = gradient_features(gray(level.fixed), level.mask.float(), centred=centred) * level.mask.float()
        assert torch.equal(level.fixed_features(centred), direct)
    swapped = level.swapped()
    assert swapped is level.swapped()  # made once
    assert torch.equal(swapped.fixed, level.moving) and torch.equal(swapped.moving, level.fixed)
    assert torch.equal(swapped.mask, level.valid > 0.5)


def test_an_exact_level_keeps_the_image_frame():
    """``Level.from_pyramids(exact=True)`` resamples a pyramid level to the requested long side; its pixels must
    still sit where the frames say: a ramp of the full image's x (and y) coordinate reads, at each level pixel, the
    full-resolution coordinate that ``fixed_norm_trans_pix`` gives that pixel."""
    import torch.nn.functional as F

    from drmime_pl.core.geometry import frame_matrix

    full_hw, scale = (200, 320), 160.0
    ys, xs = torch.meshgrid(torch.arange(full_hw[0], dtype=torch.float32),
                            torch.arange(full_hw[1], dtype=torch.float32), indexing="ij")
    ramp = torch.stack([xs, ys])  # 2 x H x W: each pixel's own full-resolution (x, y)
    pyramid = [ramp] + [F.interpolate(ramp[None], size=(full_hw[0] >> k, full_hw[1] >> k), mode="bilinear",
                                      align_corners=False, antialias=True)[0] for k in (1, 2, 3)]
    masks = [torch.ones(p.shape[-2:], dtype=torch.bool) for p in pyramid]
    level = Level.from_pyramids(pyramid, masks, pyramid, None, full_hw, full_hw, scale, 128, exact=True)
    h, w = level.fixed.shape[-2:]
    assert (h, w) == (80, 128)  # from the 160 px level, not the 80 px one below it
    full_pix_trans_level_pix = frame_matrix(full_hw, "norm", "pix", scale) @ level.fixed_norm_trans_pix()
    ly, lx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    expected_x = full_pix_trans_level_pix[0, 0] * lx + full_pix_trans_level_pix[0, 2]
    expected_y = full_pix_trans_level_pix[1, 1] * ly + full_pix_trans_level_pix[1, 2]
    # Area averaging over whole source pixels places each level pixel within half a source pixel (1 full-resolution
    # pixel here) of where it should be, and on average where it should be; a frame off by a level pixel is not.
    error_x = level.fixed[0].double() - expected_x
    error_y = level.fixed[1].double() - expected_y
    assert error_x.abs().max() <= 1.0 and error_y.abs().max() <= 1.0
    assert abs(float(error_x.mean())) < 0.05 and abs(float(error_y.mean())) < 0.05
    # without exact, the pyramid's own 80 px level
    assert max(Level.from_pyramids(pyramid, masks, pyramid, None, full_hw, full_hw, scale, 128).fixed.shape) == 80
