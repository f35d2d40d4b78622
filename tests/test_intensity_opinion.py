"""A result still doubtful after the other opinions gets an intensity opinion (``model.intensity_opinion``,
:func:`drmime_pl.training.fit.intensity_opinion`): a rigid registration on histogram MI from identity, as the classic
tools do, kept only when its MI is clearly higher and its edges do not disagree.

The pair: a synthetic texture turned by 4 degrees and shifted by a few pixels, with a non-monotonic intensity remap
(only MI-like measures align it); the result so far is 30 px off."""
import math
from types import SimpleNamespace

import torch

import drmime_pl.training.fit as fit_module
from drmime_pl.config import load_config
from drmime_pl.core.geometry import mean_corner_error, normalised_matrix_from_pixel, warp_image
from drmime_pl.training.prepare import prepare_pair

from .conftest import FAST, nonmonotonic, textured_image

SIZE = 160


def _rigid_pair():
    """``(fixed, moving, moving_pix_trans_fixed_pix)``: 4 degrees about the centre, then (5, -3) px."""
    fixed = textured_image(SIZE, seed=7)
    angle, centre = math.radians(4.0), (SIZE - 1) / 2.0
    c, s = math.cos(angle), math.sin(angle)
    truth = torch.tensor([[c, -s, centre - c * centre + s * centre + 5.0],
                          [s, c, centre - s * centre - c * centre - 3.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    moving = warp_image(nonmonotonic(fixed), torch.linalg.inv(truth), (SIZE, SIZE))
    return fixed, moving, truth


def _wrong_result(fixed, moving, z=0.5):
    """A doubtful result 30 px off along x, shaped like a Registration."""
    pair = prepare_pair(fixed, moving, load_config(None).data, init="identity", model="affine")
    matrix = torch.eye(3, dtype=torch.float64)
    matrix[0, 2] = 30.0
    normalised = normalised_matrix_from_pixel(matrix, pair.fixed_hw, pair.moving_hw, pair.scale)
    return SimpleNamespace(matrix=matrix.numpy(), matrix_normalised=normalised.numpy(),
                           quality={"z": z, "z_mi": 0.0, "suspect": True, "doubtful": True,
                                    "reason": "barely stands out"},
                           seconds=1.0, checkpoint="first.ckpt")


def test_a_rigid_registration_on_intensities_from_identity_replaces_a_wrong_result():
    fixed, moving, truth = _rigid_pair()
    current = _wrong_result(fixed, moving)
    kept = fit_module.intensity_opinion(load_config(None, FAST), current, fixed, moving, None, 0.0)
    assert kept is not current
    assert mean_corner_error(kept.matrix, truth, kept.fixed_shape) < 1.0, kept.quality
    opinion = kept.quality["intensity_opinion"]
    assert opinion["kept"] == "intensity" and opinion["other_matrix"] == current.matrix.tolist()
    assert opinion["mi_intensity"] > (1 + fit_module.INTENSITY_MI_GAIN) * opinion["mi_first"]
    # no MINE optimisation confirmed it: it stays suspect, and says why
    assert kept.steps == 0 and kept.quality["chosen"] == "intensity"
    assert kept.quality["suspect"] is True and "intensities" in kept.quality["reason"]
    assert kept.seconds > current.seconds and kept.checkpoint is None


def test_a_result_at_the_truth_is_not_replaced():
    fixed, moving, truth = _rigid_pair()
    current = _wrong_result(fixed, moving)
    pair = prepare_pair(fixed, moving, load_config(None).data, init="identity", model="affine")
    current.matrix = truth.numpy()
    current.matrix_normalised = normalised_matrix_from_pixel(truth, pair.fixed_hw, pair.moving_hw, pair.scale).numpy()
    kept = fit_module.intensity_opinion(load_config(None, FAST), current, fixed, moving, None, 0.0)
    assert kept is current and kept.quality["intensity_opinion"]["kept"] == "first"
    assert kept.quality["reason"] == "barely stands out" and kept.checkpoint == "first.ckpt"


def test_the_rule_wants_clearly_more_mi_and_edges_that_do_not_disagree():
    win = fit_module.intensities_win
    gain, slack = fit_module.INTENSITY_MI_GAIN, fit_module.INTENSITY_NGF_SLACK
    more = 0.2 * (1 + gain) + 0.01  # MI of 0.2 -> clearly more
    assert win(0.2, more, 0.30, 0.30, 6.0)
    assert not win(0.2, 0.2 * (1 + gain) - 0.01, 0.30, 0.30, 6.0)  # not clearly more MI
    assert win(0.2, more, 0.30, 0.30 - slack / 2, 6.0)  # edges within the slack
    assert not win(0.2, more, 0.30, 0.30 - 2 * slack, 6.0)  # edges that stand out disagree: their veto holds
    assert win(0.2, more, 0.30, 0.30 - 2 * slack, 3.0)  # edges that barely stand out cannot veto
    assert win(0.2, more, 0.30, 0.30 - 2 * slack, None)  # nor edges whose z was not computed
    assert not win(0.2, float("nan"), 0.30, 0.30, 3.0) and not win(float("-inf"), 0.5, 0.30, 0.30, 3.0)


def test_only_a_doubtful_result_of_the_search_gets_an_intensity_opinion():
    doubtful = SimpleNamespace(quality={"z": 2.0, "suspect": True, "doubtful": True})
    assert fit_module.wants_intensity_opinion(load_config(None), doubtful)
    for override in ("model.intensity_opinion=false", "model.init=moments", "fit.ckpt_path=x.ckpt",
                     "model.init_matrix=t.json"):
        assert not fit_module.wants_intensity_opinion(load_config(None, [override]), doubtful), override
    assert not fit_module.wants_intensity_opinion(load_config(None),
                                                  SimpleNamespace(quality={"z": 6.0, "suspect": False}))


def test_a_failed_intensity_opinion_leaves_the_result(monkeypatch):
    import drmime_pl.core.quality as quality_module

    def broken(*args, **kwargs):
        raise RuntimeError("no overlap")

    monkeypatch.setattr(quality_module, "refine", broken)
    fixed, moving, _ = _rigid_pair()
    current = _wrong_result(fixed, moving)
    kept = fit_module.intensity_opinion(load_config(None, FAST), current, fixed, moving, None, 0.0)
    assert kept is current and kept.checkpoint == "first.ckpt"
    assert kept.quality["intensity_opinion"] == {"z_first": 0.5, "z_intensity": None, "kept": "first",
                                                 "error": "no overlap"}


def test_the_command_line_says_when_the_intensity_opinion_was_kept():
    import numpy as np

    from drmime_pl.cli import summary_lines

    opinion = {"z_first": 3.1, "z_intensity": 1.5, "kept": "intensity", "mi_first": 0.193, "mi_intensity": 0.261,
               "ngf_first": 0.311, "ngf_intensity": 0.296, "other_matrix": []}
    kept = SimpleNamespace(quality={"suspect": True, "reason": "registered on intensities", "ngf": 0.3, "z": 1.5,
                                    "chosen": "intensity", "intensity_opinion": opinion,
                                    "candidate_opinion": {"z_first": 3.1, "z_candidate": 2.0, "kept": "first",
                                                          "other_matrix": []}},
                           steps=0, converged=False, seconds=3.0, wall_seconds=5.0, final_mi=float("nan"),
                           matrix=np.eye(3), output_dir=None)
    lines = summary_lines(kept)
    assert lines[0] == ("drmime_pl: kept a rigid registration on intensities from identity, not optimised (intensity "
                        "opinion); the registrations took 3.0 s, wall time 5.0 s")
    assert ("intensity opinion: z 3.1, MI 0.193 (first) against z 1.5, MI 0.261 (intensity): kept the intensity"
            in lines)
