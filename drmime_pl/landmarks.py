"""Landmark files and target registration error (TRE), as the field computes them.

Convention: points are (x, y) pixels, x = column, y = row. A registration's ``matrix`` maps fixed -> moving pixels,
so TRE is the distance between a *fixed* landmark mapped by the matrix and its *moving* landmark (ANHIR's rule).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import torch

from .errors import DrmimeError
from .geometry import transform_points


def read_landmarks_csv(path) -> np.ndarray:
    """ANHIR/BIRL landmark CSV (columns ``,X,Y``: index, x, y) -> ``N x 2`` float64."""
    path = Path(path)
    if not path.is_file():
        raise DrmimeError(f"{path}: landmark file not found")
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise DrmimeError(f"{path}: empty landmark file")
    header = [h.strip().upper() for h in rows[0]]
    try:
        ix, iy = header.index("X"), header.index("Y")
    except ValueError:
        raise DrmimeError(f"{path}: expected columns X and Y in the header, got {rows[0]}") from None
    try:
        return np.array([[float(r[ix]), float(r[iy])] for r in rows[1:] if r], dtype=np.float64).reshape(-1, 2)
    except (ValueError, IndexError) as exc:
        raise DrmimeError(f"{path}: unreadable landmark row ({exc})") from None


def read_fire_control_points(path) -> Tuple[np.ndarray, np.ndarray]:
    """FIRE ``control_points_<pair>.txt``: lines ``x1 y1 x2 y2`` (image 1 = fixed) -> (fixed ``N x 2``, moving)."""
    path = Path(path)
    if not path.is_file():
        raise DrmimeError(f"{path}: control-point file not found")
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DrmimeError(f"{path}: unreadable control points ({exc})") from None
    if data.shape[1] != 4:
        raise DrmimeError(f"{path}: expected 4 numbers per line (x1 y1 x2 y2), got {data.shape[1]}")
    return data[:, :2], data[:, 2:]


def pair_up(fixed: np.ndarray, moving: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Landmark files of unequal length pair up to the shorter (ANHIR's rule)."""
    n = min(len(fixed), len(moving))
    return fixed[:n], moving[:n]


def tre(matrix, fixed_points: np.ndarray, moving_points: np.ndarray) -> np.ndarray:
    """Per-landmark TRE in pixels: ``| matrix(fixed_i) - moving_i |``. ``N``."""
    mapped = transform_points(torch.as_tensor(np.asarray(matrix), dtype=torch.float64),
                              torch.as_tensor(fixed_points, dtype=torch.float64)).numpy()
    return np.linalg.norm(mapped - np.asarray(moving_points, dtype=np.float64), axis=1)


def image_diagonal(hw: Sequence[int]) -> float:
    return float(np.hypot(float(hw[0]), float(hw[1])))


def tre_summary(errors: np.ndarray, fixed_hw: Sequence[int]) -> dict:
    """Mean / median / max TRE (px) and the same divided by the fixed image's diagonal (rTRE)."""
    d = image_diagonal(fixed_hw)
    e = np.asarray(errors, dtype=np.float64)
    return {"tre_mean": float(e.mean()), "tre_median": float(np.median(e)), "tre_max": float(e.max()),
            "rtre_mean": float(e.mean() / d), "rtre_median": float(np.median(e) / d), "rtre_max": float(e.max() / d)}
