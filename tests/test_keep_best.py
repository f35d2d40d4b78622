"""Issue 8, harm: which of the optimised, initial and identity transforms a registration keeps
(:func:`drmime_pl.core.quality.choose_and_judge`)."""
import torch

from drmime_pl.core.geometry import warp_image
from drmime_pl.core.ngf import Level, symmetric_ngf
from drmime_pl.core.quality import choose_and_judge

from .conftest import nonmonotonic, textured_image


def _shifted_pair(dx_px: float, size: int = 128):
    """A level whose moving image is the fixed one remapped and shifted by ``dx_px`` pixels along x, and the
    ``moving_norm_trans_fixed_norm`` matrix of that shift."""
    fixed = textured_image(size, seed=3)
    moving_pix_trans_fixed_pix = torch.eye(3, dtype=torch.float64)
    moving_pix_trans_fixed_pix[0, 2] = dx_px
    moving = nonmonotonic(warp_image(fixed, torch.linalg.inv(moving_pix_trans_fixed_pix), (size, size)))
    hw = (size, size)
    level = Level(fixed, torch.ones(hw, dtype=torch.bool), moving, None, hw, hw, size / 2.0)
    truth = torch.eye(3, dtype=torch.float64)
    truth[0, 2] = dx_px / level.scale
    return level, truth


def test_identity_is_kept_unless_the_result_beats_it_clearly():
    level, truth = _shifted_pair(0.25)
    scores = symmetric_ngf(level, torch.stack([truth, torch.eye(3, dtype=torch.float64)]))
    assert 0 < float(scores[0] - scores[1]) < 0.01  # the result is better, but by less than the judge resolves
    chosen, verdict = choose_and_judge(level, truth, truth)
    assert verdict.chosen == "identity"
    assert torch.equal(chosen, torch.eye(3, dtype=torch.float64))


def test_a_result_clearly_better_than_identity_is_kept():
    level, truth = _shifted_pair(4.0)
    chosen, verdict = choose_and_judge(level, truth, None)
    assert verdict.chosen == "optimised"
    assert torch.allclose(chosen, truth)
    assert not verdict.suspect


def test_a_result_is_suspect_only_when_neither_its_edges_nor_its_intensities_stand_out(monkeypatch):
    """The verdict's rule: NGF's z below SUSPECT_Z flags a result unless histogram MI's z, over the same misaligned
    copies, reaches MI_TRUST_Z; MI's z is computed only when NGF's falls below REVIEW_Z. Between SUSPECT_Z and
    REVIEW_Z an unflagged result is still ``doubtful`` when MI does not vouch for it (the opinions look again). Below
    both, the two together clear the flag where their combined z, ``(z + z_mi) / sqrt(2)``, reaches JOINT_Z."""
    import drmime_pl.core.quality as quality
    from drmime_pl.core.histogram_mi import symmetric_histogram_mi

    assert quality.SUSPECT_Z < quality.REVIEW_Z
    between = (quality.SUSPECT_Z + quality.REVIEW_Z) / 2
    level, truth = _shifted_pair(4.0)
    for z_ngf, z_mi, suspect, doubtful in ((6.0, None, False, False), (between, 2.0, False, True),
                                           (between, 5.0, False, False), (3.0, 5.0, False, False),
                                           (3.0, 2.0, True, True), (3.0, float("nan"), True, True),
                                           (3.0, 3.5, False, True),  # together 4.60: not flagged, still doubtful
                                           (3.0, 3.3, True, True)):  # together 4.45: below JOINT_Z
        asked = []

        def stand_out(level, matrix, value, score=symmetric_ngf):
            asked.append(score)
            return z_mi if score is symmetric_histogram_mi else z_ngf

        monkeypatch.setattr(quality, "stand_out", stand_out)
        _, verdict = choose_and_judge(level, truth, None)
        assert verdict.suspect is suspect and verdict.doubtful is doubtful, (z_ngf, z_mi)
        assert verdict.to_json()["doubtful"] is doubtful
        assert (symmetric_histogram_mi in asked) is (z_mi is not None)
        recorded = verdict.to_json()["z_mi"]
        assert recorded == (z_mi if z_mi is not None and z_mi == z_mi else None)
        if suspect:
            assert "MI z" in verdict.reason and f"{quality.MI_TRUST_Z}" in verdict.reason
            assert "together" in verdict.reason or z_mi != z_mi
        else:
            assert verdict.reason == ""


def test_the_polish_keeps_mi_s_move_against_the_edges_only_where_they_barely_stand_out(monkeypatch):
    """MI's refinement lowers NGF here; whether it stands depends on how far the edges and MI stand out at the
    edges' pick (``both_z``, patched)."""
    import drmime_pl.core.quality as quality

    level, _ = _shifted_pair(0.0, size=64)
    by_edges, by_mi = torch.eye(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)
    by_mi[0, 2] = 0.05

    def refined(level, matrix, model, score=None, **kwargs):
        return by_mi if score is quality.symmetric_histogram_mi else by_edges

    monkeypatch.setattr(quality, "refine", refined)
    monkeypatch.setattr(quality, "symmetric_ngf", lambda level, m: torch.tensor([0.5, 0.4])[: m.shape[0]])
    nan = float("nan")
    for z, z_mi, keeps_mi in [(2.5, 3.5, True),  # weak edges, MI stands out more
                              (2.5, 2.0, False),  # weak edges, but MI stands out even less
                              (4.5, 9.0, False),  # the edges stand out: their veto holds
                              (nan, 3.0, True),  # edges uncomputable: no veto
                              (2.5, nan, False)]:  # MI uncomputable: no word
        monkeypatch.setattr(quality, "both_z", lambda level, m: (z, z_mi))
        assert torch.equal(quality.polish(level, torch.eye(3, dtype=torch.float64), "affine"),
                           by_mi if keeps_mi else by_edges), (z, z_mi)
    assert quality.mi_outranks_edges(quality.EDGES_VETO_Z - 0.01, 5.0)
    assert not quality.mi_outranks_edges(quality.EDGES_VETO_Z, 5.0)
