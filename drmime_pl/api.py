"""Python API: ``register``, ``register_many`` and ``warp``."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

from .config import load_config
from .io.images import ImageLike
from .io.result import warp

__all__ = ["register", "register_many", "warp"]


def register(
    fixed: ImageLike,
    moving: ImageLike,
    transform: Optional[str] = None,
    config: Optional[str] = None,
    overrides: Sequence[str] = (),
    fixed_mask: Optional[ImageLike] = None,
    output_dir: Optional[str] = None,
    log: bool = False,
    **settings,
):
    """Register ``moving`` to ``fixed`` and return a :class:`~drmime_pl.io.result.Registration`.

    Args:
        fixed, moving: image paths, numpy arrays (``H x W`` or ``H x W x C``) or tensors (``C x H x W``).
        transform: ``translation``, ``rigid``, ``similarity``, ``affine`` or ``perspective``; None keeps the
            config's ``model.transform`` (``affine`` by default).
        config: optional YAML config file (the keys of ``configs/default.yaml``).
        overrides: ``section.key=value`` strings, as on the command line.
        fixed_mask: optional mask (path or array, non-zero = use) of the fixed image's size.
        output_dir: write ``transform.json``, ``warped.png``, ``overlay.png``, ``config.yaml`` there.
        log: write TensorBoard events and checkpoints under ``logging.log_dir`` (off by default: the API is quiet;
            a relative ``logging.log_dir`` lies inside ``output_dir`` when that is given).
        **settings: shortcuts for ``section.key=value``, written ``section__key=value`` (e.g. ``fit__max_steps=300``).

    Returns:
        ``Registration`` whose ``.matrix`` (``3 x 3`` numpy) maps fixed pixel (x, y, 1) -> moving pixel.

    Raises:
        drmime_pl.errors.DrmimeError subclasses (ImageError, ConfigError, ...) for unusable input.
    """
    cfg = _config(transform, config, overrides, output_dir, log, settings)
    from .training.fit import fit

    return fit(cfg, fixed=fixed, moving=moving, fixed_mask=fixed_mask)


def register_many(
    pairs: Sequence,
    transform: Optional[str] = None,
    config: Optional[str] = None,
    overrides: Sequence[str] = (),
    output_dirs: Optional[Sequence[Optional[str]]] = None,
    batch_size: int = 8,
    log: bool = False,
    **settings,
) -> List[Union[object, Exception]]:
    """Register many pairs, ``batch_size`` at a time in one optimisation loop (issue 9).

    Each pair gets what :func:`register` would give it (the same preparation, its own MINE network seeded the same
    way, its own stopping rule, polish and verdict; the arithmetic's order differs, so results agree up to
    run-to-run noise), and a pair that fails does not stop the others.

    Args:
        pairs: ``(fixed, moving)`` or ``(fixed, moving, fixed_mask)`` tuples of paths, arrays or tensors.
        transform, config, overrides, log, **settings: as :func:`register`, for every pair.
        output_dirs: one folder per pair (or None) for its result files.
        batch_size: pairs per optimisation loop; the next batch is prepared while one is optimised. On a CPU the
            pairs of a batch are also read, searched and polished on ``fit.workers`` threads (one per core).

    Returns:
        A list as long as ``pairs``: a :class:`~drmime_pl.io.result.Registration` per registered pair, or the
        exception (a :class:`~drmime_pl.errors.DrmimeError` for bad input or a failed registration) in the place of
        a pair that failed.
    """
    from .errors import ConfigError
    from .training.fit_many import PairSpec, fit_many

    if output_dirs is not None and len(output_dirs) != len(pairs):
        raise ConfigError(f"output_dirs: {len(output_dirs)} folders for {len(pairs)} pairs")
    specs = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) not in (2, 3):
            raise ConfigError(f"pairs[{i}]: expected (fixed, moving) or (fixed, moving, fixed_mask)")
        out = None if output_dirs is None or output_dirs[i] is None else str(output_dirs[i])
        specs.append(PairSpec(pair[0], pair[1], pair[2] if len(pair) == 3 else None, output_dir=out))
    cfg = _config(transform, config, overrides, None, log, settings)
    return fit_many(cfg, specs, batch_size=batch_size)


def _config(transform, config, overrides, output_dir, log, settings):
    items = [f"model.transform={transform}"] if transform else []
    if not log:
        items += ["logging.enabled=false", "logging.progress_bar=false"]
    if output_dir is not None:
        items.append(f"output.dir={output_dir}")
    items += list(overrides)
    items += [f"{key.replace('__', '.')}={value}" for key, value in settings.items()]
    return load_config(config, items)
