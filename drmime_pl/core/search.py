"""Global search for the initial transform: every rotation, a range of scales and every shift, scored at once.

MINE's gradient only sees a few degrees and a few percent of the image around where it starts, while real pairs
differ by up to 90 degrees (remote sensing), a scale of 0.5-2 or a third of the image (fundus vs angiography). So
the optimisation starts from the best of many similarity transforms ``p_m = s R(angle) p_f + shift``, scored by
normalised gradient fields (:mod:`drmime_pl.core.ngf`), which need no training.

1. On ~128, ~64 and ~32 px copies, every angle (7.5 degree steps) x scale of a grid, each with *every* shift up to
   half the image. For a linear part ``A``, the moving image is resampled on a canvas in the fixed image's frame,
   ``W(y) = M(A y)``, twice the fixed image's size; a shift ``t`` of the canvas is the transform
   ``p_m = A (p_f + t)``, and NGF for every shift is one FFT cross-correlation. A candidate's score is how far its
   best shift stands out from all its shifts (a z-score), which removes the baseline that differs between scales.
   The edge features are *centred* (:func:`~drmime_pl.core.ngf.gradient_features`): between modalities (optical
   and infrared, depth or night images) only the co-variation of edge directions marks the truth. Each level
   contributes its best candidates: the finer ones resolve angles to a few degrees, which cross-modal pairs need,
   the 32 px one (also with plain, uncentred NGF, as before) tolerates the scale grid's coarseness.
   Last, the finest level again at the angles half a step between the grid's, next to its best 30% of
   candidates: a truth between two grid angles may not stand out on the grid itself.
2. The best few of each level (and the ``seeds``: identity, the moments estimate) are refined by compass search
   on ~64 and ~128 px levels and ranked by centred NGF taken both ways. Only the best 4 of the ~64 px refinement
   go on to the ~128 px one, besides each level's best, the finest level's best three and the seeds.

Convention: matrices are ``moving_norm_trans_fixed_norm`` (normalised frames of :mod:`drmime_pl.core.geometry`),
float64 ``3 x 3``; angles in radians, x towards y.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch

from .geometry import TRANSFORM_DOFS
from .ngf import (Level, fft_size, gradient_features, half_extent, ngf, ngf_all_shifts, shift_spectra,
                  symmetric_ngf)
from .tasks import count as task_count
from .tasks import split, together

#: Stage 1's levels (long side, pixels) and whether their edge features are centred, finest first. Each contributes
#: its own best candidates: finer levels resolve detail that lines up only within a few degrees; the coarsest
#: tolerates a scale between the grid's steps.
SHIFT_STAGES = ((128, True), (64, True), (32, True), (32, False))
#: How many of the finest level's best distinct candidates go on to the end of the refinement, past the coarser
#: levels' ranking (each other level's best one does). Fine texture (a city seen in optical and infrared) stands out
#: only at ~128 px: on one SRIF optical/infrared pair the truth ranked second there, and the ~64 px refinement,
#: where it does not stand out, dropped it (tenth round, benchmarks/RESULTS.md).
ALWAYS_FROM_FINEST = 3
#: After them, the finest level again, half a grid step off the angles of its best 30% of candidates: its detail
#: lines up only within a few degrees (on one SRIF optical/infrared pair, z 13 at the true angle, 9 at 1.25 degrees
#: from it and 4 on the grid 2.5 degrees away, 65th of 240). The eighth round (a fifth) gained two SRIF depth pairs,
#: the tenth (30%) an optical/infrared one; none lost (benchmarks/RESULTS.md).
BETWEEN_FRACTION = 0.3
#: ... and of the levels of the compass refinement (stage 2) that follows, which also scores centred features: on
#: 52 probe pairs the final pick was within 5% rTRE of the truth for 36 with them, 25 without.
REFINE_SIZES = (64, 128)
REFINE_CENTRED = True
#: Scales of stage 1's grid, evenly in log over 0.5-2: 41% apart, so a truth between two of them is up to 19% off
#: the nearest (the compass refinement then reaches it, or not).
SCALE_STEPS = 5
#: ... and the finer grid the further opinions on a suspect result search (``model.second_opinion`` on a 256 px
#: image, ``model.candidate_opinion``): 19% apart. As the first search, it lost 4 of the 202 real benchmark pairs
#: for 2 gained (and took 22% longer); as an opinion, where the first search failed, it gained 2 and lost none
#: (nineteenth round, benchmarks/RESULTS.md).
FINE_SCALE_STEPS = 9


@dataclass
class Candidate:
    """A similarity ``p_m = scale R(angle) p_f + shift`` (normalised frames) and its ``score``."""

    angle: float  # radians, x towards y
    scale: float
    shift: torch.Tensor  # 2, float64
    score: float = float("-inf")

    @property
    def matrix(self) -> torch.Tensor:
        """``moving_norm_trans_fixed_norm``, ``3 x 3`` float64."""
        return similarity_matrices(torch.tensor([[self.angle, math.log(self.scale), *self.shift.tolist()]],
                                                dtype=torch.float64))[0]

    def coefficients(self, model: str) -> torch.Tensor:
        """Matrix-exponential coefficients of this similarity for ``model`` (``K`` float32).

        In closed form, not by a matrix logarithm, so that rotations near 180 degrees are exact: the linear part
        is ``expm(G)`` with ``G = log(s) I + angle J``, and ``expm([[G, v], [0, 0]])`` shifts by ``V v`` with
        ``V = sum_k G^k / (k + 1)!``, the top-right block of ``expm([[G, I], [0, 0]])``. Models without rotation
        or scale drop those parts.
        """
        k = TRANSFORM_DOFS[model]
        angle = math.remainder(self.angle, 2 * math.pi) if k >= 3 else 0.0
        log_s = math.log(self.scale) if k >= 4 else 0.0
        block = torch.zeros(4, 4, dtype=torch.float64)
        block[:2, :2] = torch.tensor([[log_s, -angle], [angle, log_s]], dtype=torch.float64)
        block[:2, 2:] = torch.eye(2, dtype=torch.float64)
        v_matrix = torch.linalg.matrix_exp(block)[:2, 2:]
        out = torch.zeros(k, dtype=torch.float64)
        out[:2] = torch.linalg.solve(v_matrix, self.shift.double())
        if k >= 3:
            out[2] = angle
        if k >= 4:
            out[3] = log_s
        return out.float()


def similarity_matrices(params: torch.Tensor) -> torch.Tensor:
    """``N x 4`` (angle, log scale, shift x, shift y) -> ``N x 3 x 3`` float64."""
    params = params.double()
    m = torch.zeros(params.shape[0], 3, 3, dtype=torch.float64)
    s = params[:, 1].exp()
    c, sn = torch.cos(params[:, 0]) * s, torch.sin(params[:, 0]) * s
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -sn, sn, c
    m[:, :2, 2] = params[:, 2:]
    m[:, 2, 2] = 1.0
    return m


def best_shifts(level: Level, angles: torch.Tensor, scales: torch.Tensor, max_shift: float = 0.5,
                min_overlap: float = 0.5, chunk: int = 8, centred: bool = True) -> List[Candidate]:
    """For each linear part ``A = scale R(angle)`` (``N`` each), the shift with the highest NGF, every shift up to
    ``max_shift`` times the fixed level's size on each axis (at most 0.5) being tried by FFT.

    The candidates' scores are z-scores: (best NGF - mean over all shifts) / their standard deviation. NGF is of
    centred edge features (:func:`~drmime_pl.core.ngf.gradient_features`) unless ``centred`` is False.
    """
    h, w = level.fixed.shape[-2:]
    pad_y, pad_x = int(math.ceil(h * max_shift)), int(math.ceil(w * max_shift))
    p, q = h + 2 * pad_y, w + 2 * pad_x
    fft_hw = (fft_size(p), fft_size(q))  # zero-padded beyond the canvas: the same scores, a faster FFT
    mask = level.mask.float()
    fixed_level_features = level.fixed_features(centred)
    fixed_features = torch.zeros(fixed_level_features.shape[0], p, q)
    fixed_features[:, pad_y:pad_y + h, pad_x:pad_x + w] = fixed_level_features
    fixed_mask = torch.zeros(p, q)
    fixed_mask[pad_y:pad_y + h, pad_x:pad_x + w] = mask
    fixed_count = float(mask.sum())
    fixed_spectra = shift_spectra(fixed_features, fixed_mask, fft_hw)  # once for every candidate

    # Canvas pixel (i, j) = fixed level pixel (j - pad_x, i - pad_y), in the fixed normalised frame.
    norm_trans_pix = level.fixed_norm_trans_pix()
    step_x, step_y = float(norm_trans_pix[0, 0]), float(norm_trans_pix[1, 1])  # normalised units per level pixel
    ys = (torch.arange(p, dtype=torch.float64) - pad_y) * step_y + norm_trans_pix[1, 2]
    xs = (torch.arange(q, dtype=torch.float64) - pad_x) * step_x + norm_trans_pix[0, 2]
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    canvas = torch.stack([gx, gy], -1)  # P x Q x 2
    # Circular shifts beyond the padding wrap around: not allowed. Only the allowed ones are scored further, as
    # flat indices into the FFT's output and the shifts (normalised units) they stand for.
    dy = torch.arange(fft_hw[0])
    dy = torch.where(dy > fft_hw[0] // 2, dy - fft_hw[0], dy)
    dx = torch.arange(fft_hw[1])
    dx = torch.where(dx > fft_hw[1] // 2, dx - fft_hw[1], dx)
    allowed = ((dy.abs() <= pad_y)[:, None] & (dx.abs() <= pad_x)[None, :]).flatten().nonzero().squeeze(1)
    allowed_shift = torch.stack([dx.double().repeat(fft_hw[0]) * step_x,
                                 dy.double().repeat_interleave(fft_hw[1]) * step_y], 1)[allowed]  # K x 2

    angles, scales = angles.double().reshape(-1), scales.double().reshape(-1)
    primaries, partner = _half_turn_partners(angles, scales)

    def score_chunk(ids: List[int]) -> List[Tuple[int, Candidate]]:
        """``(index, candidate)`` of the linear parts ``ids`` (primaries) and of their half-turn partners."""
        warped = level.warp_moving(torch.einsum("pqj,nij->npqi", canvas, _linear_parts(angles[ids], scales[ids])))
        features = gradient_features(warped[:, 0], warped[:, 1], centred=centred)  # n x 3 x P x Q
        valid = (warped[:, 1] > 0.5).float()
        spectra = shift_spectra(features, valid, fft_hw)
        # At least min_overlap of the smaller image (as ngf.overlap_needed): the canvas holds the moving image's
        # valid pixels in fixed-level pixels.
        min_count = min_overlap * torch.clamp(valid.sum((1, 2)), max=fixed_count)[:, None]
        score = ngf_all_shifts(fixed_spectra, spectra, fft_hw, min_count, keep=allowed)  # n x K
        # The canvas is centred on the fixed image, so half a turn more is the same canvas flipped both ways,
        # W_{angle + pi}(y) = W_angle(-y), and the edge features (squares of the normal) flip with it: no warp, and
        # no FFT either (ngf_all_shifts' half_turn).
        with_partner = [k for k, i in enumerate(ids) if partner[i] >= 0]
        if with_partner:
            some = with_partner if len(with_partner) < len(ids) else slice(None)
            turned = ngf_all_shifts(fixed_spectra, spectra[some], fft_hw, min_count[some], keep=allowed,
                                    half_turn=(p, q))
            score = torch.cat([score, turned])
            ids = ids + [partner[ids[k]] for k in with_partner]
        finite = torch.isfinite(score)
        count = finite.sum(1).clamp_min(2)
        values = torch.where(finite, score, torch.zeros_like(score))
        mean = values.sum(1) / count
        std = (torch.where(finite, (score - mean[:, None]) ** 2, torch.zeros_like(score)).sum(1) / (count - 1)).sqrt()
        top, best = score.max(1)
        z = ((top.double() - mean.double()) / std.double().clamp_min(1e-9)).tolist()
        shifts = torch.einsum("nij,nj->ni", _linear_parts(angles[ids], scales[ids]), allowed_shift[best])
        return [(i, Candidate(float(angles[i]), float(scales[i]), shifts[k], z[k])) for k, i in enumerate(ids)]

    chunks = [primaries[start:start + chunk] for start in range(0, len(primaries), chunk)]
    # Whole chunks shared between the task threads (core/tasks.py): the same arithmetic as one after the other.
    parts = together(*[lambda part=part: [pair for ids in part for pair in score_chunk(ids)]
                       for part in split(chunks, task_count())])
    out: List[Candidate] = [None] * angles.numel()  # type: ignore[list-item]  (filled in the input's order)
    for part in parts:
        for i, candidate in part:
            out[i] = candidate
    return out


def _linear_parts(angles: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``scale R(angle)`` for ``N`` angles and scales: ``N x 2 x 2`` float64."""
    zeros = torch.zeros_like(angles)
    return similarity_matrices(torch.stack([angles, scales.log(), zeros, zeros], 1))[:, :2, :2]


def _half_turn_partners(angles: torch.Tensor, scales: torch.Tensor):
    """Indices to warp (``primaries``) and, for each index, the one half a turn away at the same scale that reuses its
    warp (``partner[i]``, -1: none). Every index is a primary or a primary's partner."""
    turn = round(2 * math.pi * 1e6)

    def key(angle: float, scale: float):
        return round((angle % (2 * math.pi)) * 1e6) % turn, round(scale, 9)

    index = {key(float(a), float(s)): i for i, (a, s) in enumerate(zip(angles, scales))}
    partner = [-1] * angles.numel()
    primaries, taken = [], set()
    for i in range(angles.numel()):
        if i in taken:
            continue
        taken.add(i)
        primaries.append(i)
        j = index.get(key(float(angles[i]) + math.pi, float(scales[i])))
        if j is not None and j not in taken:
            partner[i] = j
            taken.add(j)
    return primaries, partner


def compass_search(level: Level, starts: Sequence[Candidate], steps: Sequence[float],
                   iterations: int = 12) -> List[Candidate]:
    """Local refinement of every start at once by compass search on NGF over (angle, log scale, shift x, shift y).

    Each iteration scores the 8 neighbours of every start one step away along each axis (a zero step keeps an axis
    fixed); a start moves to its best neighbour when that scores higher than the start, else its steps halve. The
    scale stays within two steps of where it started: left free, zooming into a detail can outscore the truth.
    """
    params = torch.tensor([[c.angle, math.log(c.scale), float(c.shift[0]), float(c.shift[1])] for c in starts],
                          dtype=torch.float64)  # S x 4
    step = torch.tensor(steps, dtype=torch.float64).expand_as(params).clone()
    moves = torch.cat([torch.eye(4, dtype=torch.float64), -torch.eye(4, dtype=torch.float64)])  # 8 x 4
    lo, hi = params[:, 1:2] - 2 * step[:, 1:2], params[:, 1:2] + 2 * step[:, 1:2]
    score = ngf(level, similarity_matrices(params), centred=REFINE_CENTRED).double()  # S
    rows = torch.arange(params.shape[0])
    for _ in range(iterations):
        trial = params[:, None] + moves[None] * step[:, None]  # S x 8 x 4
        trial[..., 1] = torch.minimum(torch.maximum(trial[..., 1], lo), hi)
        matrices = similarity_matrices(trial.reshape(-1, 4))
        scores = torch.cat(together(*[lambda part=part: ngf(level, part, centred=REFINE_CENTRED)  # a part a thread
                                      for part in split(matrices, task_count())]))
        scores = scores.view(-1, 8).double()
        best = scores.argmax(1)
        improved = scores[rows, best] > score
        params = torch.where(improved[:, None], trial[rows, best], params)
        score = torch.where(improved, scores[rows, best], score)
        step = torch.where(improved[:, None], step, step / 2)
    return [Candidate(float(p[0]), float(math.exp(p[1])), p[2:].clone(), float(s)) for p, s in zip(params, score)]


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
    angle_step_deg: float = 7.5,
    scale_range: Sequence[float] = (0.5, 2.0),
    scale_steps: int = SCALE_STEPS,
    keep: Sequence[int] = (8, 4),
    exact_levels: bool = False,
) -> List[Candidate]:
    """Coarse-to-fine search for the initial similarity transform (see the module's docstring).

    Args:
        fixed_pyramid, moving_pyramid: ``C x H_l x W_l`` levels, finest first; fixed_masks: ``H_l x W_l`` bool;
            moving_valid: ``H_l x W_l`` in [0, 1] or None.
        fixed_hw, moving_hw, scale: full-resolution sizes, pixels per normalised unit.
        model: rotations are searched for models with one (rigid and up), scales for similarity and up.
        seeds: starts that always compete in the refinement (identity, moments).
        angle_step_deg, scale_range, scale_steps: the grid of stage 1 (:func:`search_grid`).
        keep: how many candidates of each level of stage 1 go on to the refinement, and how many of those from its
            first level to the next (besides the seeds and each level's best, which go on to the end).
        exact_levels: score on levels of exactly 128, 64 and 32 px (``Level.from_pyramids(exact=True)``) instead of
            the pyramid's levels at or below those sizes; the second opinion on a suspect registration
            (``model.second_opinion``) searches so.

    Returns:
        The refined candidates, best first by symmetric (centred) NGF on the ~128 px level.
    """
    dofs = TRANSFORM_DOFS[model]
    grid_a, grid_s, step, log_ratio = search_grid(model, angle_step_deg, scale_range, scale_steps)

    levels = {}

    def level(size: int) -> Level:  # made once per size: the refinement reuses stage 1's levels and what they cache
        if size not in levels:
            levels[size] = Level.from_pyramids(fixed_pyramid, fixed_masks, moving_pyramid, moving_valid, fixed_hw,
                                               moving_hw, scale, size, exact=exact_levels)
        return levels[size]

    # Stage 1, finest level first, so that a coarser level's near-duplicate of a candidate is dropped, not the
    # better resolved one. Each level's best candidate always goes on, with the seeds: on a coarse level of the
    # refinement a zoomed-in candidate can outscore the truth that a finer level ranked first.
    starts: List[Candidate] = []
    always: List[Candidate] = []
    finest, between = _finest_stage(level(SHIFT_STAGES[0][0]), model, grid_a, grid_s, step)
    for stage, (size, centred) in enumerate(SHIFT_STAGES):
        found = finest if stage == 0 else best_shifts(level(size), grid_a, grid_s, centred=centred)
        _add_best_distinct(found, starts, always, keep[0], step, log_ratio,
                           go_on=ALWAYS_FROM_FINEST if stage == 0 else 1)
    if between:  # the finest level again, between the grid's angles next to its best candidates
        # Its best is the finest level's sharpest view of a candidate that a coarser level may have found on the
        # grid already: it goes on even as a near-duplicate, which would otherwise keep the blurrier copy only.
        _add_best_distinct(between, starts, always, keep[0], step, log_ratio, best_even_if_near=True)
    always += list(seeds)
    refine_levels = [level(size) for size in REFINE_SIZES]
    shift_step = 2.0 * max(half_extent(fixed_hw, scale)) / max(refine_levels[0].fixed.shape[-2:])  # one pixel
    step, log_ratio = step / 2, log_ratio / 2
    for stage, lvl in enumerate(refine_levels):
        refined = compass_search(lvl, starts + always, [step if dofs >= 3 else 0.0, log_ratio if dofs >= 4 else 0.0,
                                                        shift_step, shift_step])
        scores = symmetric_ngf(lvl, torch.stack([c.matrix for c in refined]), centred=REFINE_CENTRED)
        for c, s in zip(refined, scores):
            c.score = float(s)
        starts, always = refined[: len(starts)], refined[len(starts):]
        starts.sort(key=lambda c: c.score, reverse=True)
        if stage + 1 < len(keep):
            starts = starts[: keep[stage + 1]]
        step, log_ratio, shift_step = step / 2, log_ratio / 2, shift_step / 2
    starts += always
    return sorted(starts, key=lambda c: c.score, reverse=True)


def search_grid(model: str, angle_step_deg: float = 7.5, scale_range: Sequence[float] = (0.5, 2.0),
                scale_steps: int = SCALE_STEPS):
    """Stage 1's grid of linear parts for ``model``: every rotation in steps of ``angle_step_deg`` (models with a
    rotation) times ``scale_steps`` scales spaced evenly in log over ``scale_range`` (models with a scale).
    Returns ``(angles, scales, angle_step, log_ratio)``: ``M`` float64 each (radians; every pairing of the two), the
    angle step in radians and the log ratio of neighbouring scales (0 without scales)."""
    dofs = TRANSFORM_DOFS[model]
    step = math.radians(angle_step_deg)
    angles = (torch.arange(0.0, 2 * math.pi - 1e-9, step, dtype=torch.float64) if dofs >= 3
              else torch.zeros(1, dtype=torch.float64))
    if dofs >= 4 and scale_steps > 1:
        scales = torch.logspace(math.log10(scale_range[0]), math.log10(scale_range[1]), scale_steps,
                                dtype=torch.float64)
        log_ratio = math.log(scale_range[1] / scale_range[0]) / (scale_steps - 1)
    else:
        scales, log_ratio = torch.ones(1, dtype=torch.float64), 0.0
    grid_a, grid_s = torch.meshgrid(angles, scales, indexing="ij")
    return grid_a.reshape(-1), grid_s.reshape(-1), step, log_ratio


def finest_candidates(level: Level, model: str, count: int, scale_steps: int = SCALE_STEPS,
                      centred: bool = True) -> List[Candidate]:
    """The ``count`` best distinct candidates of stage 1 on ``level`` alone: the grid (:func:`search_grid`, with
    ``scale_steps`` scales) and the angles between it next to its best (:data:`BETWEEN_FRACTION`), by their shifts'
    z-scores, with no refinement and no coarser level's ranking. The candidate opinion on a suspect registration
    (:func:`drmime_pl.core.quality.stands_out_most`) judges them itself.

    ``centred=False``: scored by plain (uncentred) edge features instead, on the grid alone. Between two photographs
    of one scene the mean edge direction is part of the match: on an SRIF optical/optical pair (scale 0.76, 82
    degrees) the truth was the best of the plain candidates on a 224 px level and the 34th of the centred ones."""
    angles, scales, step, log_ratio = search_grid(model, scale_steps=scale_steps)
    if not centred:
        return _best_distinct(best_shifts(level, angles, scales, centred=False), count, step, log_ratio)
    on_grid, between = _finest_stage(level, model, angles, scales, step)
    return _best_distinct(on_grid + between, count, step, log_ratio)


def _finest_stage(level: Level, model: str, angles: torch.Tensor, scales: torch.Tensor, angle_step: float):
    """Stage 1 on its finest level (the first of :data:`SHIFT_STAGES`): the candidates of the grid ``angles`` x
    ``scales``, and, for models with a rotation, those at the angles between the grid's next to its best
    (:func:`_between_angles`); ``(on the grid, between)``, the second empty without a rotation."""
    centred = SHIFT_STAGES[0][1]
    on_grid = best_shifts(level, angles, scales, centred=centred)
    if TRANSFORM_DOFS[model] < 3:
        return on_grid, []
    return on_grid, best_shifts(level, *_between_angles(on_grid, angle_step), centred=centred)


def exact_levels_change_nothing(fixed_pyramid: Sequence[torch.Tensor], moving_pyramid: Sequence[torch.Tensor]) -> bool:
    """Whether :func:`global_search` with ``exact_levels=True`` would score the very levels it scores without: every
    size it uses (:data:`SHIFT_STAGES`, :data:`REFINE_SIZES`) is already the long side of a level both pyramids
    have (a 256 px image halves to exactly 128, 64 and 32 px). Both searches, and so both registrations, are then
    the same: a second opinion (``model.second_opinion``) searches a finer scale grid instead."""
    sizes = {size for size, _ in SHIFT_STAGES} | set(REFINE_SIZES)
    long_sides = {max(img.shape[-2:]) for img in fixed_pyramid[:len(moving_pyramid)]}
    return sizes <= long_sides


def _add_best_distinct(found: Sequence[Candidate], starts: List[Candidate], always: List[Candidate], count: int,
                       angle_step: float, log_ratio: float, go_on: int = 1, best_even_if_near: bool = False) -> None:
    """Append the ``count`` best distinct of ``found`` that are not near-duplicates of a candidate already taken: the
    best ``go_on`` to ``always`` (they go on to the end), the others to ``starts``. ``best_even_if_near``: the best
    one is appended even when it is a near-duplicate."""
    for rank, c in enumerate(_best_distinct(found, count, angle_step, log_ratio)):
        if (best_even_if_near and rank == 0) or all(_distinct(c, p, angle_step, log_ratio) for p in starts + always):
            (always if rank < go_on else starts).append(c)


def _between_angles(found: Sequence[Candidate], angle_step: float, fraction: float = BETWEEN_FRACTION):
    """Angles half a grid step either side of the best ``fraction`` of ``found`` (by score), each at its
    candidate's scale, without repeats: ``(angles, scales)``, ``M`` float64 each."""
    best = sorted(found, key=lambda c: c.score, reverse=True)[:max(1, round(fraction * len(found)))]
    grid = sorted({(round((c.angle + side * angle_step / 2) % (2 * math.pi), 9), c.scale)
                   for c in best for side in (-1, 1)})
    return (torch.tensor([a for a, _ in grid], dtype=torch.float64),
            torch.tensor([s for _, s in grid], dtype=torch.float64))


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
