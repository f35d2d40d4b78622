"""Throughput of ``python -m drmime_pl.evaluate --batch-size N`` against one pair at a time (issue 9), whole
commands, with the success rate of each so that speed is never bought with accuracy.

    PYTHONPATH=. python benchmarks/batch_throughput.py                                  # 82 Jiang pairs, 1/4/8
    PYTHONPATH=. python benchmarks/batch_throughput.py --data synthetic --batch-sizes 1,8  # benchmarks/cache syn-*
    PYTHONPATH=. python benchmarks/batch_throughput.py --runs "--batch-size 1" "--batch-size 4 --devices 2"
    PYTHONPATH=. python benchmarks/batch_throughput.py --out benchmarks/results/batch   # also batch.csv, pairs
    PYTHONPATH=. python benchmarks/batch_throughput.py --batch-sizes 4 --elastix       # and an elastix loop
    PYTHONPATH=. python benchmarks/batch_throughput.py --batch-sizes "" --fit-list --fit-loop --elastix

Each run is one whole process, ``python -m drmime_pl.evaluate --pairs PAIRS --out DIR <run options>`` with the
default config (logging on: TensorBoard and checkpoints, as a user runs it), timed by the wall clock, its peak RSS
from GNU time (the largest of its processes with ``--devices``). Runs go one after the other on the same machine,
so the ratios are what counts; the load average before and after is printed (other work on the cores slows every
run).

``--data jiang``: ``../shared/data/real/jiang/pairs.csv`` (82 real pairs with landmarks), success at median rTRE
<= 1%. ``--data synthetic``: the synthetic pairs that ``benchmarks/compare.py`` cached in ``benchmarks/cache``
(``syn-same``, ``syn-multi``; run compare.py with ``--syn-seeds 2`` once to make them), written as a pairs CSV with
landmark files into a temporary folder; success at 0.5% as in RESULTS.md. ``--data FILE.csv``: any pairs CSV.

``--fit-list``: also one ``python -m drmime_pl.fit --pairs PAIRS --out DIR`` (every pair registered in one process,
batches of 4, the default config with logging on, writing each pair's files); ``--fit-loop``: also a shell-style
loop of ``python -m drmime_pl.fit data.fixed=... data.moving=... output.dir=...`` processes, one per pair. Their
accuracy comes from the matrices they wrote (``results.csv``, ``transform.json``) and the landmarks. Together with
``--elastix`` they compare the three ways a command-line user registers a list.

``--elastix``: after the runs, a shell-style loop of ``elastix`` processes over the same pairs (elastix from PATH,
its default affine parameter map ``benchmarks/speed_elastix/affine.txt``, ``-threads <all cores>``, writing
its warped image and transform), timed the same way; its accuracy from its TransformParameters (as
``benchmarks/speed.py`` reads them). It is a row of the table.

Printed: per run, seconds, pairs per minute, speed-up over the first run, peak RSS, success rate, and the pairs
whose success differs from the first run's.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = Path(__file__).resolve().parent / "cache"


def synthetic_pairs_csv(folder: Path) -> Path:
    """benchmarks/cache's synthetic pairs as a pairs CSV with ``,X,Y`` landmark files."""
    rows = []
    for meta_path in sorted(CACHE.glob("*/pair.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("group") not in ("syn-same", "syn-multi"):
            continue
        name = meta_path.parent.name
        for side in ("fixed", "moving"):
            points = meta[f"{side}_points"]
            lines = [",X,Y"] + [f"{i},{x},{y}" for i, (x, y) in enumerate(points)]
            (folder / f"{name}_{side}.csv").write_text("\n".join(lines) + "\n")
        rows.append({"name": name, "fixed_image": str(meta_path.parent / "fixed.png"),
                     "moving_image": str(meta_path.parent / "moving.png"), "fixed_landmarks": f"{name}_fixed.csv",
                     "moving_landmarks": f"{name}_moving.csv", "modality": meta["group"]})
    if not rows:
        sys.exit(f"no synthetic pairs in {CACHE}: run benchmarks/compare.py --groups syn-same,syn-multi --syn-seeds 2 "
                 f"--methods drmime once")
    path = folder / "pairs.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_once(pairs: Path, options: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "drmime_pl.evaluate", "--pairs", str(pairs), "--out", str(out)] + shlex.split(options)
    proc, seconds, rss = _timed(cmd, out.parent / f"{out.name}.rss")
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    with (out / "pairs.csv").open(newline="") as fh:
        rows = {r["name"]: r for r in csv.DictReader(fh)}
    return {"seconds": seconds, "rss_mb": rss, "rows": rows}


def _accuracy(pairs_csv: Path, matrices: dict, threshold: float) -> dict:
    """``name -> success`` (median rTRE <= threshold) for ``matrices`` (name -> 3 x 3 fixed px -> moving px, or
    None for a failed pair) against the pairs' landmarks."""
    import numpy as np

    from drmime_pl.evaluation.datasets import read_pairs_csv, read_points
    from drmime_pl.evaluation.metrics import image_diagonal, tre
    from drmime_pl.evaluation.sources import image_size

    ok = {}
    for pair in read_pairs_csv(pairs_csv):
        matrix = matrices.get(pair.name)
        if matrix is None:
            ok[pair.name] = False
            continue
        fixed, moving = read_points(pair)
        errors = tre(np.asarray(matrix, dtype=np.float64), fixed, moving)
        ok[pair.name] = bool(np.median(errors) / image_diagonal(image_size(pair.fixed_image)) <= threshold)
    return ok


def _timed(cmd, rss_file: Path):
    """Run ``cmd`` (a whole process, drmime_pl from this checkout) under GNU time: (seconds, peak RSS MB)."""
    timed = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] + cmd if Path("/usr/bin/time").exists() else cmd
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    proc = subprocess.run(timed, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    rss = float(rss_file.read_text().split()[-1]) / 1000 if rss_file.exists() else float("nan")
    return proc, seconds, rss


def fit_list(pairs_csv: Path, tmp: Path, threshold: float, extra) -> dict:
    """Every pair in one ``python -m drmime_pl.fit --pairs`` process."""
    out = tmp / "fit_list"
    proc, seconds, rss = _timed([sys.executable, "-m", "drmime_pl.fit", "--pairs", str(pairs_csv), "--out", str(out)]
                                + list(extra), tmp / "fit_list.rss")
    if proc.returncode not in (0, 1):  # 1: some pair failed, its row says why
        sys.exit(f"fit --pairs exited with {proc.returncode}:\n{proc.stderr[-2000:]}")
    with (out / "results.csv").open(newline="") as fh:
        matrices = {r["name"]: json.loads(r["matrix"]) if r["matrix"] else None for r in csv.DictReader(fh)}
    ok = _accuracy(pairs_csv, matrices, threshold)
    return {"options": "fit --pairs (one process)", "seconds": seconds, "rss_mb": rss, "ok": ok, "n": len(ok),
            "successes": sum(ok.values())}


def fit_loop(pairs_csv: Path, tmp: Path, threshold: float, extra) -> dict:
    """Every pair through its own ``python -m drmime_pl.fit`` process, one after another."""
    from drmime_pl.evaluation.datasets import read_pairs_csv

    matrices, seconds, peak = {}, 0.0, 0.0
    for pair in read_pairs_csv(pairs_csv):
        out = tmp / "fit_loop" / pair.name
        proc, s, rss = _timed([sys.executable, "-m", "drmime_pl.fit", f"data.fixed={pair.fixed_image}",
                               f"data.moving={pair.moving_image}", f"output.dir={out}"] + list(extra),
                              tmp / "fit_loop.rss")
        seconds, peak = seconds + s, max(peak, rss)
        done = out / "transform.json"
        matrices[pair.name] = json.loads(done.read_text())["matrix"] if proc.returncode == 0 and done.exists() else None
    ok = _accuracy(pairs_csv, matrices, threshold)
    return {"options": "fit loop (process per pair)", "seconds": seconds, "rss_mb": peak, "ok": ok, "n": len(ok),
            "successes": sum(ok.values())}


def elastix_loop(pairs_csv: Path, tmp: Path, threshold: float) -> dict:
    """Every pair of ``pairs_csv`` through the elastix command line, one process after another."""
    import shutil

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import speed

    binary = shutil.which("elastix")
    if binary is None:
        sys.exit("--elastix: no elastix on PATH (apt-get install elastix)")
    rows, ok, seconds, peak = {}, {}, 0.0, 0.0
    with pairs_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            fixed, moving = pairs_csv.parent / row["fixed_image"], pairs_csv.parent / row["moving_image"]
            work = tmp / "elastix" / row["name"]
            work.mkdir(parents=True)
            out = speed.run_elastix(binary, speed.ELASTIX_PARAMS, fixed, moving, os.cpu_count() or 1, work)
            seconds += out["elastix_s"]
            peak = max(peak, out.get("elastix_peak_rss_mb") or 0.0)
            points = speed.landmarks(pairs_csv.parent / row["fixed_landmarks"],
                                     pairs_csv.parent / row["moving_landmarks"])
            from PIL import Image

            with Image.open(fixed) as image:
                size = image.size
            acc = speed.accuracy(out.get("_elastix_matrix"), points, size)
            ok[row["name"]] = acc is not None and acc[0] <= threshold
            rows[row["name"]] = out
    return {"options": "elastix loop", "seconds": seconds, "rss_mb": peak, "rows": rows, "ok": ok, "n": len(rows),
            "successes": sum(ok.values())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="jiang", help="jiang | synthetic | a pairs CSV")
    parser.add_argument("--batch-sizes", default="1,4,8", help="comma-separated; each a run '--batch-size N'")
    parser.add_argument("--runs", nargs="+", default=None, help="evaluate options of each run instead")
    parser.add_argument("--threshold", type=float, default=None, help="success rTRE (default 0.01, synthetic 0.005)")
    parser.add_argument("--out", default=None, help="also write batch.csv and each run's pairs.csv here")
    parser.add_argument("--elastix", action="store_true", help="also time a loop of elastix processes")
    parser.add_argument("--fit-list", action="store_true", help="also time one 'python -m drmime_pl.fit --pairs'")
    parser.add_argument("--fit-loop", action="store_true", help="also time a loop of 'python -m drmime_pl.fit'")
    parser.add_argument("overrides", nargs="*", help="config overrides passed to every run")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="drmime_batch_"))
    if args.data == "jiang":
        pairs, threshold = DATA / "real" / "jiang" / "pairs.csv", 0.01
    elif args.data == "synthetic":
        pairs, threshold = synthetic_pairs_csv(tmp), 0.005
    else:
        pairs, threshold = Path(args.data).resolve(), 0.01
    threshold = args.threshold or threshold
    runs = args.runs or [f"--batch-size {n}" for n in args.batch_sizes.split(",") if n]
    extra = " ".join(shlex.quote(o) for o in args.overrides)
    print(f"pairs: {pairs}; success: median rTRE <= {threshold:g}; load average before: "
          f"{os.getloadavg()[0]:.2f}; torch threads per process: the config's (fit.threads, fit.workers)")
    results = []
    for i, options in enumerate(runs):
        out = tmp / f"run{i}"
        r = run_once(pairs, f"{options} {extra}", out)
        rows = r["rows"]
        ok = {name: row["status"] == "ok" and float(row["rtre_median"]) <= threshold for name, row in rows.items()}
        r.update(options=options, ok=ok, n=len(rows), successes=sum(ok.values()))
        results.append(r)
        print(f"  {options}: {r['seconds']:.1f} s, {60 * r['n'] / r['seconds']:.1f} pairs/min, "
              f"{r['successes']}/{r['n']} successes", flush=True)
    for wanted, timing in ((args.fit_list, fit_list), (args.fit_loop, fit_loop)):
        if wanted:
            r = timing(pairs, tmp, threshold, args.overrides)
            results.append(r)
            print(f"  {r['options']}: {r['seconds']:.1f} s, {60 * r['n'] / r['seconds']:.1f} pairs/min, "
                  f"{r['successes']}/{r['n']} successes", flush=True)
    if args.elastix:
        r = elastix_loop(pairs, tmp, threshold)
        results.append(r)
        print(f"  elastix loop: {r['seconds']:.1f} s, {60 * r['n'] / r['seconds']:.1f} pairs/min, "
              f"{r['successes']}/{r['n']} successes", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    if not results:
        sys.exit("nothing to time: give --batch-sizes, --runs, --fit-list, --fit-loop or --elastix")
    first = results[0]
    lines = ["| run | seconds | pairs / min | speed-up | peak RSS MB | success | differs from the first run |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        differ = sorted(n for n in r["ok"] if r["ok"][n] != first["ok"].get(n))
        lines.append(f"| `{r['options']}` | {r['seconds']:.1f} | {60 * r['n'] / r['seconds']:.1f} | "
                     f"{first['seconds'] / r['seconds']:.2f} | {r['rss_mb']:.0f} | {r['successes']}/{r['n']} "
                     f"({100 * r['successes'] / r['n']:.0f}%) | {', '.join(differ) or '-'} |")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with (out / "batch.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["run", "seconds", "pairs", "pairs_per_min", "peak_rss_mb", "successes"])
            for r in results:
                writer.writerow([r["options"], f"{r['seconds']:.2f}", r["n"], f"{60 * r['n'] / r['seconds']:.2f}",
                                 f"{r['rss_mb']:.0f}", r["successes"]])
        for i, r in enumerate(results):
            if (tmp / f"run{i}" / "pairs.csv").is_file():
                (out / f"run{i}_pairs.csv").write_text((tmp / f"run{i}" / "pairs.csv").read_text())
        (out / "batch.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
