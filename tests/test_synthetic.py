"""Synthetic pairs: the ground truth is consistent with the images, magnitudes and modalities are as documented."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from drmime_pl.core.geometry import frame_matrix, sample_at_grid
from drmime_pl.core.channels import luminance
from drmime_pl.evaluation.metrics import tre, tre_summary
from drmime_pl.core.pyramid import gaussian_blur, min_max_normalise
from drmime_pl.evaluation.synthetic import MAGNITUDES, MODALITIES, decompose, make_pair, nonmonotonic_curve


def smooth_rgb(h: int = 120, w: int = 160, seed: int = 0) -> torch.Tensor:
    """``3 x h x w`` smooth random colour image on a white border (like tissue on glass)."""
    g = torch.Generator().manual_seed(seed)
    img = min_max_normalise(gaussian_blur(torch.rand(3, h, w, generator=g), 6.0))
    img[:, :3, :] = 1.0
    img[:, -3:, :] = 1.0
    img[:, :, :3] = 1.0
    img[:, :, -3:] = 1.0
    return img


def sample_pixels(image: torch.Tensor, points: np.ndarray) -> torch.Tensor:
    """Bilinear samples of ``image`` at pixel points (x, y). ``N x C``."""
    grid = torch.from_numpy(np.c_[points, np.ones(len(points))]) @ frame_matrix(image.shape[-2:], "pix", "grid").T
    return sample_at_grid(image.double(), grid[:, :2])


@pytest.fixture(scope="module")
def image():
    return smooth_rgb()


@pytest.mark.parametrize("magnitude", list(MAGNITUDES))
def test_true_matrix_maps_grid_onto_same_intensities(image, magnitude):
    pair = make_pair(image, seed=3, magnitude=magnitude, modality="same", noise=0.0)
    assert pair.fixed.shape == pair.moving.shape
    assert pair.fixed_points.shape == (25, 2)
    assert np.allclose(tre(pair.matrix, pair.fixed_points, pair.moving_points), 0.0, atol=1e-9)
    assert pair.rtre(pair.matrix) < 1e-12
    # moving(T p) == fixed(p) on the grid, and on a dense set of interior points
    f = sample_pixels(pair.fixed, pair.fixed_points)
    m = sample_pixels(pair.moving, pair.moving_points)
    assert (f - m).abs().max() < 0.02
    h, w = pair.fixed_hw
    ys, xs = np.mgrid[10 : h - 10 : 7, 10 : w - 10 : 7]
    pts = np.c_[xs.ravel(), ys.ravel()].astype(np.float64)
    moved = np.c_[pts, np.ones(len(pts))] @ pair.matrix.T
    moved = moved[:, :2] / moved[:, 2:]
    keep = (moved[:, 0] > 1) & (moved[:, 0] < w - 2) & (moved[:, 1] > 1) & (moved[:, 1] < h - 2)
    assert keep.mean() > 0.5
    diff = (sample_pixels(pair.fixed, pts[keep]) - sample_pixels(pair.moving, moved[keep])).abs()
    assert float(diff.mean()) < 0.01 and float(diff.max()) < 0.05
    # a wrong matrix (identity) does not match
    assert pair.rtre(np.eye(3)) > 0.003


@pytest.mark.parametrize("magnitude", list(MAGNITUDES))
def test_magnitudes_within_documented_bounds(image, magnitude):
    mag = MAGNITUDES[magnitude]
    for seed in range(8):
        pair = make_pair(image, seed=seed, magnitude=magnitude, modality="same", noise=0.0)
        p, d = pair.params, decompose(pair.matrix, pair.fixed_hw)
        # the matrix is what the parameters say
        assert d["rotation_deg"] == pytest.approx(p["rotation_deg"], abs=1e-6)
        assert d["scale"] == pytest.approx(p["scale"] * 1.0, rel=1e-6)  # stretch has determinant 1
        assert d["shift_x"] == pytest.approx(p["shift_x"], abs=1e-9)
        assert d["shift_y"] == pytest.approx(p["shift_y"], abs=1e-9)
        assert d["perspective"] == pytest.approx(math.hypot(*p["perspective"]), abs=1e-9)
        # "about": between half and all of the nominal value
        assert 0.5 * mag.rotation_deg - 1e-9 <= abs(d["rotation_deg"]) <= mag.rotation_deg + 1e-9
        log_s = abs(math.log(d["scale"])) / math.log1p(mag.scale)
        assert 0.5 - 1e-9 <= log_s <= 1 + 1e-9
        assert abs(d["shift_x"]) <= mag.shift + 1e-9 and abs(d["shift_y"]) <= mag.shift + 1e-9
        assert math.hypot(d["shift_x"], d["shift_y"]) >= 0.5 * mag.shift * 0.75 - 1e-9  # W/H differ: 120/160
        assert d["perspective"] <= mag.perspective + 1e-9
        if mag.perspective > 0:
            assert d["perspective"] >= 0.5 * mag.perspective - 1e-9
        # every grid point lands inside the moving image
        h, w = pair.fixed_hw
        assert (pair.moving_points >= 0).all() and (pair.moving_points[:, 0] <= w - 1).all()
        assert (pair.moving_points[:, 1] <= h - 1).all()


def test_magnitudes_are_ordered(image):
    disp = {}
    for magnitude in MAGNITUDES:
        errors = [tre_summary(make_pair(image, seed=s, magnitude=magnitude, noise=0.0).tre(np.eye(3)),
                              (120, 160))["tre_median"] for s in range(6)]
        disp[magnitude] = float(np.median(errors))
    assert disp["small"] < disp["medium"] < disp["large"]


def test_modalities_change_intensities_as_documented(image):
    base = make_pair(image, seed=5, magnitude="medium", modality="same", noise=0.0)
    inv = make_pair(image, seed=5, magnitude="medium", modality="inverted", noise=0.0)
    non = make_pair(image, seed=5, magnitude="medium", modality="nonmonotonic", noise=0.0)
    ch = make_pair(image, seed=5, magnitude="medium", modality="channels", noise=0.0)
    for other in (inv, non, ch):  # same geometry for every modality of a seed
        np.testing.assert_array_equal(other.matrix, base.matrix)
        torch.testing.assert_close(other.fixed, base.fixed)
    torch.testing.assert_close(inv.moving, 1.0 - base.moving, atol=1e-6, rtol=0)
    assert non.moving.shape[0] == 1
    torch.testing.assert_close(non.moving, nonmonotonic_curve(luminance(base.moving)), atol=1e-5, rtol=0)
    # the remap is not monotonic: it rises, falls and rises again
    curve = nonmonotonic_curve(torch.linspace(0, 1, 101))
    steps = torch.sign(curve[1:] - curve[:-1])
    assert int((steps[1:] != steps[:-1]).sum()) == 2
    perm, gammas = ch.params["permutation"], ch.params["gammas"]
    assert sorted(perm) == [0, 1, 2] and all(p != c for c, p in enumerate(perm))
    assert all(1.5 - 1e-9 <= max(g, 1 / g) <= 2.5 + 1e-9 for g in gammas)
    expected = torch.stack([base.moving[p] ** g for p, g in zip(perm, gammas)])
    torch.testing.assert_close(ch.moving, expected.float(), atol=1e-5, rtol=0)


def test_noise_and_determinism(image):
    a = make_pair(image, seed=11, magnitude="large", modality="channels")
    b = make_pair(image, seed=11, magnitude="large", modality="channels")
    c = make_pair(image, seed=12, magnitude="large", modality="channels")
    torch.testing.assert_close(a.moving, b.moving, atol=0, rtol=0)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.params == b.params
    assert not np.allclose(a.matrix, c.matrix)
    clean = make_pair(image, seed=11, magnitude="large", modality="channels", noise=0.0)
    residual = (a.moving - clean.moving)[:, 10:-10, 10:-10]
    assert 0.01 < float(residual.std()) < 0.03  # noise = 0.02, a little lost to clamping


def test_padding_gray_input_and_errors():
    gray = smooth_rgb()[:1]
    pair = make_pair(gray, seed=0, magnitude="small", modality="channels", pad=0.25, noise=0.0, max_side=80)
    assert pair.fixed.shape == (1, 60 + 2 * 15, 80 + 2 * 20)
    assert pair.moving.shape[0] == 3
    # the padding has the background colour (white border of the test image)
    assert float(pair.fixed[:, :5, :].min()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="magnitude"):
        make_pair(gray, seed=0, magnitude="huge")
    with pytest.raises(ValueError, match="modality"):
        make_pair(gray, seed=0, modality="xray")
    assert set(MODALITIES) == {"same", "inverted", "nonmonotonic", "channels"}
