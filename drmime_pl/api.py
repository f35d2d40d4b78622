"""Python API: ``register`` and ``warp``."""
from __future__ import annotations

from typing import Optional, Sequence

from .config import load_config
from .io.images import ImageLike
from .io.result import warp

__all__ = ["register", "warp"]


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
            config's ``model.transform`` (``perspective`` by default).
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
    items = [f"model.transform={transform}"] if transform else []
    if not log:
        items += ["logging.enabled=false", "logging.progress_bar=false"]
    if output_dir is not None:
        items.append(f"output.dir={output_dir}")
    items += list(overrides)
    items += [f"{key.replace('__', '.')}={value}" for key, value in settings.items()]
    cfg = load_config(config, items)
    from .training.fit import fit

    return fit(cfg, fixed=fixed, moving=moving, fixed_mask=fixed_mask)
