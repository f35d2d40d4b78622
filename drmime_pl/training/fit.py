"""The fit pipeline as one function of a config: register a pair, log to TensorBoard, checkpoint, and write the
result files.

:func:`fit` is the whole job (:func:`drmime_pl.register`, ``drmime_pl.evaluate`` and the tests call it); the
command line (``python -m drmime_pl.fit``, :mod:`drmime_pl.cli`) only parses arguments, calls it and turns errors
into one-line messages and exit codes.
"""
from __future__ import annotations

import logging
import math
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import CheckpointError, ConfigError, DrmimeError, RegistrationError, RegistrationInterrupted
from .memory import keep_freed_memory


def quiet_lightning() -> None:
    # An endless in-memory sampler needs no workers and no validation; these notices would only confuse users.
    for pattern in (".*does not have many workers.*", ".*IterableDataset.*", ".*is not a `CombinedLoader`.*",
                    ".*Checkpoint directory.*exists.*",
                    ".*LeafSpec.*", ".*isinstance.*treespec.*", ".*`training_step` returned `None`.*"):
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric",
                 "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _read_checkpoint(path: str) -> dict:
    # weights_only=True: a checkpoint from elsewhere must not run code (see drmime_pl.training.checkpoint_io).
    from .checkpoint_io import load_checkpoint_safely

    return load_checkpoint_safely(path)


def check_checkpoint(path: str, identity: dict) -> None:
    """Refuse a checkpoint of another transform model or image pair (:class:`CheckpointError`)."""
    ckpt = _read_checkpoint(path)
    saved = (ckpt.get("hyper_parameters") or {}).get("identity")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: not a drmime_pl checkpoint (no run identity in it)")
    if saved.get("transform") != identity["transform"]:
        raise CheckpointError(
            f"{path}: checkpoint is for model.transform={saved.get('transform')!r}, this run uses "
            f"{identity['transform']!r}"
        )
    if saved.get("pair") != identity["pair"] or saved.get("levels") != identity["levels"]:
        raise CheckpointError(
            f"{path}: checkpoint belongs to another image pair ({saved.get('fixed')} / {saved.get('moving')}) "
            f"or pyramid; this run registers {identity['fixed']} / {identity['moving']}"
        )


def fit(cfg: DictConfig, fixed=None, moving=None, fixed_mask=None, callbacks=(), device_index=None):
    """Register ``cfg.data.moving`` to ``cfg.data.fixed`` (or the given arrays/tensors) and return a
    :class:`~drmime_pl.io.result.Registration`. ``callbacks``: extra Lightning callbacks for the Trainer.
    ``device_index``: the GPU to run on (``evaluate --devices N``: each process its own); default the first.

    Writes, when ``cfg.logging.enabled``: TensorBoard events and ``checkpoints/last.ckpt`` under
    ``<logging.log_dir>/<logging.name>/version_N`` (a relative ``log_dir`` lies inside ``output.dir`` when that is
    set; a resumed run continues in its checkpoint's run folder: :mod:`drmime_pl.paths`); and the result files into
    ``output.dir`` (default: that version folder). Progress goes to stderr (:mod:`drmime_pl.training.progress`).
    A result the verdict finds doubtful gets a second opinion (``model.second_opinion``: :func:`second_opinion`),
    and one still doubtful then a rigid one (``model.rigid_opinion``: :func:`rigid_opinion`), a candidate one and an
    intensity one, before anything is written. Raises :class:`~drmime_pl.errors.DrmimeError` subclasses for bad input and failed
    runs; no ``transform.json`` is written then.
    """
    from ..core.tasks import workers

    started = time.perf_counter()  # wall_seconds: the whole call, up to just before transform.json is written
    with workers(cfg.fit.workers):  # threads for the parts that run at once (core/tasks.py)
        result, pair, out_dir, plain = _register_once(cfg, fixed, moving, fixed_mask, callbacks, device_index,
                                                      started)
        result = further_opinions(cfg, result, pair, fixed, moving, fixed_mask, device_index, started)
        if out_dir is not None:
            write_result(cfg, result, pair, out_dir, started)
        else:
            result.wall_seconds = time.perf_counter() - started
    if plain:
        from .progress import done_line

        print(done_line(result), file=sys.stderr, flush=True)
    return result


def further_opinions(cfg: DictConfig, result, pair, fixed, moving, fixed_mask, device_index, started: float):
    """A doubtful ``result`` of ``pair`` (its :class:`~drmime_pl.training.prepare.PreparedPair`; ``quality.doubtful``,
    a higher bar than ``suspect``) gets a second opinion (:func:`second_opinion`), a result still doubtful then a
    rigid one (:func:`rigid_opinion`), one still doubtful after that a candidate opinion (:func:`candidate_opinion`)
    and then an intensity opinion (:func:`intensity_opinion`), as the config asks: the kept result."""
    if wants_second_opinion(cfg, result):
        result = second_opinion(cfg, result, fixed, moving, fixed_mask, device_index, started,
                                repeats_first=pair.search_levels_exact, first_start=pair.init)
    if wants_rigid_opinion(cfg, result):
        result = rigid_opinion(cfg, result, fixed, moving, fixed_mask, device_index, started)
    if wants_candidate_opinion(cfg, result):
        result = candidate_opinion(cfg, result, fixed, moving, fixed_mask, started)
    if wants_intensity_opinion(cfg, result):
        result = intensity_opinion(cfg, result, fixed, moving, fixed_mask, started)
    return result


def _doubtful_after_search(cfg: DictConfig, result) -> bool:
    """Whether the verdict finds ``result`` doubtful (``quality.doubtful``: below
    :data:`~drmime_pl.core.quality.REVIEW_Z`, a higher bar than the flag's) and it started from the global search
    (not from ``model.init_matrix`` or a checkpoint, which fix the start): what every further opinion needs."""
    m = cfg.model
    return bool(m.init == "search" and not m.init_matrix and not cfg.fit.ckpt_path and result.quality.get("doubtful"))


def wants_second_opinion(cfg: DictConfig, result) -> bool:
    """Whether ``result`` gets a second opinion: ``model.second_opinion`` is on and :func:`_doubtful_after_search`."""
    return bool(cfg.model.second_opinion) and _doubtful_after_search(cfg, result)


def second_opinion(cfg: DictConfig, first, fixed, moving, fixed_mask, device_index, started: float,
                   repeats_first: bool = False, first_start=None):
    """Register the pair again, its global search on levels of exactly 128, 64 and 32 px instead of the pyramid's
    levels at or below those sizes (which halving leaves anywhere from half the size up), and keep whichever
    result stands out more from misaligned copies (the verdict's ``z``). The second registration writes no logs,
    checkpoints or files; when it fails, the first result stands (``quality.second_opinion.error`` says why).
    Returns the kept result.

    Why: the search's finest levels decide which candidates the optimisation starts from, and different levels
    find different ones; the verdict tells which result to trust. On the 202 real benchmark pairs (62 flagged): 7
    more successes (5 night-time, a visible/infrared, a fundus pair), none lost (``benchmarks/RESULTS.md``, ninth
    round). The kept result's ``quality.second_opinion`` has both ``z`` and which was kept; its ``seconds`` are both
    optimisations', and its ``checkpoint`` is None when the second was kept (the checkpoint is the first's).

    ``repeats_first``: the first search's levels were exactly those sizes already (``PreparedPair.search_levels_exact``,
    a 256 px image), so a search on exact levels would repeat the first step for step. The second search then
    differs by its grid instead: :data:`~drmime_pl.core.search.FINE_SCALE_STEPS` scales, 19% apart instead of 41%.
    On the real benchmark pairs it ran on 12 suspect 256 px pairs (MR/PET, SPECT/CT, two cross-season ones) and
    gained `cv_crossseason-cs_3` (3.6% -> 0.8% rTRE), none lost (nineteenth round); until then they skipped it.

    ``first_start``: the first registration's initial coefficients (``PreparedPair.init``). When the second search
    picks exactly them, the rest of the second registration (same start, same seed) would repeat the first step for
    step: it stops after its search, and the first stands (``skipped`` says so). On the real benchmark pairs 4 of
    the 47 second registrations ended so (twelfth round).
    """
    from ..core.search import FINE_SCALE_STEPS

    how = "from a second search on a finer scale grid" if repeats_first else "from a second search"
    kept = _another_opinion(cfg, first, fixed, moving, fixed_mask, device_index, started, "second_opinion",
                            ("first", "second"), how, search_exact_levels=True,
                            search_scale_steps=FINE_SCALE_STEPS if repeats_first else None, unless_start=first_start)
    if kept is None:
        first.quality = dict(first.quality, second_opinion={
            "z_first": first.quality.get("z"), "z_second": None, "kept": "first",
            "skipped": "the second search picked the first's start: it would repeat the first"})
        return first
    return kept


def wants_rigid_opinion(cfg: DictConfig, result) -> bool:
    """Whether ``result`` gets a rigid opinion: ``model.rigid_opinion`` is on, the model has more freedom than
    ``rigid`` (similarity, affine, perspective), and :func:`_doubtful_after_search` (still, after a second opinion)."""
    from ..core.geometry import TRANSFORM_DOFS

    m = cfg.model
    return (bool(m.rigid_opinion) and TRANSFORM_DOFS[m.transform] > TRANSFORM_DOFS["rigid"]
            and _doubtful_after_search(cfg, result))


def rigid_opinion(cfg: DictConfig, current, fixed, moving, fixed_mask, device_index, started: float):
    """Register the pair again with ``model.transform=rigid`` (its own search, optimisation, polish and verdict; no
    second opinion of its own) and keep whichever of ``current`` and the rigid result stands out more from
    misaligned copies (the verdict's ``z``). When it fails, ``current`` stands. Returns the kept result; its
    ``quality.rigid_opinion`` has both ``z`` (``z_affine``, or the model's name, and ``z_rigid``) and which was kept.

    Why: scale and shear let a wrong zoom outscore the truth where edges or intensities differ much (the PET image
    grows by 25% under an affine model; a fundus photograph and its angiogram; a depth map), and the search ranks
    such zooms first. Without them the truth stands out again. On the 202 real benchmark pairs, of the 52 results
    still suspect after the second opinion: 7 more successes (MR/PET 0 -> 4 of 5, two fundus pairs, a SRIF depth
    pair), none lost (``benchmarks/RESULTS.md``, tenth round). The kept transform is rigid then, and
    ``transform.json`` says so.
    """
    return _another_opinion(cfg, current, fixed, moving, fixed_mask, device_index, started, "rigid_opinion",
                            (cfg.model.transform, "rigid"), "with model.transform=rigid", transform="rigid")


#: How many of the search's best distinct candidates on its finest level a candidate opinion judges, of a grid of
#: :data:`~drmime_pl.core.search.FINE_SCALE_STEPS` scales. On the 41 real benchmark pairs that asked (nineteenth
#: round): the finer grid with 4 candidates gained `vis_ir_6` and lost `nighttime-109`, whose truth fell to 5th;
#: with 6 it gained `vis_ir_6` and lost none, 59 s more over the 41 pairs than the 5-scale grid with 4.
CANDIDATES_JUDGED = 6
#: ... and of those scored by plain (uncentred) edge features on the same level
#: (:func:`~drmime_pl.core.search.finest_candidates` with ``centred=False``), judged apart from them: the best of
#: each pool is polished, and the one kept must beat the result on both measures. Pooled with the centred ones, a
#: plain candidate that stood out a little more on edges alone displaced `vis_ir_6`'s right one (twenty-first round).
PLAIN_CANDIDATES_JUDGED = 2
#: A pixel of the level a candidate opinion finds its candidates on covers at most this many pixels of the finest
#: pyramid level, within the search's 128 px and the judge's 256 px: a 320 px night picture keeps 128 px, a 640 px
#: fundus photograph gets 214 px. At 128 px a level pixel covers 5 of its pixels, and `retina_88`'s truth was not
#: among the 8 best candidates; on 214 px it is found and kept (4.2% -> 0.30% rTRE; twentieth round). A fixed 160 px
#: lost two night pictures, whose wrong candidates stand out more there (nineteenth round).
CANDIDATE_DETAIL = 3


def candidate_level_size(long_side: int) -> int:
    """The long side, in px, of the exact level a candidate opinion searches, for a finest pyramid level whose
    long side is ``long_side`` px (:data:`CANDIDATE_DETAIL`)."""
    from ..core.quality import JUDGE_SIZE
    from ..core.search import SHIFT_STAGES

    return int(min(JUDGE_SIZE, max(SHIFT_STAGES[0][0], math.ceil(long_side / CANDIDATE_DETAIL))))


def wants_candidate_opinion(cfg: DictConfig, result) -> bool:
    """Whether ``result`` gets a candidate opinion: ``model.candidate_opinion`` is on and
    :func:`_doubtful_after_search` (still, after the second and rigid opinions)."""
    return bool(cfg.model.candidate_opinion) and _doubtful_after_search(cfg, result)


def candidate_opinion(cfg: DictConfig, current, fixed, moving, fixed_mask, started: float):
    """Let the verdict itself rank the search's candidates, and keep the best of them instead of ``current`` only
    when *both* measures say it stands out more.

    The search ranks its candidates on ~128, 64 and 32 px levels, where a night picture's edges barely show, and the
    optimisation starts from its first; the verdict judges on 256 px (:func:`~drmime_pl.core.quality.judge_level`).
    Here the :data:`CANDIDATES_JUDGED` best distinct candidates of the search's finest level alone
    (:func:`~drmime_pl.core.search.finest_candidates`, on an exact level of 128 to 256 px:
    :func:`candidate_level_size`, with the finer scale grid :data:`~drmime_pl.core.search.FINE_SCALE_STEPS`) are
    each refined on edges on the judge's level, and the one whose edges stand out most
    (:func:`~drmime_pl.core.quality.stands_out_most`) is polished and judged like any result (:func:`finish`:
    keep-best against identity, the verdict). It replaces ``current`` only when its ``z`` on edges (NGF) *and* its
    ``z`` on intensities (histogram MI) are both higher than ``current``'s. On the real benchmark pairs' suspect
    results (a probe of 8 candidates each) the edges alone preferred a wrong candidate for 3 successes (a map, a
    night-time and an MR/PET pair) as often as a right one for failures; with both measures required to agree, as in
    the polish, 2 night-time pairs were gained and none lost (``benchmarks/RESULTS.md``, seventeenth round).

    No MINE optimisation runs for the candidate: a kept candidate has ``steps`` 0, no ``mi_per_level`` and
    ``quality.chosen`` ``candidate`` (or ``identity``). When the opinion fails, ``current`` stands. Returns the
    kept result; its ``quality.candidate_opinion`` has both results' ``z`` and ``z_mi`` and which was kept.
    """
    from ..core.geometry import TRANSFORM_DOFS
    from ..core.ngf import Level
    from ..core.quality import both_z, judge_level, stands_out_most
    from ..core.search import FINE_SCALE_STEPS, finest_candidates

    m = cfg.model
    _announce(cfg, current, "judging the search's best candidates")
    begun = time.perf_counter()
    try:
        pair = _prepare_again(cfg, fixed, moving, fixed_mask)
        judge = judge_level(pair)
        level = Level.from_pyramids(pair.fixed_pyramid, [w > 0 for w in pair.fixed_weights], pair.moving_pyramid,
                                    pair.moving_weights, pair.fixed_hw, pair.moving_hw, pair.scale,
                                    candidate_level_size(max(pair.fixed_pyramid[0].shape[-2:])), exact=True)
        pools = {"centred": finest_candidates(level, m.transform, CANDIDATES_JUDGED, FINE_SCALE_STEPS),
                 "plain": finest_candidates(level, m.transform, PLAIN_CANDIDATES_JUDGED, FINE_SCALE_STEPS,
                                            centred=False)}
        no_coefficients = torch.zeros(2, TRANSFORM_DOFS[m.transform], dtype=torch.float64)
        # Both measures' z on this judge level (the verdict computes MI's only for a low z).
        z_first, z_mi_first = both_z(judge, torch.as_tensor(current.matrix_normalised, dtype=torch.float64))
        judged = []  # (features, candidate, z, z_mi), the best of each pool polished and judged
        for features, found in pools.items():
            pick = stands_out_most(judge, torch.stack([c.matrix for c in found]), m.transform)
            candidate = finish(cfg, pair, judge, pick, no_coefficients, [], 0, time.perf_counter() - begun, False,
                               started)
            judged.append((features, candidate,
                           *both_z(judge, torch.as_tensor(candidate.matrix_normalised, dtype=torch.float64))))
    except RegistrationInterrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a degenerate candidate: the result so far stands
        return _failed_opinion(current, "candidate_opinion", ("first", "candidate"), exc)

    def rank(z: float) -> float:  # an uncomputable z (NaN) counts as lowest
        return z if math.isfinite(z) else float("-inf")

    # Of the pools' picks that beat the result on both measures, the one that stands out most on edges; with none,
    # the one that does (it is recorded, and the result stands).
    both_higher = [j for j in judged if rank(j[2]) > rank(z_first) and rank(j[3]) > rank(z_mi_first)]
    features, candidate, z_candidate, z_mi_candidate = max(both_higher or judged, key=lambda j: rank(j[2]))
    candidate.seconds = time.perf_counter() - begun
    if candidate.quality.get("chosen") == "optimised":
        candidate.quality["chosen"] = "candidate"
    kept = better_opinion(current, candidate, "candidate_opinion", ("first", "candidate"),
                          keep_second=bool(both_higher),
                          details={"z_mi_first": _finite_or_none(z_mi_first),
                                   "z_mi_candidate": _finite_or_none(z_mi_candidate), "features": features})
    if both_higher and not kept.quality.get("suspect"):
        # A kept candidate stays suspect: no optimisation confirmed it, and on the real benchmark pairs every
        # candidate whose own verdict cleared it was wrong (3 of 3; the right ones stayed below the threshold).
        kept.quality = dict(kept.quality, suspect=True, doubtful=True,
                            reason="picked from the search's candidates after the registration and its further "
                                   "opinions were doubtful; no optimisation confirmed it")
    return kept


#: The intensity opinion's registration: a compass search of this many iterations on histogram MI, rigid, from
#: identity (:func:`intensity_opinion`).
INTENSITY_ITERATIONS = 32
#: ... kept only when its histogram MI is higher than the result's by this fraction of it (and the edges agree):
#: on the 51 real benchmark pairs doubtful at first (twenty-first round) every margin from 5% up gained `mri_pet_1`
#: and `spect_ct_2` and lost none; 20% replaced no other result (5%: four, each staying on its side). Without a
#: margin `nighttime-119` and `vis_ir_2` were lost to MI registrations with barely more MI (0.8%, 3.7%).
INTENSITY_MI_GAIN = 0.2
#: ... and when its NGF is at most this much lower than the result's, unless the result's edges barely stand out
#: (z below :data:`~drmime_pl.core.quality.EDGES_VETO_Z`): the same resolution the keep-best step judges NGF by.
INTENSITY_NGF_SLACK = 0.01


def wants_intensity_opinion(cfg: DictConfig, result) -> bool:
    """Whether ``result`` gets an intensity opinion: ``model.intensity_opinion`` is on and
    :func:`_doubtful_after_search` (still, after the other opinions)."""
    return bool(cfg.model.intensity_opinion) and _doubtful_after_search(cfg, result)


def intensity_opinion(cfg: DictConfig, current, fixed, moving, fixed_mask, started: float):
    """Register the pair as the classic tools do, and keep that instead of ``current`` only when its intensities
    agree clearly better and its edges do not disagree.

    Every registration so far started from the global search, which ranks its candidates by edges. Where the edges
    of the two images do not lie in the same places (a blurred SPECT or PET image against CT or MR), the search's
    picks can all be wrong while the images, as scanned, are already close. Here a rigid transform is fitted from
    identity by compass search on histogram MI (:func:`~drmime_pl.core.quality.refine` with
    :func:`~drmime_pl.core.histogram_mi.symmetric_histogram_mi`, :data:`INTENSITY_ITERATIONS` iterations whose steps
    grow as the polish's MI stage's) on the verdict's 256 px level, as elastix's and SimpleITK's MI registrations
    do from their start. It is judged as it is: no keep-best against identity, no polish (on edges first, the polish
    took `spect_ct_2` from 0.72% back to 1.8% rTRE). It replaces ``current`` when its symmetric histogram MI is
    higher by :data:`INTENSITY_MI_GAIN` of ``current``'s and its NGF is no more than :data:`INTENSITY_NGF_SLACK`
    lower, or ``current``'s edges barely stand out (z below :data:`~drmime_pl.core.quality.EDGES_VETO_Z`). A
    kept result stays suspect (no MINE optimisation confirmed it) and ``quality.chosen`` is ``intensity``;
    ``quality.intensity_opinion`` records both results' ``z``, MI and NGF, which was kept and the other's
    ``other_matrix``. When the opinion fails, ``current`` stands.
    """
    import copy

    from ..core.geometry import TRANSFORM_DOFS
    from ..core.histogram_mi import symmetric_histogram_mi
    from ..core.ngf import symmetric_ngf
    from ..core.quality import MI_GROW, judge_level, refine

    m = cfg.model
    _announce(cfg, current, "registering on intensities from identity")
    begun = time.perf_counter()
    try:
        pair = _prepare_again(cfg, fixed, moving, fixed_mask)
        judge = judge_level(pair)
        identity = torch.eye(3, dtype=torch.float64)
        moved = refine(judge, identity, "rigid", iterations=INTENSITY_ITERATIONS, score=symmetric_histogram_mi,
                       grow=MI_GROW)
        as_it_is = copy.deepcopy(cfg)
        as_it_is.model.keep_best, as_it_is.model.polish = False, False
        no_coefficients = torch.zeros(2, TRANSFORM_DOFS[m.transform], dtype=torch.float64)
        candidate = finish(as_it_is, pair, judge, moved, no_coefficients, [], 0, 0.0, False, started)
        both = torch.stack([torch.as_tensor(r.matrix_normalised, dtype=torch.float64) for r in (current, candidate)])
        (mi_first, mi_new), (ngf_first, ngf_new) = (symmetric_histogram_mi(judge, both).tolist(),
                                                    symmetric_ngf(judge, both).tolist())
    except RegistrationInterrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a degenerate result: the result so far stands
        return _failed_opinion(current, "intensity_opinion", ("first", "intensity"), exc)
    candidate.seconds = time.perf_counter() - begun
    candidate.quality["chosen"] = "intensity"
    keep = intensities_win(mi_first, mi_new, ngf_first, ngf_new, current.quality.get("z"))
    kept = better_opinion(current, candidate, "intensity_opinion", ("first", "intensity"), keep_second=keep,
                          details={"mi_first": _finite_or_none(mi_first), "mi_intensity": _finite_or_none(mi_new),
                                   "ngf_first": _finite_or_none(ngf_first), "ngf_intensity": _finite_or_none(ngf_new)})
    if keep:
        kept.quality = dict(kept.quality, suspect=True, doubtful=True,
                            reason="registered on intensities from identity after the registration and its further "
                                   "opinions were doubtful; no optimisation confirmed it")
    return kept


def intensities_win(mi_first: float, mi_new: float, ngf_first: float, ngf_new: float, z_first) -> bool:
    """The intensity opinion's rule (:func:`intensity_opinion`): whether its result, of symmetric histogram MI
    ``mi_new`` and NGF ``ngf_new``, replaces the result so far (``mi_first``, ``ngf_first``, and its verdict's NGF
    ``z_first``, None where not computed). Non-finite scores never win."""
    from ..core.quality import EDGES_VETO_Z

    if not all(math.isfinite(v) for v in (mi_first, mi_new, ngf_first, ngf_new)):
        return False
    edges_can_veto = isinstance(z_first, (int, float)) and z_first >= EDGES_VETO_Z
    return (mi_new > mi_first + INTENSITY_MI_GAIN * abs(mi_first)
            and (ngf_new >= ngf_first - INTENSITY_NGF_SLACK or not edges_can_veto))


def _failed_opinion(current, key: str, names, exc: Exception):
    """``current``, standing after the opinion ``quality[key]`` failed with ``exc``: the record has its ``z``, none
    for the other result (``names``: the two results' names, as :func:`better_opinion`'s) and the error."""
    current.quality = dict(current.quality, **{key: {f"z_{names[0]}": current.quality.get("z"),
                                                     f"z_{names[1]}": None, "kept": names[0],
                                                     "error": str(exc)[:200]}})
    return current


def _announce(cfg: DictConfig, current, doing: str) -> None:
    """The progress line of an opinion that looks again at the doubtful ``current`` result."""
    if cfg.logging.progress_bar:
        z = current.quality.get("z")
        print(f"doubtful result (z {'n/a' if z is None else f'{z:.1f}'}): {doing}", file=sys.stderr, flush=True)


def _prepare_again(cfg: DictConfig, fixed, moving, fixed_mask):
    """The pair prepared once more, from identity, for an opinion that judges on levels of its own (the first
    registration released its pyramids): a :class:`~drmime_pl.training.prepare.PreparedPair`."""
    from .prepare import prepare_pair

    d = cfg.data
    return prepare_pair(fixed if fixed is not None else d.fixed, moving if moving is not None else d.moving, d,
                        init="identity", model=cfg.model.transform,
                        fixed_mask=fixed_mask if fixed_mask is not None else d.fixed_mask)


def _finite_or_none(value: float):
    """``value``, or None where it is not finite (JSON has no NaN)."""
    return value if math.isfinite(value) else None


def _another_opinion(cfg: DictConfig, current, fixed, moving, fixed_mask, device_index, started: float, key: str,
                     names, how: str, search_exact_levels: bool = False, search_scale_steps=None, transform=None,
                     unless_start=None):
    """Register the pair once more, quietly (no logs, checkpoints, files or further opinions), with the search on
    exact levels (of ``search_scale_steps`` scales; None: the search's default) or another ``transform``, and keep
    the result that stands out more (:func:`better_opinion`, recorded under ``quality[key]`` with ``names`` for the
    two). A failed registration leaves ``current``, with the error recorded. When the search picks exactly the
    coefficients ``unless_start``, the registration stops there and None is returned."""
    import copy

    other_cfg = copy.deepcopy(cfg)
    other_cfg.logging.enabled = False
    other_cfg.output.dir = None
    other_cfg.model.second_opinion = False
    other_cfg.model.rigid_opinion = False
    if transform is not None:
        other_cfg.model.transform = transform
    if cfg.logging.progress_bar:
        z = current.quality.get("z")
        print(f"doubtful result (z {'n/a' if z is None else f'{z:.1f}'}): registering again {how}", file=sys.stderr,
              flush=True)
    try:
        other, _, _, _ = _register_once(other_cfg, fixed, moving, fixed_mask, (), device_index, started,
                                        search_exact_levels=search_exact_levels,
                                        search_scale_steps=search_scale_steps, unless_start=unless_start)
    except SameStart:
        return None
    except RegistrationInterrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a degenerate result: the opinion so far stands
        return _failed_opinion(current, key, names, exc)
    return better_opinion(current, other, key, names)


def better_opinion(first, second, key: str = "second_opinion", names=("first", "second"),
                   keep_second: Optional[bool] = None, details: Optional[dict] = None):
    """``second`` if its verdict's ``z`` is higher than ``first``'s (an uncomputable ``z`` counts as lowest), else
    ``first`` (``keep_second``: decided by the caller instead). The kept one records both ``z`` and which was kept
    in ``quality[key]`` (as ``z_<name>`` and ``kept: <name>``, with ``names`` for the two, and the caller's
    ``details``) and the one not kept's ``matrix`` as ``other_matrix`` (fixed pixel -> moving pixel, as ``matrix``:
    a suspect result's alternative, to look at or to start from), keeps what ``first`` recorded of earlier
    opinions, and has the seconds of both optimisations."""
    def z_of(result) -> float:
        z = result.quality.get("z")
        return z if isinstance(z, (int, float)) and math.isfinite(z) else float("-inf")

    if keep_second is None:
        keep_second = z_of(second) > z_of(first)
    kept, other = (second, first) if keep_second else (first, second)
    earlier = {k: v for k, v in first.quality.items() if k.endswith("_opinion") and k != key}
    kept.quality = dict(kept.quality, **earlier, **{key: {f"z_{names[0]}": first.quality.get("z"),
                                                          f"z_{names[1]}": second.quality.get("z"),
                                                          "kept": names[1] if keep_second else names[0],
                                                          **(details or {}),
                                                          "other_matrix": other.matrix.tolist()}})
    kept.seconds = float(first.seconds + second.seconds)
    if keep_second:
        kept.checkpoint = None
    return kept


class SameStart(Exception):
    """:func:`_register_once` stopped after its search, which picked the start it was told to skip."""


def _register_once(cfg: DictConfig, fixed, moving, fixed_mask, callbacks, device_index, started: float,
                   search_exact_levels: bool = False, search_scale_steps=None, unless_start=None):
    """One registration of :func:`fit`, its result files not yet written: ``(result, PreparedPair, the folder the
    result files go to or None, whether progress is printed as plain lines)``. Raises :class:`SameStart` when the
    initial coefficients are exactly ``unless_start`` (a second opinion that would repeat the first)."""
    from .prepare import prepare_pair

    d, m, f, lg = cfg.data, cfg.model, cfg.fit, cfg.logging
    if f.threads > 0:
        torch.set_num_threads(int(f.threads))
    keep_freed_memory()  # large tensors come from the heap, not fresh pages: training/memory.py
    fixed = fixed if fixed is not None else d.fixed
    moving = moving if moving is not None else d.moving
    if fixed is None or moving is None:
        raise DrmimeError("data.fixed and data.moving must both be set (image paths)")
    fixed_mask = fixed_mask if fixed_mask is not None else d.fixed_mask
    # Folders first: an unusable output.dir or logging.log_dir is found before any image is loaded.
    from ..io.rundir import check_writable_dir, remove_stale_result

    if cfg.output.dir:
        check_writable_dir(cfg.output.dir, "output.dir")
    from ..paths import log_root, resume_run_dir

    # With output.dir set, a relative logging.log_dir lies inside it; fit.ckpt_path=<run>/checkpoints/last.ckpt
    # continues in <run> (issue 11; drmime_pl.paths).
    logs = log_root(lg.log_dir, cfg.output.dir)
    resumed_dir = resume_run_dir(f.ckpt_path) if lg.enabled else None
    if lg.enabled:
        check_writable_dir(resumed_dir or logs, "fit.ckpt_path" if resumed_dir else "logging.log_dir")

    pair = prepare_pair(fixed, moving, d, init=m.init, model=m.transform, fixed_mask=fixed_mask,
                        init_matrix=m.init_matrix, search_exact_levels=search_exact_levels,
                        search_scale_steps=search_scale_steps)
    if unless_start is not None and pair.init is not None and torch.equal(pair.init, unless_start):
        raise SameStart()
    identity = {"transform": m.transform, "pair": pair.fingerprint(), "levels": pair.levels,
                "fixed": pair.fixed_name, "moving": pair.moving_name}
    if f.ckpt_path:
        check_checkpoint(f.ckpt_path, identity)
    if cfg.output.dir:  # the inputs are good and this run will write: an earlier result must not survive it
        remove_stale_result(cfg.output.dir)
    elif resumed_dir is not None:  # resuming into the run folder, which is also the output folder
        remove_stale_result(resumed_dir)

    # Lightning loads only once the inputs are known to be good: a bad input fails fast.
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

    from ..core.estimator import MineEstimator
    from ..core.quality import judge_level
    from ..core.transforms import MatrixExpTransform
    from .callbacks import ConvergenceStopping, GracefulInterrupt, NonFiniteGuard, PreviewImages
    from .datamodule import PixelBatchSampler, PyramidDataModule
    from .module import DrmimeModule

    quiet_lightning()

    pl.seed_everything(int(f.seed), workers=False, verbose=False)
    judge = judge_level(pair)  # a ~256 px copy of both images, for the verdict after the optimisation
    estimator = MineEstimator(2 * pair.channels, list(m.mine_hidden), pair.levels, bias_correction=m.bias_correction,
                              ma_rate=m.ma_rate)
    transform = MatrixExpTransform(m.transform, init=pair.init)
    module = DrmimeModule(
        estimator, transform, pair.moving_pyramid, pair.moving_weights, pair.fixed_hw, pair.moving_hw, pair.scale,
        identity=identity, **schedule_settings(cfg),
    )
    # Memory (issue 7): the module now holds the moving levels with their validity channel; drop the pair's copies,
    # and the fixed sampling weights once the sampler has its index tables.
    pair.moving_pyramid, pair.moving_weights = module.moving_pyramid(), None
    sampler = PixelBatchSampler(pair.fixed_pyramid, pair.fixed_weights, pair.fixed_hw, pair.scale, d.batch_size, f.seed)
    pair.fixed_weights = None
    datamodule = PyramidDataModule(sampler)

    logger, run_dir, ckpt_dir = False, None, None
    convergence = ConvergenceStopping(f.converge_every, f.converge_tol, f.converge_patience, f.min_steps)
    extra_callbacks, callbacks = list(callbacks), [convergence]
    if lg.enabled:
        # A resumed run continues in its checkpoint's run folder: the same TensorBoard run, the same checkpoints.
        logger, run_dir = run_logger(logs, lg.name, resumed_dir)
        # The resolved config, readable in TensorBoard's TEXT tab (indented: a Markdown code block).
        logger.experiment.add_text("config", "    " + OmegaConf.to_yaml(cfg, resolve=True).replace("\n", "\n    "), 0)
        ckpt_dir = run_dir / "checkpoints"
        callbacks += [
            ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=lg.checkpoint_every_n_steps),
            LearningRateMonitor(logging_interval="step"),
        ]
        if lg.image_every_n_steps > 0:
            callbacks.append(PreviewImages(pair.fixed_pyramid, lg.image_every_n_steps, lg.preview_size))
    guard, interrupt = NonFiniteGuard(ckpt_dir), GracefulInterrupt(ckpt_dir)
    callbacks += [guard, interrupt] + extra_callbacks
    from .progress import PlainProgress, RegisterProgressBar, plain_every, stderr_is_terminal

    plain = bool(lg.progress_bar) and not stderr_is_terminal()  # a log file or a pipe: plain lines, no tqdm
    if lg.progress_bar:
        callbacks.append(PlainProgress(plain_every(lg.every_n_steps), convergence) if plain
                         else RegisterProgressBar(refresh_rate=10))

    trainer = make_trainer(cfg, logger, callbacks, device_index)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=f.ckpt_path or None)
    except SystemExit:  # Lightning turns a KeyboardInterrupt (a second signal) into sys.exit(1): keep the signal
        from .signals import Interrupted, last_signal

        raise Interrupted(interrupt.signum or last_signal()) from None
    seconds = time.perf_counter() - start

    if interrupt.requested:
        from .signals import signal_name

        where = interrupt.saved or "(no checkpoint: logging.enabled is false)"
        stopped = RegistrationInterrupted(
            f"interrupted at step {trainer.global_step} ({signal_name(interrupt.signum)}); checkpoint saved to "
            f"{where}; resume with fit.ckpt_path={where}"
        )
        stopped.signum = interrupt.signum
        raise stopped
    steps = int(trainer.global_step)
    last_ckpt = None
    if ckpt_dir is not None:
        last_ckpt = ckpt_dir / "last.ckpt"
        trainer.save_checkpoint(str(last_ckpt))
    optimised = module.normalised_matrix()
    coefficients = transform.coefficients().double().cpu()  # 2 x K: shared, fine
    mi_per_level = [float(v) for v in module.mi_ema.cpu()]
    # Memory: the pyramids and index tables are not needed for the full-size warp of the outputs.
    del trainer, module, datamodule, sampler
    out_dir = Path(cfg.output.dir) if cfg.output.dir else run_dir
    result = finish(cfg, pair, judge, optimised, coefficients, mi_per_level, steps, seconds, convergence.converged,
                    started, checkpoint=str(last_ckpt) if last_ckpt else None)
    return result, pair, out_dir, plain


def run_logger(logs: Path, name: str, run_dir: Optional[Path] = None):
    """A TensorBoard logger writing into ``run_dir``, or into a newly claimed ``<logs>/<name>/version_N`` (atomic:
    two runs started at once get two folders): (logger, its folder)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    from ..io.rundir import claim_run_dir

    if run_dir is None:
        run_dir = (logs / name if name else logs) / f"version_{claim_run_dir(logs, name)}"
    logger = TensorBoardLogger(save_dir=str(run_dir.parent), name="", version=run_dir.name, default_hp_metric=False)
    return logger, Path(logger.log_dir)


def schedule_settings(cfg: DictConfig) -> dict:
    """The optimiser, schedule and logging arguments of a LightningModule (:class:`~.module.DrmimeModule`,
    :class:`~.stacked_module.StackedPairsModule`) from a config."""
    o = cfg.optim
    return dict(lr_mine=o.lr_mine, lr_shared=o.lr_shared, lr_fine=o.lr_fine, amsgrad=o.amsgrad,
                lr_final_factor=o.lr_final_factor, warmup_steps=o.warmup_steps, max_steps=cfg.fit.max_steps,
                log_every_n_steps=cfg.logging.every_n_steps)


def finish(cfg: DictConfig, pair, judge, optimised: torch.Tensor, coefficients: torch.Tensor, mi_per_level,
           steps: int, seconds: float, converged: bool, started: float, checkpoint=None):
    """After the optimisation of one pair: keep the best candidate and polish it (``model.keep_best``,
    ``model.polish``) and refuse a degenerate result. Its files are written later (:func:`write_result`), once a
    second opinion (:func:`second_opinion`) has had its say.

    Args:
        pair: the :class:`~drmime_pl.training.prepare.PreparedPair` (its pyramids are released here).
        judge: its :func:`~drmime_pl.core.quality.judge_level`.
        optimised: the optimised ``moving_norm_trans_fixed_norm``, ``3 x 3``.
        coefficients: ``2 x K``, the optimised shared and fine coefficients.
        started: ``time.perf_counter()`` when the registration began (for ``wall_seconds``).

    Returns:
        the :class:`~drmime_pl.io.result.Registration`. Raises :class:`RegistrationError` for a degenerate result.
    """
    from ..core.checks import degeneracy
    from ..core.geometry import pixel_matrix_from_normalised
    from ..io.result import Registration

    m, f = cfg.model, cfg.fit
    coefficients = tuple(coefficients.double().cpu())  # (shared, fine)
    matrix_normalised, verdict = _keep_best(judge, pair, optimised, m)
    if verdict.chosen != "optimised":  # the optimisation made things worse: its start (or identity) was kept
        # The start is identity (zero coefficients) with model.init=identity: the pair then has no initial ones.
        start = pair.init if verdict.chosen == "initial" else None
        coefficients = (start.double() if start is not None else torch.zeros_like(coefficients[0]),
                        torch.zeros_like(coefficients[1]))
    coefficients = _coefficients_of(matrix_normalised, m.transform) or coefficients  # after the polish
    matrix = pixel_matrix_from_normalised(matrix_normalised, pair.fixed_hw, pair.moving_hw, pair.scale)
    problem = degeneracy(matrix, pair.fixed_hw, pair.moving_hw)
    if problem:
        raise RegistrationError(
            f"registration failed after {steps} steps: {problem}; no result written. Try another "
            f"model.init, lower learning rates (optim.*), or a simpler model.transform"
        )
    result = Registration(
        matrix=matrix.numpy(), matrix_normalised=matrix_normalised.numpy(),
        coefficients_shared=coefficients[0].numpy(), coefficients_fine=coefficients[1].numpy(), transform=m.transform,
        fixed_shape=pair.fixed_hw, moving_shape=pair.moving_hw, scale=pair.scale, mi_per_level=list(mi_per_level),
        steps=int(steps), seconds=float(seconds), converged=bool(converged), seed=int(f.seed),
        fixed=pair.fixed_name, moving=pair.moving_name, checkpoint=checkpoint, versions=library_versions(),
        quality=verdict.to_json(),
    )
    pair.fixed_pyramid = pair.moving_pyramid = None
    result.wall_seconds = time.perf_counter() - started  # write_result sets it again when it writes the files
    return result


def write_result(cfg: DictConfig, result, pair, out_dir, started: float) -> None:
    """Write ``result``'s files into ``out_dir`` (:func:`drmime_pl.io.result.write_outputs`) from the loaded images
    of ``pair``; ``result.wall_seconds`` runs from ``started`` to its ``transform.json``."""
    from ..io.result import write_outputs

    # No garbage collection before the full-size warp: freeing the Trainer's reference cycles did not lower the
    # peak memory, which is the preparation's (FIRE A01 1.71 GB, FIRE at 4368 x 4368 px 2.79 GB either way), and a
    # full collection among torch's and Lightning's objects cost 0.1-0.2 s (fourteenth round).
    out_dir = Path(out_dir)
    result.output_dir = str(out_dir)
    try:
        write_outputs(result, pair.fixed, pair.moving, out_dir, OmegaConf.to_yaml(cfg, resolve=True),
                      warped=cfg.output.warped, overlay=cfg.output.overlay,
                      itk=cfg.output.itk, elastix=cfg.output.elastix, started=started)
    except OSError as exc:
        raise DrmimeError(f"output.dir {out_dir}: cannot write the results ({exc.strerror or exc})") from None


def _keep_best(judge, pair, optimised: torch.Tensor, model_cfg):
    """The optimised normalised matrix, or its start or identity when ``model.keep_best`` finds them clearly
    better (:func:`drmime_pl.core.quality.choose_and_judge`), and the verdict on the result."""
    from ..core.geometry import generator_basis, matrix_from_coefficients
    from ..core.quality import choose_and_judge

    initial = None
    if pair.init is not None:
        initial = matrix_from_coefficients(pair.init.double(), generator_basis(model_cfg.transform).double())
    refine_model = model_cfg.transform if model_cfg.polish else None
    chosen, verdict = choose_and_judge(judge, optimised, initial, force_optimised=not model_cfg.keep_best,
                                       model=refine_model)
    return chosen, verdict


def _coefficients_of(matrix_normalised: torch.Tensor, model: str):
    """(shared, fine) coefficients of the final matrix, which keep-best and polish may have changed: all in the shared
    vector, the fine one zero. None when the matrix logarithm does not reproduce the matrix (a rotation too close to
    180 degrees): the chosen candidate's coefficients, before the polish, are kept then."""
    from ..core.geometry import coefficients_from_matrix, generator_basis, matrix_from_coefficients

    basis = generator_basis(model).double()
    try:
        shared = coefficients_from_matrix(matrix_normalised, basis)
    except ValueError:
        return None
    back = matrix_from_coefficients(shared, basis)
    if not torch.allclose(back / back[2, 2], matrix_normalised / matrix_normalised[2, 2], atol=1e-6):
        return None
    return shared, torch.zeros_like(shared)


def make_trainer(cfg: DictConfig, logger, callbacks, device_index=None):
    """The Lightning Trainer of a run. Raises :class:`ConfigError` for a device or precision Lightning refuses."""
    try:
        return _trainer(cfg, logger, callbacks, device_index)
    except Exception as exc:  # noqa: BLE001 - Lightning's MisconfigurationException and friends
        f = cfg.fit
        raise ConfigError(f"fit.accelerator={f.accelerator!r}, fit.precision={f.precision!r}: "
                          f"{str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}") from None


def _trainer(cfg: DictConfig, logger, callbacks, device_index=None):
    import pytorch_lightning as pl

    from pytorch_lightning.callbacks import ProgressBar

    from ..paths import log_root
    from .checkpoint_io import AtomicCheckpointIO

    f, lg = cfg.fit, cfg.logging
    return pl.Trainer(
        plugins=[AtomicCheckpointIO()],
        accelerator="gpu" if f.accelerator == "cuda" else f.accelerator,
        devices=f.devices if device_index is None else [int(device_index)],
        precision=f.precision if f.precision.endswith("mixed") else int(f.precision),
        max_steps=f.max_steps, max_epochs=-1, logger=logger, callbacks=callbacks,
        enable_checkpointing=bool(lg.enabled),
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),  # a tqdm bar on a terminal only
        enable_model_summary=False, log_every_n_steps=lg.every_n_steps, num_sanity_val_steps=0,
        limit_val_batches=0, default_root_dir=str(log_root(lg.log_dir, cfg.output.dir)),
    )


def library_versions() -> dict:
    import pytorch_lightning

    from .._version import __version__

    return {"drmime_pl": __version__, "torch": torch.__version__, "pytorch_lightning": pytorch_lightning.__version__,
            "python": platform.python_version()}
