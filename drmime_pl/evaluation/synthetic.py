"""Synthetic image pairs with a known homography, for tests and benchmarks.

:func:`make_pair` takes a real image and a seed and returns a :class:`SyntheticPair`: a fixed image, a moving image
that is the fixed image seen through a random homography of a chosen *magnitude* and re-rendered in a chosen
*modality*, the true ``moving_pix_trans_fixed_pix`` matrix, and a grid of corresponding points so that TRE/rTRE of
any estimated matrix can be computed with :mod:`drmime_pl.evaluation.metrics` (or :meth:`SyntheticPair.rtre`).

Construction
------------
1. The real image ``S`` (``C x H x W``, [0, 1]) is optionally shrunk to ``max_side`` and padded on every side by
   ``pad`` times its size with its *background colour* (the per-channel median of its border pixels: white glass for
   histology, black for fundus photographs). The padded image is the **fixed** image. The padding keeps the content
   inside the moving view when it is rotated, scaled and shifted ("shrink/pad").
2. A homography ``T`` (fixed pixel -> moving pixel) is drawn around the image centre, see :data:`MAGNITUDES`:
   ``T = P @ Shift(t) @ Rot(theta) @ Stretch(a, phi) @ Scale(s) @ Persp(g, h) @ P^-1`` where ``P`` maps the
   normalised frame (origin at the fixed image's centre, one unit = half its long side, as in
   :mod:`drmime_pl.core.geometry`) to pixels. ``t`` is exactly the displacement of the fixed image's centre, ``theta`` the
   rotation (the orthogonal factor of the linear part), ``s`` the isotropic scale, ``a`` an anisotropic stretch
   along a random axis and ``(g, h)`` the perspective row (at a point one unit from the centre the homogeneous
   coordinate changes by up to ``|(g, h)|``). Each magnitude is drawn as ``U(0.5, 1) x`` its nominal value ("about",
   at least half, at most the nominal value) with a random sign or direction.
   The draw is repeated (deterministically) until every ground-truth grid point lands inside the moving image.
3. The **moving** image has the fixed image's size: ``moving(q) = fixed(T^-1 q)`` (bilinear; outside the fixed image
   the background colour), so ``moving(T p) = fixed(p)``. Then its modality is changed (:data:`MODALITIES`) and
   Gaussian noise of standard deviation ``noise`` is added (clamped to [0, 1]).
4. The ground truth is a ``grid x grid`` lattice over the real image's region of the fixed image (inset by
   ``grid_margin`` of its size on each side) and its image under ``T``.

The geometry depends only on ``(seed, magnitude)``: the same seed gives the same transform directions and relative
sizes for every modality, and the same relative draw scaled up for larger magnitudes (unless the containment check
forces a redraw).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..core.channels import luminance
from ..core.geometry import frame_matrix, transform_points, warp_image
from ..io.images import load_image


@dataclass(frozen=True)
class Magnitude:
    """Nominal (maximum) size of each component of a synthetic transform; draws are ``U(0.5, 1)`` times these.

    Attributes:
        rotation_deg: rotation angle, degrees.
        scale: isotropic scale change as a fraction: ``s = (1 + scale) ** (+-u)``.
        shift: displacement of the image centre as a fraction of the fixed image's width (x) and height (y); the
            shift vector has a random direction, so ``|t_x| <= shift * W`` and ``|t_y| <= shift * H``.
        stretch: anisotropic stretch: ``exp(+-a)`` along a random axis, ``a = log(1 + stretch) x U(0.5, 1)``.
        perspective: length of the perspective row ``(g, h)`` in the normalised frame.
    """

    rotation_deg: float
    scale: float
    shift: float
    stretch: float
    perspective: float


#: The three magnitudes of :func:`make_pair`.
MAGNITUDES: Dict[str, Magnitude] = {
    "small": Magnitude(rotation_deg=5.0, scale=0.05, shift=0.03, stretch=0.0, perspective=0.0),
    "medium": Magnitude(rotation_deg=12.0, scale=0.12, shift=0.07, stretch=0.04, perspective=0.03),
    "large": Magnitude(rotation_deg=25.0, scale=0.25, shift=0.12, stretch=0.08, perspective=0.08),
}

#: Modalities of the moving image: ``same`` (intensities unchanged), ``inverted`` (``1 - x`` per channel),
#: ``nonmonotonic`` (luminance ``l`` remapped to ``(1 - cos(2.5 pi l)) / 2``, one channel: rises to 1 at
#: ``l = 0.4``, falls to 0 at ``l = 0.8``, rises to 0.5 at ``l = 1``), ``channels`` (RGB channels cyclically
#: permuted and each raised to a random gamma in [1/2.5, 1/1.5] or [1.5, 2.5]; a gray image is repeated to RGB first).
MODALITIES = ("same", "inverted", "nonmonotonic", "channels")


def nonmonotonic_curve(luma: torch.Tensor) -> torch.Tensor:
    """The ``nonmonotonic`` modality's intensity remap, applied to luminance in [0, 1]."""
    return 0.5 * (1.0 - torch.cos(2.5 * math.pi * luma))


@dataclass
class SyntheticPair:
    """A synthetic registration problem with its ground truth.

    Attributes:
        fixed: ``C x H x W`` float32 in [0, 1].
        moving: ``C' x H x W`` float32 in [0, 1] (C' = 1 for ``nonmonotonic``, 3 for ``channels``, else C).
        matrix: ``3 x 3`` float64, true ``moving_pix_trans_fixed_pix`` ([2, 2] = 1).
        fixed_points: ``N x 2`` (x, y) fixed-image pixels of the ground-truth grid.
        moving_points: ``N x 2`` their true moving-image pixels (``matrix`` applied).
        magnitude, modality, seed: how the pair was made.
        params: the drawn components (``rotation_deg``, ``scale``, ``stretch``, ``stretch_axis_deg``,
            ``shift_x``/``shift_y`` as fractions of W/H, ``perspective`` (g, h), ``gammas``, ``permutation``,
            ``background``, ``pad_px`` (left, top), ``draws``).
    """

    fixed: torch.Tensor
    moving: torch.Tensor
    matrix: np.ndarray
    fixed_points: np.ndarray
    moving_points: np.ndarray
    magnitude: str
    modality: str
    seed: int
    params: dict = field(default_factory=dict)

    @property
    def fixed_hw(self):
        return tuple(self.fixed.shape[-2:])

    @property
    def name(self) -> str:
        return f"{self.modality}-{self.magnitude}-s{self.seed}"

    def tre(self, matrix) -> np.ndarray:
        """Per-point TRE (pixels) of an estimated ``moving_pix_trans_fixed_pix``."""
        from .metrics import tre

        return tre(np.asarray(matrix, dtype=np.float64), self.fixed_points, self.moving_points)

    def rtre(self, matrix) -> float:
        """Median over the grid of TRE / fixed-image diagonal (ANHIR's per-pair rTRE)."""
        from .metrics import tre_summary

        return tre_summary(self.tre(matrix), self.fixed_hw)["rtre_median"]


def background_colour(image: torch.Tensor) -> torch.Tensor:
    """Per-channel median of the border pixels of a ``C x H x W`` image. ``C``."""
    border = torch.cat([image[:, 0, :], image[:, -1, :], image[:, :, 0], image[:, :, -1]], dim=1)
    return border.median(dim=1).values


def _shrink(image: torch.Tensor, max_side: Optional[int]) -> torch.Tensor:
    h, w = image.shape[-2:]
    if not max_side or max(h, w) <= max_side:
        return image
    f = max_side / max(h, w)
    size = (max(1, round(h * f)), max(1, round(w * f)))
    return F.interpolate(image[None], size=size, mode="area")[0].clamp(0, 1)


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _draw_normalised(rng: np.random.Generator, mag: Magnitude, hw, scale_px: float):
    """One draw of the homography in the normalised frame (fixed -> moving) and its parameters."""
    h, w = hw
    u = rng.uniform(0.5, 1.0, size=5)
    signs = rng.choice([-1.0, 1.0], size=2)
    angles = rng.uniform(0.0, 2.0 * math.pi, size=3)  # shift direction, stretch axis, perspective direction
    theta = signs[0] * u[0] * math.radians(mag.rotation_deg)
    s = (1.0 + mag.scale) ** (signs[1] * u[1])
    a = u[2] * math.log1p(mag.stretch)
    shift_x = u[3] * mag.shift * math.cos(angles[0])  # fraction of W
    shift_y = u[3] * mag.shift * math.sin(angles[0])  # fraction of H
    rho = u[4] * mag.perspective
    g, hh = rho * math.cos(angles[2]), rho * math.sin(angles[2])

    stretch = _rot(angles[1]) @ np.diag([math.exp(a), math.exp(-a), 1.0]) @ _rot(-angles[1])
    persp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [g, hh, 1.0]])
    shift = np.array([[1.0, 0.0, shift_x * w / scale_px], [0.0, 1.0, shift_y * h / scale_px], [0.0, 0.0, 1.0]])
    m = shift @ _rot(theta) @ stretch @ np.diag([s, s, 1.0]) @ persp
    params = {"rotation_deg": math.degrees(theta), "scale": s, "stretch": math.exp(a),
              "stretch_axis_deg": math.degrees(angles[1]), "shift_x": shift_x, "shift_y": shift_y,
              "perspective": (g, hh)}
    return m, params


def grid_points(hw, region=None, n: int = 5, margin: float = 0.1) -> np.ndarray:
    """``n x n`` lattice (x, y) over ``region = (x0, y0, x1, y1)`` (default: the whole ``hw`` image, pixel-centre
    extent), inset by ``margin`` of the region's size on each side. ``n*n x 2``, row-major (y outer)."""
    h, w = hw
    x0, y0, x1, y1 = region if region is not None else (0.0, 0.0, w - 1.0, h - 1.0)
    xs = np.linspace(x0 + margin * (x1 - x0), x1 - margin * (x1 - x0), n)
    ys = np.linspace(y0 + margin * (y1 - y0), y1 - margin * (y1 - y0), n)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def _apply_modality(moving: torch.Tensor, modality: str, rng: np.random.Generator, params: dict) -> torch.Tensor:
    if modality == "same":
        return moving
    if modality == "inverted":
        return 1.0 - moving
    if modality == "nonmonotonic":
        return nonmonotonic_curve(luminance(moving).clamp(0, 1))
    if modality == "channels":
        rgb = moving.expand(3, -1, -1) if moving.shape[0] == 1 else moving
        shift = int(rng.integers(1, 3))  # a cyclic permutation that moves every channel
        perm = [(c + shift) % 3 for c in range(3)]
        exps = rng.uniform(math.log(1.5), math.log(2.5), size=3) * rng.choice([-1.0, 1.0], size=3)
        gammas = np.exp(exps)
        params.update(permutation=perm, gammas=gammas.tolist())
        out = torch.stack([rgb[p].clamp(0, 1) ** float(gm) for p, gm in zip(perm, gammas)])
        return out
    raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")


def make_pair(image, seed: int, magnitude: str = "medium", modality: str = "same", *, pad: float = 0.25,
              noise: float = 0.02, grid: int = 5, grid_margin: float = 0.1, max_side: Optional[int] = None,
              max_draws: int = 1000) -> SyntheticPair:
    """Build a synthetic pair from a real image (see the module docstring).

    Args:
        image: ``C x H x W`` tensor in [0, 1] (or a path / array, loaded with :func:`drmime_pl.io.images.load_image`).
        seed: makes the pair reproducible.
        magnitude: ``small``, ``medium`` or ``large`` (:data:`MAGNITUDES`).
        modality: ``same``, ``inverted``, ``nonmonotonic`` or ``channels`` (:data:`MODALITIES`).
        pad: background padding on each side, as a fraction of the (shrunk) image's height and width.
        noise: standard deviation of the Gaussian noise added to the moving image (0: none).
        grid, grid_margin: the ground-truth lattice (``grid x grid`` points over the real image's region).
        max_side: shrink the image first so that its long side is at most this (area interpolation).
        max_draws: redraws allowed to keep every grid point inside the moving image.

    Returns:
        :class:`SyntheticPair`.
    """
    if magnitude not in MAGNITUDES:
        raise ValueError(f"unknown magnitude {magnitude!r}; expected one of {', '.join(MAGNITUDES)}")
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    src = _shrink(load_image(image, name="image").float(), max_side)
    c, sh, sw = src.shape
    bg = background_colour(src)
    px, py = int(round(pad * sw)), int(round(pad * sh))
    fixed = (F.pad(src[None] - bg.view(1, c, 1, 1), (px, px, py, py)) + bg.view(1, c, 1, 1))[0].contiguous()
    hw = tuple(fixed.shape[-2:])
    h, w = hw
    scale_px = max(h, w) / 2.0
    to_pix = frame_matrix(hw, "norm", "pix", scale_px).numpy()
    to_norm = np.linalg.inv(to_pix)

    fixed_pts = grid_points(hw, (px, py, px + sw - 1.0, py + sh - 1.0), grid, grid_margin)
    geo_rng = np.random.default_rng([int(seed), 0])
    mag = MAGNITUDES[magnitude]
    for draw in range(1, max_draws + 1):
        m_norm, params = _draw_normalised(geo_rng, mag, hw, scale_px)
        matrix = to_pix @ m_norm @ to_norm
        matrix = matrix / matrix[2, 2]
        moving_pts = transform_points(torch.from_numpy(matrix), torch.from_numpy(fixed_pts)).numpy()
        inside = ((moving_pts[:, 0] >= 0) & (moving_pts[:, 0] <= w - 1) & (moving_pts[:, 1] >= 0)
                  & (moving_pts[:, 1] <= h - 1)).all()
        if inside:
            break
    else:
        raise ValueError(f"no {magnitude} transform keeps the grid inside the moving image in {max_draws} draws; "
                         "increase pad")
    params.update(draws=draw, background=bg.tolist(), pad_px=(px, py), noise=noise)

    inverse = torch.from_numpy(np.linalg.inv(matrix))
    moving = warp_image(fixed - bg.view(c, 1, 1), inverse, hw) + bg.view(c, 1, 1)  # moving(q) = fixed(T^-1 q)
    mod_rng = np.random.default_rng([int(seed), 1])
    moving = _apply_modality(moving.clamp(0, 1), modality, mod_rng, params)
    if noise > 0:
        gen = torch.Generator().manual_seed(int(mod_rng.integers(2**62)))
        moving = moving + noise * torch.randn(moving.shape, generator=gen)
    moving = moving.clamp(0, 1).float().contiguous()
    return SyntheticPair(fixed=fixed, moving=moving, matrix=matrix, fixed_points=fixed_pts, moving_points=moving_pts,
                         magnitude=magnitude, modality=modality, seed=int(seed), params=params)


def decompose(matrix, hw) -> dict:
    """Measure a ``moving_pix_trans_fixed_pix`` (moving and fixed of size ``hw``) in the frame of
    :func:`make_pair`: rotation (degrees, polar decomposition of the linear part at the centre), isotropic scale
    (sqrt of the determinant), centre shift as fractions of W and H, and the perspective row length."""
    h, w = hw
    scale_px = max(h, w) / 2.0
    to_pix = frame_matrix(hw, "norm", "pix", scale_px).numpy()
    m = np.linalg.inv(to_pix) @ np.asarray(matrix, dtype=np.float64) @ to_pix
    m = m / m[2, 2]
    lin = m[:2, :2] - np.outer(m[:2, 2], m[2, :2])  # linear part of the affine factor (m = A @ persp)
    u, _, vt = np.linalg.svd(lin)
    r = u @ vt
    return {"rotation_deg": math.degrees(math.atan2(r[1, 0], r[0, 0])),
            "scale": math.sqrt(abs(np.linalg.det(lin))),
            "shift_x": m[0, 2] * scale_px / w, "shift_y": m[1, 2] * scale_px / h,
            "perspective": float(np.hypot(m[2, 0], m[2, 1]))}
