"""Many pairs in one optimisation loop (issue 9): ``fit_many(cfg, pairs)`` registers ``N`` pairs at once on one
device and returns one result per pair.

Each pair is prepared (read, checked, pyramids, masks, the initial search) and, after the optimisation, judged,
polished and written exactly as :func:`drmime_pl.training.fit.fit` does it; only the optimisation is shared: one
:class:`~drmime_pl.training.stacked_module.StackedPairsModule`, one Lightning Trainer, one step for all pairs. Each
pair keeps its own statistics network (seeded as a one-pair run, so its start is the same), its own coefficients,
sampler, stopping rule and outputs. A pair that cannot be read, diverges or degenerates gets its exception in its
place of the result list; the others go on.

What a batched run does not do: resume from a checkpoint (``fit.ckpt_path``; a batch of pairs takes seconds to
minutes, and ``evaluate`` skips pairs already finished), TensorBoard preview images, per-pair TensorBoard runs.
With ``logging.enabled`` the batch gets one TensorBoard run (loss, active pairs, each pair's mean MI as
``pair<i>/mi_mean``, ``i`` its place in the batch) and one ``checkpoints/last.ckpt`` at the end.
"""
from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Union

import torch
from omegaconf import DictConfig

from ..core.geometry import TRANSFORM_DOFS
from ..core.tasks import cpu_count
from ..errors import ConfigError, RegistrationError, RegistrationInterrupted
from ..io.images import ImageLike
from .memory import keep_freed_memory


@dataclass
class PairSpec:
    """One pair of a batched run: images (paths, arrays or tensors), an optional fixed mask, where its result files
    go (None: nowhere) and optionally its own config, written as its ``config.yaml`` (default: the batch's config
    with ``output.dir`` set to ``output_dir``). The optimisation settings are the batch's."""

    fixed: ImageLike
    moving: ImageLike
    fixed_mask: Optional[ImageLike] = None
    output_dir: Optional[str] = None
    config: Optional[DictConfig] = None


def fit_many(cfg: DictConfig, pairs: Sequence[PairSpec], batch_size: Optional[int] = None,
             device_index=None) -> List[Union[object, Exception]]:
    """Register every pair of ``pairs`` with ``cfg``, ``batch_size`` pairs per optimisation loop (default: all in
    one); :func:`fit_batches` does the work.

    Returns a list as long as ``pairs``: a :class:`~drmime_pl.io.result.Registration`, or the exception that
    ended that pair (a :class:`~drmime_pl.errors.DrmimeError` for bad input or a failed registration).
    """
    results: List[Union[object, Exception]] = []
    for batch in fit_batches(cfg, pairs, batch_size or max(1, len(pairs)), device_index):
        results.extend(batch)
    return results


def fit_batches(cfg: DictConfig, pairs: Sequence[PairSpec], batch_size: int,
                device_index=None) -> Iterator[List[Union[object, Exception]]]:
    """Register ``pairs`` in batches of ``batch_size``, yielding each batch's results (in order) as it finishes.

    Per batch: the pairs are prepared (read, checked, pyramids, masks, initial search) on ``fit.workers`` threads,
    optimised together in one loop, then judged and polished on the workers again; the doubtful ones get their second
    and rigid opinions one after the other (``model.second_opinion``, ``model.rigid_opinion``), and each pair's
    kept result is written. The next batch is
    prepared in the background while this one is optimised, so on a CPU both stages keep a core busy. With more
    than one worker every torch operation runs single-threaded (one core per worker; ``fit.threads`` is not used);
    with ``fit.workers=1``, ``fit.threads`` sets torch's threads as for one pair.

    A result is a :class:`~drmime_pl.io.result.Registration` or the exception that ended that pair. A pair's
    ``seconds`` is its share of its batch's optimisation (the loop's seconds / the pairs in it); ``wall_seconds``
    runs from the start of its batch's optimisation to its ``transform.json``. Raises :class:`ConfigError` for
    settings a batched run cannot take, and :class:`RegistrationInterrupted` when a stop signal ended a loop (that
    batch's pairs are not written; earlier batches' are).
    """
    if cfg.fit.ckpt_path:
        raise ConfigError("fit.ckpt_path resumes one registration; a batched run of several pairs cannot resume")
    batch_size = max(1, int(batch_size))
    batches = [list(pairs[i:i + batch_size]) for i in range(0, len(pairs), batch_size)]
    if not batches:
        return
    keep_freed_memory()  # as fit does: training/memory.py
    workers = int(cfg.fit.workers) or cpu_count()
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if workers > 1 else (int(cfg.fit.threads) or threads))
    background = ThreadPoolExecutor(1)
    try:
        upcoming = background.submit(_each, partial(_prepare, cfg), batches[0], workers)
        for k in range(len(batches)):
            prepared = upcoming.result()
            if k + 1 < len(batches):  # one worker: the optimisation has the other core
                upcoming = background.submit(_each, partial(_prepare, cfg), batches[k + 1], 1)
            yield _optimise_and_finish(cfg, prepared, workers, device_index)
    finally:  # a stop signal must not wait for the next batch's preparation
        background.shutdown(wait=False, cancel_futures=True)
        torch.set_num_threads(threads)


def _prepare(cfg: DictConfig, spec: PairSpec):
    """One pair read and prepared: (PreparedPair, its judge level, its config, the spec)."""
    from ..core.quality import judge_level
    from ..io.rundir import check_writable_dir, remove_stale_result
    from .prepare import prepare_pair

    d, m = cfg.data, cfg.model
    own_cfg = spec.config
    if own_cfg is None:
        own_cfg = copy.deepcopy(cfg)
        own_cfg.output.dir = None if spec.output_dir is None else str(spec.output_dir)
    if spec.output_dir is not None:
        check_writable_dir(spec.output_dir, "output.dir")
    pair = prepare_pair(spec.fixed, spec.moving, d, init=m.init, model=m.transform, fixed_mask=spec.fixed_mask,
                        init_matrix=m.init_matrix)
    if spec.output_dir is not None:
        remove_stale_result(spec.output_dir)
    return pair, judge_level(pair), own_cfg, spec


def _optimise_and_finish(cfg, prepared: list, workers: int, device_index) -> List[Union[object, Exception]]:
    """The batch's shared optimisation, then each pair's :func:`~drmime_pl.training.fit.finish`, a second opinion
    and then a rigid one for the doubtful ones (:func:`~drmime_pl.training.fit.further_opinions`, one after the
    other), and their files."""
    from ..core.tasks import workers as task_workers
    from .fit import finish, further_opinions, write_result

    results = list(prepared)
    ready = [i for i, r in enumerate(results) if not isinstance(r, Exception)]  # the pairs that go on
    if not ready:
        return results
    try:
        module, trainer, stopping, seconds = _optimise(cfg, [results[i][0] for i in ready], device_index)
    except RegistrationInterrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a device Lightning refuses: every pair of the batch fails with it
        for i in ready:
            results[i] = exc
        return results
    started = time.perf_counter() - seconds
    matrices = module.normalised_matrices()  # N x 3 x 3
    coefficients = module.transform.coefficients().double().cpu()  # N x 2 x K
    mi_ema, valid = module.mi_ema.cpu(), module.level_valid.cpu()
    steps_done = int(trainer.global_step)
    del trainer, module
    share = seconds / len(ready)

    def finish_one(n: int):
        pair, judge, own_cfg, _ = results[ready[n]]
        if n in stopping.failed:
            raise RegistrationError(stopping.failed[n])
        steps = stopping.stopped_at[n] if stopping.stopped_at[n] is not None else steps_done
        mi_per_level = [float(v) for v in mi_ema[n][valid[n]]]
        return finish(own_cfg, pair, judge, matrices[n], coefficients[n], mi_per_level, steps, share,
                      bool(stopping.converged[n]), started), pair

    finished = dict(zip(ready, _each(finish_one, range(len(ready)), workers)))
    with task_workers(workers):  # one pair at a time: its parts share the workers (core/tasks.py)
        for i, done in finished.items():
            if isinstance(done, Exception):
                continue
            result, pair = done
            own_cfg, spec = results[i][2], results[i][3]
            finished[i] = (further_opinions(own_cfg, result, pair, spec.fixed, spec.moving, spec.fixed_mask,
                                            device_index, started), pair)

    def write_one(i: int):
        done = finished[i]
        if isinstance(done, Exception):
            raise done
        result, pair = done
        own_cfg = results[i][2]
        if own_cfg.output.dir:
            write_result(own_cfg, result, pair, own_cfg.output.dir, started)
        else:
            result.wall_seconds = time.perf_counter() - started
        return result

    for i, result in zip(ready, _each(write_one, ready, workers)):
        results[i] = result
    return results


def _each(fn, items, workers: int) -> list:
    """``[fn(x) for x in items]`` with each exception in its item's place, on up to ``workers`` threads (torch
    releases the GIL while it computes, so single-threaded workers use a core each)."""

    def guarded(item):
        try:
            return fn(item)
        except Exception as exc:  # noqa: BLE001 - one bad pair must not stop the others
            return exc

    items = list(items)
    if workers <= 1 or len(items) <= 1:
        return [guarded(x) for x in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(guarded, items))


def _optimise(cfg, prepared, device_index):
    """The shared optimisation of the prepared pairs: (module, trainer, PerPairStopping, seconds)."""
    import pytorch_lightning as pl

    from ..core.estimator import StackedMineEstimator
    from ..core.mine import MineNetwork
    from ..core.transforms import MatrixExpTransform
    from .callbacks import GracefulInterrupt, PerPairStopping
    from .datamodule import PixelBatchSampler, PyramidDataModule
    from .fit import make_trainer, quiet_lightning, schedule_settings
    from .stacked_data import StackedSampler
    from .stacked_module import StackedPairsModule

    d, m, f, lg = cfg.data, cfg.model, cfg.fit, cfg.logging
    quiet_lightning()
    channels = max(p.channels for p in prepared)
    levels = max(p.levels for p in prepared)
    networks = []
    for p in prepared:  # each pair's network starts where a one-pair run's would (fit() seeds, then builds it)
        pl.seed_everything(int(f.seed), workers=False, verbose=False)
        networks.append(MineNetwork(2 * p.channels, list(m.mine_hidden)))
    estimator = StackedMineEstimator(networks, channels, levels, bias_correction=m.bias_correction,
                                     ma_rate=m.ma_rate)
    init = torch.stack([p.init.float() if p.init is not None else torch.zeros(TRANSFORM_DOFS[m.transform])
                        for p in prepared])
    transform = MatrixExpTransform(m.transform, init)
    module = StackedPairsModule(
        estimator, transform, [p.moving_pyramid for p in prepared], [p.moving_weights for p in prepared],
        [p.fixed_hw for p in prepared], [p.moving_hw for p in prepared], [p.scale for p in prepared], channels,
        **schedule_settings(cfg),
    )
    samplers = [PixelBatchSampler(p.fixed_pyramid, p.fixed_weights, p.fixed_hw, p.scale, d.batch_size, f.seed)
                for p in prepared]
    for p in prepared:  # memory: the module holds the moving levels, the samplers their index tables
        p.moving_pyramid, p.fixed_weights, p.moving_weights = None, None, None
    datamodule = PyramidDataModule(StackedSampler(samplers, channels))

    stopping = PerPairStopping(f.converge_every, f.converge_tol, f.converge_patience, f.min_steps)
    interrupt = GracefulInterrupt(None)
    callbacks = [stopping, interrupt]
    logger = False
    if lg.enabled:
        logger, ckpt_dir = _batch_logger(cfg)
        logger.experiment.add_text("pairs", "\n".join(f"pair{i}: {p.fixed_name} / {p.moving_name}  "
                                                     for i, p in enumerate(prepared)), 0)
        from pytorch_lightning.callbacks import ModelCheckpoint

        # Saves nothing itself (the checkpoint is written once, below); without it Lightning would add its own.
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, save_last=False, save_top_k=0, every_n_train_steps=0))
    trainer = make_trainer(cfg, logger, callbacks, device_index)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    if interrupt.requested:
        from .signals import signal_name

        stopped = RegistrationInterrupted(f"interrupted at step {trainer.global_step} "
                                          f"({signal_name(interrupt.signum)}); the batch's pairs were not written")
        stopped.signum = interrupt.signum
        raise stopped
    if lg.enabled:
        trainer.save_checkpoint(str(Path(logger.log_dir) / "checkpoints" / "last.ckpt"))
    return module, trainer, stopping, seconds


def _batch_logger(cfg):
    """One TensorBoard run for the batch, ``<logging.log_dir>/<logging.name>/version_N``: (logger, its checkpoint
    folder)."""
    from ..io.rundir import check_writable_dir
    from ..paths import log_root
    from .fit import run_logger

    lg = cfg.logging
    logs = log_root(lg.log_dir, cfg.output.dir)
    check_writable_dir(logs, "logging.log_dir")
    logger, run_dir = run_logger(logs, lg.name)
    return logger, run_dir / "checkpoints"
