"""fit(): TensorBoard events, outputs, checkpoints, and resuming from last.ckpt."""
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from drmime_pl.config import load_config
from drmime_pl.errors import RegistrationInterrupted
from drmime_pl.training.fit import fit
from drmime_pl.core.geometry import mean_corner_error, warp_image

from .conftest import nonmonotonic, textured_image, write_png

TRUE = torch.tensor([[1.03, 0.04, 4.0], [-0.03, 0.98, -3.0], [0, 0, 1]], dtype=torch.float64)


@pytest.fixture
def pair_files(tmp_path):
    moving = textured_image(160, seed=3)
    fixed = nonmonotonic(warp_image(moving, TRUE, (160, 160)))
    return str(write_png(tmp_path / "fixed.png", fixed)), str(write_png(tmp_path / "moving.png", moving))


def small_config(tmp_path, pair_files, *extra):
    fixed, moving = pair_files
    return load_config(None, [
        f"data.fixed={fixed}", f"data.moving={moving}", "model.transform=affine", "data.batch_size=256",
        "fit.max_steps=120", "fit.min_steps=120", f"logging.log_dir={tmp_path / 'logs'}", "logging.name=t",
        "logging.every_n_steps=5", "logging.image_every_n_steps=50", "logging.checkpoint_every_n_steps=40",
        "logging.progress_bar=false", *extra,
    ])


def read_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc.Tags()


def test_fit_writes_events_checkpoint_and_outputs(tmp_path, pair_files):
    result = fit(small_config(tmp_path, pair_files))
    run = Path(result.output_dir)
    assert run.parent == tmp_path / "logs" / "t"
    tags = read_events(run)
    for level in range(3):
        assert f"train/mi_level{level}" in tags["scalars"]
    assert {"train/loss", "matrix/m02", "lr-Adam/mine"} <= set(tags["scalars"])
    assert {"preview/warped_moving", "preview/checkerboard", "preview/overlay"} <= set(tags["images"])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    data = json.loads((run / "transform.json").read_text())
    assert np.allclose(data["matrix"], result.matrix)
    assert data["fixed_shape"] == [160, 160] and data["transform"] == "affine" and data["steps"] == 120
    assert {"drmime_pl", "torch", "pytorch_lightning"} <= set(data["versions"])
    for name in ("warped.png", "overlay.png", "config.yaml"):
        assert (run / name).is_file()
    assert not list(run.glob(".*tmp*"))  # no temporary files left behind
    from PIL import Image

    assert Image.open(run / "warped.png").size == (160, 160)


class SigintAtStep(pl.Callback):
    """Sends a real SIGINT to this process after a given step (GracefulInterrupt must catch it)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_resume_from_last_ckpt_matches_uninterrupted_run(tmp_path, pair_files):
    full = fit(small_config(tmp_path, pair_files))
    with pytest.raises(RegistrationInterrupted, match="resume with fit.ckpt_path=") as info:
        fit(small_config(tmp_path, pair_files), callbacks=[SigintAtStep(55)])
    ckpt = str(info.value).split("fit.ckpt_path=")[-1]
    assert Path(ckpt).is_file()
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] in (55, 56)
    resumed = fit(small_config(tmp_path, pair_files, f"fit.ckpt_path={ckpt}"))
    assert resumed.steps == full.steps == 120
    error = mean_corner_error(resumed.matrix, full.matrix, (160, 160))
    assert error < 0.1, f"resumed run ends {error:.4f} px from the uninterrupted one"
    # and the registration itself worked, so the comparison is meaningful
    assert mean_corner_error(full.matrix, TRUE, (160, 160)) < 2.0


def test_same_seed_same_matrix_other_seed_differs(tmp_path, pair_files):
    a = fit(small_config(tmp_path, pair_files, "logging.enabled=false", "fit.max_steps=40", "fit.min_steps=40"))
    b = fit(small_config(tmp_path, pair_files, "logging.enabled=false", "fit.max_steps=40", "fit.min_steps=40"))
    c = fit(small_config(tmp_path, pair_files, "logging.enabled=false", "fit.max_steps=40", "fit.min_steps=40",
                         "fit.seed=1"))
    assert np.array_equal(a.matrix, b.matrix)
    assert not np.array_equal(a.matrix, c.matrix)


def test_bf16_mixed_precision_runs_on_cpu(tmp_path, pair_files):
    result = fit(small_config(tmp_path, pair_files, "logging.enabled=false", "fit.precision=bf16-mixed"))
    assert np.isfinite(result.matrix).all()
    assert mean_corner_error(result.matrix, TRUE, (160, 160)) < 3.0


def test_identity_start_kept_by_keep_best(tmp_path, pair_files, monkeypatch):
    # model.init=identity leaves the pair without initial coefficients; when keep-best keeps that start ("initial"),
    # the result is identity with zero coefficients, not a crash (thirteenth round: an AttributeError).
    import drmime_pl.core.quality as quality

    real = quality.choose_and_judge

    def start_wins(level, optimised, initial, **kwargs):
        _, verdict = real(level, optimised, initial, **kwargs)
        verdict.chosen = "initial"
        return torch.eye(3, dtype=torch.float64), verdict

    monkeypatch.setattr(quality, "choose_and_judge", start_wins)
    result = fit(small_config(tmp_path, pair_files, "model.init=identity", "logging.enabled=false",
                              "fit.max_steps=10", "fit.min_steps=10", f"output.dir={tmp_path / 'out'}"))
    assert result.quality["chosen"] == "initial"
    np.testing.assert_allclose(result.matrix, np.eye(3), atol=1e-9)
    assert not np.any(result.coefficients_shared) and not np.any(result.coefficients_fine)
    assert (tmp_path / "out" / "transform.json").exists()
