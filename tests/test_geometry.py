"""Generator bases, coordinate frames and warping."""
import math

import numpy as np
import pytest
import torch

from drmime_pl.core.geometry import (
    TRANSFORM_DOFS,
    coefficients_from_matrix,
    generator_basis,
    frame_matrix,
    matrix_from_coefficients,
    normalised_matrix_from_pixel,
    pixel_matrix_from_normalised,
    transform_points,
    warp_image,
)


def test_basis_sizes_and_nesting():
    for model, k in TRANSFORM_DOFS.items():
        basis = generator_basis(model)
        assert basis.shape == (k, 3, 3)
        assert torch.equal(basis, generator_basis("perspective")[:k])  # nested: coefficients keep their meaning
    with pytest.raises(ValueError, match="unknown transform model"):
        generator_basis("elastic")


def test_zero_coefficients_are_identity():
    for model, k in TRANSFORM_DOFS.items():
        m = matrix_from_coefficients(torch.zeros(k, dtype=torch.float64), generator_basis(model))
        assert torch.allclose(m, torch.eye(3, dtype=torch.float64))


def test_pure_translation():
    m = matrix_from_coefficients(torch.tensor([0.3, -0.2], dtype=torch.float64), generator_basis("translation"))
    expected = torch.tensor([[1, 0, 0.3], [0, 1, -0.2], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(m, expected, atol=1e-12)


def test_rotation_by_known_angle():
    theta = math.radians(30)
    m = matrix_from_coefficients(torch.tensor([0.0, 0.0, theta], dtype=torch.float64), generator_basis("rigid"))
    c, s = math.cos(theta), math.sin(theta)
    expected = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(m, expected, atol=1e-12)
    # x towards y: the point (1, 0) goes to (cos, sin)
    p = transform_points(m, torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(p, torch.tensor([[c, s]], dtype=torch.float64))


def test_isotropic_scale_and_known_perspective():
    m = matrix_from_coefficients(torch.tensor([0, 0, 0, math.log(2.0)], dtype=torch.float64), generator_basis("similarity"))
    assert torch.allclose(m, torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64)), atol=1e-12)
    # E(2,0) is nilpotent: expm(a E20) = I + a E20, a known homography
    v = torch.zeros(8, dtype=torch.float64)
    v[6] = 0.25
    m = matrix_from_coefficients(v, generator_basis("perspective"))
    expected = torch.eye(3, dtype=torch.float64)
    expected[2, 0] = 0.25
    assert torch.allclose(m, expected, atol=1e-12)
    p = transform_points(m, torch.tensor([[2.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(p, torch.tensor([[2.0 / 1.5, 1.0 / 1.5]], dtype=torch.float64))


def test_known_homography_round_trip():
    # A homography from four point correspondences (solved independently with numpy), recovered by the basis.
    src = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    dst = np.array([[-0.9, -1.1], [1.15, -0.95], [1.0, 1.05], [-1.05, 0.9]], dtype=np.float64)
    rows = []
    for (x, y), (u, v) in zip(src, dst):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    h = np.linalg.svd(np.array(rows))[2][-1].reshape(3, 3)
    h /= h[2, 2]
    basis = generator_basis("perspective").double()
    v = coefficients_from_matrix(torch.tensor(h), basis)
    m = matrix_from_coefficients(v, basis)
    mapped = transform_points(m, torch.tensor(src)).numpy()
    assert np.allclose(mapped, dst, atol=1e-9)


def test_coefficients_round_trip_every_model():
    g = torch.Generator().manual_seed(0)
    for model, k in TRANSFORM_DOFS.items():
        basis = generator_basis(model).double()
        v = (torch.rand(k, generator=g, dtype=torch.float64) - 0.5) * 0.4
        back = coefficients_from_matrix(matrix_from_coefficients(v, basis), basis)
        assert torch.allclose(back, v, atol=1e-9), model


def test_matrix_exponential_gradcheck():
    basis = generator_basis("perspective").double()
    v = (torch.rand(8, dtype=torch.float64) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: matrix_from_coefficients(c, basis), (v,))


@pytest.mark.parametrize("fixed_hw,moving_hw", [((60, 80), (60, 80)), ((60, 80), (90, 45)), ((101, 33), (20, 250))])
def test_normalised_pixel_round_trip(fixed_hw, moving_hw):
    scale = max(fixed_hw) / 2
    g = torch.Generator().manual_seed(1)
    h_norm = matrix_from_coefficients((torch.rand(8, generator=g, dtype=torch.float64) - 0.5) * 0.3,
                                      generator_basis("perspective").double())
    pix = pixel_matrix_from_normalised(h_norm, fixed_hw, moving_hw, scale)
    back = normalised_matrix_from_pixel(pix, fixed_hw, moving_hw, scale)
    assert torch.allclose(back / back[2, 2], h_norm / h_norm[2, 2], atol=1e-10)


def test_identity_maps_centre_to_centre_for_different_sizes():
    # v = 0 aligns the image centres at equal pixel size: the convention that makes moments init and rigid exact.
    fixed_hw, moving_hw = (60, 80), (100, 40)
    pix = pixel_matrix_from_normalised(torch.eye(3, dtype=torch.float64), fixed_hw, moving_hw, 40.0)
    centre = transform_points(pix, torch.tensor([[39.5, 29.5]], dtype=torch.float64))
    assert torch.allclose(centre, torch.tensor([[19.5, 49.5]], dtype=torch.float64))
    assert torch.allclose(pix[:2, :2], torch.eye(2, dtype=torch.float64))  # same pixel size: no scaling


def test_grid_frame_matches_grid_sample_convention():
    hw = (4, 6)
    # pixel (0, 0) centre is at grid (-1 + 1/W, -1 + 1/H) with align_corners=False
    grid_trans_pix = frame_matrix(hw, "pix", "grid")
    p = transform_points(grid_trans_pix, torch.tensor([[0.0, 0.0], [5.0, 3.0]], dtype=torch.float64))
    assert torch.allclose(p, torch.tensor([[-1 + 1 / 6, -1 + 1 / 4], [1 - 1 / 6, 1 - 1 / 4]], dtype=torch.float64))
    # normalised -> grid: one unit is `scale` pixels
    g = frame_matrix(hw, "norm", "grid", scale=3.0)
    assert torch.allclose(g.diagonal(), torch.tensor([1.0, 1.5, 1.0], dtype=torch.float64))


def test_warp_integer_translation_matches_numpy_shift():
    img = torch.rand(2, 30, 40, dtype=torch.float64)
    m = torch.tensor([[1, 0, 3], [0, 1, -2], [0, 0, 1]], dtype=torch.float64)  # fixed (x, y) -> moving (x+3, y-2)
    out = warp_image(img, m, (30, 40))
    expected = np.zeros((2, 30, 40))
    expected[:, 2:, :37] = img.numpy()[:, :28, 3:]  # out[y, x] = img[y - 2, x + 3]
    assert np.allclose(out.numpy(), expected, atol=1e-9)


def test_warp_rotation_matches_numpy_rot90_and_output_size():
    img = torch.rand(1, 16, 16, dtype=torch.float64)
    # numpy: rot90(a)[y, x] = a[x, 15 - y], i.e. moving pixel (x', y') = (15 - y, x) for fixed pixel (x, y)
    m = torch.tensor([[0, -1, 15], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    out = warp_image(img, m, (16, 16))
    assert np.allclose(out[0].numpy(), np.rot90(img[0].numpy()), atol=1e-9)
    assert warp_image(torch.rand(3, 20, 30), torch.eye(3), (11, 7)).shape == (3, 11, 7)


def test_level_matrices_fine_only_on_level0():
    from drmime_pl.core.transforms import MatrixExpTransform

    t = MatrixExpTransform("affine")
    with torch.no_grad():
        t.shared.copy_(torch.tensor([0.1, 0.0, 0.2, 0.0, 0.0, 0.0]))
        t.fine.copy_(torch.tensor([0.0, 0.05, 0.0, 0.0, 0.0, 0.0]))
    m = t.level_matrices(4)
    assert m.shape == (4, 3, 3)
    assert torch.allclose(m[0], t(finest=True)) and torch.allclose(m[1], t(finest=False))
    assert torch.allclose(m[3], m[1]) and not torch.allclose(m[0], m[1])
