"""Global search for the initial transform: every rotation, a range of scales, and every shift, scored at once.

MINE's gradient only sees a few degrees and a few percent of the image around where it starts, while real pairs
differ by up to 90 degrees (remote sensing), a scale of 0.5-2 or a third of the image (fundus vs angiography). So
the optimisation starts from the best of many candidates, scored by histogram normalised mutual information (NMI)
on a coarse pyramid level, which needs no training.

How the shifts are searched without a loop: for a candidate rotation-and-scale ``A``, the moving image is resampled
on a canvas in the fixed image's frame, ``W(y) = M(A y)``, twice the fixed level's size. A shift ``t`` of the canvas
is the transform ``p_m = A (p_f + t)``. Both images are quantised to ``bins`` equally populated intensity bins; the
joint histogram of the overlap for *every* shift is then ``bins^2`` cross-correlations of bin-indicator images,
computed by FFT, and so is NMI for every shift. Candidates are batched, so the whole search is a few tensor calls.

Convention: matrices are ``moving_norm_trans_fixed_norm`` (:mod:`drmime_pl.geometry`'s normalised frames), float64
``3 x 3``; angles are radians, x towards y.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from .geometry import TRANSFORM_DOFS, grid_trans_norm



@dataclass
class Candidate:
    """A similarity ``p_m = scale R(angle) p_f + shift`` (normalised frames) and its NMI ``score``."""

    angle: float  # radians, x towards y
    scale: float
    shift: torch.Tensor  # 2, float64
    score: float = float("-inf")

    @property
    def matrix(self) -> torch.Tensor:
        """``moving_norm_trans_fixed_norm``, ``3 x 3`` float64."""
        m = torch.eye(3, dtype=torch.float64)
        m[:2, :2] = linear_matrices(torch.tensor([self.angle]), torch.tensor([self.scale]))[0]
        m[:2, 2] = self.shift
        return m

    def coefficients(self, model: str) -> torch.Tensor:
        """Matrix-exponential coefficients of this similarity for ``model`` (``K`` float32).

        In closed form, not by a matrix logarithm, so that rotations near 180 degrees are exact: the linear part
        is ``expm(G)`` with ``G = log(s) I + angle J``, and ``expm([[G, v], [0, 0]])`` shifts by ``V v`` with
        ``V = sum_k G^k / (k + 1)!``.
        """
        k = TRANSFORM_DOFS[model]
        angle = math.remainder(self.angle, 2 * math.pi) if k >= 3 else 0.0
        log_s = math.log(self.scale) if k >= 4 else 0.0
        g = torch.tensor([[log_s, -angle], [angle, log_s]], dtype=torch.float64)
        block = torch.zeros(4, 4, dtype=torch.float64)
        block[:2, :2], block[:2, 2:] = g, torch.eye(2, dtype=torch.float64)
        v_matrix = torch.linalg.matrix_exp(block)[:2, 2:]
        out = torch.zeros(k, dtype=torch.float64)
        out[:2] = torch.linalg.solve(v_matrix, self.shift.double())
        if k >= 3:
            out[2] = angle
        if k >= 4:
            out[3] = log_s
        return out.float()


def linear_matrices(angles: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``s R(angle)`` for every angle x scale. ``N x 2 x 2`` float64."""
    a = angles.double().view(-1, 1)
    s = scales.double().view(1, -1)
    c, sn = torch.cos(a) * s, torch.sin(a) * s  # A x S
    return torch.stack([torch.stack([c, -sn], -1), torch.stack([sn, c], -1)], -2).reshape(-1, 2, 2)


def quantise(values: torch.Tensor, mask: torch.Tensor, bins: int) -> torch.Tensor:
    """Equal-population bin index (``0 .. bins-1``) of each value, quantiles taken over ``mask``. Same shape, long."""
    sample = values[mask]
    if sample.numel() > 20000:  # quantiles of a subsample: same bins, less sorting
        sample = sample[torch.linspace(0, sample.numel() - 1, 20000).long()]
    edges = torch.quantile(sample.float(), torch.linspace(0, 1, bins + 1)[1:-1])
    return torch.bucketize(values.contiguous(), edges.contiguous())


def _entropy(counts: torch.Tensor, total: torch.Tensor, dim) -> torch.Tensor:
    p = counts / total
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim)


def nmi_all_shifts(fixed_onehot: torch.Tensor, canvas_onehot: torch.Tensor, min_count: float) -> torch.Tensor:
    """NMI ``(H(A) + H(B)) / H(A, B)`` of the overlap for every circular shift of the canvases.

    Args:
        fixed_onehot: ``Bf x P x Q``: bin indicators of the fixed level (zero outside its mask), zero-padded.
        canvas_onehot: ``N x Bm x P x Q``: bin indicators of each candidate's moving canvas (zero where invalid).
        min_count: shifts whose overlap has fewer samples score ``-inf``.

    Returns:
        ``N x P x Q``: NMI when the canvas is shifted by ``(dy, dx)`` (index ``[dy, dx]``, circular).
    """
    p, q = fixed_onehot.shape[-2:]
    f_hat = torch.fft.rfft2(fixed_onehot)  # Bf x P x Q'
    m_hat = torch.fft.rfft2(canvas_onehot)  # N x Bm x P x Q'
    # joint[n, a, b, t] = sum_x F_a(x) W_b(x + t)
    joint = torch.fft.irfft2(f_hat.conj()[None, :, None] * m_hat[:, None], s=(p, q)).clamp_min_(0)
    total = joint.sum((1, 2))  # N x P x Q
    h_joint = _entropy(joint, total[:, None, None], (1, 2))
    h_fixed = _entropy(joint.sum(2), total[:, None], 1)
    h_moving = _entropy(joint.sum(1), total[:, None], 1)
    nmi = (h_fixed + h_moving) / h_joint.clamp_min(1e-9)
    return torch.where(total >= min_count, nmi, torch.full_like(nmi, float("-inf")))


def _gray(image: torch.Tensor) -> torch.Tensor:
    return image.mean(0)


def search_linear_and_shift(
    fixed_level: torch.Tensor,
    fixed_mask: torch.Tensor,
    moving_level: torch.Tensor,
    moving_valid: Optional[torch.Tensor],
    fixed_hw: Sequence[int],
    moving_hw: Sequence[int],
    scale: float,
    angles: torch.Tensor,
    scales: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    max_shift: float = 0.5,
    bins: int = 8,
    min_overlap: float = 0.5,
    chunk: int = 8,
    measure: str = "ngf",
    standardise: bool = False,
) -> List[Candidate]:
    """For each linear part ``A = scale R(angle)``, the best shift and its NMI.

    Args:
        fixed_level, moving_level: ``C x h x w`` / ``C x h' x w'`` pyramid levels of the same index.
        fixed_mask: ``h x w`` bool (pixels that count); moving_valid: ``h' x w'`` in [0, 1] or None.
        fixed_hw, moving_hw, scale: full-resolution sizes and pixels per normalised unit.
        angles, scales: ``N`` each: the linear parts ``A = scale R(angle)``; ``offsets``: ``N x 2``
            translations ``b0`` (default 0: the image centres meet). The searched transforms are ``p_m = A (p_f + t) + b0`` (normalised frames) for
            every shift ``t`` of up to ``max_shift`` times the fixed level's size on each axis (at most 0.5).
        min_overlap: a shift must keep this fraction of the fixed mask on valid moving pixels.

    Returns:
        ``N`` candidates (in the order of ``linears``).
    """
    h, w = fixed_level.shape[-2:]
    pad_y, pad_x = int(math.ceil(h * max_shift)), int(math.ceil(w * max_shift))
    p, q = h + 2 * pad_y, w + 2 * pad_x
    angles, scales = angles.double().reshape(-1), scales.double().reshape(-1)
    linears = linear_matrices(angles, torch.ones(1)) * scales.view(-1, 1, 1)  # N x 2 x 2
    offsets = torch.zeros(linears.shape[0], 2, dtype=torch.float64) if offsets is None else offsets.double()

    min_count = min_overlap * float(fixed_mask.sum())
    moving_gray = _gray(moving_level)
    valid = torch.ones_like(moving_gray) if moving_valid is None else moving_valid.to(moving_gray)
    if measure == "nmi":
        fixed_bins = quantise(_gray(fixed_level), fixed_mask, bins)
        fixed_stack = torch.zeros(bins, p, q)
        fixed_stack[:, pad_y:pad_y + h, pad_x:pad_x + w] = F.one_hot(fixed_bins, bins).permute(2, 0, 1).float()
        moving_mask = valid > 0.5
        if int(moving_mask.sum()) < bins:
            moving_mask = torch.ones_like(moving_mask)
        moving_bins = quantise(moving_gray, moving_mask, bins)
        moving_stack = torch.cat([F.one_hot(moving_bins, bins).permute(2, 0, 1).float(), valid[None]])
    else:
        fixed_stack = torch.zeros(3, p, q)
        fixed_stack[:, pad_y:pad_y + h, pad_x:pad_x + w] = gradient_features(_gray(fixed_level), fixed_mask.float())
        moving_stack = torch.stack([moving_gray, valid])
    fixed_stack[:, pad_y:pad_y + h, pad_x:pad_x + w] *= fixed_mask.float()
    fixed_valid = torch.zeros(p, q)
    fixed_valid[pad_y:pad_y + h, pad_x:pad_x + w] = fixed_mask.float()

    # Canvas pixel (i, j) -> fixed level pixel (j - pad_x, i - pad_y) -> fixed normalised frame.
    px_norm = 2.0 * pair_half(fixed_hw, scale)[0] / w, 2.0 * pair_half(fixed_hw, scale)[1] / h  # norm units / level px
    ys = (torch.arange(p, dtype=torch.float64) - pad_y + 0.5) * px_norm[1] - pair_half(fixed_hw, scale)[1]
    xs = (torch.arange(q, dtype=torch.float64) - pad_x + 0.5) * px_norm[0] - pair_half(fixed_hw, scale)[0]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    canvas_norm = torch.stack([gx, gy], -1).reshape(-1, 2)  # PQ x 2, fixed normalised
    to_grid = grid_trans_norm(moving_hw, scale)[:2, :2].diagonal()  # moving normalised -> grid_sample, per axis

    out: List[Candidate] = []
    for start in range(0, linears.shape[0], chunk):
        a = linears[start:start + chunk]  # n x 2 x 2
        b0 = offsets[start:start + chunk]  # n x 2
        moving_norm = canvas_norm[None] @ a.transpose(1, 2) + b0[:, None]  # n x PQ x 2
        grid = (moving_norm * to_grid).float().view(-1, p, q, 2)
        warped = F.grid_sample(moving_stack[None].expand(grid.shape[0], -1, -1, -1), grid, mode="bilinear",
                               padding_mode="zeros", align_corners=False)  # n x (B+1 | 2) x P x Q
        canvas_valid = (warped[:, -1] > 0.5).float()
        if measure == "nmi":
            nmi = nmi_all_shifts(fixed_stack, warped[:, :-1] * canvas_valid[:, None], min_count)  # n x P x Q
        else:
            features = gradient_features(warped[:, 0], warped[:, 1])
            nmi = ngf_all_shifts(fixed_stack, fixed_valid, features, canvas_valid, min_count)
        # Shifts beyond the padding wrap around the canvas: exclude them.
        dy = torch.arange(p)
        dy = torch.where(dy > p // 2, dy - p, dy)
        dx = torch.arange(q)
        dx = torch.where(dx > q // 2, dx - q, dx)
        allowed = (dy.abs() <= pad_y)[:, None] & (dx.abs() <= pad_x)[None, :]
        nmi = torch.where(allowed, nmi, torch.full_like(nmi, float("-inf")))
        flat = nmi.reshape(nmi.shape[0], -1)
        best = flat.argmax(1)
        if standardise:  # how far the best shift stands out from all shifts: removes each scale's own baseline
            finite = torch.isfinite(flat)
            count = finite.sum(1).clamp_min(2)
            zero = torch.zeros_like(flat)
            mean = torch.where(finite, flat, zero).sum(1) / count
            std = (torch.where(finite, (flat - mean[:, None]) ** 2, zero).sum(1) / (count - 1)).sqrt().clamp_min(1e-9)
            flat = (flat - mean[:, None]) / std[:, None]
        for k in range(nmi.shape[0]):
            iy, ix = int(best[k]) // q, int(best[k]) % q
            t = torch.tensor([float(dx[ix]) * px_norm[0], float(dy[iy]) * px_norm[1]], dtype=torch.float64)
            i = start + k
            out.append(Candidate(float(angles[i]), float(scales[i]), a[k] @ t + b0[k], float(flat[k, best[k]])))
    return out


def pair_half(fixed_hw: Sequence[int], scale: float):
    """Half the fixed image's width and height in normalised units (its edges are at +-these)."""
    return int(fixed_hw[1]) / 2.0 / scale, int(fixed_hw[0]) / 2.0 / scale


def _shrink(image: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool a ``C x h x w`` (or ``h x w``) tensor until its long side is at most ``size``."""
    factor = int(math.ceil(max(image.shape[-2:]) / size))
    if factor <= 1:
        return image
    x = image if image.dim() == 3 else image[None]
    x = F.avg_pool2d(x[None].float(), factor, ceil_mode=True)[0]
    return x if image.dim() == 3 else x[0]


def _level(pyramid: Sequence[torch.Tensor], size: int) -> int:
    """Index of the finest level whose long side is at most ``size`` (the coarsest when none is)."""
    return next((i for i, img in enumerate(pyramid) if max(img.shape[-2:]) <= size), len(pyramid) - 1)


@dataclass
class SearchLevel:
    """One pair of images to score candidates on: the fixed level and mask, the moving level and validity, both
    reduced to a long side of about ``size`` pixels (same pixel size, as pyramid levels of the same index)."""

    fixed: torch.Tensor
    mask: torch.Tensor
    moving: torch.Tensor
    valid: Optional[torch.Tensor]

    @classmethod
    def make(cls, fixed_pyramid, fixed_masks, moving_pyramid, moving_valid, size: int) -> "SearchLevel":
        i = min(_level(fixed_pyramid, size), len(moving_pyramid) - 1)
        # The same pooling factor for both images keeps their pixel sizes equal.
        factor = max(1, int(math.ceil(max(fixed_pyramid[i].shape[-2:]) / size)))
        shrink = lambda x: x if factor == 1 else _shrink(x, int(math.ceil(max(x.shape[-2:]) / factor)))  # noqa: E731
        mask = shrink(fixed_masks[i].float()) > 0.5
        valid = None if moving_valid is None else shrink(moving_valid[i].float())
        return cls(shrink(fixed_pyramid[i]), mask, shrink(moving_pyramid[i]), valid)

    def prepared(self, fixed_hw, scale: float, bins: int):
        """What :func:`score_matrices` needs, computed once per level: the mask's pixel centres (``P x 3``, fixed
        normalised, homogeneous), their fixed bins (``P``), the moving gray level stacked with its validity
        (``2 x h' x w'``) and the moving bins' edges."""
        key = (bins, float(scale))
        if getattr(self, "_cache", (None,))[0] != key:
            h, w = self.fixed.shape[-2:]
            half_x, half_y = pair_half(fixed_hw, scale)
            ys, xs = torch.nonzero(self.mask, as_tuple=True)
            points = torch.stack([(xs.double() + 0.5) * 2 * half_x / w - half_x,
                                  (ys.double() + 0.5) * 2 * half_y / h - half_y,
                                  torch.ones(xs.numel(), dtype=torch.float64)], -1)
            fixed_bins = quantise(_gray(self.fixed), self.mask, bins)[ys, xs]
            gray = _gray(self.moving)
            valid = torch.ones_like(gray) if self.valid is None else self.valid.to(gray)
            use = valid > 0.5
            sample = _sample(gray[use] if int(use.sum()) >= bins else gray.reshape(-1)).float()
            edges = torch.quantile(sample, torch.linspace(0, 1, bins + 1)[1:-1])
            self._cache = (key, (points, fixed_bins, torch.stack([gray, valid]), edges))
        return self._cache[1]


def score_matrices(level: SearchLevel, matrices: torch.Tensor, fixed_hw, moving_hw, scale: float, bins: int,
                   min_overlap: float = 0.5, measure: str = "ngf") -> torch.Tensor:
    """NMI (or mean NGF) of the fixed level's masked pixels and the moving level sampled through each matrix.

    Args:
        matrices: ``N x 3 x 3`` ``moving_norm_trans_fixed_norm``.

    Returns:
        ``N`` scores (``-inf`` where less than ``min_overlap`` of the mask lands on valid moving pixels).
    """
    if measure == "ngf":
        return _ngf_matrices(level, matrices, fixed_hw, moving_hw, scale, min_overlap)
    points, fixed_bins, moving_stack, edges = level.prepared(fixed_hw, scale, bins)
    mapped = points[None] @ matrices.transpose(1, 2)  # N x P x 3
    to_grid = grid_trans_norm(moving_hw, scale)[:2, :2].diagonal()
    grid = (mapped[..., :2] / mapped[..., 2:3] * to_grid).float()  # N x P x 2
    n = matrices.shape[0]
    sampled = F.grid_sample(moving_stack[None].expand(n, -1, -1, -1), grid[:, None], mode="bilinear",
                            padding_mode="zeros", align_corners=False)[:, :, 0]  # N x 2 x P
    weight = (sampled[:, 1] > 0.5).float()
    moving_bins = torch.bucketize(sampled[:, 0].contiguous(), edges.contiguous())  # N x P
    index = (torch.arange(n)[:, None] * bins + fixed_bins[None]) * bins + moving_bins
    joint = torch.bincount(index.reshape(-1), weight.reshape(-1), minlength=n * bins * bins).view(n, bins, bins)
    total = joint.sum((1, 2))
    h_joint = _entropy(joint, total[:, None, None], (1, 2))
    nmi = (_entropy(joint.sum(2), total[:, None], 1) + _entropy(joint.sum(1), total[:, None], 1)) / h_joint.clamp_min(1e-9)
    return torch.where(total >= min_overlap * points.shape[0], nmi, torch.full_like(nmi, float("-inf")))


def _ngf_matrices(level: SearchLevel, matrices: torch.Tensor, fixed_hw, moving_hw, scale: float,
                  min_overlap: float) -> torch.Tensor:
    h, w = level.fixed.shape[-2:]
    half_x, half_y = pair_half(fixed_hw, scale)
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * 2 * half_y / h - half_y
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * 2 * half_x / w - half_x
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx, gy, torch.ones_like(gx)], -1).reshape(-1, 3)  # hw x 3
    mapped = points[None] @ matrices.transpose(1, 2)
    to_grid = grid_trans_norm(moving_hw, scale)[:2, :2].diagonal()
    grid = (mapped[..., :2] / mapped[..., 2:3] * to_grid).float().view(-1, h, w, 2)
    gray = _gray(level.moving)
    valid = torch.ones_like(gray) if level.valid is None else level.valid.to(gray)
    n = matrices.shape[0]
    warped = F.grid_sample(torch.stack([gray, valid])[None].expand(n, -1, -1, -1), grid, mode="bilinear",
                           padding_mode="zeros", align_corners=False)  # N x 2 x h x w
    mask = level.mask.float()
    fixed_features = gradient_features(_gray(level.fixed), mask) * mask
    moving_features = gradient_features(warped[:, 0], warped[:, 1])
    overlap = mask * (warped[:, 1] > 0.5).float()  # N x h x w
    agreement = (fixed_features[None] * moving_features).sum((1, 2, 3))
    count = overlap.sum((1, 2))
    score = agreement / count.clamp_min(1.0)
    return torch.where(count >= min_overlap * mask.sum(), score, torch.full_like(score, float("-inf")))


def _sample(values: torch.Tensor, limit: int = 20000) -> torch.Tensor:
    return values if values.numel() <= limit else values[torch.linspace(0, values.numel() - 1, limit).long()]


def compass_search(level: SearchLevel, starts: Sequence[Candidate], steps: Sequence[float], fixed_hw, moving_hw,
                   scale: float, bins: int, iterations: int = 12, measure: str = "ngf") -> List[Candidate]:
    """Local refinement of every start at once by compass search over (angle, log scale, shift x, shift y).

    Each iteration scores every start and its 8 neighbours one step away along each axis (a zero step keeps an
    axis fixed); a start moves to its best neighbour when that scores higher, else its steps halve.
    """
    params = torch.tensor([[c.angle, math.log(c.scale), float(c.shift[0]), float(c.shift[1])] for c in starts],
                          dtype=torch.float64)  # S x 4
    step = torch.tensor(steps, dtype=torch.float64).expand_as(params).clone()
    moves = torch.cat([torch.zeros(1, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64),
                       -torch.eye(4, dtype=torch.float64)])  # 9 x 4
    score = torch.full((params.shape[0],), float("-inf"), dtype=torch.float64)
    # The scale stays within two steps of where it started: left free, a zoom into a detail can outscore the truth.
    lo, hi = params[:, 1:2] - 2 * step[:, 1:2], params[:, 1:2] + 2 * step[:, 1:2]
    for _ in range(iterations):
        trial = params[:, None] + moves[None] * step[:, None]  # S x 9 x 4
        trial[..., 1] = torch.minimum(torch.maximum(trial[..., 1], lo), hi)
        scores = score_matrices(level, _similarity(trial.reshape(-1, 4)), fixed_hw, moving_hw, scale, bins,
                                measure=measure)
        scores = scores.view(-1, 9).double()
        best = scores.argmax(1)
        improved = scores[torch.arange(len(best)), best] > scores[:, 0]
        params = torch.where(improved[:, None], trial[torch.arange(len(best)), best], params)
        score = torch.maximum(scores[:, 0], scores.max(1).values)
        step = torch.where(improved[:, None], step, step / 2)
    return [Candidate(float(p[0]), float(math.exp(p[1])), p[2:].clone(), float(s)) for p, s in zip(params, score)]


def _similarity(params: torch.Tensor) -> torch.Tensor:
    """``N x 4`` (angle, log scale, shift x, shift y) -> ``N x 3 x 3``."""
    m = torch.zeros(params.shape[0], 3, 3, dtype=torch.float64)
    s = params[:, 1].exp()
    c, sn = torch.cos(params[:, 0]) * s, torch.sin(params[:, 0]) * s
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -sn, sn, c
    m[:, :2, 2] = params[:, 2:]
    m[:, 2, 2] = 1.0
    return m


#: Stages of :func:`global_search`: (long side in pixels, intensity bins).
STAGES = ((32, 6), (64, 8), (128, 8))


def global_search(
    fixed_pyramid: Sequence[torch.Tensor],
    fixed_masks: Sequence[torch.Tensor],
    moving_pyramid: Sequence[torch.Tensor],
    moving_valid: Optional[Sequence[torch.Tensor]],
    fixed_hw: Sequence[int],
    moving_hw: Sequence[int],
    scale: float,
    model: str,
    seeds: Sequence[Candidate] = (),
    angle_step_deg: float = 15.0,
    scale_range: Sequence[float] = (0.5, 2.0),
    scale_steps: int = 5,
    keep: Sequence[int] = (8, 3),
    measure: str = "ngf",
) -> List[Candidate]:
    """Coarse-to-fine search for the initial similarity transform.

    1. On a ~32 px copy: every rotation in steps of ``angle_step_deg`` (models with rotation), ``scale_steps``
       scales in ``scale_range`` (similarity and up), every shift up to half the image (by FFT).
    2. On a ~64 px level: compass search from the ``keep[0]`` best distinct candidates and the ``seeds``
       (identity, moments), steps of half the grid's.
    3. On a ~128 px level: compass search from the ``keep[1]`` best, steps halved again.

    Returns:
        The final candidates, best first.
    """
    dofs = TRANSFORM_DOFS[model]
    step = math.radians(angle_step_deg)
    angles = torch.arange(0.0, 2 * math.pi - 1e-9, step, dtype=torch.float64) if dofs >= 3 else torch.zeros(1)
    if dofs >= 4 and scale_steps > 1:
        scales = torch.logspace(math.log10(scale_range[0]), math.log10(scale_range[1]), scale_steps,
                                dtype=torch.float64)
        log_ratio = math.log(scale_range[1] / scale_range[0]) / (scale_steps - 1)
    else:
        scales, log_ratio = torch.ones(1, dtype=torch.float64), 0.0
    grid_a, grid_s = torch.meshgrid(angles, scales, indexing="ij")
    levels = [SearchLevel.make(fixed_pyramid, fixed_masks, moving_pyramid, moving_valid, size) for size, _ in STAGES]
    first = levels[0]
    found = search_linear_and_shift(first.fixed, first.mask, first.moving, first.valid, fixed_hw, moving_hw, scale,
                                    grid_a.reshape(-1), grid_s.reshape(-1), bins=STAGES[0][1],
                                    measure=measure, standardise=True)
    starts = _best_distinct(found, keep[0], step, log_ratio) + list(seeds)
    shift_step = 2.0 * max(pair_half(fixed_hw, scale)) / max(first.fixed.shape[-2:])  # one coarse pixel
    for stage, (level, (_, bins)) in enumerate(zip(levels[1:], STAGES[1:])):
        step, log_ratio, shift_step = step / 2, log_ratio / 2, shift_step / 2
        steps = [step if dofs >= 3 else 0.0, log_ratio if dofs >= 4 else 0.0, shift_step, shift_step]
        refined = compass_search(level, starts, steps, fixed_hw, moving_hw, scale, bins, measure=measure)
        symmetric_scores(level, refined, fixed_hw, moving_hw, scale)
        refined.sort(key=lambda c: c.score, reverse=True)
        starts = refined[: keep[stage + 1]] if stage + 1 < len(keep) else refined
    return starts


def symmetric_scores(level: SearchLevel, candidates: List[Candidate], fixed_hw, moving_hw, scale: float) -> None:
    """Re-score candidates (in place) by the mean of NGF both ways: fixed vs warped moving, and moving vs fixed
    warped by the inverse. One way alone favours zooming into one image (fewer, smoother edges to disagree with);
    both ways cancel that."""
    matrices = torch.stack([c.matrix for c in candidates])
    forward = score_matrices(level, matrices, fixed_hw, moving_hw, scale, 0)
    valid = torch.ones(level.moving.shape[-2:]) if level.valid is None else level.valid
    swapped = SearchLevel(level.moving, valid > 0.5, level.fixed, level.mask.float())
    backward = score_matrices(swapped, torch.linalg.inv(matrices), moving_hw, fixed_hw, scale, 0)
    for c, f, b in zip(candidates, forward, backward):
        c.score = float(0.5 * (f + b))


def _best_distinct(found: Sequence[Candidate], count: int, angle_step: float, log_ratio: float) -> List[Candidate]:
    """The ``count`` best candidates, skipping near-duplicates of a better one (within 1.5 grid steps)."""
    picked: List[Candidate] = []
    for c in sorted(found, key=lambda c: c.score, reverse=True):
        if all(_distinct(c, p, angle_step, log_ratio) for p in picked):
            picked.append(c)
        if len(picked) >= count:
            break
    return picked


def _distinct(a: Candidate, b: Candidate, angle_step: float, log_ratio: float) -> bool:
    d_angle = abs(math.remainder(a.angle - b.angle, 2 * math.pi))
    d_scale = abs(math.log(a.scale / b.scale))
    d_shift = float((a.shift - b.shift).norm())
    return d_angle > 1.5 * angle_step or d_scale > 1.5 * log_ratio + 1e-9 or d_shift > 0.15


# ------------------------------------------------------------------------------------ normalised gradient fields
def gradient_features(gray: torch.Tensor, valid: torch.Tensor, eps_rel: float = 0.2) -> torch.Tensor:
    """Normalised-gradient features ``(nx^2, sqrt(2) nx ny, ny^2)`` of ``... x h x w`` images: ``... x 3 x h x w``.

    ``n = grad / sqrt(|grad|^2 + eps^2)`` with ``eps = eps_rel`` times the mean gradient magnitude, so that
    ``features(F) . features(M) = (n_F . n_M)^2``: the squared cosine between the two images' edge directions
    (Haber and Modersitzki's normalised gradient fields), blind to contrast inversion and to how intensities map,
    which is what multi-modal pairs share. Gradients next to invalid pixels are zero, so the border of the valid
    region (padding, a rotated image's corners) makes no edges.
    """
    gx = torch.zeros_like(gray)
    gy = torch.zeros_like(gray)
    gx[..., :, 1:-1] = (gray[..., :, 2:] - gray[..., :, :-2]) * 0.5
    gy[..., 1:-1, :] = (gray[..., 2:, :] - gray[..., :-2, :]) * 0.5
    inner = valid >= 0.999
    ok = inner.clone()
    ok[..., :, 1:-1] &= inner[..., :, 2:] & inner[..., :, :-2]
    ok[..., 1:-1, :] &= inner[..., 2:, :] & inner[..., :-2, :]
    ok[..., :, [0, -1]] = False
    ok[..., [0, -1], :] = False
    magnitude2 = gx * gx + gy * gy
    dims = tuple(range(-2, 0))
    mean = (magnitude2.sqrt() * ok).sum(dims, keepdim=True) / ok.sum(dims, keepdim=True).clamp_min(1)
    eps2 = (eps_rel * mean).clamp_min(1e-6) ** 2
    norm = torch.sqrt(magnitude2 + eps2)
    nx, ny = gx / norm * ok, gy / norm * ok
    return torch.stack([nx * nx, math.sqrt(2.0) * nx * ny, ny * ny], -3)


def ngf_all_shifts(fixed_features: torch.Tensor, fixed_mask: torch.Tensor, canvas_features: torch.Tensor,
                   canvas_valid: torch.Tensor, min_count: float) -> torch.Tensor:
    """Mean ``(n_F . n_M)^2`` over the overlap for every circular shift (index ``[dy, dx]``).

    Args:
        fixed_features: ``3 x P x Q`` (zero outside the mask, zero-padded); fixed_mask: ``P x Q`` float.
        canvas_features: ``N x 3 x P x Q``; canvas_valid: ``N x P x Q`` float.

    Returns:
        ``N x P x Q`` (``-inf`` where the overlap has fewer than ``min_count`` pixels).
    """
    p, q = fixed_mask.shape
    f_hat = torch.fft.rfft2(torch.cat([fixed_features, fixed_mask[None]]))  # 4 x P x Q'
    m_hat = torch.fft.rfft2(torch.cat([canvas_features, canvas_valid[:, None]], 1))  # N x 4 x P x Q'
    both = torch.stack([(f_hat[:3].conj()[None] * m_hat[:, :3]).sum(1), f_hat[3].conj()[None] * m_hat[:, 3]], 1)
    agreement, count = torch.fft.irfft2(both, s=(p, q)).unbind(1)  # N x P x Q each
    score = agreement / count.clamp_min(1.0)
    return torch.where(count >= min_count, score, torch.full_like(score, float("-inf")))
