"""A suspect registration gets a second opinion (``model.second_opinion``,
:func:`drmime_pl.training.fit.second_opinion`): the pair is registered again from a search on levels of exactly its
sizes, the result that stands out more is kept, and only that one is written."""
import json
import math
from types import SimpleNamespace

import numpy as np

import drmime_pl
from drmime_pl.training.fit import better_opinion

from .conftest import SAMPLES

QUICK = ["fit.max_steps=60", "fit.min_steps=30", "logging.progress_bar=false"]
#: Two shipped photographs of different tissue: the verdict finds any result suspect.
UNRELATED = (str(SAMPLES / "birl" / "images" / "artificial_reference.jpg"),
             str(SAMPLES / "birl" / "rat-kidney_" / "scale-5pc" / "Rat-Kidney_HE.jpg"))


def _opinion(z, seconds=1.0):
    matrix = np.eye(3)
    matrix[0, 2] = seconds  # tells the opinions' matrices apart
    return SimpleNamespace(quality={"z": z, "suspect": True, "doubtful": True}, seconds=seconds,
                           checkpoint="first.ckpt", matrix=matrix)


def _shifted(x):
    return [[1.0, 0.0, x], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_the_opinion_that_stands_out_more_is_kept_and_both_are_recorded():
    first, second = _opinion(2.0, 3.0), _opinion(3.5, 4.0)
    kept = better_opinion(first, second)
    assert kept is second
    # the one not kept is there to look at: the first's matrix
    assert kept.quality["second_opinion"] == {"z_first": 2.0, "z_second": 3.5, "kept": "second",
                                              "other_matrix": _shifted(3.0)}
    assert kept.seconds == 7.0  # both optimisations
    assert kept.checkpoint is None  # the checkpoint is the first registration's

    first, second = _opinion(2.0), _opinion(float("nan"))  # a z that could not be computed never wins
    assert better_opinion(first, second) is first
    assert first.quality["second_opinion"]["kept"] == "first" and first.checkpoint == "first.ckpt"
    assert first.quality["second_opinion"]["other_matrix"] == _shifted(1.0)
    first, second = _opinion(None), _opinion(-1.0)
    assert better_opinion(first, second) is second


def test_second_opinion_false_keeps_the_first(tmp_path):
    reg = drmime_pl.register(*UNRELATED, overrides=QUICK + ["model.second_opinion=false", "model.rigid_opinion=false"])
    assert reg.quality["suspect"] is True and "second_opinion" not in reg.quality and "rigid_opinion" not in reg.quality


def test_a_batch_asks_a_second_opinion_for_its_suspect_pair_only(tmp_path):
    from .conftest import write_shifted_pair

    folder = tmp_path / "good"
    folder.mkdir()
    good = write_shifted_pair(folder, seed=11, dx=2.6, dy=-1.8)
    outs = [tmp_path / "out_good", tmp_path / "out_unrelated"]
    many = drmime_pl.register_many([good, UNRELATED], output_dirs=outs, batch_size=2,
                                   overrides=QUICK + ["model.rigid_opinion=false"])  # the same further_opinions
    assert not many[0].quality["suspect"] and "second_opinion" not in many[0].quality
    assert abs(many[0].matrix[0, 2] - 2.6) < 0.3 and abs(many[0].matrix[1, 2] + 1.8) < 0.3
    assert many[1].quality["suspect"] and many[1].quality["second_opinion"]["kept"] in ("first", "second")
    for result, out in zip(many, outs):
        written = json.loads((out / "transform.json").read_text())
        assert written["matrix"] == result.matrix.tolist() and written["quality"] == json.loads(
            json.dumps(result.quality))


def test_a_failed_second_registration_leaves_the_first_result(monkeypatch):
    import drmime_pl.training.fit as fit_module
    from drmime_pl.config import load_config
    from drmime_pl.errors import RegistrationError

    def degenerate(*args, **kwargs):
        raise RegistrationError("registration failed after 60 steps: the transform folds the image")

    monkeypatch.setattr(fit_module, "_register_once", degenerate)
    first = _opinion(2.0)
    kept = fit_module.second_opinion(load_config(None), first, "f.png", "m.png", None, None, 0.0)
    assert kept is first and kept.checkpoint == "first.ckpt"
    assert kept.quality["second_opinion"]["kept"] == "first"
    assert "folds the image" in kept.quality["second_opinion"]["error"]


def _unrelated_resized(tmp_path, width: int, height: int):
    """The unrelated pair resized to ``width x height`` px, written as PNGs into ``tmp_path``: their paths."""
    from PIL import Image

    paths = []
    for source, name in zip(UNRELATED, ("fixed.png", "moving.png")):
        path = tmp_path / name
        Image.open(source).convert("RGB").resize((width, height)).save(path)
        paths.append(str(path))
    return paths


def _unrelated_at_256(tmp_path):
    """The unrelated pair at 256 x 256 px: its pyramid halves to exactly the search's 128, 64 and 32 px."""
    return _unrelated_resized(tmp_path, 256, 256)


def test_exact_levels_change_nothing_only_where_the_pyramid_has_every_search_size():
    import torch

    from drmime_pl.core.search import exact_levels_change_nothing

    def pyramid(h, w, levels):
        return [torch.zeros(1, max(1, h >> k), max(1, w >> k)) for k in range(levels)]

    assert exact_levels_change_nothing(pyramid(256, 256, 4), pyramid(256, 256, 4))
    assert exact_levels_change_nothing(pyramid(200, 256, 4), pyramid(300, 300, 4))  # the fixed long side counts
    assert not exact_levels_change_nothing(pyramid(256, 320, 4), pyramid(256, 320, 4))  # 160, 80, 40 px
    assert not exact_levels_change_nothing(pyramid(256, 256, 3), pyramid(256, 256, 3))  # no 32 px level
    assert not exact_levels_change_nothing(pyramid(256, 256, 4), pyramid(256, 256, 3))  # the moving one stops early


def test_where_the_search_levels_are_exact_already_both_searches_start_alike(tmp_path):
    """Why such a pair's second search takes a finer scale grid: on a 256 px pair the search on exact levels alone
    finds the very start the normal search finds."""
    from drmime_pl.config import load_config
    from drmime_pl.training.prepare import prepare_pair

    fixed, moving = _unrelated_at_256(tmp_path)
    data = load_config(None).data
    normal = prepare_pair(fixed, moving, data, init="search", model="affine")
    exact = prepare_pair(fixed, moving, data, init="search", model="affine", search_exact_levels=True)
    assert normal.search_levels_exact
    assert normal.init is not None and normal.init.equal(exact.init)


def test_a_suspect_pair_whose_levels_are_exact_already_is_searched_again_on_a_finer_scale_grid(tmp_path,
                                                                                                 monkeypatch):
    import drmime_pl.core.search as search_module
    import drmime_pl.training.fit as fit_module
    from drmime_pl.core.search import FINE_SCALE_STEPS, SCALE_STEPS

    calls, grids = [], []
    register_once, search = fit_module._register_once, search_module.global_search

    def counted(cfg, *args, **kwargs):
        calls.append((cfg.model.transform, kwargs.get("search_exact_levels", False),
                      kwargs.get("search_scale_steps")))
        return register_once(cfg, *args, **kwargs)

    def searched(*args, **kwargs):
        grids.append(kwargs["scale_steps"])
        return search(*args, **kwargs)

    monkeypatch.setattr(fit_module, "_register_once", counted)
    monkeypatch.setattr(search_module, "global_search", searched)
    reg = drmime_pl.register(*_unrelated_at_256(tmp_path), overrides=QUICK + ["model.candidate_opinion=false"])
    assert reg.quality["suspect"] is True
    # the first registration, the second on the finer grid (its exact levels alone would repeat the first), and
    # the rigid opinion on the result still suspect
    assert calls == [("affine", False, None), ("affine", True, FINE_SCALE_STEPS), ("rigid", False, None)]
    assert grids == [SCALE_STEPS, FINE_SCALE_STEPS, SCALE_STEPS]  # what the searches scored
    opinion = reg.quality["second_opinion"]
    assert "skipped" not in opinion and opinion["z_second"] is not None  # it ran to its end, and was judged


def test_a_suspect_registration_gets_a_second_and_a_rigid_opinion_and_only_the_kept_result_is_written(tmp_path):
    out = tmp_path / "out"
    # (the candidate opinion that may follow: test_candidate_opinion.py)
    reg = drmime_pl.register(*UNRELATED, overrides=QUICK + ["model.candidate_opinion=false"], output_dir=str(out),
                             log=True)
    assert reg.quality["suspect"] is True

    def z(value):
        return value if value is not None else -math.inf

    second = reg.quality["second_opinion"]  # the whole pair again, its search on exact levels
    assert set(second) == {"z_first", "z_second", "kept", "other_matrix"}
    assert second["kept"] == ("second" if z(second["z_second"]) > z(second["z_first"]) else "first")
    rigid = reg.quality["rigid_opinion"]  # then, still suspect, with a rigid model
    assert set(rigid) == {"z_affine", "z_rigid", "kept", "other_matrix"}
    # the result not kept, fixed pixel -> moving pixel like the kept one's matrix, but another transform
    assert np.isfinite(rigid["other_matrix"]).all() and np.shape(rigid["other_matrix"]) == (3, 3)
    assert not np.allclose(rigid["other_matrix"], reg.matrix)
    assert rigid["z_affine"] == second["z_" + second["kept"]]
    assert rigid["kept"] == ("rigid" if z(rigid["z_rigid"]) > z(rigid["z_affine"]) else "affine")
    assert reg.transform == rigid["kept"]
    assert reg.quality["z"] == rigid["z_" + rigid["kept"]]
    written = json.loads((out / "transform.json").read_text())
    assert written["transform"] == reg.transform and written["matrix"] == reg.matrix.tolist()
    assert written["quality"] == json.loads(json.dumps(reg.quality))
    # the further registrations write no TensorBoard run of their own
    assert [p.name for p in (out / "logs" / "drmime").iterdir()] == ["version_0"]


def test_the_rigid_opinion_is_kept_when_it_stands_out_more_and_records_both():
    first, rigid = _opinion(2.0, 3.0), _opinion(3.9, 2.0)
    first.quality["second_opinion"] = {"z_first": 1.5, "z_second": 2.0, "kept": "second"}
    kept = better_opinion(first, rigid, "rigid_opinion", ("affine", "rigid"))
    assert kept is rigid and kept.seconds == 5.0 and kept.checkpoint is None
    assert kept.quality["rigid_opinion"] == {"z_affine": 2.0, "z_rigid": 3.9, "kept": "rigid",
                                             "other_matrix": _shifted(3.0)}
    assert kept.quality["second_opinion"] == first.quality["second_opinion"]  # carried over from the first


def test_a_rigid_model_or_a_fixed_start_gets_no_rigid_opinion():
    from drmime_pl.config import load_config
    from drmime_pl.training.fit import wants_rigid_opinion

    suspect = _opinion(2.0)
    assert wants_rigid_opinion(load_config(None), suspect)
    for override in ("model.transform=rigid", "model.transform=translation", "model.rigid_opinion=false",
                     "model.init=moments", "fit.ckpt_path=x.ckpt"):
        assert not wants_rigid_opinion(load_config(None, [override]), suspect), override
    assert not wants_rigid_opinion(load_config(None), SimpleNamespace(quality={"z": 6.0, "suspect": False,
                                                                                "doubtful": False}))


def test_the_further_opinions_follow_the_doubt_not_the_flag():
    """A result between SUSPECT_Z and REVIEW_Z is not flagged but is registered again; a flagged one always is."""
    from drmime_pl.config import load_config
    from drmime_pl.training.fit import wants_candidate_opinion, wants_rigid_opinion, wants_second_opinion

    cfg = load_config(None)
    doubtful = SimpleNamespace(quality={"z": 4.2, "z_mi": 2.0, "suspect": False, "doubtful": True})
    trusted = SimpleNamespace(quality={"z": 4.2, "z_mi": 4.5, "suspect": False, "doubtful": False})
    for wants in (wants_second_opinion, wants_rigid_opinion, wants_candidate_opinion):
        assert wants(cfg, doubtful) and wants(cfg, _opinion(2.0)), wants
        assert not wants(cfg, trusted), wants


def _unrelated_small(tmp_path):
    """The unrelated pair at 240 x 200 px: its levels (120, 60, 30 px) are not the search's exact sizes."""
    return _unrelated_resized(tmp_path, 240, 200)


def test_after_the_search_a_registration_does_not_depend_on_its_levels(tmp_path, monkeypatch):
    """The premise of stopping a second opinion whose search picks the first's start: from the same start, the
    registration with the search on exact levels gives the first's result to the last bit."""
    import torch

    import drmime_pl.training.prepare as prepare_module
    from drmime_pl.config import load_config
    from drmime_pl.training.fit import _register_once

    start = torch.tensor([0.02, -0.01, 0.05, 0.0, 0.01, 0.0])  # affine coefficients, the same for both searches
    monkeypatch.setattr(prepare_module, "_search", lambda *args, **kwargs: start.clone())
    cfg = load_config(None, QUICK + ["logging.enabled=false"])
    fixed, moving = _unrelated_small(tmp_path)
    first, _, _, _ = _register_once(cfg, fixed, moving, None, (), None, 0.0)
    second, _, _, _ = _register_once(cfg, fixed, moving, None, (), None, 0.0, search_exact_levels=True)
    assert (first.matrix == second.matrix).all() and first.quality == second.quality


def test_a_second_search_that_picks_the_first_start_ends_the_second_opinion_there(tmp_path, monkeypatch):
    import drmime_pl.training.fit as fit_module
    from drmime_pl.config import load_config
    from drmime_pl.training.prepare import prepare_pair

    fixed, moving = _unrelated_small(tmp_path)
    cfg = load_config(None, QUICK)
    exact = prepare_pair(fixed, moving, cfg.data, init="search", model="affine", search_exact_levels=True)

    def no_training(*args, **kwargs):
        raise AssertionError("the second registration went on past its search")

    monkeypatch.setattr(fit_module, "make_trainer", no_training)
    first = _opinion(2.0)
    kept = fit_module.second_opinion(cfg, first, fixed, moving, None, None, 0.0, first_start=exact.init.clone())
    assert kept is first and kept.checkpoint == "first.ckpt"
    opinion = kept.quality["second_opinion"]
    assert opinion["kept"] == "first" and opinion["z_second"] is None and "first's start" in opinion["skipped"]

    # Another start: the second registration runs (here it reaches the trainer, which this test forbids).
    other = exact.init.clone()
    other[0] += 0.01
    kept = fit_module.second_opinion(cfg, _opinion(2.0), fixed, moving, None, None, 0.0, first_start=other)
    assert "went on past its search" in kept.quality["second_opinion"]["error"]
