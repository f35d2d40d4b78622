"""Callbacks: stopping rule, non-finite loss guard, Ctrl-C checkpointing and TensorBoard previews."""
from __future__ import annotations

import math
import signal
import threading
from pathlib import Path
from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from ..core.geometry import image_corners, reframe, transform_points, warp_grid
from ..errors import RegistrationError
from ..io.render import checkerboard, colour_overlay


def window_corners(moving_pix_trans_fixed_pix: torch.Tensor, fixed_hw) -> torch.Tensor:
    """The fixed image's four corners mapped into the moving image (full-resolution pixels): ``4 x 2``."""
    return transform_points(moving_pix_trans_fixed_pix, image_corners(fixed_hw))


def corner_motion(corners: torch.Tensor, previous: torch.Tensor, moving_hw, tol: float):
    """The stopping rule's test of one window (:class:`ConvergenceStopping`, :class:`PerPairStopping`): how far the
    corners moved since the previous window (the largest of the four, pixels), and whether that is under ``tol``
    times the moving image's diagonal."""
    motion = float((corners - previous).norm(dim=-1).max())
    return motion, motion < tol * math.hypot(*moving_hw)


class ConvergenceStopping(pl.Callback):
    """Stops when the transform has converged.

    The coefficients are averaged over windows of ``every`` steps; at the end of each window the fixed image's four
    corners are mapped into the moving image (full-resolution pixels) with the window's mean coefficients and
    compared with the previous window's. When they moved less than ``tol`` times the moving image's diagonal,
    ``patience`` windows in a row, and at least ``min_steps`` steps ran, training stops. Relative to the image, so
    that a 256 px scan and a 3000 px photograph stop at the same precision. Window means, not single steps, because
    Adam keeps the coefficients jittering around the optimum; averaging coefficients costs one small addition per
    step.
    The state is saved in checkpoints (Lightning runs ModelCheckpoint after every other callback, so a checkpoint
    at step k holds the state after step k).
    """

    def __init__(self, every: int, tol: float, patience: int, min_steps: int):
        self.every, self.tol, self.patience, self.min_steps = int(every), float(tol), int(patience), int(min_steps)
        self.window_sum: Optional[torch.Tensor] = None  # 2 x K: sums of shared and fine coefficients
        self.last_mean: Optional[torch.Tensor] = None  # 4 x 2 corners of the previous window's mean
        self.still_checks = 0
        self.converged = False
        self.last_motion_px = float("nan")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every <= 0 or getattr(pl_module, "nonfinite_step", False):
            return
        coefficients = pl_module.transform.coefficients().double().cpu()
        self.window_sum = coefficients if self.window_sum is None else self.window_sum + coefficients
        step = trainer.global_step  # steps done
        if step % self.every:
            return
        mean_shared, mean_fine = self.window_sum / self.every
        self.window_sum = None
        corners = window_corners(pl_module.pixel_matrix_of(mean_shared + mean_fine), pl_module.fixed_hw)
        if not torch.isfinite(corners).all():
            return
        if self.last_mean is not None:
            self.last_motion_px, still = corner_motion(corners, self.last_mean, pl_module.moving_hw, self.tol)
            self.still_checks = self.still_checks + 1 if still else 0
            if trainer.logger is not None:
                pl_module.log("train/corner_motion_px", self.last_motion_px, on_step=True, batch_size=1)
        self.last_mean = corners
        if step >= self.min_steps and self.still_checks >= self.patience:
            self.converged = True
            trainer.should_stop = True

    def state_dict(self):
        return {"window_sum": self.window_sum, "last_mean": self.last_mean, "still_checks": self.still_checks,
                "converged": self.converged, "last_motion_px": self.last_motion_px}

    def load_state_dict(self, state):
        self.window_sum = state["window_sum"]
        self.last_mean = state["last_mean"]
        self.still_checks = int(state["still_checks"])
        self.converged = bool(state["converged"])
        self.last_motion_px = float(state["last_motion_px"])


def _save_last(trainer: pl.Trainer, ckpt_dir: Optional[Path]) -> Optional[Path]:
    if ckpt_dir is None:
        return None
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / "last.ckpt"
    trainer.save_checkpoint(str(path))
    return path


class NonFiniteGuard(pl.Callback):
    """Stops with :class:`RegistrationError` when the loss or the transform turns NaN or infinite.

    After every good step it keeps a copy of the transform's coefficients (a few numbers); on a bad step it puts
    them back, saves ``last.ckpt`` and raises, so no NaN transform is ever kept or written.
    """

    def __init__(self, ckpt_dir: Optional[Path]):
        self.ckpt_dir = ckpt_dir
        self.last_good = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        t = pl_module.transform
        finite = not getattr(pl_module, "nonfinite_step", False) and bool(torch.isfinite(t.coefficients()).all())
        if finite:
            self.last_good = t.snapshot()
            return
        if self.last_good is not None:
            t.restore(self.last_good)
        saved = _save_last(trainer, self.ckpt_dir)
        where = f"; the last good transform is in {saved}" if saved else ""
        raise RegistrationError(
            f"loss became NaN or infinite at step {trainer.global_step}; stopped{where}. "
            f"Lower the learning rates (optim.*) or check the images"
        )


class GracefulInterrupt(pl.Callback):
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP stop after the current step and save ``last.ckpt``; a second signal
    aborts at once. ``signum`` records the signal, for the exit status (128 + signum)."""

    def __init__(self, ckpt_dir: Optional[Path]):
        self.ckpt_dir = ckpt_dir
        self.requested = False
        self.signum: Optional[int] = None
        self.saved: Optional[Path] = None
        self._previous = {}

    def _handler(self, signum, frame):
        from .signals import Interrupted

        if self.requested:  # a second signal: give up on a clean stop
            raise Interrupted(signum)
        self.requested = True
        self.signum = int(signum)

    def on_train_start(self, trainer, pl_module):
        from .signals import STOP_SIGNALS

        # After Lightning's own SIGTERM handler (installed when fit starts), which would end the run with status 0.
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handler)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.requested and not trainer.should_stop:
            self.saved = _save_last(trainer, self.ckpt_dir)
            trainer.should_stop = True

    def _restore(self):
        for s, handler in self._previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer, pl_module):
        self._restore()

    def on_exception(self, trainer, pl_module, exception):
        self._restore()


class PreviewImages(pl.Callback):
    """Every ``every`` steps (and at the end) logs, at about ``size`` pixels: the warped moving image, a
    checkerboard and a colour overlay with the fixed image (``preview/*`` in TensorBoard).

    Uses the finest pyramid levels no larger than ``size``, so a preview costs the same for any image size.
    """

    def __init__(self, fixed_pyramid, every: int, size: int):
        self.every, self.size = int(every), int(size)
        self.fixed = next((img for img in fixed_pyramid if max(img.shape[-2:]) <= self.size), fixed_pyramid[-1])

    def _moving_level(self, pl_module):
        pyramid = pl_module.moving_pyramid()
        return next((img for img in pyramid if max(img.shape[-2:]) <= self.size), pyramid[-1])

    @rank_zero_only
    def log_preview(self, trainer, pl_module):
        logger = trainer.logger
        if logger is None or not hasattr(logger.experiment, "add_image"):
            return
        with torch.no_grad():
            h = pl_module.normalised_matrix()
            moving_grid_trans_fixed_grid = reframe(h, pl_module.fixed_hw, pl_module.moving_hw, "norm", "grid",
                                                   pl_module.scale)
            moving = self._moving_level(pl_module).detach().float().cpu()
            warped = warp_grid(moving, moving_grid_trans_fixed_grid, self.fixed.shape[-2:]).clamp(0, 1)
        step = trainer.global_step
        exp = logger.experiment
        exp.add_image("preview/warped_moving", warped if warped.shape[0] in (1, 3) else warped[:1], step)
        exp.add_image("preview/checkerboard", checkerboard(self.fixed, warped), step)
        exp.add_image("preview/overlay", colour_overlay(self.fixed, warped), step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.every > 0 and (trainer.global_step == 1 or trainer.global_step % self.every == 0):
            self.log_preview(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self.log_preview(trainer, pl_module)


class PerPairStopping(pl.Callback):
    """For ``N`` pairs registered at once (:class:`~drmime_pl.training.stacked_module.StackedPairsModule`): each
    pair's own stopping rule and non-finite guard, and the loop's end when no pair is left moving.

    After every step: a pair whose loss or coefficients turned NaN or infinite gets its last good coefficients back
    and leaves (``failed[n]`` says why, as :class:`NonFiniteGuard` would); the coefficients of pairs that left are
    put back (Adam's momentum would still move them); then each active pair's corners are compared window by
    window exactly as :class:`ConvergenceStopping` does for one pair, and a converged pair leaves at that step
    (``stopped_at[n]``).
    """

    def __init__(self, every: int, tol: float, patience: int, min_steps: int):
        self.every, self.tol, self.patience, self.min_steps = int(every), float(tol), int(patience), int(min_steps)
        self.held = None  # the coefficients each pair keeps: its latest good ones while active
        self.window_sum: Optional[torch.Tensor] = None  # N x 2 x K
        self.last_mean: Optional[torch.Tensor] = None  # N x 4 x 2
        self.still_checks: Optional[torch.Tensor] = None  # N
        self.converged: Optional[torch.Tensor] = None  # N bool
        self.stopped_at: Optional[list] = None
        self.failed: dict = {}

    def on_train_start(self, trainer, pl_module):
        n = pl_module.pairs
        self.held = pl_module.transform.snapshot()
        self.still_checks = torch.zeros(n, dtype=torch.long)
        self.converged = torch.zeros(n, dtype=torch.bool)
        self.stopped_at = [None] * n
        self.last_mean = torch.full((n, 4, 2), float("nan"), dtype=torch.float64)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        t, step = pl_module.transform, trainer.global_step
        active = pl_module.active
        coefficients = t.coefficients().double().cpu()  # N x 2 x K
        bad = active.cpu() & (pl_module.nonfinite_pairs.cpu() | ~torch.isfinite(coefficients).flatten(1).all(1))
        for n in bad.nonzero().flatten().tolist():
            self.failed[n] = (f"loss became NaN or infinite at step {step}; stopped. Lower the learning rates "
                              f"(optim.*) or check the images")
            self.stopped_at[n] = step
        active &= ~bad.to(active.device)
        t.restore(self.held, ~active)  # pairs that left keep their coefficients
        self.held = t.snapshot()
        coefficients = t.coefficients().double().cpu()
        if self.every > 0:
            self._check_convergence(pl_module, coefficients, step)
        if not bool(active.any()):
            trainer.should_stop = True

    def _check_convergence(self, pl_module, coefficients, step):
        self.window_sum = coefficients if self.window_sum is None else self.window_sum + coefficients
        if step % self.every:
            return
        mean = self.window_sum / self.every
        self.window_sum = None
        active = pl_module.active
        for n in active.nonzero().flatten().tolist():
            corners = window_corners(pl_module.pixel_matrix_of(n, mean[n, 0] + mean[n, 1]), pl_module.fixed_hws[n])
            if not torch.isfinite(corners).all():
                continue
            if torch.isfinite(self.last_mean[n]).all():
                _, still = corner_motion(corners, self.last_mean[n], pl_module.moving_hws[n], self.tol)
                self.still_checks[n] = self.still_checks[n] + 1 if still else 0
            self.last_mean[n] = corners
            if step >= self.min_steps and self.still_checks[n] >= self.patience:
                self.converged[n] = True
                self.stopped_at[n] = step
                active[n] = False
