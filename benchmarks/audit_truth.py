"""Does each real pair's ground truth line up its images? A check of the benchmark itself, not of drmime_pl.

    python benchmarks/audit_truth.py --out /tmp/audit
    python benchmarks/audit_truth.py --only 'optical_sar-*' --results benchmarks/results/real/drmime_round8.csv

For every pair of ``../shared/data/real/{jiang,srif}`` it fits the least-squares affine to the pair's landmarks (the
"truth" the rTRE is measured against) and asks whether the images agree with it, with two unrelated measures on the
~256 px level the verdict uses (:func:`drmime_pl.core.quality.judge_level`), on edges (NGF) and on intensities
(histogram MI), each as a z-score against 18 misaligned copies of the same transform
(:func:`drmime_pl.evaluation.truth_audit.truth_support`): an alignment the images support stands out from them.
With ``--results`` (a ``real_drmime.py`` / ``compare.py`` pairs.csv) the same is printed for that method's matrix, so
a pair where the method's result stands out and the truth does not can be looked at by eye.

Output: ``audit.csv`` (one row per pair) and a table per category (median z of the truth, how many pairs' truth
stands out, z >= 2, on each measure and on either). The real sets carry no licence: they are read where they lie.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_drmime import REAL, pairs  # noqa: E402  (the same pair list and --only patterns)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", default=str(REAL))
    parser.add_argument("--sets", default="jiang,srif")
    parser.add_argument("--only", default="", help="comma-separated fnmatch patterns of pair names")
    parser.add_argument("--results", default="", help="a pairs.csv whose matrices are audited beside the truth")
    parser.add_argument("--method", default="drmime", help="the method of --results to read")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from drmime_pl.config import load_config
    from drmime_pl.core.geometry import normalised_matrix_from_pixel
    from drmime_pl.core.quality import judge_level
    from drmime_pl.evaluation.datasets import read_points
    from drmime_pl.evaluation.truth_audit import STANDS_OUT, landmark_affine, truth_support
    from drmime_pl.training.prepare import prepare_pair

    results = {}
    if args.results:
        for row in csv.DictReader(open(args.results)):
            if row.get("method", args.method) == args.method and row.get("matrix"):
                results[row["pair"]] = (np.array(json.loads(row["matrix"])), float(row["rtre"]))
    cfg = load_config(None)
    rows = []
    for name, pair in pairs(Path(args.real), args.sets.split(","), args.only):
        key = f"{name}-{pair.name}"
        truth = landmark_affine(*read_points(pair))
        prepared = prepare_pair(str(pair.fixed_image), str(pair.moving_image), cfg.data, init="identity",
                                model="affine")
        level = judge_level(prepared)

        def normalised(m):
            return normalised_matrix_from_pixel(torch.as_tensor(m, dtype=torch.float64), prepared.fixed_hw,
                                                prepared.moving_hw, prepared.scale)

        matrices = [normalised(truth)]
        if key in results:
            matrices.append(normalised(results[key][0]))
        z = truth_support(level, torch.stack(matrices))
        row = {"set": name, "pair": key, "category": pair.group, "truth_ngf_z": z[0][0], "truth_mi_z": z[0][1]}
        if key in results:
            row.update(method_rtre=results[key][1], method_ngf_z=z[1][0], method_mi_z=z[1][1])
        rows.append(row)
        extra = (f"  {args.method}: rTRE {100 * row['method_rtre']:6.2f}%  NGF z {row['method_ngf_z']:5.1f}  "
                 f"MI z {row['method_mi_z']:5.1f}") if key in results else ""
        print(f"{key:34s} truth: NGF z {z[0][0]:5.1f}  MI z {z[0][1]:5.1f}{extra}", flush=True)

    print("\n| set | category | n | truth stands out on edges (NGF z >= 2) | on intensities (MI z >= 2) | "
          "on either | median NGF z | median MI z |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    groups = defaultdict(list)
    for row in rows:
        groups[(row["set"], row["category"])].append(row)
    for (set_name, category), members in sorted(groups.items()):
        ngf_z = [r["truth_ngf_z"] for r in members]
        mi_z = [r["truth_mi_z"] for r in members]
        either = sum(a >= STANDS_OUT or b >= STANDS_OUT for a, b in zip(ngf_z, mi_z))
        print(f"| {set_name} | {category} | {len(members)} | {sum(v >= STANDS_OUT for v in ngf_z)} | "
              f"{sum(v >= STANDS_OUT for v in mi_z)} | {either} | "
              f"{statistics.median(ngf_z):.1f} | {statistics.median(mi_z):.1f} |")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(out / "audit.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, columns)
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
