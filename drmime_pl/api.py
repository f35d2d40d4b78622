"""Python API: ``register`` and ``warp``."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch

from .config import load_config
from .geometry import warp_image
from .images import ImageLike, load_image


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
    """Register ``moving`` to ``fixed`` and return a :class:`~drmime_pl.result.Registration`.

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
    from .fit import fit

    return fit(cfg, fixed=fixed, moving=moving, fixed_mask=fixed_mask)


def warp(moving: ImageLike, matrix, fixed_shape: Sequence[int]) -> Union[np.ndarray, torch.Tensor]:
    """Resample ``moving`` onto a fixed-image grid of ``fixed_shape = (H, W)``.

    ``out[y, x] = moving(matrix @ (x, y, 1))``, bilinear, zero outside the moving image; ``matrix`` is
    ``moving_pix_trans_fixed_pix`` as in ``Registration.matrix``.

    Returns:
        For a tensor input, a ``C x H x W`` float tensor; otherwise an ``H x W`` or ``H x W x C`` float numpy array
        in [0, 1] (the input's intensities, scaled as :func:`drmime_pl.images.load_image` scales them).
    """
    as_tensor = isinstance(moving, torch.Tensor)
    image = load_image(moving, name="moving image")
    out = warp_image(image, torch.as_tensor(np.asarray(matrix), dtype=torch.float64), fixed_shape[:2])
    if as_tensor:
        return out
    array = out.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array
