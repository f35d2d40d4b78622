"""After the optimisation: keep the best of the candidate transforms, and say how far the result can be trusted.

MI between two modalities can be weak (a map and a photograph, a day and a night picture): the MINE objective is
then nearly flat around the truth and the optimisation can drift away from a start that was already right. So the
optimised transform competes with where it started (the initial search's pick) and with identity, judged by a
measure the optimisation did not use: the normalised gradient field (NGF, :mod:`drmime_pl.core.ngf`), both ways, on
a 256 px level. The winner's verdict compares its NGF with that of misaligned copies of it (shifted by 5-10% of the
image, rotated by 10 degrees), and where that does not stand out, its histogram MI with theirs: a registration whose
alignment stands out from misalignments on neither is ``suspect`` (and, with a higher bar, ``doubtful``: worth
another registration). The thresholds ``REVIEW_Z``, ``SUSPECT_Z`` and ``MI_TRUST_Z`` were chosen on the real
benchmark pairs (benchmarks/RESULTS.md). Known blind spot: between two smooth random textures, a polished transform
stands out from its shifted copies although nothing matches, so such a pair is not flagged. The winner is first
polished (:func:`polish`): NGF, then histogram MI where the edges agree or stand out too little to judge.

Convention: matrices are ``moving_norm_trans_fixed_norm`` (normalised frames of :mod:`drmime_pl.core.geometry`),
float64 ``3 x 3``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch

from .histogram_mi import symmetric_histogram_mi
from .ngf import Level, symmetric_ngf

#: Long side of the level the candidates are judged on and polished on: exactly this many pixels (area-averaged from
#: the finest pyramid level at least this size), not the pyramid's level at or below it, which halving leaves
#: anywhere from 129 px up (137 px for a 1096 px photograph, whose level pixel is then 8 of the image's: the
#: polish could not resolve the RGB/NIR pair ``vn_15`` there, 5.8% -> 0.5% rTRE on exact 256 px; twelfth round).
JUDGE_SIZE = 256
#: Below this z-score of NGF against misaligned copies, a registration is ``doubtful`` (unless MI's z reaches
#: ``MI_TRUST_Z``): the further opinions of :mod:`drmime_pl.training.fit` register it again. Chosen on the first 118
#: real benchmark pairs (benchmarks/RESULTS.md); a doubtful result is not yet flagged, see :data:`SUSPECT_Z`.
REVIEW_Z = 4.5
#: Below this z-score of NGF (unless MI's z reaches ``MI_TRUST_Z``) a registration is flagged ``suspect``: likely
#: wrong. Lower than :data:`REVIEW_Z` because another registration is cheap insurance and a false alarm is not: on
#: the 182 scoreable real pairs (twentieth round) no failure's result that was not a kept candidate had a z above
#: 3.2, while 4 successes lay between 4.0 and 4.5 (maps, RGB/NIR, MR/PET). The opinions still look again below
#: 4.5: with 4.0 for them too, `rs_crossseason-cs5` lost the second opinion that brings it from 1.98% to 0.91%.
SUSPECT_Z = 4.0
#: A result whose edges barely stand out (z < REVIEW_Z) is still trusted when its intensities do: its histogram MI
#: stands out from the same misaligned copies by at least this z (maps against photographs, RGB/NIR bands). On the
#: 182 scoreable real pairs (twelfth round) the flagged failures reach at most 3.3 and the successes it clears 4.4.
MI_TRUST_Z = 4.0
#: ... nor flagged where the two measures together stand out: their combined z (:func:`joint_z`, Stouffer's
#: ``(z + z_mi) / sqrt(2)``) reaches this. The two measures see the same misalignment, so they are not independent
#: and their combination needs the higher bar, the opinions' :data:`REVIEW_Z`. Blurred SPECT and PET images against
#: CT and MR align with z 2.3-3.9 on edges and 2.7-3.6 on MI: on the 182 scoreable real pairs (twenty-first round)
#: the flag went from 18 of 172 successes (10.5%) to 15, and still catches 9 of the 10 failures.
JOINT_Z = REVIEW_Z
#: The polish's compass search on histogram MI doubles its steps after each kept move (up to ``MAX_GROWTH`` times
#: the first ones), so that MI can walk the few pixels that NGF leaves on photographs of two bands (RGB/NIR
#: ``vn_28``: 4.0% -> 0.27% rTRE) in the same 16 iterations; the search on NGF keeps its steps (eleventh round).
MI_GROW = 2.0
MAX_GROWTH = 4.0
#: The polish refuses MI's move when it lowers NGF only where the edges can judge it: their z (:func:`stand_out`)
#: reaches this. Below it, and where MI stands out more than the edges, MI's move stands. On blurred SPECT against
#: CT the edges barely stand out (z 2.3-3.2) and peak 1-2% away from the truth, MI nearer it (`spect_ct_4` 1.40% ->
#: 0.69% rTRE); where edges do stand out (maps at z 4.5-5, fundus pairs), MI's moves against them were wrong
#: (twenty-first round, benchmarks/RESULTS.md).
EDGES_VETO_Z = SUSPECT_Z


@dataclass
class Verdict:
    """What ``transform.json["quality"]`` holds."""

    chosen: str  # which candidate won: optimised | initial | identity (candidate: fit.candidate_opinion's pick)
    ngf: float  # symmetric NGF of the result, after the polish (mean squared cosine of edge directions, 0..1)
    ngf_identity: float  # ... of the three candidates, before the polish
    ngf_initial: float
    ngf_optimised: float
    z: float  # (ngf - mean over misaligned copies) / their standard deviation
    suspect: bool
    reason: str = ""
    z_mi: Optional[float] = None  # the same for histogram MI, computed only where z < REVIEW_Z
    doubtful: bool = False  # below REVIEW_Z on both measures (or suspect): the further opinions look again

    def to_json(self) -> dict:
        """A dict for ``transform.json``: a score that could not be computed (too little overlap) is ``None``, since
        JSON has no infinity."""
        out = {}
        for key in ("chosen", "ngf", "ngf_identity", "ngf_initial", "ngf_optimised", "z", "z_mi", "suspect", "doubtful",
                    "reason"):
            value = getattr(self, key)
            out[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        return out


def judge_level(pair) -> Level:
    """The 256 px copy (:data:`JUDGE_SIZE`) of a :class:`~drmime_pl.training.prepare.PreparedPair` that candidates are
    judged on (made before the pyramids are released). Where one image's edges are several times wider than the
    other's (SPECT against CT), the sharper one is blurred to match
    (:func:`~drmime_pl.core.sharpness.match_sharpness`)."""
    from .sharpness import match_sharpness

    masks = [w > 0 for w in pair.fixed_weights]
    return match_sharpness(Level.from_pyramids(pair.fixed_pyramid, masks, pair.moving_pyramid, pair.moving_weights,
                                               pair.fixed_hw, pair.moving_hw, pair.scale, JUDGE_SIZE, exact=True))


def refine(level: Level, matrix: torch.Tensor, model: str, iterations: int = 16, score=symmetric_ngf,
           grow: float = 1.0) -> torch.Tensor:
    """Polish ``matrix`` by compass search on ``score`` (symmetric NGF, or another ``(level, N x 3 x 3) -> N``
    similarity) over the model's own generators.

    Candidates are ``matrix @ expm(+-step_i B_i)``; a move is kept when it scores higher (and every step is then
    multiplied by ``grow``, up to ``MAX_GROWTH`` times its start), else every step halves. Steps start at one pixel
    of ``level`` (shifts), 0.6 degrees (rotation) and half a percent (scale, stretch, shear, perspective), so this
    corrects what the sampled MINE gradient leaves. Returns the ``3 x 3`` matrix.
    """
    from .geometry import generator_basis

    basis = generator_basis(model)  # K x 3 x 3
    k = basis.shape[0]
    pixel = max(level.fixed_hw) / level.scale / max(level.fixed.shape[-2:])  # normalised units per level pixel
    steps = torch.tensor([pixel, pixel, 0.01, 0.005, 0.005, 0.005, 0.005, 0.005][:k], dtype=torch.float64)
    start = steps
    moves = torch.cat([torch.eye(k, dtype=torch.float64), -torch.eye(k, dtype=torch.float64)])  # 2K x K
    current = matrix.double()
    best = float(score(level, current[None])[0])
    for _ in range(iterations):
        candidates = current @ torch.linalg.matrix_exp(torch.einsum("nk,kij->nij", moves * steps, basis))
        scores = score(level, candidates)
        i = int(scores.argmax())
        if float(scores[i]) > best:
            best, current = float(scores[i]), candidates[i]
            steps = torch.minimum(steps * grow, start * MAX_GROWTH)
        else:
            steps = steps / 2
    return current


def polish(level: Level, matrix: torch.Tensor, model: str) -> torch.Tensor:
    """:func:`refine` on NGF, then on histogram MI (:mod:`drmime_pl.core.histogram_mi`), keeping MI's move only when the
    edges agree (NGF does not drop).

    NGF finds where the edges line up but can stop on a ridge; MI, low-variance over every pixel of the level, can
    move on from there. On the real benchmark pairs, MI's moves that also raised NGF were right (RGB/NIR photographs,
    cross-season scenes: 3 failures became successes) and those that lowered it were wrong (fundus vs angiography,
    maps: 3 successes would have failed), so both measures must agree, unless the edges barely stand out and MI
    stands out more (:func:`mi_outranks_edges`: blurred SPECT against CT). ``3 x 3``.
    """
    by_edges = refine(level, matrix, model)
    by_mi = refine(level, by_edges, model, score=symmetric_histogram_mi, grow=MI_GROW)
    edges = symmetric_ngf(level, torch.stack([by_edges, by_mi]))
    if float(edges[1]) >= float(edges[0]):
        return by_mi
    return by_mi if mi_outranks_edges(*both_z(level, by_edges)) else by_edges


def mi_outranks_edges(z: float, z_mi: float) -> bool:
    """Whether MI's word outweighs the edges' at a transform whose NGF stands out by ``z`` and whose histogram MI
    by ``z_mi``: the edges stand out too little to veto (below :data:`EDGES_VETO_Z`, or uncomputable), and MI stands
    out more than they do."""
    return math.isfinite(z_mi) and not (z >= EDGES_VETO_Z) and not (z_mi <= z)


def misaligned(matrix: torch.Tensor, fixed_hw, scale: float) -> torch.Tensor:
    """Copies of ``matrix`` composed with shifts of 5% and 10% of the fixed image in 8 directions and rotations by
    +-10 degrees about its centre. ``18 x 3 x 3``."""
    half = max(int(fixed_hw[0]), int(fixed_hw[1])) / 2.0 / scale  # the long side is 2 * half normalised units
    out: List[torch.Tensor] = []
    for frac in (0.05, 0.10):
        for k in range(8):
            t = torch.eye(3, dtype=torch.float64)
            t[0, 2] = 2 * half * frac * math.cos(k * math.pi / 4)
            t[1, 2] = 2 * half * frac * math.sin(k * math.pi / 4)
            out.append(matrix @ t)
    for angle in (-10.0, 10.0):
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        out.append(matrix @ torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64))
    return torch.stack(out)


def stand_out(level: Level, matrix: torch.Tensor, value: float, score=symmetric_ngf) -> float:
    """How far ``value``, the ``score`` of the ``3 x 3`` ``matrix``, stands above the scores of its
    :func:`misaligned` copies, in their standard deviations (the verdict's ``z``); NaN when fewer than 4 copies
    overlap enough to be scored."""
    others = score(level, misaligned(matrix, level.fixed_hw, level.scale))
    others = others[torch.isfinite(others)]
    if others.numel() < 4:
        return float("nan")
    return (value - float(others.mean())) / max(float(others.std()), 1e-6)


def joint_z(z: float, z_mi: float) -> float:
    """How far edges and intensities together stand out: Stouffer's combination ``(z + z_mi) / sqrt(2)`` of the two
    z-scores (NaN where either is)."""
    return (z + z_mi) / math.sqrt(2.0)


def both_z(level: Level, matrix: torch.Tensor):
    """How far the ``3 x 3`` ``matrix`` stands out from its :func:`misaligned` copies on both measures: ``(z of
    symmetric NGF, z of symmetric histogram MI)``, NaN where uncomputable."""
    z = stand_out(level, matrix, float(symmetric_ngf(level, matrix[None])[0]))
    z_mi = stand_out(level, matrix, float(symmetric_histogram_mi(level, matrix[None])[0]), score=symmetric_histogram_mi)
    return z, z_mi


def stands_out_most(level: Level, starts: torch.Tensor, model: str, screen_iterations: int = 8) -> torch.Tensor:
    """Of ``starts`` (``N x 3 x 3``), the one whose alignment stands out most from its misaligned copies.

    Each start is first refined on NGF alone for ``screen_iterations`` (:func:`refine`): the search's grid leaves
    shifts of a coarse level's pixel and angles of a few degrees, which blur the verdict's ``z``. Returns the
    refined start with the highest NGF ``z`` (:func:`stand_out`), ``3 x 3``, for the caller to polish.
    """
    best, best_z = None, float("-inf")
    for start in starts:
        refined = refine(level, start, model, iterations=screen_iterations)
        z = stand_out(level, refined, float(symmetric_ngf(level, refined[None])[0]))
        z = z if math.isfinite(z) else float("-inf")  # too little overlap to tell: last
        if best is None or z > best_z:
            best, best_z = refined, z
    return best


def choose_and_judge(level: Level, optimised: torch.Tensor, initial: Optional[torch.Tensor],
                     force_optimised: bool = False, model: Optional[str] = None):
    """Pick the best of the optimised, initial and identity transforms and judge it.

    The optimised transform stays unless the initial one or identity scores clearly higher (by 0.01 of NGF);
    identity (then polished) is kept unless the polished winner scores clearly higher than it: a registration must
    not move a pair on a difference the judge cannot resolve. On the 202 real benchmark pairs a night/day pair went
    from 85% to 0.5% rTRE, three failures came closer to the truth (79% -> 5%, 12% -> 2%, 41% -> 10%), the already
    aligned pairs (MR, maps) moved by at most 0.15% of the diagonal, and no success was lost.

    Args:
        level: :func:`judge_level` of the pair.
        optimised, initial: ``3 x 3`` normalised matrices (``initial`` None: identity).
        force_optimised: judge the optimised matrix whatever the others score.
        model: :func:`polish` the chosen matrix over this model's generators (None: as it is).

    Returns:
        (the chosen ``3 x 3`` matrix, :class:`Verdict`).
    """
    names = ["optimised", "initial", "identity"]
    identity = torch.eye(3, dtype=torch.float64)
    candidates = torch.stack([optimised.double(), identity if initial is None else initial.double(), identity])
    scores = symmetric_ngf(level, candidates)
    # The optimised transform keeps its place unless another is clearly better: NGF is a judge here, not the
    # objective, and MI knows better where both agree.
    margin = 0.01
    best = 0
    for i in () if force_optimised else (1, 2):
        if float(scores[i]) > float(scores[best]) + margin:
            best = i
    chosen, value = candidates[best], float(scores[best])
    if model is not None:
        chosen = polish(level, chosen, model)
        value = float(symmetric_ngf(level, chosen[None])[0])
    if not force_optimised and best != 2 and float(scores[2]) >= value - margin:
        # Identity, too, must be beaten clearly, by the polished winner: where edges hardly match (a night and a
        # day picture), a wrong start or result can edge past it by chance.
        winner_is_identity = torch.equal(candidates[best], identity)  # a start at identity: polished already
        best = 2
        if not winner_is_identity:
            chosen = identity if model is None else polish(level, identity, model)
            value = float(symmetric_ngf(level, chosen[None])[0])
    z = stand_out(level, chosen, value)
    z_mi = None
    reasons = []
    doubtful = not math.isfinite(value)
    if doubtful:
        reasons.append("the result overlaps too little of the moving image")
    elif not (z >= REVIEW_Z):
        mi = float(symmetric_histogram_mi(level, chosen[None])[0])
        z_mi = stand_out(level, chosen, mi, score=symmetric_histogram_mi)
        doubtful = not (z_mi >= MI_TRUST_Z)
        if doubtful and not (z >= SUSPECT_Z) and not (joint_z(z, z_mi) >= JOINT_Z):
            reasons.append(f"the alignment barely stands out from misaligned copies (edges: z {z:.1f} < {SUSPECT_Z}; "
                           f"intensities: MI z {z_mi:.1f} < {MI_TRUST_Z}; together z {joint_z(z, z_mi):.1f} < "
                           f"{JOINT_Z})")
    verdict = Verdict(chosen=names[best], ngf=value, ngf_identity=float(scores[2]), ngf_initial=float(scores[1]),
                      ngf_optimised=float(scores[0]), z=z, suspect=bool(reasons), reason="; ".join(reasons), z_mi=z_mi,
                      doubtful=doubtful)
    return chosen, verdict

