"""Scores of a landmark evaluation, plain functions of numbers: TRE and rTRE of a pair, success rates, AUC and
the per-group summary.

TRE of a landmark = ``| matrix(fixed_i) - moving_i |`` in moving-image pixels (ANHIR's rule: a registration's
``matrix`` maps fixed -> moving pixels); rTRE = TRE / diagonal of the fixed image. Per pair: mean, median, max.
ANHIR ranks by the median over pairs of the per-pair median rTRE; FIRE by the area under the success-rate curve of
the per-pair mean TRE over 0..25 px. A pair that could not be scored (``failed``) never counts as a success;
medians and means are over the scored pairs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import numpy as np
import torch

from ..core.geometry import transform_points

FIRE_MAX_PX = 25.0  # the FIRE success curve runs over thresholds 0..25 px
FIRE_TABLE_PX = (5.0, 10.0, 15.0, 25.0)  # success rates shown in summary.md
FIRE_CATEGORIES = ("S", "P", "A")
ANHIR_MAX_RTRE = 0.05  # the plotted rTRE range
ANHIR_TABLE_RTRE = (0.005, 0.01, 0.02, 0.05)


@dataclass
class PairResult:
    name: str
    group: str
    status: str = "ok"  # ok | failed
    error: str = ""
    n_landmarks: int = 0
    tre_mean: float = math.nan
    tre_median: float = math.nan
    tre_max: float = math.nan
    rtre_mean: float = math.nan
    rtre_median: float = math.nan
    rtre_max: float = math.nan
    fixed_height: Optional[int] = None
    fixed_width: Optional[int] = None
    seconds: float = math.nan
    steps: Optional[int] = None
    suspect: Optional[bool] = None  # transform.json's quality verdict, when it has one
    skipped: bool = False  # registered by an earlier run with the same config (not a CSV column)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


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


def success_curve(errors: Sequence[float], thresholds: Sequence[float]) -> np.ndarray:
    """Fraction of pairs whose error is ``<= t`` for each threshold ``t``. NaN/inf (failed) never succeed.

    Returns a float array of ``len(thresholds)``; NaNs when ``errors`` is empty.
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if e.size == 0:
        return np.full(t.shape, np.nan)
    e = np.where(np.isfinite(e), e, np.inf)
    return (e[None, :] <= t[:, None]).mean(axis=1)


def auc(errors: Sequence[float], max_threshold: float = FIRE_MAX_PX) -> float:
    """Area under the success-rate curve over thresholds ``[0, max_threshold]``, divided by ``max_threshold``.

    Exact for the step curve: a pair with error ``e`` is a success for ``t >= e``, so it contributes
    ``max(0, 1 - e / max_threshold)``; the AUC is the mean of that over pairs (failed pairs contribute 0).
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        return math.nan
    e = np.where(np.isfinite(e), e, np.inf)
    return float(np.clip(1.0 - e / float(max_threshold), 0.0, 1.0).mean())


def auc_steps(errors: Sequence[float], max_threshold: int = int(FIRE_MAX_PX)) -> float:
    """The AUC as several published FIRE scripts compute it: the mean over integer thresholds ``i = 1..max`` of
    the fraction of pairs with error ``< i``. It exceeds :func:`auc` by ``frac(e) / max`` per pair (< 0.04 at 25 px).
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        return math.nan
    e = np.where(np.isfinite(e), e, np.inf)
    steps = np.arange(1, int(max_threshold) + 1, dtype=np.float64)
    return float((e[None, :] < steps[:, None]).mean())


def pair_score(result: PairResult, mode: str) -> float:
    """The per-pair number the success curve uses: FIRE mean TRE (px), ANHIR median rTRE; inf when failed."""
    if not result.ok:
        return math.inf
    return result.tre_mean if mode == "fire" else result.rtre_median


def group_order(results: Iterable[PairResult], mode: str) -> List[str]:
    groups = sorted({r.group for r in results if r.group})
    if mode == "fire":
        groups = [g for g in FIRE_CATEGORIES if g in groups] + [g for g in groups if g not in FIRE_CATEGORIES]
    return groups


def _nan_stat(fn, values: List[float]) -> float:
    return float(fn(values)) if values else math.nan


def summarise(results: Sequence[PairResult], mode: str) -> List[dict]:
    """One row per group (in :func:`group_order`) and a last row ``all``.

    Keys: ``group, pairs, failed, median_rtre`` (median over scored pairs of the per-pair median rTRE),
    ``mean_rtre`` (mean of per-pair mean rTRE), ``median_tre`` / ``mean_tre`` (of the per-pair mean TRE, px),
    ``success`` (threshold -> success rate over *all* pairs), and for FIRE ``auc`` and ``auc_steps``.
    """
    rows = []
    for group in group_order(results, mode) + ["all"]:
        members = [r for r in results if group == "all" or r.group == group]
        scored = [r for r in members if r.ok]
        scores = [pair_score(r, mode) for r in members]
        thresholds = FIRE_TABLE_PX if mode == "fire" else ANHIR_TABLE_RTRE
        row = {
            "group": group, "pairs": len(members), "failed": len(members) - len(scored),
            "median_rtre": _nan_stat(np.median, [r.rtre_median for r in scored]),
            "mean_rtre": _nan_stat(np.mean, [r.rtre_mean for r in scored]),
            "median_tre": _nan_stat(np.median, [r.tre_mean for r in scored]),
            "mean_tre": _nan_stat(np.mean, [r.tre_mean for r in scored]),
            "success": dict(zip(thresholds, (float(v) for v in success_curve(scores, thresholds)))),
        }
        if mode == "fire":
            row["auc"] = auc(scores, FIRE_MAX_PX)
            row["auc_steps"] = auc_steps(scores, int(FIRE_MAX_PX))
        rows.append(row)
    return rows
