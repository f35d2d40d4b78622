"""Speed of drmime_pl on this machine: seconds per registration and per step on the bundled pairs, and the
per-step time for the same pair at 1x and 4x the pixel count (a step must not grow with the image).

    python benchmarks/speed.py [--threads 2] [--steps 200]

Timings are of the Python API in an already started process (imports and the first-call warm-up excluded).
Run it on a quiet machine: other processes on the cores slow torch down many times over.
"""
from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from pathlib import Path

import torch

import drmime_pl
from drmime_pl.config import load_config
from drmime_pl.io.images import read_image

ROOT = Path(__file__).resolve().parents[1]
BIRL = ROOT / "samples" / "birl"


def pairs():
    yield "fire A01 (2912x2912)", "configs/fire.yaml", None, None
    yield "anhir (1522x3261)", "configs/anhir.yaml", None, None
    yield ("birl rat kidney (1164x787)", None, BIRL / "rat-kidney_/scale-5pc/Rat-Kidney_HE.jpg",
           BIRL / "rat-kidney_/scale-5pc/Rat-Kidney_PanCytokeratin.jpg")
    yield ("birl lung lesion (890x733)", None, BIRL / "lesions_/scale-5pc/Izd2-29-041-w35_HE.jpg",
           BIRL / "lesions_/scale-5pc/Izd2-29-041-w35_proSPC.jpg")
    yield ("birl artificial (800x600)", None, BIRL / "images/artificial_reference.jpg",
           BIRL / "images/artificial_moving-affine.jpg")


def register(config, fixed, moving, extra=()):
    overrides = ["logging.enabled=false", "logging.progress_bar=false", *extra]
    if not config:
        overrides.append("model.transform=affine")
    cfg = load_config(str(ROOT / config) if config else None, overrides)
    if fixed is None:
        fixed, moving = ROOT / cfg.data.fixed, ROOT / cfg.data.moving
    from drmime_pl.training.fit import fit

    start = time.perf_counter()
    reg = fit(cfg, fixed=str(fixed), moving=str(moving)) if isinstance(fixed, Path) else fit(cfg, fixed=fixed, moving=moving)
    return reg, time.perf_counter() - start


def per_step_ms(fixed, moving, steps):
    fixed_steps = [f"fit.max_steps={steps}", "fit.converge_every=0"]
    reg, _ = register(None, fixed, moving, fixed_steps)
    return 1000 * reg.seconds / reg.steps, len(reg.mi_per_level)


class PeakRSS:
    """Peak resident memory (bytes) of this process while inside the block: /proc/self/statm sampled every 5 ms
    (Linux), else the process's lifetime peak (``ru_maxrss``)."""

    def __enter__(self):
        self.peak, self._stop = self.now(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def now() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200, help="steps for the per-step timings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average before: {os.getloadavg()[0]:.2f}")
    register(None, BIRL / "images/artificial_reference.jpg", BIRL / "images/artificial_moving-affine.jpg",
             ["fit.max_steps=20"])  # warm-up: lazy imports and first-call initialisation

    print("\n| pair | transform | seconds per registration | of which optimisation | steps | ms per step | "
          "peak RSS GB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, config, fixed, moving in pairs():
        with PeakRSS() as memory:
            reg, seconds = register(config, fixed, moving)
        print(f"| {name} | {reg.transform} | {seconds:.2f} | {reg.seconds:.2f} | {reg.steps} | "
              f"{1000 * reg.seconds / reg.steps:.2f} | {memory.peak / 1e9:.2f} |", flush=True)

    fixed = read_image(BIRL / "rat-kidney_/scale-5pc/Rat-Kidney_HE.jpg")
    moving = read_image(BIRL / "rat-kidney_/scale-5pc/Rat-Kidney_PanCytokeratin.jpg")
    up = lambda img: torch.nn.functional.interpolate(img[None], scale_factor=2, mode="bilinear")[0]  # noqa: E731
    ms_1x, levels_1x = per_step_ms(fixed, moving, args.steps)
    ms_4x, levels_4x = per_step_ms(up(fixed), up(moving), args.steps)
    print(f"\nper step, rat kidney at 1x ({fixed.shape[-1]}x{fixed.shape[-2]}, {levels_1x} levels): {ms_1x:.2f} ms")
    print(f"per step, rat kidney at 4x ({2 * fixed.shape[-1]}x{2 * fixed.shape[-2]}, {levels_4x} levels): {ms_4x:.2f} ms")
    print(f"ratio 4x / 1x: {ms_4x / ms_1x:.2f} (target <= 1.5)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"peak RSS of the whole benchmark: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
