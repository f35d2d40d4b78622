"""Small images and known transforms for the export / warp / TIFF tests (issue 11)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from drmime_pl.core.geometry import transform_points
from drmime_pl.io.result import Registration

REPO = Path(__file__).resolve().parents[1]

AFFINE = np.array([[0.95, 0.1, 3.2], [-0.08, 1.05, -2.1], [0.0, 0.0, 1.0]])
PERSPECTIVE = np.array([[0.95, 0.1, 3.2], [-0.08, 1.05, -2.1], [1e-4, -2e-4, 1.0]])


def pattern(h: int, w: int, top: float = 255.0, phase: float = 0.0) -> np.ndarray:
    """A smooth float image in [0, top] (sinusoids): bilinear resampling of it is well conditioned."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    z = 0.5 + 0.25 * np.sin(xx / 7.0 + phase) + 0.25 * np.cos(yy / 5.0 + 0.7 * phase) * np.cos(xx / 23.0)
    return top * z


def known_registration(matrix, fixed_hw, moving_hw, moving_path, fixed_path="fixed") -> Registration:
    """A Registration with a given matrix, as if a run had produced it (no optimisation)."""
    t = "perspective" if matrix[2, 0] or matrix[2, 1] else "affine"
    k = 8 if t == "perspective" else 6
    return Registration(
        matrix=np.asarray(matrix, np.float64), matrix_normalised=np.eye(3), coefficients_shared=np.zeros(k),
        coefficients_fine=np.zeros(k), transform=t, fixed_shape=tuple(fixed_hw), moving_shape=tuple(moving_hw),
        scale=max(fixed_hw) / 2.0, mi_per_level=[0.1], steps=1, seconds=0.1, converged=False, seed=0,
        fixed=str(fixed_path), moving=str(moving_path),
    )


def inside_mask(matrix, fixed_hw, moving_hw, margin: float = 1.0) -> np.ndarray:
    """Fixed pixels whose mapped point lies at least ``margin`` px inside the moving image (away from the border,
    where the resamplers' boundary rules differ)."""
    h, w = fixed_hw
    ys, xs = np.mgrid[0:h, 0:w]
    import torch

    p = transform_points(torch.tensor(matrix, dtype=torch.float64),
                         torch.tensor(np.stack([xs.ravel(), ys.ravel()], 1), dtype=torch.float64)).numpy()
    hm, wm = moving_hw
    ok = (p[:, 0] >= margin) & (p[:, 0] <= wm - 1 - margin) & (p[:, 1] >= margin) & (p[:, 1] <= hm - 1 - margin)
    return ok.reshape(h, w)


def run_warp_cli(*args, cwd=None):
    """``python -m drmime_pl.warp ARGS`` -> CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "drmime_pl.warp", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=120)
