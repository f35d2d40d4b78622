"""The stopping rule: a registration that has converged stops before ``fit.max_steps``, judged relative to the
image (``fit.converge_tol``, a fraction of the moving image's diagonal)."""
import numpy as np

import drmime_pl

from .conftest import write_shifted_pair

TRUE = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]])


def test_a_converged_registration_stops_early_and_a_strict_tolerance_runs_to_the_end(tmp_path):
    fixed, moving = write_shifted_pair(tmp_path, seed=3, dx=3.0, dy=-2.0)
    steps = ["fit.max_steps=200", "fit.min_steps=100"]  # room to stop early, whatever the defaults
    quick = drmime_pl.register(str(fixed), str(moving), overrides=["data.batch_size=512", *steps])
    assert quick.converged and 100 <= quick.steps < 200, (quick.converged, quick.steps)
    corners = np.array([[0, 0, 1], [127, 0, 1], [0, 127, 1], [127, 127, 1]], float).T
    got, want = quick.matrix @ corners, TRUE @ corners
    assert np.abs(got[:2] / got[2] - want[:2]).max() < 0.5

    # Adam keeps the coefficients jittering: a tolerance of 1e-7 of the diagonal is never met.
    strict = drmime_pl.register(str(fixed), str(moving), overrides=["data.batch_size=512", "fit.converge_tol=1e-7", *steps])
    assert not strict.converged and strict.steps == 200
