"""Landmark files: ANHIR/BIRL CSVs (``,X,Y``) and FIRE control points in, CSVs out.

Convention: points are (x, y) pixels, x = column, y = row (TRE is computed by :mod:`drmime_pl.evaluation.metrics`).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Tuple

import numpy as np

from ..errors import DrmimeError
from .atomic import write_text_atomic


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


def write_points_csv(points: np.ndarray, path) -> None:
    path = Path(path)
    text = ",X,Y\n" + "".join(f"{i},{x!r},{y!r}\n" for i, (x, y) in enumerate(np.asarray(points, float).tolist()))
    write_text_atomic(text, path)
