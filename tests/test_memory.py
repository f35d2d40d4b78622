"""Issue 7, memory: the full-resolution steps must not cost far more than the images themselves.

Peak resident memory is measured in a fresh subprocess (``ru_maxrss``) over a 2500 x 2500 grey image, so that the
per-pixel figure is not hidden by the interpreter's own memory (the peak, VmHWM, is reset after the imports).
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from .conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")

PROBE = """
import sys, torch
torch.set_num_threads(1)
n = 2500
x = torch.rand(1, n, n)
{setup}
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(key + ":"))
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current RSS: imports and setup do not count
base = status("VmRSS")
{body}
print((status("VmHWM") - base) / (n * n))
"""


def bytes_per_pixel(setup: str, body: str) -> float:
    """Peak memory of ``body`` (after ``setup``: imports, inputs) in bytes per pixel of an n x n image."""
    proc = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup, body=body)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.strip().splitlines()[-1])


def test_gaussian_pyramid_needs_little_more_than_its_levels():
    # conv2d on the CPU unfolded the image (~77 bytes per pixel for sigma 1); the pyramid itself is ~5.3 bytes.
    used = bytes_per_pixel("from drmime_pl.core.pyramid import gaussian_pyramid", "y = gaussian_pyramid(x, 6, 1.0)")
    assert used < 24, f"gaussian_pyramid peaked at {used:.1f} bytes per pixel"


def test_sampler_tables_are_compact():
    used = bytes_per_pixel("from drmime_pl.training.datamodule import PixelBatchSampler\nm = torch.ones(n, n, dtype=torch.bool)",
                           "s = PixelBatchSampler([x], [m], (n, n), n / 2, 64, 0)")
    assert used < 12, f"the sampler peaked at {used:.1f} bytes per pixel"


def test_warp_by_row_blocks_is_exact_and_small(monkeypatch):
    import drmime_pl.core.geometry as geometry

    moving = torch.rand(2, 61, 47)
    matrix = torch.tensor([[0.9, 0.1, 3.0], [-0.05, 1.1, -2.0], [1e-4, 2e-4, 1.0]], dtype=torch.float64)
    whole = geometry.warp_image(moving, matrix, (53, 71))
    monkeypatch.setattr(geometry, "_WARP_BLOCK_PIXELS", 100)  # 1 row at a time
    assert torch.equal(geometry.warp_image(moving, matrix, (53, 71)), whole)
    used = bytes_per_pixel("from drmime_pl.core.geometry import warp_image",
                           "y = warp_image(x, torch.eye(3, dtype=torch.float64), (n, n))")
    assert used < 12, f"warp_image peaked at {used:.1f} bytes per pixel"


def test_sampler_draws_the_same_pixels_from_bool_masks_and_float_weights():
    from drmime_pl.training.datamodule import PixelBatchSampler

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 40, 30, generator=g)
    mask = torch.rand(40, 30, generator=g) > 0.3
    a = PixelBatchSampler([image], [mask], (40, 30), 20.0, 64, 5).batch(3)
    b = PixelBatchSampler([image], [mask.float()], (40, 30), 20.0, 64, 5).batch(3)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_warp_array_needs_little_more_than_its_input_and_output():
    # The full-size float64 sampling grid and float copies of the output cost ~60 bytes per pixel; by blocks of rows
    # an 8-bit image needs its float32 copy (4 bytes) and the 8-bit output (1 byte).
    used = bytes_per_pixel("import numpy as np\nfrom drmime_pl.core.resample import warp_array\n"
                           "a = (x[0].numpy() * 255).astype(np.uint8)\ndel x",
                           "y = warp_array(a, 'YX', np.eye(3), (n, n))")
    assert used < 12, f"warp_array peaked at {used:.1f} bytes per pixel"


FAULTS_PROBE = """
import resource, sys, torch
from drmime_pl.training.memory import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "tuned" else "untuned")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for mb in range(1, 31):  # each tensor larger than any freed before it, as a registration's sizes vary
    x = torch.ones(mb * 262144)  # mb MB, every page touched
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_freed_blocks_are_reused_without_page_faults():
    """training/memory.py: once set, blocks of 1-30 MB come from the heap, where only the part beyond what was freed
    before is new (about 30 MB of pages in all); with glibc's own moving threshold each block larger than the last
    freed one is a fresh mapping whose every page faults (465 MB in all)."""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", FAULTS_PROBE, mode], capture_output=True, text=True, cwd=REPO,
                             check=True).stdout.split()
        return out[0], int(out[1])

    page = 4096
    status, tuned = run("tuned")
    assert status == "True" and tuned < 150 * 2 ** 20 // page  # 31-72 MB seen, depending on what came before
    _, untuned = run("untuned")
    assert untuned > 300 * 2 ** 20 // page  # the probe does show the difference on this system


def test_a_users_malloc_settings_are_left_alone(monkeypatch):
    import drmime_pl.training.memory as memory

    monkeypatch.setattr(memory, "_done", False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert memory.keep_freed_memory() is False
