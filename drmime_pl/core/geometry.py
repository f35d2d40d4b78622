"""Coordinate frames, generator bases and warping: pure functions, no state.

Convention
----------
Three 2-D frames are used for every image; all points are **(x, y)** with x = column and y = row.

* **pixel** (``pix``): pixel centres at integer coordinates, (0, 0) is the centre of the top-left pixel,
  x runs to ``W - 1`` and y to ``H - 1``. Landmark files, ``transform.json["matrix"]`` and ``warp`` use it.
* **grid** (``grid``): PyTorch's ``grid_sample`` frame with ``align_corners=False``: the image's outer *edges*
  are at -1 and +1 on each axis, ``u = (2 x + 1) / W - 1``. The same physical point has the same grid coordinate on
  every pyramid level, because levels are resized edge to edge.
* **normalised** (``norm``): the frame the matrix exponential acts in. The image centre is the origin and one unit
  is ``scale`` pixels on *both* axes, ``n = (x - (W - 1) / 2) / scale``. ``scale`` is shared by the fixed and the
  moving image of a pair (half the long side of the fixed image, see :func:`pair_scale`), so a rotation generator
  is a true rotation in pixels even for non-square images, and a rigid transform stays rigid.

Matrices are named ``dst_trans_src``: ``moving_pix_trans_fixed_pix`` maps a fixed-image pixel (x, y, 1) to the
moving-image pixel that is sampled for it (the *backward* or *pull* direction used to resample the moving image
onto the fixed grid). Homogeneous 3x3 matrices act on column vectors: ``p_dst ~ M @ (x, y, 1)^T``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

#: Transform models and the number of coefficients each has.
TRANSFORM_DOFS = {"translation": 2, "rigid": 3, "similarity": 4, "affine": 6, "perspective": 8}


def _unit(row: int, col: int, value: float = 1.0) -> torch.Tensor:
    m = torch.zeros(3, 3, dtype=torch.float64)
    m[row, col] = value
    return m


def generator_basis(model: str) -> torch.Tensor:
    """Generator matrices of a transform model, in the normalised frame.

    The bases are nested (translation < rigid < similarity < affine < perspective), so a coefficient keeps its
    meaning across models. They span the same space as the DRMIME notebooks' B0..B7 (a change of basis that makes
    the subsets for rigid and similarity transforms exact):

    ===  =========================  ================================================
    i    generator                  effect of ``expm(v_i B_i)``
    ===  =========================  ================================================
    0    E(0,2)                     shift x by v_0
    1    E(1,2)                     shift y by v_1
    2    E(1,0) - E(0,1)            rotate by v_2 radians (x towards y)
    3    diag(1, 1, 0)              scale both axes by exp(v_3)
    4    diag(1, -1, 0)             stretch x by exp(v_4), y by exp(-v_4)
    5    E(0,1) + E(1,0)            symmetric shear
    6    E(2,0)                     perspective along x
    7    E(2,1)                     perspective along y
    ===  =========================  ================================================

    Args:
        model: one of ``translation``, ``rigid``, ``similarity``, ``affine``, ``perspective``.

    Returns:
        ``K x 3 x 3`` float64 tensor, K = ``TRANSFORM_DOFS[model]``.
    """
    if model not in TRANSFORM_DOFS:
        raise ValueError(f"unknown transform model {model!r}; expected one of {', '.join(TRANSFORM_DOFS)}")
    basis = [
        _unit(0, 2),
        _unit(1, 2),
        _unit(1, 0) - _unit(0, 1),
        torch.diag(torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)),
        torch.diag(torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)),
        _unit(0, 1) + _unit(1, 0),
        _unit(2, 0),
        _unit(2, 1),
    ]
    return torch.stack(basis[: TRANSFORM_DOFS[model]])  # K x 3 x 3


def matrix_from_coefficients(coefficients: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``expm(sum_i v_i B_i)``: differentiable, invertible for every v, identity at v = 0.

    Args:
        coefficients: ``K`` or ``... x K`` tensor.
        basis: ``K x 3 x 3`` tensor (same dtype as ``coefficients`` or castable to it).

    Returns:
        ``... x 3 x 3`` matrix, normalised frame, fixed -> moving.
    """
    generator = torch.einsum("...k,kij->...ij", coefficients, basis.to(coefficients))  # ... x 3 x 3
    return torch.linalg.matrix_exp(generator)


def _sqrtm(a: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """Principal square root by the Denman-Beavers iteration."""
    y, z = a, torch.eye(a.shape[-1], dtype=a.dtype)
    for _ in range(iterations):
        y, z = 0.5 * (y + torch.linalg.inv(z)), 0.5 * (z + torch.linalg.inv(y))
    return y


def _logm(a: torch.Tensor) -> torch.Tensor:
    """Principal matrix logarithm: square roots until near I, then the series of log(I + X)."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    roots = 0
    while float(torch.linalg.matrix_norm(a - eye)) > 0.1 and roots < 30:
        a, roots = _sqrtm(a), roots + 1
    x = a - eye
    term, out = eye, torch.zeros_like(a)
    for n in range(1, 40):
        term = term @ x
        out = out + ((-1) ** (n + 1)) * term / n
    return out * (2.0**roots)


def coefficients_from_matrix(matrix: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Least-squares coefficients v with ``expm(sum v_i B_i) ~ matrix`` (up to a projective scale).

    Uses the principal matrix logarithm (inverse scaling and squaring), so ``matrix`` must have no eigenvalue on
    the closed negative real axis (true near the identity, e.g. rotations below 180 degrees).
    The log is taken of ``matrix / det(matrix)^(1/3)`` and projected on the basis; for a matrix inside the
    model's group this inverts :func:`matrix_from_coefficients`.

    Args:
        matrix: ``3 x 3`` in the normalised frame.
        basis: ``K x 3 x 3``.

    Returns:
        ``K`` float64 coefficients.
    """
    m = torch.as_tensor(matrix, dtype=torch.float64)
    det = torch.linalg.det(m)
    if det <= 0:
        raise ValueError("matrix has a non-positive determinant: it is not reachable by a matrix exponential")
    m = m / det ** (1.0 / 3.0)
    log_m = _logm(m)  # 3 x 3
    # expm(log_m - c I) = expm(log_m) / e^c: remove the (2, 2) entry, which no generator has, as a scale.
    log_m = log_m - log_m[2, 2] * torch.eye(3, dtype=torch.float64)
    a = basis.to(torch.float64).reshape(basis.shape[0], 9).t()  # 9 x K
    return torch.linalg.lstsq(a, log_m.reshape(9, 1)).solution.reshape(-1)


def pair_scale(fixed_hw: Sequence[int]) -> float:
    """Pixels per normalised unit shared by both images of a pair: half the fixed image's long side."""
    return max(int(fixed_hw[0]), int(fixed_hw[1])) / 2.0


#: The three frames of an image (see the module's docstring).
FRAMES = ("pix", "grid", "norm")


def frame_matrix(hw: Sequence[int], src: str, dst: str, scale: float | None = None,
                 dtype=torch.float64) -> torch.Tensor:
    """The one place that builds frame conversions: ``3 x 3`` matrix that maps (x, y, 1) of an image of size
    ``hw = (H, W)`` from frame ``src`` to frame ``dst`` (``pix``, ``grid`` or ``norm``; ``norm`` needs ``scale``,
    pixels per normalised unit).

    * pixel -> normalised: ``n = (x - (W - 1) / 2) / scale``;
    * grid -> pixel: ``x = W / 2 u + (W - 1) / 2``;
    * normalised -> grid: ``u = n * 2 * scale / W`` (from ``u = (2 x + 1) / W - 1``);
    * the other directions are the inverses of these.

    The grid and normalised frames are level-invariant: a pyramid level's pixel frame is ``frame_matrix(level_hw,
    "pix", ...)`` and reaches the full image's grid or normalised frame.
    """
    if src not in FRAMES or dst not in FRAMES:
        raise ValueError(f"unknown frame {src!r} or {dst!r}; expected one of {', '.join(FRAMES)}")
    if "norm" in (src, dst) and scale is None:
        raise ValueError("the normalised frame needs the pair's scale (pixels per normalised unit)")
    h, w = int(hw[0]), int(hw[1])
    if src == dst:
        return torch.eye(3, dtype=dtype)
    if (src, dst) == ("pix", "norm"):
        return torch.tensor(
            [[1.0 / scale, 0.0, -(w - 1) / 2.0 / scale], [0.0, 1.0 / scale, -(h - 1) / 2.0 / scale], [0.0, 0.0, 1.0]],
            dtype=dtype,
        )
    if (src, dst) == ("norm", "pix"):
        return torch.tensor(
            [[scale, 0.0, (w - 1) / 2.0], [0.0, scale, (h - 1) / 2.0], [0.0, 0.0, 1.0]],
            dtype=dtype,
        )
    if (src, dst) == ("norm", "grid"):
        return torch.tensor([[2.0 * scale / w, 0.0, 0.0], [0.0, 2.0 * scale / h, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    if (src, dst) == ("grid", "pix"):
        return torch.tensor([[w / 2.0, 0.0, (w - 1) / 2.0], [0.0, h / 2.0, (h - 1) / 2.0], [0.0, 0.0, 1.0]],
                            dtype=dtype)
    if (src, dst) == ("pix", "grid"):
        return torch.linalg.inv(frame_matrix(hw, "grid", "pix", scale, torch.float64)).to(dtype)
    if (src, dst) == ("grid", "norm"):
        return torch.linalg.inv(frame_matrix(hw, "norm", "grid", scale, torch.float64)).to(dtype)
    # pix <-> norm covered above; nothing else remains
    raise AssertionError((src, dst))


def reframe(matrix, fixed_hw: Sequence[int], moving_hw: Sequence[int], src, dst,
            scale: float | None = None) -> torch.Tensor:
    """A fixed -> moving matrix (``3 x 3`` or ``... x 3 x 3``) that acts between the frames ``src`` re-expressed
    between the frames ``dst``: ``moving_dst_trans_moving_src @ matrix @ fixed_src_trans_fixed_dst``, float64.

    ``src`` and ``dst`` each name one frame for both images (``"pix"``, ``"grid"``, ``"norm"``) or a pair
    ``(fixed frame, moving frame)``; e.g. ``reframe(m, fixed_hw, moving_hw, "pix", ("pix", "grid"))`` turns
    ``moving_pix_trans_fixed_pix`` into ``moving_grid_trans_fixed_pix``.
    """
    fixed_src, moving_src = (src, src) if isinstance(src, str) else src
    fixed_dst, moving_dst = (dst, dst) if isinstance(dst, str) else dst
    out = torch.as_tensor(matrix, dtype=torch.float64)
    if moving_src != moving_dst:
        out = frame_matrix(moving_hw, moving_src, moving_dst, scale) @ out
    if fixed_src != fixed_dst:
        out = out @ frame_matrix(fixed_hw, fixed_dst, fixed_src, scale)
    return out


def pixel_matrix_from_normalised(
    moving_norm_trans_fixed_norm: torch.Tensor, fixed_hw: Sequence[int], moving_hw: Sequence[int], scale: float
) -> torch.Tensor:
    """Convert a normalised-frame matrix to ``moving_pix_trans_fixed_pix``.

    Args:
        moving_norm_trans_fixed_norm: ``3 x 3``.
        fixed_hw, moving_hw: ``(H, W)`` of the fixed and the moving image at full resolution.
        scale: pixels per normalised unit (:func:`pair_scale`).

    Returns:
        ``3 x 3`` matrix scaled so that its [2, 2] entry is 1 (when it is non-zero).
    """
    out = reframe(moving_norm_trans_fixed_norm.to(torch.float64), fixed_hw, moving_hw, "norm", "pix", scale)  # 3 x 3
    return normalise_homography(out)


def normalised_matrix_from_pixel(
    moving_pix_trans_fixed_pix: torch.Tensor, fixed_hw: Sequence[int], moving_hw: Sequence[int], scale: float
) -> torch.Tensor:
    """Inverse of :func:`pixel_matrix_from_normalised`: ``moving_norm_trans_fixed_norm``, ``3 x 3``."""
    return reframe(moving_pix_trans_fixed_pix, fixed_hw, moving_hw, "pix", "norm", scale)


def normalise_homography(matrix: torch.Tensor) -> torch.Tensor:
    """Scale a homogeneous ``... x 3 x 3`` matrix so that its [2, 2] entry is 1 (left alone where it is ~0)."""
    corner = matrix[..., 2:3, 2:3]
    safe = torch.where(corner.abs() > 1e-12, corner, torch.ones_like(corner))
    return matrix / safe


def transform_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply a homogeneous matrix to points.

    Args:
        matrix: ``3 x 3`` (or ``B x 3 x 3`` with ``points`` ``B x N x 2``).
        points: ``N x 2`` (x, y).

    Returns:
        ``N x 2`` transformed points, divided by their homogeneous coordinate.
    """
    points = torch.as_tensor(points)
    matrix = torch.as_tensor(matrix).to(points.dtype)
    ones = torch.ones_like(points[..., :1])
    homogeneous = torch.cat([points, ones], dim=-1)  # N x 3
    mapped = homogeneous @ matrix.transpose(-1, -2)  # N x 3
    return mapped[..., :2] / mapped[..., 2:3]


def image_corners(hw: Sequence[int], dtype=torch.float64) -> torch.Tensor:
    """Pixel coordinates (x, y) of the four corner pixel centres of an image of size ``hw``. ``4 x 2``."""
    h, w = int(hw[0]), int(hw[1])
    return torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]], dtype=dtype)


def mean_corner_error(matrix_a, matrix_b, hw: Sequence[int]) -> float:
    """Mean distance in pixels between the fixed image's corners mapped by two ``moving_pix_trans_fixed_pix``."""
    corners = image_corners(hw)
    a = transform_points(torch.as_tensor(matrix_a, dtype=torch.float64), corners)
    b = transform_points(torch.as_tensor(matrix_b, dtype=torch.float64), corners)
    return float((a - b).norm(dim=-1).mean())


def sample_at_grid(image: torch.Tensor, grid_points: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Bilinearly sample an image at scattered grid-frame points: cost is O(N), independent of image size.

    Args:
        image: ``C x H x W``.
        grid_points: ``N x 2`` (u, v) in the grid frame (align_corners=False).

    Returns:
        ``N x C`` intensities; zero outside the image with ``padding_mode="zeros"``.
    """
    grid = grid_points.to(image.dtype).view(1, 1, -1, 2)  # 1 x 1 x N x 2
    out = F.grid_sample(image.unsqueeze(0), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out[0, :, 0, :].transpose(0, 1)  # N x C


_WARP_BLOCK_PIXELS = 1 << 16  # output pixels warped at once (memory: ~60-100 bytes each, a few MB per block)


def warp_grid(moving: torch.Tensor, moving_grid_trans_fixed_grid: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
    """Resample ``moving`` (``C x Hm x Wm``) on an ``out_hw`` grid covering the fixed image edge to edge.

    The matrix maps the fixed image's grid frame to the moving image's grid frame, both level-invariant, so any
    pyramid level of either image can be used (previews warp small levels). Zero outside the moving image.

    Returns:
        ``C x H x W`` float tensor.
    """
    h, w = int(out_hw[0]), int(out_hw[1])
    m = torch.as_tensor(moving_grid_trans_fixed_grid, dtype=torch.float64) @ frame_matrix((h, w), "pix", "grid")
    dtype = moving.dtype if moving.is_floating_point() else torch.float32
    source = moving.unsqueeze(0).to(dtype)
    out = torch.empty((moving.shape[0], h, w), dtype=dtype, device=moving.device)
    xs = torch.arange(w, dtype=torch.float64)
    rows = max(1, _WARP_BLOCK_PIXELS // max(1, w))  # blocks of rows: the float64 grid never covers the whole image
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        ys, xx = torch.meshgrid(torch.arange(r0, r1, dtype=torch.float64), xs, indexing="ij")
        points = torch.stack([xx.reshape(-1), ys.reshape(-1)], dim=-1)  # block x 2 output pixels
        grid = transform_points(m, points).view(1, r1 - r0, w, 2).to(dtype).to(moving.device)
        out[:, r0:r1] = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    return out


def warp_image(moving: torch.Tensor, moving_pix_trans_fixed_pix: torch.Tensor, fixed_hw: Sequence[int]) -> torch.Tensor:
    """Resample the moving image on the fixed image's pixel grid.

    ``out[:, y, x] = moving(M @ (x, y, 1))`` (bilinear; zero outside the moving image).

    Args:
        moving: ``C x Hm x Wm`` tensor.
        moving_pix_trans_fixed_pix: ``3 x 3``.
        fixed_hw: ``(H, W)`` of the output.

    Returns:
        ``C x H x W`` float tensor.
    """
    moving_grid_trans_fixed_grid = reframe(moving_pix_trans_fixed_pix, fixed_hw, moving.shape[-2:], "pix", "grid")
    return warp_grid(moving, moving_grid_trans_fixed_grid, fixed_hw)
