"""Normalised gradient fields (NGF): how well two images' edges line up, whatever their intensities mean.

``NGF = mean over the overlap of (n_F . n_M)^2`` with ``n = grad / sqrt(|grad|^2 + eps^2)`` (Haber and
Modersitzki, 2006): the squared cosine between the edge directions of the fixed image and of the warped moving
image, blind to contrast inversion and to any intensity mapping. Multi-modal pairs share their edges far more
reliably than a coarse joint histogram, which is why the initial search (:mod:`drmime_pl.core.search`) and the verdict
(:mod:`drmime_pl.core.quality`) use it. MINE remains the objective of the optimisation.

Images here are small (a ~32-256 px :class:`Level`), so each function scores many candidate transforms at once.

Convention: matrices are ``moving_norm_trans_fixed_norm`` (normalised frames of :mod:`drmime_pl.core.geometry`),
float64 ``N x 3 x 3``; points are (x, y).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .geometry import frame_matrix
from .tasks import together


def gradient_features(gray: torch.Tensor, valid: torch.Tensor, eps_rel: float = 0.2,
                      centred: bool = False) -> torch.Tensor:
    """Features ``(nx^2, sqrt(2) nx ny, ny^2)`` of ``... x h x w`` images: ``... x 3 x h x w``.

    Their dot product is ``(n_F . n_M)^2``. ``eps = eps_rel`` times the mean gradient magnitude, so noise-level
    gradients count little. ``centred``: minus their mean over the image's valid pixels, so that the dot product
    keeps only how the edge *directions* co-vary, not its baseline (``|n_F|^2 |n_M|^2 / 2`` for unrelated
    directions), which grows with the edge density under the overlap. The global search scores with centred
    features: between a photograph and an infrared, depth or night image of the same place, the truth stands out
    from other shifts by a z-score of 6-18 on a ~128 px level, against 2-5 (no better than wrong shifts) without.
    Gradients next to invalid pixels (``valid < 1``) are zero: the edge of the valid region (padding, a rotated
    image's black corners) is not an edge of the image.
    """
    # Written for speed (the search and the polish call this on millions of pixels): the 1/2 of the central
    # difference is left out, since n does not change when the gradient and eps scale together; gradients are zeroed
    # where they do not count first, so that the normalisation needs no mask; the features are written in place.
    gx = torch.zeros_like(gray)
    gy = torch.zeros_like(gray)
    torch.sub(gray[..., :, 2:], gray[..., :, :-2], out=gx[..., :, 1:-1])
    torch.sub(gray[..., 2:, :], gray[..., :-2, :], out=gy[..., 1:-1, :])
    inner = valid >= 0.999
    ok = inner.clone()
    ok[..., :, 1:-1] &= inner[..., :, 2:] & inner[..., :, :-2]
    ok[..., 1:-1, :] &= inner[..., 2:, :] & inner[..., :-2, :]
    ok[..., :, [0, -1]] = False
    ok[..., [0, -1], :] = False
    weight = ok.to(gray.dtype)
    gx.mul_(weight)
    gy.mul_(weight)
    magnitude2 = torch.addcmul(gx * gx, gy, gy)
    dims = (-2, -1)
    mean = magnitude2.sqrt().sum(dims, keepdim=True) / weight.sum(dims, keepdim=True).clamp_min(1)
    inv_norm = magnitude2.add_((eps_rel * mean).clamp_min(2e-6) ** 2).rsqrt_()  # 1 / sqrt(|g|^2 + eps^2)
    nx, ny = gx.mul_(inv_norm), gy.mul_(inv_norm)
    features = torch.empty(gray.shape[:-2] + (3,) + gray.shape[-2:], dtype=gray.dtype, device=gray.device)
    torch.mul(nx, nx, out=features[..., 0, :, :])
    torch.mul(nx, ny, out=features[..., 1, :, :]).mul_(math.sqrt(2.0))
    torch.mul(ny, ny, out=features[..., 2, :, :])
    if centred:
        weight = weight.unsqueeze(-3)
        mean_feature = features.sum(dims, keepdim=True) / weight.sum(dims, keepdim=True).clamp_min(1)
        features.sub_(mean_feature).mul_(weight)
    return features


def fft_size(n: int) -> int:
    """The smallest ``m >= n`` with no prime factor above 5. An FFT of a size with a large prime factor is several
    times slower (179 x 248: 4.3 times an FFT of 180 x 250); zero-padding to ``m`` changes no shift's score up to
    the padding the caller allows."""
    m = max(int(n), 1)
    while True:
        k = m
        for f in (2, 3, 5):
            while k % f == 0:
                k //= f
        if k == 1:
            return m
        m += 1


def shift_spectra(features: torch.Tensor, valid: torch.Tensor, fft_hw=None) -> torch.Tensor:
    """``rfft2`` of edge features and their validity, as :func:`ngf_all_shifts` takes them: ``... x C x P x Q``
    features and ``... x P x Q`` validity -> ``... x C+1 x P' x (Q' // 2 + 1)`` complex, zero-padded at the end to
    ``fft_hw = (P', Q')`` (default: ``(P, Q)``)."""
    return torch.fft.rfft2(torch.cat([features, valid.unsqueeze(-3)], -3), s=fft_hw)


def half_turn_phase(size, fft_hw, columns: int) -> torch.Tensor:
    """How the spectra of ``P x Q`` images (``size``) turn when the images are flipped both ways (turned by half a
    turn): for a real ``x`` zero-padded to ``P'`` (``fft_hw``, None: ``size``), ``y[n] = x[P - 1 - n]`` has
    ``Y[k] = phase[k] conj(X[k])`` with ``phase[k] = exp(2 pi i k (P' - P + 1) / P')`` on each axis. Returns the
    product of both axes' phases, ``P' x columns`` complex (``columns``: those of an ``rfft2``)."""
    p, q = int(size[0]), int(size[1])
    fp, fq = (p, q) if fft_hw is None else (int(fft_hw[0]), int(fft_hw[1]))
    phase_y = torch.polar(torch.ones(fp), torch.arange(fp) * (2 * math.pi * (fp - p + 1) / fp))[:, None]
    phase_x = torch.polar(torch.ones(columns), torch.arange(columns) * (2 * math.pi * (fq - q + 1) / fq))[None]
    return phase_y * phase_x


def ngf_all_shifts(fixed_spectra: torch.Tensor, canvas_spectra: torch.Tensor, size, min_count,
                   keep: Optional[torch.Tensor] = None, half_turn=None) -> torch.Tensor:
    """NGF for every circular shift of the canvases, by FFT cross-correlation (index ``[dy, dx]``).

    Args:
        fixed_spectra: :func:`shift_spectra` of the fixed features (``C x P x Q``, zero outside the mask and in the
            padding) and mask (``P x Q`` float): ``C+1 x P x Q'``.
        canvas_spectra: :func:`shift_spectra` of ``N`` canvases' features and validity: ``N x C+1 x P x Q'``.
        size: ``(P, Q)`` of the FFT (the ``fft_hw`` of :func:`shift_spectra`).
        min_count: a float or ``N x 1`` (``N x 1 x 1`` without ``keep``): shifts whose overlap has fewer pixels
            score ``-inf``.
        keep: flat indices ``dy * Q + dx`` of the only shifts wanted (``K``, int64), or None: all.
        half_turn: ``(P0, Q0)``, the canvases' size before the zero-padding: score the canvases turned by half a
            turn instead (:func:`half_turn_phase`), without making their spectra.

    Returns:
        ``N x P x Q`` (``N x K`` with ``keep``): the mean of ``(n_F . n_M)^2`` over the overlap when canvas pixel
        ``x + t`` meets fixed pixel ``x``.
    """
    f_hat, m_hat = fixed_spectra, canvas_spectra
    # sum_x F(x) W(x + t) = irfft(conj(F^) W^); the feature channels' products are summed before the inverse FFT.
    c = f_hat.shape[0] - 1
    if half_turn is None:
        f_hat = f_hat.conj()
    both = torch.stack([(f_hat[:c][None] * m_hat[:, :c]).sum(1), f_hat[c][None] * m_hat[:, c]], 1)
    if half_turn is not None:
        # The turned canvases' spectra are phase * conj(M^), so the products are phase * conj(F^ M^): the phase is
        # applied to the two summed products only, not to every channel.
        both = both.conj_physical_().mul_(half_turn_phase(half_turn, size, both.shape[-1]))
    both = torch.fft.irfft2(both, s=tuple(size))  # N x 2 x P x Q
    if keep is not None:  # only the wanted shifts are divided and compared
        both = both.flatten(2).index_select(2, keep)  # N x 2 x K
    agreement, count = both.unbind(1)
    score = agreement / count.clamp_min(1.0)
    return score.masked_fill_(count < min_count, float("-inf"))


def gray(image: torch.Tensor) -> torch.Tensor:
    """``C x h x w`` -> ``h x w``: the mean of the compared channels."""
    return image.mean(0)


def half_extent(hw: Sequence[int], scale: float):
    """Half an image's width and height in normalised units: its edges are at ``+-`` these."""
    return int(hw[1]) / 2.0 / scale, int(hw[0]) / 2.0 / scale


@dataclass
class Level:
    """A fixed and a moving image at the same pixel size, small enough to score many transforms at once.

    ``fixed``: ``C x h x w``; ``mask``: ``h x w`` bool (the pixels that count); ``moving``: ``C x h' x w'``;
    ``valid``: ``h' x w'`` in [0, 1] (None: all valid); ``fixed_hw``, ``moving_hw``: full-resolution sizes;
    ``scale``: pixels per normalised unit. A level is not changed once made: what it derives from its images (the
    fixed edge features, the swapped level) is computed once, since every candidate scored on it needs the same.
    """

    fixed: torch.Tensor
    mask: torch.Tensor
    moving: torch.Tensor
    valid: Optional[torch.Tensor]
    fixed_hw: tuple
    moving_hw: tuple
    scale: float
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_pyramids(cls, fixed_pyramid, fixed_masks, moving_pyramid, moving_valid, fixed_hw, moving_hw,
                      scale: float, size: int, exact: bool = False) -> "Level":
        """The finest pyramid level whose long side is at most ``size`` (average-pooled further when even the
        coarsest is larger). Both images use the same level index and pooling factor, so their pixels match.

        ``exact``: instead, the coarsest level whose long side is at least ``size``, area-averaged down to a long side
        of exactly ``size`` (the moving level by the same factor). Halving leaves the pyramid's levels anywhere from
        half of ``size`` up: a 320 px image's level at or below 128 px has 80 px.
        """
        if exact:
            i = max([0] + [k for k, img in enumerate(fixed_pyramid) if max(img.shape[-2:]) >= size])
            i = min(i, len(moving_pyramid) - 1)
            ratio = size / max(fixed_pyramid[i].shape[-2:])

            def resize(y: torch.Tensor) -> torch.Tensor:  # C x h x w
                out_hw = [max(1, round(n * ratio)) for n in y.shape[-2:]]
                return F.interpolate(y[None], size=out_hw, mode="area")[0] if ratio < 1 else y
        else:
            i = next((k for k, img in enumerate(fixed_pyramid) if max(img.shape[-2:]) <= size),
                     len(fixed_pyramid) - 1)
            i = min(i, len(moving_pyramid) - 1)
            factor = max(1, int(math.ceil(max(fixed_pyramid[i].shape[-2:]) / size)))

            def resize(y: torch.Tensor) -> torch.Tensor:  # C x h x w
                return F.avg_pool2d(y[None], factor, ceil_mode=True)[0] if factor > 1 else y

        def shrink(x: torch.Tensor) -> torch.Tensor:  # a level (C x h x w) or a mask (h x w), as float
            y = resize(x.float() if x.dim() == 3 else x.float()[None])
            return y if x.dim() == 3 else y[0]

        valid = None if moving_valid is None else shrink(moving_valid[i])
        return cls(shrink(fixed_pyramid[i]), shrink(fixed_masks[i]) > 0.5, shrink(moving_pyramid[i]), valid,
                   tuple(fixed_hw), tuple(moving_hw), float(scale))

    def swapped(self) -> "Level":
        """The same pair with the roles exchanged: the moving image (masked by its validity) becomes the fixed."""
        def swap() -> "Level":
            valid = torch.ones(self.moving.shape[-2:]) if self.valid is None else self.valid
            return Level(self.moving, valid > 0.5, self.fixed, self.mask.float(), self.moving_hw, self.fixed_hw,
                         self.scale)

        return self.derived("swapped", swap)

    def derived(self, key, make):
        """What ``make()`` derives from the level's images, computed on the first call with this ``key`` only."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def fixed_features(self, centred: bool = False) -> torch.Tensor:
        """:func:`gradient_features` of the gray fixed level, zero outside the mask: ``3 x h x w``."""
        def make() -> torch.Tensor:
            mask = self.mask.float()
            return gradient_features(gray(self.fixed), mask, centred=centred) * mask

        return self.derived(("fixed_features", centred), make)

    def fixed_norm_trans_pix(self) -> torch.Tensor:
        """Pixel (x, y, 1) of the fixed *level* -> the fixed image's normalised frame, through the level-invariant
        grid frame: float64 ``3 x 3`` (a scale and an offset per axis)."""
        return frame_matrix(self.fixed_hw, "grid", "norm", self.scale) @ frame_matrix(self.fixed.shape[-2:], "pix",
                                                                                      "grid")

    def warp_moving(self, points_norm: torch.Tensor) -> torch.Tensor:
        """Gray moving level and its validity sampled (bilinear, zero outside) at moving-normalised points
        ``N x h x w x 2``: ``N x 2 x h x w``."""
        to_grid = frame_matrix(self.moving_hw, "norm", "grid", self.scale)[:2, :2].diagonal()
        return self._sample((points_norm * to_grid).float())

    def warped_by(self, matrices: torch.Tensor) -> torch.Tensor:
        """The gray moving level and its validity warped onto the fixed level by each ``moving_norm_trans_fixed_norm``
        matrix (``N x 3 x 3``): ``N x 2 x h x w``.

        The matrices are first composed with the level's frames (``moving_grid_trans_fixed_pix``), so the sampling
        grid comes from the row and column indices: a batched ``hw x 3`` product and the fixed points' float64 grid
        cost several times more than the resampling itself.
        """
        h, w = self.fixed.shape[-2:]
        m = (frame_matrix(self.moving_hw, "norm", "grid", self.scale) @ matrices.double()
             @ self.fixed_norm_trans_pix()).float()  # N x 3 x 3: moving_grid_trans_fixed_pix
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, w)
        ys = torch.arange(h, dtype=torch.float32).view(1, h, 1)
        grid = torch.empty(m.shape[0], h, w, 2)
        # Row r of the product is (m_r0 x + m_r2) + m_r1 y: a sum of a row and a column vector per matrix, one pass
        # over the pixels; an affine bottom row skips the division.
        for r in range(2):
            torch.add(m[:, r, 0, None, None] * xs + m[:, r, 2, None, None], m[:, r, 1, None, None] * ys,
                      out=grid[..., r])
        if not bool((m[:, 2, :2] == 0).all() and (m[:, 2, 2] == 1).all()):
            grid.div_((m[:, 2, 0, None, None] * xs + m[:, 2, 2, None, None] + m[:, 2, 1, None, None] * ys)[..., None])
        return self._sample(grid)

    def _sample(self, grid: torch.Tensor) -> torch.Tensor:
        """Gray moving level and its validity at moving-grid points ``N x h x w x 2`` (float32): ``N x 2 x h x w``."""
        def stacked() -> torch.Tensor:
            valid = torch.ones(self.moving.shape[-2:]) if self.valid is None else self.valid.float()
            return torch.stack([gray(self.moving).float(), valid])[None]

        stack = self.derived("moving_and_valid", stacked).expand(grid.shape[0], -1, -1, -1)
        return F.grid_sample(stack, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def overlap_needed(level: Level, matrices: torch.Tensor, min_overlap: float = 0.5) -> torch.Tensor:
    """Fewest overlapping fixed-level pixels a transform may have: ``min_overlap`` of the *smaller* of the fixed mask
    and the valid moving image as each matrix (``N x 3 x 3``) maps it into the fixed frame. ``N``.

    Relative to the smaller image, not to the fixed one: a moving image that shows only part of the fixed scene (an
    optical/SAR pair of 448 and 256 px at one scale, a zoomed detail) covers a third of the fixed image when aligned,
    and a rule relative to the fixed image would rule out the truth and favour shrinking it into view instead.
    """
    fixed_pixel_area = float(level.fixed_norm_trans_pix()[:2, :2].det())  # normalised units^2 per fixed-level pixel
    moving_norm_trans_pix = frame_matrix(level.moving_hw, "grid", "norm", level.scale) @ frame_matrix(
        level.moving.shape[-2:], "pix", "grid")
    moving_pixel_area = float(moving_norm_trans_pix[:2, :2].det())
    moving_valid = float(level.moving.shape[-2] * level.moving.shape[-1]) if level.valid is None else float(
        (level.valid > 0.5).sum())
    # The moving image's valid area in fixed-level pixels: its normalised area over |det| of the linear part.
    det = matrices.double()[:, :2, :2].det().abs().clamp_min(1e-12)
    moving_in_fixed = moving_valid * moving_pixel_area / det / fixed_pixel_area
    fixed_count = float(level.mask.sum())
    return min_overlap * torch.clamp(moving_in_fixed, max=fixed_count)


def ngf(level: Level, matrices: torch.Tensor, min_overlap: float = 0.5, centred: bool = False) -> torch.Tensor:
    """NGF of the fixed level and the moving level warped by each matrix (``N x 3 x 3``): ``N`` scores, ``-inf``
    where the overlap is smaller than :func:`overlap_needed`. ``centred``: of centred features (see
    :func:`gradient_features`)."""
    warped = level.warped_by(matrices)  # N x 2 x h x w
    mask = level.mask.float()
    fixed_features = level.fixed_features(centred)
    moving_features = gradient_features(warped[:, 0], warped[:, 1], centred=centred)
    n = warped.shape[0]
    agreement = moving_features.reshape(n, -1) @ fixed_features.reshape(-1)
    count = (warped[:, 1] > 0.5).float().reshape(n, -1) @ mask.reshape(-1)
    score = agreement / count.clamp_min(1.0)
    enough = count >= overlap_needed(level, matrices, min_overlap)
    return torch.where(enough, score, torch.full_like(score, float("-inf")))


def both_ways(score, level: Level, matrices: torch.Tensor) -> torch.Tensor:
    """The mean of ``score`` (``(level, N x 3 x 3) -> N``) both ways: fixed vs warped moving, and moving vs fixed
    warped by the inverse, computed at once (:func:`~drmime_pl.core.tasks.together`). ``N``."""
    inverse = torch.linalg.inv(matrices.double())
    forward, backward = together(lambda: score(level, matrices), lambda: score(level.swapped(), inverse))
    return 0.5 * (forward + backward)


def symmetric_ngf(level: Level, matrices: torch.Tensor, centred: bool = False) -> torch.Tensor:
    """The mean of NGF both ways (:func:`both_ways`). ``N``.

    One way alone favours zooming into one image (fewer, smoother edges to disagree with); both ways cancel that.
    """
    return both_ways(lambda lvl, m: ngf(lvl, m, centred=centred), level, matrices)
