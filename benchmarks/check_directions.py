"""Check that every method's matrix has drmime_pl's direction (fixed pixel -> moving pixel) on a known pair.

    python benchmarks/check_directions.py

A synthetic same-modality pair with a known small affine+shift transform (drmime_pl.evaluation.synthetic) is registered by the
classic peers (and, with --all, drmime_pl and the seed recipe); each must land near the truth, and far from the
truth's inverse.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # noqa: E402
from drmime_pl.io.images import read_image  # noqa: E402
from drmime_pl.evaluation.synthetic import make_pair  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--all", action="store_true", help="also drmime_pl and the (slow) seed recipe")
    args = ap.parse_args(argv)
    img = read_image(REPO / "samples/birl/images/artificial_reference.jpg")
    pair = make_pair(img, seed=1, magnitude="small", modality="same", max_side=320)
    f = pair.fixed.permute(1, 2, 0).numpy()
    m = pair.moving.permute(1, 2, 0).numpy()
    methods = {"sitk": lambda: peers.register_sitk(f, m, **peers.SITK_DEFAULT),
               "elastix": lambda: peers.register_elastix(f, m),
               "ecc": lambda: peers.register_ecc(f, m, **peers.ECC_DEFAULT)}
    if args.all:
        methods["drmime-affine"] = lambda: peers.register_drmime(pair.fixed, pair.moving, "affine")
        methods["seed"] = lambda: peers.register_seed(f, m, steps=300)
    ok = True
    inverse = np.linalg.inv(pair.matrix)
    print(f"identity rTRE {pair.rtre(np.eye(3)):.4f}, inverse-truth rTRE {pair.rtre(inverse):.4f}")
    for name, fn in methods.items():
        matrix = fn()
        r, r_inv = pair.rtre(matrix), pair.rtre(np.linalg.inv(matrix))
        good = r < 0.01 and r < r_inv
        ok &= good
        print(f"{name:14s} rTRE {r:.5f}   rTRE of its inverse {r_inv:.5f}   {'OK' if good else 'WRONG DIRECTION?'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
