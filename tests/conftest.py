"""Shared fixtures: small synthetic images and shrunk configs, so the suite runs on a 2-core CPU."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from drmime_pl.core.pyramid import gaussian_blur, min_max_normalise

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"

# Settings for fast registrations of ~200 px synthetic images (tests only; see configs/default.yaml for meanings).
FAST = ["data.batch_size=512", "fit.max_steps=300", "fit.min_steps=100", "logging.progress_bar=false"]


def textured_image(size: int = 192, seed: int = 0) -> torch.Tensor:
    """``1 x size x size`` image in [0, 1]: blobs at several scales, so MI has structure at every pyramid level."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(1, size, size)
    for sigma, weight in ((12.0, 1.0), (5.0, 0.6), (2.0, 0.3)):
        out += weight * min_max_normalise(gaussian_blur(torch.rand(1, size, size, generator=g), sigma))
    return min_max_normalise(out)


def nonmonotonic(image: torch.Tensor) -> torch.Tensor:
    """A non-monotonic intensity remap (a bump): MSE cannot explain it, MI can."""
    return 0.5 + 0.5 * torch.sin(2.5 * math.pi * image)


@pytest.fixture
def texture():
    return textured_image()


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)
    yield


def rat_kidney_paths():
    root = SAMPLES / "birl" / "rat-kidney_" / "scale-5pc"
    return (root / "Rat-Kidney_HE.jpg", root / "Rat-Kidney_PanCytokeratin.jpg",
            root / "Rat-Kidney_HE.csv", root / "Rat-Kidney_PanCytokeratin.csv")


def write_png(path: Path, image: torch.Tensor) -> Path:
    from PIL import Image

    array = (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


def write_shifted_pair(folder: Path, seed: int, dx: float, dy: float):
    """``fixed.png`` and ``moving.png`` in ``folder``: a 128 px texture (moving) and its copy shifted so that the true
    matrix (fixed px -> moving px) is a translation by ``(dx, dy)``. Returns their paths."""
    from drmime_pl.core.geometry import warp_image

    moving = textured_image(128, seed=seed)
    fixed = warp_image(moving, torch.tensor([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype=torch.float64), (128, 128))
    return write_png(folder / "fixed.png", fixed), write_png(folder / "moving.png", moving)


__all__ = ["FAST", "REPO", "SAMPLES", "textured_image", "nonmonotonic", "rat_kidney_paths", "write_png",
           "write_shifted_pair", "np"]
