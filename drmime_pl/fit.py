"""``python -m drmime_pl.fit --config configs/fire.yaml [key=value ...]``: register a pair, log to TensorBoard,
checkpoint, and write the result files.

:func:`fit` is the whole job as a function of a config (tests and :func:`drmime_pl.register` call it);
:func:`main` only parses the command line and turns errors into one-line messages and exit codes.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf

from .config import load_config
from .errors import CheckpointError, ConfigError, DrmimeError, RegistrationError

EXIT_USAGE = 2  # bad input: files, config, checkpoint
EXIT_FAILED = 1  # the registration itself failed (diverged, degenerate)
EXIT_INTERRUPTED = 130  # Ctrl-C, checkpoint saved


class RegistrationInterrupted(DrmimeError):
    """Ctrl-C stopped the run after a step; a checkpoint was saved to resume from."""


def _quiet_lightning() -> None:
    # An endless in-memory sampler needs no workers and no validation; these notices would only confuse users.
    for pattern in (".*does not have many workers.*", ".*IterableDataset.*", ".*is not a `CombinedLoader`.*",
                    ".*You are using `torch.load` with `weights_only=False`.*", ".*Checkpoint directory.*exists.*",
                    ".*LeafSpec.*", ".*isinstance.*treespec.*", ".*`training_step` returned `None`.*"):
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric",
                 "pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _read_checkpoint(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (fit.ckpt_path)")
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None


def check_checkpoint(path: str, identity: dict) -> None:
    """Refuse a checkpoint of another transform model or image pair (:class:`CheckpointError`)."""
    ckpt = _read_checkpoint(path)
    saved = (ckpt.get("hyper_parameters") or {}).get("identity")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: not a drmime_pl checkpoint (no run identity in it)")
    if saved.get("transform") != identity["transform"]:
        raise CheckpointError(
            f"{path}: checkpoint is for model.transform={saved.get('transform')!r}, this run uses "
            f"{identity['transform']!r}"
        )
    if saved.get("pair") != identity["pair"] or saved.get("levels") != identity["levels"]:
        raise CheckpointError(
            f"{path}: checkpoint belongs to another image pair ({saved.get('fixed')} / {saved.get('moving')}) "
            f"or pyramid; this run registers {identity['fixed']} / {identity['moving']}"
        )


def fit(cfg: DictConfig, fixed=None, moving=None, fixed_mask=None, callbacks=()):
    """Register ``cfg.data.moving`` to ``cfg.data.fixed`` (or the given arrays/tensors) and return a
    :class:`~drmime_pl.result.Registration`. ``callbacks``: extra Lightning callbacks for the Trainer.

    Writes, when ``cfg.logging.enabled``: TensorBoard events and ``checkpoints/last.ckpt`` under
    ``<logging.log_dir>/<logging.name>/version_N``; and the result files into ``output.dir`` (default: that version
    folder). Raises :class:`~drmime_pl.errors.DrmimeError` subclasses for bad input and failed runs; no
    ``transform.json`` is written then.
    """
    from .prepare import prepare_pair

    d, m, o, f, lg = cfg.data, cfg.model, cfg.optim, cfg.fit, cfg.logging
    if f.threads > 0:
        torch.set_num_threads(int(f.threads))
    fixed = fixed if fixed is not None else d.fixed
    moving = moving if moving is not None else d.moving
    if fixed is None or moving is None:
        raise DrmimeError("data.fixed and data.moving must both be set (image paths)")
    fixed_mask = fixed_mask if fixed_mask is not None else d.fixed_mask

    pair = prepare_pair(fixed, moving, d, init=m.init, model=m.transform, fixed_mask=fixed_mask)
    identity = {"transform": m.transform, "pair": pair.fingerprint(), "levels": pair.levels,
                "fixed": pair.fixed_name, "moving": pair.moving_name}
    if f.ckpt_path:
        check_checkpoint(f.ckpt_path, identity)

    # Lightning loads only once the inputs are known to be good: a bad input fails fast.
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
    from pytorch_lightning.loggers import TensorBoardLogger

    from .callbacks import ConvergenceStopping, GracefulInterrupt, NonFiniteGuard, PreviewImages
    from .checks import degeneracy
    from .datamodule import PixelBatchSampler, PyramidDataModule
    from .mine import MineNetwork
    from .module import DrmimeModule
    from .result import Registration, library_versions, write_outputs
    from .transforms import MatrixExpTransform

    _quiet_lightning()

    pl.seed_everything(int(f.seed), workers=False, verbose=False)
    mine = MineNetwork(2 * pair.channels, list(m.mine_hidden))
    transform = MatrixExpTransform(m.transform, init=pair.init)
    module = DrmimeModule(
        mine, transform, pair.moving_pyramid, pair.moving_weights, pair.fixed_hw, pair.moving_hw, pair.scale,
        lr_mine=o.lr_mine, lr_shared=o.lr_shared, lr_fine=o.lr_fine, amsgrad=o.amsgrad,
        lr_final_factor=o.lr_final_factor, warmup_steps=o.warmup_steps, max_steps=f.max_steps, bias_correction=m.bias_correction,
        ma_rate=m.ma_rate, log_every_n_steps=lg.every_n_steps, identity=identity,
    )
    sampler = PixelBatchSampler(pair.fixed_pyramid, pair.fixed_weights, pair.fixed_hw, pair.scale, d.batch_size, f.seed)
    datamodule = PyramidDataModule(sampler)

    logger, run_dir, ckpt_dir = False, None, None
    convergence = ConvergenceStopping(f.converge_every, f.converge_tol_px, f.converge_patience, f.min_steps)
    extra_callbacks, callbacks = list(callbacks), [convergence]
    if lg.enabled:
        logger = TensorBoardLogger(save_dir=lg.log_dir, name=lg.name, default_hp_metric=False)
        run_dir = Path(logger.log_dir)
        ckpt_dir = run_dir / "checkpoints"
        callbacks += [
            ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=lg.checkpoint_every_n_steps),
            LearningRateMonitor(logging_interval="step"),
        ]
        if lg.image_every_n_steps > 0:
            callbacks.append(PreviewImages(pair.fixed_pyramid, lg.image_every_n_steps, lg.preview_size))
    guard, interrupt = NonFiniteGuard(ckpt_dir), GracefulInterrupt(ckpt_dir)
    callbacks += [guard, interrupt] + extra_callbacks
    if lg.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=10))

    try:
        trainer = _make_trainer(cfg, logger, callbacks)
    except Exception as exc:  # noqa: BLE001 - Lightning's MisconfigurationException and friends
        raise ConfigError(f"fit.accelerator={f.accelerator!r}, fit.precision={f.precision!r}: "
                          f"{str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}") from None
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=f.ckpt_path or None)
    seconds = time.perf_counter() - start

    if interrupt.requested:
        where = interrupt.saved or "(no checkpoint: logging.enabled is false)"
        raise RegistrationInterrupted(
            f"interrupted at step {trainer.global_step}; checkpoint saved to {where}; resume with "
            f"fit.ckpt_path={where}"
        )
    last_ckpt = None
    if ckpt_dir is not None:
        last_ckpt = ckpt_dir / "last.ckpt"
        trainer.save_checkpoint(str(last_ckpt))
    matrix = module.pixel_matrix()
    problem = degeneracy(matrix, pair.fixed_hw, pair.moving_hw)
    if problem:
        raise RegistrationError(
            f"registration failed after {trainer.global_step} steps: {problem}; no result written. Try another "
            f"model.init, lower learning rates (optim.*), or a simpler model.transform"
        )

    result = Registration(
        matrix=matrix.numpy(), matrix_normalised=module.normalised_matrix().numpy(),
        coefficients_shared=transform.shared.detach().double().cpu().numpy(),
        coefficients_fine=transform.fine.detach().double().cpu().numpy(), transform=m.transform,
        fixed_shape=pair.fixed_hw, moving_shape=pair.moving_hw, scale=pair.scale,
        mi_per_level=[float(v) for v in module.mi_ema.cpu()], steps=int(trainer.global_step), seconds=seconds,
        converged=convergence.converged, seed=int(f.seed), fixed=pair.fixed_name, moving=pair.moving_name,
        checkpoint=str(last_ckpt) if last_ckpt else None, versions=library_versions(),
    )
    out_dir = Path(cfg.output.dir) if cfg.output.dir else run_dir
    if out_dir is not None:
        result.output_dir = str(out_dir)
        try:
            write_outputs(result, pair.fixed, pair.moving, out_dir, OmegaConf.to_yaml(cfg),
                          warped=cfg.output.warped, overlay=cfg.output.overlay)
        except OSError as exc:
            raise DrmimeError(f"output.dir {out_dir}: cannot write the results ({exc.strerror or exc})") from None
    return result


def _make_trainer(cfg: DictConfig, logger, callbacks):
    import pytorch_lightning as pl

    from .checkpoint_io import AtomicCheckpointIO

    f, lg = cfg.fit, cfg.logging
    return pl.Trainer(
        plugins=[AtomicCheckpointIO()],
        accelerator="gpu" if f.accelerator == "cuda" else f.accelerator, devices=f.devices,
        precision=f.precision if f.precision.endswith("mixed") else int(f.precision),
        max_steps=f.max_steps, max_epochs=-1, logger=logger, callbacks=callbacks,
        enable_checkpointing=bool(lg.enabled), enable_progress_bar=bool(lg.progress_bar),
        enable_model_summary=False, log_every_n_steps=lg.every_n_steps, num_sanity_val_steps=0,
        limit_val_batches=0, default_root_dir=lg.log_dir,
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m drmime_pl.fit",
        description="Register a moving image to a fixed image by maximising MINE mutual information.",
        epilog="Any key=value after the options overrides the config, e.g. data.fixed=a.png model.transform=affine",
    )
    parser.add_argument("--config", "-c", default=None, help="YAML config (defaults: configs/default.yaml keys)")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides: section.key=value")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    debug = any(o.replace(" ", "") in ("fit.debug=true", "fit.debug=True") for o in args.overrides)
    try:
        cfg = load_config(args.config, args.overrides)
        debug = bool(cfg.fit.debug)
        result = fit(cfg)
    except RegistrationInterrupted as exc:
        print(f"drmime_pl: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("drmime_pl: interrupted before training started; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DrmimeError as exc:
        if debug:
            raise
        print(f"drmime_pl: error: {exc}", file=sys.stderr)
        return EXIT_FAILED if isinstance(exc, RegistrationError) else EXIT_USAGE
    state = "converged" if result.converged else "reached fit.max_steps"
    print(f"drmime_pl: {state} after {result.steps} steps in {result.seconds:.1f} s; final MI {result.final_mi:.3f} nats")
    print("matrix (fixed pixel -> moving pixel):")
    for row in result.matrix:
        print("  " + "  ".join(f"{v: .6g}" for v in row))
    if result.output_dir:
        print(f"outputs: {result.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
