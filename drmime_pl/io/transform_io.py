"""Saved transforms back in: ``transform.json`` -> :class:`~drmime_pl.io.result.Registration`, its inverse, and an
initial transform (``model.init_matrix``: a ``transform.json`` or an ITK ``.tfm``) for a new registration.

Every matrix here is ``moving_pix_trans_fixed_pix`` (fixed pixel (x, y, 1) -> moving pixel), float64.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import TransformFileError
from .export_itk import UNIT, Geometry, parse_tfm, pixel_matrix


def _shape(value, key: str, path) -> tuple:
    try:
        hw = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TransformFileError(f"{path}: {key} must be [H, W], got {value!r}") from None
    if len(hw) != 2 or min(hw) < 1:
        raise TransformFileError(f"{path}: {key} must be [H, W] of positive sizes, got {value!r}")
    return hw


def read_transform_json(path) -> dict:
    """Read and check ``transform.json``: ``matrix`` 3 x 3 finite and invertible, ``fixed_shape`` [H, W]
    (``moving_shape`` defaults to it). Raises :class:`TransformFileError`."""
    path = Path(path)
    if not path.is_file():
        raise TransformFileError(f"{path}: transform file not found")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise TransformFileError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or "matrix" not in data or "fixed_shape" not in data:
        raise TransformFileError(f"{path}: expected a drmime_pl transform.json with 'matrix' and 'fixed_shape'")
    try:
        m = np.asarray(data["matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != (3, 3) or not np.isfinite(m).all() or abs(np.linalg.det(m)) < 1e-300:
        raise TransformFileError(f"{path}: 'matrix' must be a finite, invertible 3 x 3 matrix")
    data["matrix"] = m
    data["fixed_shape"] = _shape(data["fixed_shape"], "fixed_shape", path)
    data["moving_shape"] = _shape(data.get("moving_shape", data["fixed_shape"]), "moving_shape", path)
    return data


def registration_from_json(cls, path):
    """A ``Registration`` (``cls``) from ``transform.json``; keys it lacks get neutral values."""
    from ..core.geometry import normalised_matrix_from_pixel, pair_scale

    data = read_transform_json(path)
    fixed_hw, moving_hw = data["fixed_shape"], data["moving_shape"]
    scale = float(data.get("scale") or pair_scale(fixed_hw))
    m = data["matrix"]
    fallback = {
        "matrix_normalised": normalised_matrix_from_pixel(m, fixed_hw, moving_hw, scale).numpy(),
        "coefficients_shared": np.zeros(0), "coefficients_fine": np.zeros(0),
        "transform": "affine" if m[2, 0] == 0 and m[2, 1] == 0 else "perspective", "scale": scale,
        "mi_per_level": [], "steps": 0, "seconds": 0.0, "converged": False, "seed": 0,
    }
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data and data[f.name] is not None:
            kwargs[f.name] = data[f.name]
        elif f.name in fallback:
            kwargs[f.name] = fallback[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs[f.name] = None
    for key in ("matrix_normalised", "coefficients_shared", "coefficients_fine"):
        kwargs[key] = np.asarray(kwargs[key], dtype=np.float64)
    kwargs["fixed_shape"], kwargs["moving_shape"] = fixed_hw, moving_hw
    if "output_dir" in kwargs or any(f.name == "output_dir" for f in dataclasses.fields(cls)):
        kwargs["output_dir"] = str(Path(path).parent)
    return cls(**kwargs)


def inverse_registration(reg):
    """The same registration seen the other way: moving pixel -> fixed pixel. Shapes and names are swapped; the
    normalised matrix is inverted in the same frames (``scale`` kept), and the coefficients are ``-(shared + fine)``
    (``expm(-V) = expm(V)^-1``)."""
    m = np.linalg.inv(np.asarray(reg.matrix, dtype=np.float64))
    mn = np.linalg.inv(np.asarray(reg.matrix_normalised, dtype=np.float64))
    shared = np.asarray(reg.coefficients_shared, dtype=np.float64)
    fine = np.asarray(reg.coefficients_fine, dtype=np.float64)
    total = -(shared + fine) if shared.shape == fine.shape else -shared
    return dataclasses.replace(
        reg, matrix=m / m[2, 2], matrix_normalised=mn / mn[2, 2], coefficients_shared=total,
        coefficients_fine=np.zeros_like(total), fixed_shape=tuple(reg.moving_shape),
        moving_shape=tuple(reg.fixed_shape), fixed=reg.moving, moving=reg.fixed,
    )


def rescale_matrix(matrix, old_fixed_hw, new_fixed_hw, old_moving_hw, new_moving_hw) -> np.ndarray:
    """The same field of view at other resolutions: the grid frames, which run edge to edge, are shared
    (``x' = (x + 0.5) r - 0.5`` in pixels)."""
    from ..core.geometry import reframe

    grid = reframe(np.asarray(matrix, np.float64), old_fixed_hw, old_moving_hw, "pix", "grid")
    m = reframe(grid, new_fixed_hw, new_moving_hw, "grid", "pix").numpy()
    return m / m[2, 2]


def load_initial_matrix(path, fixed_hw: Sequence[int], moving_hw: Sequence[int],
                        fixed_geometry: Optional[Geometry] = None, moving_geometry: Optional[Geometry] = None
                        ) -> np.ndarray:
    """``3 x 3`` float64 fixed px -> moving px from a ``transform.json`` or an ITK ``.tfm``.

    A ``transform.json`` made for images of other sizes (e.g. a registration of downsampled copies) is scaled edge
    to edge to ``fixed_hw``/``moving_hw``. A ``.tfm`` is in physical coordinates (fixed -> moving, as ITK resamples)
    and is converted with the images' spacing/origin (default 1 and 0). Raises :class:`TransformFileError`.
    """
    p = Path(path)
    if not p.is_file():
        raise TransformFileError(f"{path}: initial transform not found (model.init_matrix)")
    if p.suffix.lower() == ".json":
        data = read_transform_json(p)
        m = data["matrix"]
        if tuple(data["fixed_shape"]) != tuple(fixed_hw) or tuple(data["moving_shape"]) != tuple(moving_hw):
            m = rescale_matrix(m, data["fixed_shape"], fixed_hw, data["moving_shape"], moving_hw)
        return m / m[2, 2]
    if p.suffix.lower() in (".tfm", ".txt"):
        try:
            phys = parse_tfm(p.read_text(), str(p))
        except (ValueError, UnicodeDecodeError) as exc:
            raise TransformFileError(f"{exc}" if str(exc).startswith(str(p)) else f"{p}: {exc}") from None
        return pixel_matrix(phys, fixed_geometry or UNIT, moving_geometry or UNIT)
    raise TransformFileError(f"{path}: model.init_matrix must be a transform.json or an ITK .tfm file")


def initial_coefficients(path, fixed, moving, fixed_hw, moving_hw, scale: float, model: str):
    """Coefficients of ``model`` (``K`` float32 tensor) closest to the transform in ``path`` (least squares on the
    matrix logarithm, :func:`drmime_pl.core.geometry.coefficients_from_matrix`). ``fixed``/``moving``: the images (paths
    give TIFF spacing for a ``.tfm``)."""
    import torch

    from ..core.geometry import coefficients_from_matrix, generator_basis, normalised_matrix_from_pixel
    from .io_tiff import geometry_of

    geo = lambda image: geometry_of(image) if isinstance(image, (str, Path)) else UNIT  # noqa: E731
    m = load_initial_matrix(path, fixed_hw, moving_hw, geo(fixed), geo(moving))
    normalised = normalised_matrix_from_pixel(torch.as_tensor(m), fixed_hw, moving_hw, scale)
    try:
        return coefficients_from_matrix(normalised, generator_basis(model).double()).float()
    except ValueError as exc:
        raise TransformFileError(f"{path}: cannot start from this transform ({exc})") from None
