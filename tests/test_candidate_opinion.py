"""A result still suspect after the further registrations gets a candidate opinion (``model.candidate_opinion``,
:func:`drmime_pl.training.fit.candidate_opinion`): the search's best distinct candidates on its finest level are
judged on the verdict's level, and the one that stands out most replaces the result only when its edges *and* its
intensities both stand out more.

Pairs are the capture-range test's: a synthetic texture rotated about its centre onto a larger black canvas, with
a non-monotonic intensity remap (only MI-like measures align them)."""
import json
import math
from types import SimpleNamespace

import torch

import drmime_pl
import drmime_pl.core.quality as quality_module
import drmime_pl.core.search as search_module
import drmime_pl.training.fit as fit_module
from drmime_pl.config import load_config
from drmime_pl.core.geometry import mean_corner_error, normalised_matrix_from_pixel, pixel_matrix_from_normalised
from drmime_pl.core.ngf import Level
from drmime_pl.core.quality import stands_out_most
from drmime_pl.core.search import finest_candidates
from drmime_pl.training.prepare import prepare_pair

from .conftest import FAST
from .test_capture_range import make_pair
from .test_second_opinion import QUICK, UNRELATED

#: fixed 160 px, moving 200 px; the truth turns by 90 degrees about the centres.
FIXED, MOVING, TRUTH = make_pair(90.0, 1.0)


def _suspect_at_identity():
    """A suspect result at (centred) identity, wrong for the rotated pair, shaped like a Registration."""
    matrix = torch.eye(3, dtype=torch.float64)
    matrix[:2, 2] = 20.0  # the fixed image's centre on the moving canvas's: (200 - 160) / 2
    return SimpleNamespace(matrix=matrix.numpy(), matrix_normalised=torch.eye(3, dtype=torch.float64).numpy(),
                           quality={"z": 0.5, "z_mi": 0.0, "suspect": True, "doubtful": True,
                                    "reason": "barely stands out"},
                           seconds=1.0, checkpoint="first.ckpt")


def test_the_finest_candidates_include_the_truth_and_the_start_that_stands_out_is_refined_onto_it():
    pair = prepare_pair(FIXED, MOVING, load_config(None).data, init="identity", model="affine")
    level = Level.from_pyramids(pair.fixed_pyramid, [w > 0 for w in pair.fixed_weights], pair.moving_pyramid,
                                pair.moving_weights, pair.fixed_hw, pair.moving_hw, pair.scale, 128, exact=True)
    candidates = finest_candidates(level, "affine", 4)
    assert len(candidates) == 4
    angles = [math.degrees(c.angle) % 360 for c in candidates]
    assert any(abs(a - 90.0) <= 3.75 for a in angles), angles  # within half the grid's 7.5 degree step

    # Of a start shifted by a fifth of the image and one shifted by 2 px, the second stands out after the short
    # refinement on edges, and comes back to within a pixel of the truth.
    truth = normalised_matrix_from_pixel(TRUTH, pair.fixed_hw, pair.moving_hw, pair.scale)
    far, near = torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    far[0, 2] = 0.4  # normalised units: 1 is half the long side
    near[:2, 2] = torch.tensor([2.0, -2.0], dtype=torch.float64) / pair.scale
    picked = stands_out_most(level, torch.stack([truth @ far, truth @ near]), "affine")
    back = pixel_matrix_from_normalised(picked, pair.fixed_hw, pair.moving_hw, pair.scale)
    assert mean_corner_error(back, TRUTH, pair.fixed_hw) < 1.0


def test_the_finer_scale_grid_offers_a_scale_between_the_default_grids():
    """A truth zoomed by 1.19, halfway (in log) between the default grid's scales 1 and 1.41: only the opinions'
    finer grid has a candidate at its angle within 5% of its scale."""
    fixed, moving, _ = make_pair(90.0, 1.19)
    pair = prepare_pair(fixed, moving, load_config(None).data, init="identity", model="affine")
    level = Level.from_pyramids(pair.fixed_pyramid, [w > 0 for w in pair.fixed_weights], pair.moving_pyramid,
                                pair.moving_weights, pair.fixed_hw, pair.moving_hw, pair.scale, 128, exact=True)

    def scale_errors(scale_steps):
        found = finest_candidates(level, "affine", fit_module.CANDIDATES_JUDGED, scale_steps)
        return [abs(math.log(c.scale / 1.19)) for c in found
                if abs(math.remainder(math.degrees(c.angle) - 90.0, 360.0)) <= 3.75]

    assert min(scale_errors(search_module.FINE_SCALE_STEPS), default=1.0) < 0.05
    assert min(scale_errors(search_module.SCALE_STEPS), default=1.0) > 0.15  # the grid's 1 or 1.41 at best


def test_the_candidate_level_keeps_a_pixel_within_three_of_the_image_s_between_128_and_256_px():
    assert [fit_module.candidate_level_size(n) for n in (160, 320, 384, 385, 640, 768, 769, 4000)] == [
        128, 128, 128, 129, 214, 256, 256, 256]


def test_a_larger_pair_s_candidates_are_found_on_a_larger_level_and_the_truth_is_kept(monkeypatch):
    """A 480 px pair turned by 90 degrees: the candidates come from an exact 160 px level, and the kept one lies
    within a pixel of the truth."""
    fixed, moving, truth = make_pair(90.0, 1.0, size=480, canvas=600)
    sizes = []
    original = search_module.finest_candidates

    def recorded(level, *args, **kwargs):
        sizes.append(tuple(level.fixed.shape[-2:]))
        return original(level, *args, **kwargs)

    monkeypatch.setattr(search_module, "finest_candidates", recorded)
    current = _suspect_at_identity()
    current.matrix[:2, 2] = 60.0  # the centres of 480 and 600 px
    kept = fit_module.candidate_opinion(load_config(None, FAST), current, fixed, moving, None, 0.0)
    assert sizes == [(160, 160), (160, 160)]  # the centred candidates' and the plain ones' level
    assert kept.quality["candidate_opinion"]["kept"] == "candidate"
    assert mean_corner_error(kept.matrix, truth, kept.fixed_shape) < 1.0, kept.quality


def test_a_candidate_that_stands_out_more_on_both_measures_replaces_a_wrong_result():
    current = _suspect_at_identity()
    kept = fit_module.candidate_opinion(load_config(None, FAST), current, FIXED, MOVING, None, 0.0)
    assert kept is not current
    assert mean_corner_error(kept.matrix, TRUTH, kept.fixed_shape) < 1.0, kept.quality
    assert kept.steps == 0 and kept.mi_per_level == [] and kept.quality["chosen"] == "candidate"
    opinion = kept.quality["candidate_opinion"]
    assert opinion["kept"] == "candidate" and opinion["other_matrix"] == current.matrix.tolist()
    assert opinion["z_candidate"] > opinion["z_first"] and opinion["z_mi_candidate"] > opinion["z_mi_first"]
    # no optimisation confirmed it: it stays suspect, and says why
    assert kept.quality["suspect"] is True and "candidates" in kept.quality["reason"]
    assert kept.seconds > current.seconds and kept.checkpoint is None


def test_the_candidate_is_kept_only_when_both_of_its_scores_are_higher(monkeypatch):
    """``both_z`` answers, in turn, for the result, the centred candidates' pick and the plain candidates' pick."""
    cfg = load_config(None, FAST)
    lowest = (float("-inf"), float("-inf"))

    def scored(first, centred, plain=lowest):
        calls = iter([first, centred, plain])
        monkeypatch.setattr(quality_module, "both_z", lambda level, matrix: next(calls))
        monkeypatch.setattr(quality_module, "polish", lambda level, matrix, model: matrix)  # it may ask both_z too
        return fit_module.candidate_opinion(cfg, _suspect_at_identity(), FIXED, MOVING, None, 0.0)

    kept = scored((2.0, 3.0), (5.0, 2.9))  # edges prefer the candidate, intensities do not
    assert kept.quality["candidate_opinion"]["kept"] == "first" and kept.quality["z"] == 0.5
    assert kept.quality["reason"] == "barely stands out"
    kept = scored((2.0, 3.0), (2.0, 9.0))  # equal edges: not higher
    assert kept.quality["candidate_opinion"]["kept"] == "first"
    kept = scored((2.0, float("nan")), (2.5, 0.1))  # an uncomputable z counts as lowest
    assert kept.quality["candidate_opinion"]["kept"] == "candidate"
    assert kept.quality["candidate_opinion"]["features"] == "centred"
    assert kept.quality["candidate_opinion"]["z_mi_first"] is None  # JSON has no NaN
    kept = scored((2.0, 1.0), (float("nan"), 4.0))
    assert kept.quality["candidate_opinion"]["kept"] == "first"


def test_the_plain_candidates_pick_is_judged_apart_and_kept_when_only_it_beats_the_result(monkeypatch):
    cfg = load_config(None, FAST)

    def scored(first, centred, plain):
        calls = iter([first, centred, plain])
        monkeypatch.setattr(quality_module, "both_z", lambda level, matrix: next(calls))
        monkeypatch.setattr(quality_module, "polish", lambda level, matrix, model: matrix)  # it may ask both_z too
        return fit_module.candidate_opinion(cfg, _suspect_at_identity(), FIXED, MOVING, None, 0.0)

    # The centred pick stands out more on edges but not on intensities; the plain one beats the result on both.
    opinion = scored((2.0, 3.0), (6.0, 1.0), (3.0, 4.0)).quality["candidate_opinion"]
    assert (opinion["kept"], opinion["features"], opinion["z_mi_candidate"]) == ("candidate", "plain", 4.0)
    # Both beat the result: the one whose edges stand out more.
    opinion = scored((2.0, 3.0), (4.0, 5.0), (3.0, 6.0)).quality["candidate_opinion"]
    assert (opinion["kept"], opinion["features"]) == ("candidate", "centred")
    # Neither does: the result stands, and the opinion records the pick that stands out more on edges.
    opinion = scored((2.0, 3.0), (6.0, 1.0), (1.0, 9.0)).quality["candidate_opinion"]
    assert (opinion["kept"], opinion["features"], opinion["z_mi_candidate"]) == ("first", "centred", 1.0)


def test_the_plain_candidates_are_distinct_and_include_the_truth():
    pair = prepare_pair(FIXED, MOVING, load_config(None).data, init="identity", model="affine")
    level = Level.from_pyramids(pair.fixed_pyramid, [w > 0 for w in pair.fixed_weights], pair.moving_pyramid,
                                pair.moving_weights, pair.fixed_hw, pair.moving_hw, pair.scale, 128, exact=True)
    found = finest_candidates(level, "affine", fit_module.PLAIN_CANDIDATES_JUDGED, search_module.FINE_SCALE_STEPS,
                              centred=False)
    assert len(found) == fit_module.PLAIN_CANDIDATES_JUDGED
    assert all(search_module._distinct(a, b, math.radians(7.5), 0.17) for a, b in zip(found, found[1:]))
    assert abs(math.remainder(math.degrees(found[0].angle) - 90.0, 360.0)) <= 3.75, [c.angle for c in found]


def test_a_failed_candidate_opinion_leaves_the_result(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no candidates")

    monkeypatch.setattr(search_module, "finest_candidates", broken)
    current = _suspect_at_identity()
    kept = fit_module.candidate_opinion(load_config(None, FAST), current, FIXED, MOVING, None, 0.0)
    assert kept is current and kept.checkpoint == "first.ckpt"
    assert kept.quality["candidate_opinion"] == {"z_first": 0.5, "z_candidate": None, "kept": "first",
                                                 "error": "no candidates"}


def test_only_a_suspect_result_of_the_search_gets_a_candidate_opinion():
    from drmime_pl.training.fit import wants_candidate_opinion

    suspect = _suspect_at_identity()
    assert wants_candidate_opinion(load_config(None), suspect)
    for override in ("model.candidate_opinion=false", "model.init=moments", "model.init=identity",
                     "fit.ckpt_path=x.ckpt", "model.init_matrix=t.json"):
        assert not wants_candidate_opinion(load_config(None, [override]), suspect), override
    assert not wants_candidate_opinion(load_config(None), SimpleNamespace(quality={"z": 6.0, "suspect": False}))


def test_a_suspect_registration_records_its_candidate_opinion_and_writes_the_kept_result(tmp_path):
    out = tmp_path / "out"
    reg = drmime_pl.register(*UNRELATED, overrides=QUICK, output_dir=str(out))
    assert reg.quality["suspect"] is True
    opinion = reg.quality["candidate_opinion"]  # after the second and the rigid opinion, still suspect
    assert set(opinion) == {"z_first", "z_candidate", "z_mi_first", "z_mi_candidate", "features", "kept",
                            "other_matrix"}
    assert "second_opinion" in reg.quality and "rigid_opinion" in reg.quality  # carried over
    written = json.loads((out / "transform.json").read_text())
    assert written["matrix"] == reg.matrix.tolist() and written["quality"] == json.loads(json.dumps(reg.quality))


def _finished(quality, steps=100):
    import numpy as np

    return SimpleNamespace(quality=quality, steps=steps, converged=False, seconds=3.0, wall_seconds=5.0,
                           final_mi=float("nan") if steps == 0 else 0.25, matrix=np.eye(3), output_dir=None)


def test_the_command_line_says_when_a_candidate_was_kept_and_shows_both_measures():
    from drmime_pl.cli import summary_lines
    from drmime_pl.training.progress import done_line

    opinion = {"z_first": 2.0, "z_candidate": 3.24, "z_mi_first": 0.44, "z_mi_candidate": 3.09, "kept": "candidate",
               "other_matrix": []}
    kept = _finished({"suspect": True, "reason": "picked from the search's candidates", "ngf": 0.19, "z": 3.24,
                      "chosen": "candidate", "candidate_opinion": opinion,
                      "second_opinion": {"z_first": 1.4, "z_second": 2.0, "kept": "second", "other_matrix": []}},
                     steps=0)
    lines = summary_lines(kept)
    assert lines[0] == ("drmime_pl: kept a candidate of the search, not optimised (candidate opinion); the "
                        "registrations took 3.0 s, wall time 5.0 s")  # no MINE ran for it: no steps, no MI
    assert "second opinion: z 1.4 (first) against z 2.0 (second): kept the second" in lines
    assert ("candidate opinion: z 2.0, MI z 0.4 (first) against z 3.2, MI z 3.1 (candidate): kept the candidate"
            in lines)
    assert "not optimised" in done_line(kept) and "0 steps" not in done_line(kept)

    failed = _finished({"suspect": True, "reason": "r", "ngf": 0.2, "z": 2.0, "chosen": "optimised",
                        "candidate_opinion": {"z_first": 2.0, "z_candidate": None, "kept": "first",
                                              "error": "no candidates"}})
    lines = summary_lines(failed)
    assert lines[0] == "drmime_pl: reached fit.max_steps after 100 steps in 3.0 s, wall time 5.0 s; final MI 0.250 nats"
    assert "candidate opinion: z 2.0 (first) against z n/a (candidate): kept the first (no candidates)" in lines
