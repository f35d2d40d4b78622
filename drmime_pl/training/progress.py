"""Progress reporting on stderr: a tqdm bar on a terminal, plain lines in a pipeline (issue 11, part 5).

* stderr is a terminal: :class:`RegisterProgressBar`, Lightning's tqdm bar described as ``register`` (not
  ``Epoch 0``), counting steps up to ``fit.max_steps``, without Lightning's ``v_num``, written to stderr.
* stderr is not a terminal (a log file, a pipe, a batch system): :class:`PlainProgress`, one line every
  :func:`plain_every` steps (``logging.every_n_steps * 10``) and no carriage returns::

      drmime_pl: step 100/500  MI 0.412  corner motion 1.83 px  elapsed 12.1 s  ETA <= 48.3 s

  and, from :func:`drmime_pl.training.fit.fit`, a final line with the wall time of the whole run (:func:`done_line`).

``logging.progress_bar=false`` turns both off (the Python API and ``drmime_pl.evaluate`` do that).
"""
from __future__ import annotations

import math
import sys
import time
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

PREFIX = "drmime_pl:"


def stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def plain_every(every_n_steps: int) -> int:
    """Steps between two plain progress lines: at most one line per ``logging.every_n_steps * 10`` steps."""
    return max(1, int(every_n_steps) * 10)


def format_seconds(seconds: float) -> str:
    """``12.3 s``, ``4m05s``, ``2h03m``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


#: The further opinions whose kept result no MINE optimisation produced (:mod:`drmime_pl.training.fit`), last
#: first, with what the command line says of such a result.
UNOPTIMISED_OPINIONS = (("intensity_opinion", "intensity",
                         "kept a rigid registration on intensities from identity, not optimised (intensity opinion)"),
                        ("candidate_opinion", "candidate",
                         "kept a candidate of the search, not optimised (candidate opinion)"))


def kept_unoptimised(result):
    """How a kept result that no optimisation produced came about (a line for :func:`run_state`), or None for an
    optimised one. ``result``: a :class:`~drmime_pl.io.result.Registration`. The last opinion that kept its own
    result decides: an intensity opinion may replace a kept candidate."""
    quality = result.quality or {}
    for key, name, how in UNOPTIMISED_OPINIONS:
        if quality.get(key, {}).get("kept") == name:
            return how
    return None


def run_state(result) -> str:
    """How the kept result of a registration (a :class:`~drmime_pl.io.result.Registration`) was reached: "converged
    after N steps", "reached fit.max_steps after N steps", or, for a result an opinion kept without an
    optimisation (:func:`kept_unoptimised`), how it did."""
    return kept_unoptimised(result) or (
        f"{'converged' if result.converged else 'reached fit.max_steps'} after {result.steps} steps")


def done_line(result) -> str:
    """The last progress line of a run: :func:`run_state`, the optimisations' and the whole run's time."""
    return (f"{PREFIX} done: {run_state(result)}; optimisation {format_seconds(result.seconds)}, "
            f"wall time {format_seconds(result.wall_seconds)} (loading, preparation, optimisation and outputs)")


def _mi(pl_module) -> float:
    mi = getattr(pl_module, "mi_ema", None)
    try:
        return float(mi.float().mean()) if mi is not None and mi.numel() else float("nan")
    except Exception:  # noqa: BLE001 - a progress line must never stop a run
        return float("nan")


class PlainProgress(pl.Callback):
    """One plain line on ``stream`` (stderr) every ``every`` optimisation steps: step, MI (nats, mean over levels
    of the running estimate), the stopping rule's corner motion (px), elapsed time and an ETA (an upper bound: the
    stopping rule may end the run before ``fit.max_steps``)."""

    def __init__(self, every: int, convergence=None, stream=None):
        self.every = max(1, int(every))
        self.convergence = convergence
        self.stream = stream
        self._start: Optional[float] = None
        self._first_step = 0

    def on_train_start(self, trainer, pl_module):
        self._start = time.perf_counter()
        self._first_step = int(trainer.global_step)  # a resumed run starts where its checkpoint stopped

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = int(trainer.global_step)
        if step % self.every or self._start is None:
            return
        elapsed = time.perf_counter() - self._start
        done = step - self._first_step
        total = int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else 0
        eta = elapsed / done * max(0, total - step) if done > 0 and total else float("nan")
        motion = getattr(self.convergence, "last_motion_px", float("nan"))
        motion_text = f"{motion:.2f} px" if isinstance(motion, float) and math.isfinite(motion) else "-"
        mi = _mi(pl_module)
        line = (f"{PREFIX} step {step}/{total or '?'}  MI {mi:.3f}  corner motion {motion_text}  "
                f"elapsed {format_seconds(elapsed)}  ETA <= {format_seconds(eta)}")
        stream = self.stream or sys.stderr
        print(line, file=stream, flush=True)


class RegisterProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar for a terminal, on stderr, described as ``register`` and counting optimisation steps up
    to ``fit.max_steps``; no ``Epoch 0`` and no ``v_num``."""

    def init_train_tqdm(self):
        from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

        return Tqdm(desc="register", position=2 * self.process_position, disable=self.is_disabled, leave=True,
                    dynamic_ncols=True, file=sys.stderr, smoothing=0, bar_format=getattr(self, "BAR_FORMAT", None))

    def on_train_epoch_start(self, trainer, *args):  # not Lightning's: that one shows "Epoch 0"
        bar = self.train_progress_bar
        bar.reset(total=int(trainer.max_steps) if trainer.max_steps and trainer.max_steps > 0 else None)
        bar.n = bar.initial = int(trainer.global_step)  # a resumed run starts where its checkpoint stopped

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar = self.train_progress_bar
        step = int(trainer.global_step)
        if bar is not None and (step % self.refresh_rate == 0 or step == bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
