"""Does a pair's ground truth line up its images? A check of a benchmark's landmarks, not of a registration.

A registration is scored against landmarks; when the landmarks describe another transform than the one that relates
the image files (a resize or a rotation the ground truth does not include), every method "fails" that pair and the
benchmark measures nothing. :func:`truth_support` asks the images, with two unrelated similarity measures, whether a
transform stands out from misaligned copies of itself:

- edges: symmetric normalised gradient fields (:func:`drmime_pl.core.ngf.symmetric_ngf`);
- intensities: symmetric joint-histogram MI (:func:`drmime_pl.core.histogram_mi.symmetric_histogram_mi`).

On the real benchmark pairs (``benchmarks/audit_truth.py``, ``benchmarks/RESULTS.md``) the landmark truth stands out
(z >= 2 on either measure) on 178 of the 182 pairs outside SRIF's optical/SAR category, and on none of its 20.

Convention: ``landmark_affine`` works in pixels (x = column, y = row), fixed -> moving; ``truth_support`` takes
``moving_norm_trans_fixed_norm`` matrices (:mod:`drmime_pl.core.geometry`), ``N x 3 x 3``.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import torch

from ..core.histogram_mi import symmetric_histogram_mi
from ..core.ngf import Level, symmetric_ngf
from ..core.quality import stand_out

#: z at or above which the images support a transform at all. Lower than the verdict's SUSPECT_Z (4.5), which asks
#: whether a registration can be trusted: here a weak but real alignment (blurred SPECT) must still count.
STANDS_OUT = 2.0


def landmark_affine(fixed_points: np.ndarray, moving_points: np.ndarray) -> np.ndarray:
    """Least-squares affine of ``N x 2`` fixed -> moving pixel points (``N >= 3``): ``3 x 3`` float64."""
    design = np.c_[np.asarray(fixed_points, dtype=np.float64), np.ones(len(fixed_points))]
    solution = np.linalg.lstsq(design, np.asarray(moving_points, dtype=np.float64), rcond=None)[0]  # 3 x 2
    out = np.eye(3)
    out[:2] = solution.T
    return out


def truth_support(level: Level, matrices: torch.Tensor) -> List[Tuple[float, float]]:
    """For each ``moving_norm_trans_fixed_norm`` matrix (``N x 3 x 3``), how far it stands out from its 18
    misaligned copies (:func:`drmime_pl.core.quality.stand_out`, the verdict's ``z``) on edges and on intensities:
    ``[(ngf_z, mi_z)] * N``, NaN where the matrix or too few copies overlap the images enough to be scored."""
    out = []
    for matrix in matrices.double():
        row = []
        for score in (symmetric_ngf, symmetric_histogram_mi):
            value = float(score(level, matrix[None])[0])
            row.append(stand_out(level, matrix, value, score) if math.isfinite(value) else float("nan"))
        out.append((row[0], row[1]))
    return out
