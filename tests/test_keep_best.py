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
