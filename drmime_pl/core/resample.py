"""Resampling an image as stored (any pixel type, channels and planes) through a fixed -> moving pixel matrix."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import reframe


def _fill_value(fill: Union[str, float], dtype) -> Optional[float]:
    if fill == "edge":
        return None
    if fill == "white":
        if np.issubdtype(dtype, np.integer):
            return float(np.iinfo(dtype).max)
        return 1.0
    return float(fill)


def warp_array(array: np.ndarray, axes: str, matrix, out_hw: Sequence[int], order: str = "linear",
               fill: Union[str, float] = 0) -> np.ndarray:
    """Resample every plane and channel of ``array`` on an ``out_hw`` grid: ``out[y, x] = in(matrix @ (x, y, 1))``.

    Same arithmetic as :func:`drmime_pl.core.geometry.warp_image` (bilinear, ``grid_sample`` with
    ``align_corners=False``); ``order="nearest"`` for labels; ``fill`` is 0, ``"white"`` (the type's maximum, 1.0
    for floats), ``"edge"`` (repeat the border) or a number. Returns the input's dtype (integers rounded and
    clipped) with ``Y``/``X`` of size ``out_hw``.
    """
    h, w = int(out_hw[0]), int(out_hw[1])
    iy, ix = axes.index("Y"), axes.index("X")
    src = np.moveaxis(array, (iy, ix), (-2, -1))
    lead = src.shape[:-2]
    hm, wm = src.shape[-2:]
    dtype = array.dtype
    work = torch.float64 if dtype.itemsize >= 4 and dtype.kind in "iuf" else torch.float32
    np_work = np.float64 if work == torch.float64 else np.float32
    m = reframe(np.asarray(matrix), (h, w), (hm, wm), "pix", ("pix", "grid"))  # moving grid <- fixed pixel
    mode = "nearest" if order == "nearest" else "bilinear"
    value = _fill_value(fill, dtype)
    planes = src.reshape((-1, hm, wm))
    n_planes = planes.shape[0]
    out = np.empty((n_planes, h, w), dtype=dtype)  # the result type at once: no full-size float copy of the output
    # Memory (as geometry.warp_grid): the float64 sampling grid and the float results are made for blocks of rows
    # only; grid_sample treats every output pixel on its own, so the blocks give exactly the unblocked result.
    rows = max(1, _WARP_BLOCK_PIXELS // max(1, w))
    xs = torch.arange(w, dtype=torch.float64)
    mt = torch.as_tensor(m, dtype=torch.float64)
    # Each output row's moving point is (a x + c + b y) / (g x + i + h y): a column part per output column,
    # computed once, plus a row part per row (cheaper than a 3 x 3 product per pixel: FIRE's warped image 0.14 ->
    # 0.03 s).
    by_column = [mt[r, 0] * xs + mt[r, 2] for r in range(3)]  # w each
    affine = bool((mt[2, :2] == 0).all() and mt[2, 2] == 1)
    ones = torch.ones((1, 1, hm, wm), dtype=work) if value else None
    for start in range(0, n_planes, 8):  # a few planes at a time: bounded memory for stacks
        chunk = torch.from_numpy(np.ascontiguousarray(planes[start:start + 8], dtype=np_work)).unsqueeze(0)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            ys = torch.arange(r0, r1, dtype=torch.float64)[:, None]
            grid = torch.stack([by_column[r] + mt[r, 1] * ys for r in range(2)], -1)  # rows x w x 2
            if not affine:
                grid = grid / (by_column[2] + mt[2, 1] * ys)[..., None]
            grid = grid.to(work)[None]
            res = F.grid_sample(chunk, grid, mode=mode, padding_mode="border" if value is None else "zeros",
                                align_corners=False)[0]
            if value:  # pad with a constant: weight the outside by what a ones image loses there
                inside = F.grid_sample(ones, grid, mode=mode, padding_mode="zeros", align_corners=False)[0]
                res = res + value * (1.0 - inside)
            out[start:start + 8, r0:r1] = _to_dtype(res.numpy(), dtype)
        del chunk
    return np.moveaxis(out.reshape(lead + (h, w)), (-2, -1), (iy, ix))


_WARP_BLOCK_PIXELS = 1 << 16  # output pixels of one plane warped at once (~100 bytes each; cf. geometry.warp_grid)


def _to_dtype(result: np.ndarray, dtype) -> np.ndarray:
    """Float samples -> ``dtype``: bool by thresholding at 0.5, integers rounded and clipped to the type's range."""
    if dtype == np.bool_:
        return result >= 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(result), info.min, info.max).astype(dtype)
    return result.astype(dtype)
