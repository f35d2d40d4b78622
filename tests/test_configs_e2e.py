"""The README's main commands, end to end, on the bundled pairs (slow: about a minute together)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from drmime_pl.core.geometry import warp_image
from drmime_pl.io.images import read_image
from drmime_pl.core.pyramid import auto_foreground, gaussian_blur

from .conftest import REPO

pytestmark = pytest.mark.slow


def run_config(config, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "drmime_pl.fit", "--config", config, f"output.dir={out}",
         f"logging.log_dir={tmp_path / 'logs'}", "logging.progress_bar=false"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("transform.json", "warped.png", "overlay.png", "config.yaml"):
        assert (out / name).is_file(), name
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert list((tmp_path / "logs").rglob("last.ckpt"))
    return json.loads((out / "transform.json").read_text())


def band_pass_green(image, factor=8):
    g = torch.nn.functional.avg_pool2d(image[1:2].unsqueeze(0), factor)[0]
    return g - gaussian_blur(g, 4.0)


def test_fire_config(tmp_path):
    result = run_config("configs/fire.yaml", tmp_path)
    fixed, moving = read_image(REPO / "samples/fire/A01_1.jpg"), read_image(REPO / "samples/fire/A01_2.jpg")
    inside = auto_foreground(fixed, margin=-0.05)[::8, ::8][: fixed.shape[1] // 8, : fixed.shape[2] // 8]

    def ncc(matrix):
        warped = warp_image(moving, torch.tensor(matrix, dtype=torch.float64), fixed.shape[-2:])
        a, b = band_pass_green(fixed)[0][inside], band_pass_green(warped)[0][inside]
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    registered, identity = ncc(result["matrix"]), ncc(np.eye(3))
    # vessels line up: the band-passed images correlate far better than without registration
    assert registered > identity + 0.2 and registered > 0.5, (registered, identity)


def test_anhir_config(tmp_path):
    result = run_config("configs/anhir.yaml", tmp_path)
    fixed, moving = read_image(REPO / "samples/anhir/fixed2.jpeg"), read_image(REPO / "samples/anhir/moving2.jpeg")
    fixed_fg = auto_foreground(fixed)
    moving_fg = auto_foreground(moving).float()[None]
    warped_fg = warp_image(moving_fg, torch.tensor(result["matrix"], dtype=torch.float64), fixed.shape[-2:])[0] > 0.5
    iou = float((fixed_fg & warped_fg).sum() / (fixed_fg | warped_fg).sum())
    assert iou > 0.75, f"tissue overlap (IoU) {iou:.2f}"
