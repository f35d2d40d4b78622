"""Many pairs in one optimisation loop (issue 9): each pair of a batch is scored, moved, stopped and written as it
would be alone, and a bad pair does not stop the others."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from drmime_pl.config import load_config
from drmime_pl.core.estimator import MineEstimator, StackedMineEstimator
from drmime_pl.core.mine import MineNetwork, StackedMineNetwork
from drmime_pl.core.transforms import MatrixExpTransform
from drmime_pl.training.callbacks import PerPairStopping
from drmime_pl.training.datamodule import PixelBatchSampler
from drmime_pl.training.module import DrmimeModule
from drmime_pl.training.prepare import prepare_pair
from drmime_pl.training.stacked_data import StackedSampler
from drmime_pl.training.stacked_module import StackedPairsModule

from .conftest import FAST, textured_image, write_shifted_pair

# Two pairs that differ in everything the stacking pads: size, pyramid levels, channels, and moving validity
# weights (pair 0's moving image has a black frame, so it gets a mask; pair 1's has no background).
COEFFICIENTS = (torch.tensor([0.03, -0.02, 0.04, 0.01, -0.02, 0.015, 0.002, -0.003]),
                torch.tensor([-0.01, 0.025, -0.03, 0.02, 0.01, -0.01, -0.001, 0.002]))


@pytest.fixture(scope="module")
def two_pairs():
    cfg = load_config(None, ["data.levels=6"])
    grey = textured_image(160, seed=1)[:, :, :130]  # 1 x 160 x 130
    framed = textured_image(160, seed=2)[:, :, :130].clone()
    framed[:, :12], framed[:, -12:], framed[:, :, :12], framed[:, :, -12:] = 0, 0, 0, 0
    colour = torch.cat([textured_image(96, seed=s)[:, :72, :90] for s in (3, 4, 5)])  # 3 x 72 x 90
    colour_moving = torch.flip(colour, [0])
    pairs = [prepare_pair(grey, framed, cfg.data, init="identity", model="perspective"),
             prepare_pair(colour, colour_moving, cfg.data, init="identity", model="perspective")]
    assert pairs[0].moving_weights is not None and pairs[1].moving_weights is None
    assert pairs[0].channels == 1 and pairs[1].channels == 3 and pairs[0].levels > pairs[1].levels
    return pairs


def _networks(pairs, seed=0):
    torch.manual_seed(seed)
    return [MineNetwork(2 * p.channels, [16, 16]) for p in pairs]


def _stacked_module(pairs, networks):
    estimator = StackedMineEstimator(copy.deepcopy(networks), 3, max(p.levels for p in pairs))
    transform = MatrixExpTransform("perspective", torch.stack(COEFFICIENTS))
    return StackedPairsModule(estimator, transform, [p.moving_pyramid for p in pairs],
                              [p.moving_weights for p in pairs], [p.fixed_hw for p in pairs],
                              [p.moving_hw for p in pairs], [p.scale for p in pairs], channels=3, max_steps=20,
                              warmup_steps=0)


def _samplers(pairs):
    return [PixelBatchSampler(p.fixed_pyramid, p.fixed_weights, p.fixed_hw, p.scale, 256, seed=7) for p in pairs]


def test_stacked_network_computes_what_each_network_computes():
    torch.manual_seed(0)
    grey, colour = MineNetwork(2, [16, 8]), MineNetwork(6, [16, 8])
    stacked = StackedMineNetwork([grey, colour], channels=3)
    a, b = torch.rand(50, 2), torch.rand(50, 6)
    padded_a = torch.zeros(50, 6)
    padded_a[:, 0], padded_a[:, 3] = a[:, 0], a[:, 1]  # fixed channel 0 and moving channel 0 of a 3-channel stack
    out = stacked(torch.stack([padded_a, b]))
    torch.testing.assert_close(out[0], grey(a), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[1], colour(b), atol=1e-6, rtol=1e-5)
    out.sum().backward()
    first = stacked.weights[0].grad  # N x 6 x 16
    assert first[0, [1, 2, 4, 5]].abs().max() == 0  # the grey pair's absent channels learn nothing
    assert first[0, [0, 3]].abs().max() > 0 and first[1].abs().min() >= 0


def test_stacked_module_scores_each_pair_as_the_one_pair_module_does(two_pairs):
    networks = _networks(two_pairs)
    stacked = _stacked_module(two_pairs, networks)
    samplers = _samplers(two_pairs)
    batch = StackedSampler(samplers, 3).batch(5)
    mi, objective = stacked.mutual_information(batch)
    for n, pair in enumerate(two_pairs):
        alone = DrmimeModule(MineEstimator(2 * pair.channels, [16, 16], pair.levels),
                             MatrixExpTransform("perspective", init=COEFFICIENTS[n]), pair.moving_pyramid,
                             pair.moving_weights, pair.fixed_hw, pair.moving_hw, pair.scale)
        alone.estimator.network.load_state_dict(networks[n].state_dict())
        mi_alone, objective_alone = alone.mutual_information(samplers[n].batch(5))
        levels = pair.levels
        torch.testing.assert_close(mi[n, :levels], mi_alone, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(objective[n, :levels], objective_alone, atol=2e-5, rtol=1e-4)
    assert stacked.level_valid.tolist() == [[lv < p.levels for lv in range(stacked.levels)] for p in two_pairs]


def test_a_pair_that_left_keeps_its_coefficients_while_the_other_moves(two_pairs):
    import pytorch_lightning as pl

    from drmime_pl.training.datamodule import PyramidDataModule

    class LeaveAtStep3(pl.Callback):  # after PerPairStopping, as a pair that converged at step 3 leaves
        kept = None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                module.active[0] = False
                self.kept = module.transform.shared.detach()[0].clone()

    module = _stacked_module(two_pairs, _networks(two_pairs))
    leave = LeaveAtStep3()
    trainer = pl.Trainer(max_steps=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu",
                         callbacks=[PerPairStopping(every=0, tol=0.0, patience=1, min_steps=0), leave])
    trainer.fit(module, datamodule=PyramidDataModule(StackedSampler(_samplers(two_pairs), 3)))
    shared = module.transform.shared.detach()
    assert (leave.kept - COEFFICIENTS[0]).abs().max() > 1e-4  # it had moved, so Adam's momentum would move it on
    assert torch.equal(shared[0], leave.kept)
    assert trainer.global_step == 8 and (shared[1] - COEFFICIENTS[1]).abs().max() > 1e-4


def test_each_pair_stops_by_its_own_rule():
    fixed_hws = moving_hws = [(100, 100), (100, 100)]
    transform = MatrixExpTransform("translation", torch.zeros(2, 2))
    module = SimpleNamespace(transform=transform, active=torch.ones(2, dtype=torch.bool), pairs=2,
                             nonfinite_pairs=torch.zeros(2, dtype=torch.bool), fixed_hws=fixed_hws,
                             moving_hws=moving_hws, scales=[50.0, 50.0])
    module.pixel_matrix_of = lambda n, c: StackedPairsModule.pixel_matrix_of(module, n, c)
    trainer = SimpleNamespace(global_step=0, should_stop=False)
    stopping = PerPairStopping(every=5, tol=0.002, patience=2, min_steps=10)
    stopping.on_train_start(trainer, module)
    for step in range(1, 41):
        with torch.no_grad():  # pair 0 stands still, pair 1 keeps moving by 0.1 px per step
            transform.shared[1, 0] += 0.1 / 50.0
        trainer.global_step = step
        stopping.on_train_batch_end(trainer, module, None, None, step)
        if step == 15:
            assert module.active.tolist() == [False, True] and stopping.stopped_at[0] == 15
    assert stopping.converged.tolist() == [True, False] and not trainer.should_stop
    module.transform.shared.data[1, 0] = float("nan")  # a diverged pair leaves with a message and its last values
    trainer.global_step = 41
    stopping.on_train_batch_end(trainer, module, None, None, 41)
    assert "NaN or infinite at step 41" in stopping.failed[1] and trainer.should_stop
    assert torch.isfinite(transform.shared).all()


def test_register_many_matches_one_pair_runs_and_a_bad_pair_fails_alone(tmp_path):
    import drmime_pl
    from drmime_pl.errors import ImageError

    truth = [(2.6, -1.8), (-3.1, 2.2)]
    paths = []
    for i, (dx, dy) in enumerate(truth):
        folder = tmp_path / f"pair{i}"
        folder.mkdir()
        paths.append(write_shifted_pair(folder, seed=10 + i, dx=dx, dy=dy))
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    settings = dict(transform="translation", overrides=FAST + ["model.init=identity"])
    pairs = [paths[0], (str(broken), str(paths[1][1])), paths[1]]
    outs = [tmp_path / "out0", tmp_path / "out_broken", None]
    many = drmime_pl.register_many(pairs, output_dirs=outs, batch_size=3, **settings)
    assert isinstance(many[1], ImageError) and "broken.png" in str(many[1])
    assert not (tmp_path / "out_broken" / "transform.json").exists()
    assert (tmp_path / "out0" / "transform.json").is_file()
    for (dx, dy), path, result in zip(truth, paths, (many[0], many[2])):
        assert abs(result.matrix[0, 2] - dx) < 0.3 and abs(result.matrix[1, 2] - dy) < 0.3
        alone = drmime_pl.register(*path, **settings)
        assert np.abs(alone.matrix - result.matrix).max() < 0.1  # run-to-run noise, no more
        assert result.steps <= 300 and result.quality["chosen"] in ("optimised", "initial", "identity")


def test_register_many_refuses_a_malformed_pair():
    import drmime_pl
    from drmime_pl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pairs\[0\]"):
        drmime_pl.register_many(["only-one-image.png"])
    with pytest.raises(ConfigError, match="output_dirs"):
        drmime_pl.register_many([("a.png", "b.png")], output_dirs=["x", "y"])


def test_a_grey_pair_beside_a_colour_pair():
    """Images given as tensors, one grey and one colour pair in a batch: both registered, nothing written."""
    import drmime_pl

    grey = textured_image(96, seed=3)
    colour = torch.cat([textured_image(96, seed=s) for s in (4, 5, 6)])
    results = drmime_pl.register_many([(grey, grey), (colour, colour)], transform="translation",
                                      overrides=FAST + ["fit.max_steps=40", "model.init=identity"])
    for result in results:
        assert not isinstance(result, Exception)
        assert np.abs(result.matrix - np.eye(3)).max() < 0.3  # identical images stay put
