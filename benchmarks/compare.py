"""Compare drmime_pl with SimpleITK, elastix, OpenCV ECC and the seed notebooks' recipe on the same pairs.

    pip install -e ".[bench]"
    python benchmarks/compare.py                       # the full run (RESULTS.md), ~40 min on 2 CPU cores
    python benchmarks/compare.py --quick               # smoke run: 3 pairs, no seed recipe, no extras
    python benchmarks/compare.py --methods ecc,sitk --groups syn-same --out /tmp/b

Groups (pairs with ground truth; rTRE per pair = median over its points of TRE / fixed-image diagonal):
  birl-multi  BIRL histology pairs of different stains with landmarks (samples/birl/pairs.csv, modality multi)
  birl-mono   BIRL artificial pairs (rigid, affine, elastic warps of one picture; modality mono)
  syn-same    drmime_pl.evaluation.synthetic pairs, modality ``same`` (+ noise), small/medium/large
  syn-multi   drmime_pl.evaluation.synthetic pairs, modalities ``inverted``, ``nonmonotonic``, ``channels``, all magnitudes
  real-jiang  ../shared/data/real/jiang: 82 real multi-modal pairs in 17 categories, third-party landmarks
  real-srif   ../shared/data/real/srif: 120 real remote-sensing pairs in 6 categories, ground-truth affine grids
              (the real sets carry no licence: they are read from --real, never copied into the repository)

Every (method, group) runs in its own worker process (``--worker``): it imports its library, does an untimed
warm-up registration on a tiny pair, then times each registration call alone (images already in memory as float
arrays) and reports its peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the whole process,
interpreter and libraries included). ``os.getloadavg()`` is recorded with every pair: other processes on the
machine slow the timings.

Outputs in ``--out`` (default benchmarks/results): pairs.csv (one row per method and pair), summary.csv,
summary.md (the tables printed at the end), extras.json (CLI start-up, FIRE full-resolution memory), manifest.json.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLES = REPO / "samples"
sys.path.insert(0, str(HERE))

METHODS = ["drmime", "drmime-affine", "drmime-perspective", "sitk", "elastix", "ecc", "seed", "oracle-affine"]
GROUPS = ["birl-multi", "birl-mono", "syn-same", "syn-multi", "real-jiang", "real-srif"]
REAL = REPO.parent / "shared" / "data" / "real"
MAGNITUDES = ["small", "medium", "large"]
MULTI_MODALITIES = ["inverted", "nonmonotonic", "channels"]
THRESHOLDS = (0.005, 0.01)

#: Real images the synthetic pairs are made from (shrunk to SYN_MAX_SIDE, then padded by 25% per side).
SYN_SOURCES = {
    "art": "birl/images/artificial_reference.jpg",
    "fire": "fire/A01_1.jpg",
    "kidney": "birl/rat-kidney_/scale-5pc/Rat-Kidney_HE.jpg",
    "anhir": "anhir/fixed2.jpeg",
}
SYN_MAX_SIDE = 400


# ------------------------------------------------------------------------------------------------- the pairs
def _write_png(tensor, path: Path) -> None:
    from drmime_pl.io.images import save_image_atomic

    save_image_atomic(tensor, path)


def build_synthetic(cache: Path, sources, modalities, magnitudes, seeds, group: str, seed_base: int):
    """Make (or reuse) synthetic pairs; images as 8-bit PNG, ground truth in the manifest."""
    from drmime_pl.io.images import read_image
    from drmime_pl.evaluation.synthetic import make_pair

    entries = []
    images = {}
    for s_idx, src in enumerate(sources):
        for mod in modalities:
            for mag in magnitudes:
                for rep in range(seeds):
                    seed = seed_base + 1000 * rep + 10 * s_idx + MAGNITUDES.index(mag)
                    name = f"{src}-{mod}-{mag}-s{seed}"
                    folder = cache / name
                    meta_path = folder / "pair.json"
                    if not meta_path.is_file():
                        if src not in images:
                            images[src] = read_image(SAMPLES / SYN_SOURCES[src])
                        pair = make_pair(images[src], seed=seed, magnitude=mag, modality=mod,
                                         max_side=SYN_MAX_SIDE)
                        folder.mkdir(parents=True, exist_ok=True)
                        _write_png(pair.fixed, folder / "fixed.png")
                        _write_png(pair.moving, folder / "moving.png")
                        meta = {"name": name, "group": group, "source": src, "modality": mod, "magnitude": mag,
                                "seed": seed, "fixed": str(folder / "fixed.png"), "moving": str(folder / "moving.png"),
                                "fixed_points": pair.fixed_points.tolist(), "moving_points": pair.moving_points.tolist(),
                                "fixed_hw": list(pair.fixed_hw), "true_matrix": pair.matrix.tolist(),
                                "params": {k: v for k, v in pair.params.items()}}
                        meta_path.write_text(json.dumps(meta, default=float))
                    entry = json.loads(meta_path.read_text())
                    entry["fixed"], entry["moving"] = str(folder / "fixed.png"), str(folder / "moving.png")
                    entries.append(entry)
    return entries


def build_birl():
    from PIL import Image

    from drmime_pl.evaluation.datasets import pair_up
    from drmime_pl.io.landmarks import read_landmarks_csv

    base = SAMPLES / "birl"
    entries = []
    with (base / "pairs.csv").open() as fh:
        for row in csv.DictReader(fh):
            fixed_pts, moving_pts = pair_up(read_landmarks_csv(base / row["fixed_landmarks"]),
                                            read_landmarks_csv(base / row["moving_landmarks"]))
            with Image.open(base / row["fixed_image"]) as im:
                w, h = im.size
            entries.append({"name": row["name"], "group": f"birl-{row['modality']}", "source": "birl",
                            "modality": row["modality"], "magnitude": "", "seed": "",
                            "fixed": str(base / row["fixed_image"]), "moving": str(base / row["moving_image"]),
                            "fixed_points": fixed_pts.tolist(), "moving_points": moving_pts.tolist(),
                            "fixed_hw": [h, w]})
    return entries


def build_real(root: Path):
    """The real pairs of ``root/jiang`` and ``root/srif`` (ANHIR-style pairs.csv), group ``real-<set>``, modality =
    category. Missing sets are skipped with a note."""
    from PIL import Image

    from drmime_pl.evaluation.datasets import read_pairs_csv, read_points

    entries = []
    for name in ("jiang", "srif"):
        csv_path = Path(root) / name / "pairs.csv"
        if not csv_path.is_file():
            print(f"note: {csv_path} not found: group real-{name} skipped", file=sys.stderr)
            continue
        for pair in read_pairs_csv(csv_path):
            fixed_pts, moving_pts = read_points(pair)
            with Image.open(pair.fixed_image) as im:
                w, h = im.size
            entries.append({"name": f"{name}-{pair.name}", "group": f"real-{name}", "source": name,
                            "modality": pair.group, "magnitude": "", "seed": "", "fixed": str(pair.fixed_image),
                            "moving": str(pair.moving_image), "fixed_points": fixed_pts.tolist(),
                            "moving_points": moving_pts.tolist(), "fixed_hw": [h, w]})
    return entries


def build_manifest(cache: Path, quick: bool, syn_seeds: int, real: Path = REAL):
    cache = cache.resolve()
    entries = build_birl()
    if quick:
        return [e for e in entries if e["name"] == "rat-kidney-he-pancytokeratin"] + \
            build_synthetic(cache, ["art"], ["same"], ["medium"], 1, "syn-same", 100) + \
            build_synthetic(cache, ["kidney"], ["nonmonotonic"], ["small"], 1, "syn-multi", 100)
    entries += build_synthetic(cache, list(SYN_SOURCES), ["same"], MAGNITUDES, syn_seeds, "syn-same", 100)
    entries += build_synthetic(cache, list(SYN_SOURCES), MULTI_MODALITIES, MAGNITUDES, syn_seeds, "syn-multi", 100)
    return entries + build_real(real)


# ------------------------------------------------------------------------------------------------- the worker
def _load(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L") if im.mode in ("L", "I;16", "I", "F") else im.convert("RGB")
        return np.asarray(im, dtype=np.float32) / 255.0


def split_spec(spec: str, threads: int, torch_threads: int, seed_threads: int):
    """``method[@N[p]]`` -> (method, threads, passive): ``@2`` forces 2 threads, ``@2p`` also sets
    OMP_WAIT_POLICY=PASSIVE. Without a suffix: drmime_pl uses ``torch_threads``, the seed recipe ``seed_threads``,
    the classic tools ``threads``."""
    method, _, suffix = spec.partition("@")
    passive = suffix.endswith("p")
    if suffix:
        n = int(suffix.rstrip("p"))
    elif method.startswith("drmime"):
        n = torch_threads
    elif method == "seed":
        n = seed_threads
    else:
        n = threads
    return method, n, passive


def _method_fn(method: str, seed_steps: int):
    import peers

    method = method.partition("@")[0]
    extra = os.environ.get("BENCH_DRMIME_OVERRIDES", "").split()  # compare.py --drmime-overrides
    if method == "drmime":  # the default config, transform model included
        return lambda f, m: peers.register_drmime(f, m, None, extra)
    if method == "drmime-affine":
        return lambda f, m: peers.register_drmime(f, m, "affine", extra)
    if method == "drmime-perspective":
        return lambda f, m: peers.register_drmime(f, m, "perspective", extra)
    if method == "sitk":
        return lambda f, m: peers.register_sitk(f, m, **peers.SITK_DEFAULT)
    if method == "elastix":
        return peers.register_elastix
    if method == "ecc":
        return lambda f, m: peers.register_ecc(f, m, **peers.ECC_DEFAULT)
    if method == "seed":
        return lambda f, m: peers.register_seed(f, m, steps=seed_steps)
    raise ValueError(method)


def _maxrss_mb() -> float:
    """Peak resident memory of this process, MB: ``VmHWM`` of /proc/self/status (the high-water mark of this
    address space). ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used on Linux because it keeps the high-water mark
    of the pre-exec address space, i.e. of the parent at fork time."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def rtre_of(matrix: np.ndarray, fixed_points, moving_points, fixed_hw) -> float:
    """Median TRE / fixed diagonal (same as drmime_pl.evaluation.metrics.tre + tre_summary, without importing torch)."""
    p = np.c_[np.asarray(fixed_points, dtype=np.float64), np.ones(len(fixed_points))] @ np.asarray(matrix).T
    d = np.linalg.norm(p[:, :2] / p[:, 2:] - np.asarray(moving_points, dtype=np.float64), axis=1)
    return float(np.median(d) / math.hypot(*fixed_hw))


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _tiny_pair():
    """A 96 x 128 smooth random image and a 2-pixel shift of it, for the untimed warm-up (numpy only)."""
    rng = np.random.default_rng(0)
    x = rng.random((24, 32))
    for _ in range(3):
        x = (x + np.roll(x, 1, 0) + np.roll(x, 1, 1) + np.roll(x, -1, 0) + np.roll(x, -1, 1)) / 5
    x = np.kron(x, np.ones((4, 4))).astype(np.float32)
    x = (x - x.min()) / (x.max() - x.min())
    return np.dstack([x] * 3), np.dstack([np.roll(x, 2, axis=1)] * 3)


def run_worker(method: str, manifest: Path, names, out: Path, threads: int, seed_steps: int) -> None:
    os.environ["BENCH_THREADS"] = str(threads)
    if method.startswith(("drmime", "seed")):
        import torch

        torch.set_num_threads(threads)
    fn = _method_fn(method, seed_steps)
    entries = {e["name"]: e for e in json.loads(manifest.read_text())}
    t0 = time.perf_counter()
    try:  # untimed warm-up on a tiny pair: lazy imports, first-call allocations
        tf, tm = _tiny_pair()
        if method.startswith("seed"):
            import peers

            peers.register_seed(tf, tm, steps=3)
        else:
            fn(tf, tm)
    except Exception as exc:  # noqa: BLE001
        print(f"warm-up failed: {exc!r}", file=sys.stderr)
    warmup_s = time.perf_counter() - t0
    baseline_mb = _maxrss_mb()
    rows = []
    for name in names:
        e = entries[name]
        fixed, moving = _load(e["fixed"]), _load(e["moving"])
        load_before = os.getloadavg()[0]
        error = ""
        cpu0 = _cpu_s()
        start = time.perf_counter()
        try:
            matrix = np.asarray(fn(fixed, moving), dtype=np.float64)
            if not np.isfinite(matrix).all():
                raise FloatingPointError("non-finite matrix")
        except Exception as exc:  # noqa: BLE001
            matrix = np.full((3, 3), np.nan)
            error = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:200]
        seconds = time.perf_counter() - start
        cpu = _cpu_s() - cpu0
        rtre = math.inf if error else rtre_of(matrix, e["fixed_points"], e["moving_points"], e["fixed_hw"])
        rows.append({"method": method, "group": e["group"], "pair": name, "source": e["source"],
                     "modality": e["modality"], "magnitude": e["magnitude"],
                     "fixed_hw": "x".join(str(v) for v in e["fixed_hw"]), "rtre": rtre, "seconds": round(seconds, 3),
                     "cpu_s": round(cpu, 3), "threads": threads, "maxrss_mb": round(_maxrss_mb(), 1),
                     "load1": round(load_before, 2), "matrix": json.dumps(np.round(matrix, 8).tolist()),
                     "error": error})
        print(f"  {method:18s} {name:42s} rTRE {rtre:8.5f}  {seconds:7.2f} s (cpu {cpu:6.2f})  load {load_before:4.2f}"
              f"  {error}", flush=True)
    out.write_text(json.dumps({"rows": rows, "maxrss_mb": _maxrss_mb(), "baseline_mb": baseline_mb,
                               "warmup_s": warmup_s}))


# ------------------------------------------------------------------------------------------------- the parent
def run_method_group(spec, group, names, manifest, tmp: Path, args):
    method, threads, passive = split_spec(spec, args.threads, args.torch_threads, args.seed_threads)
    seed_steps = args.seed_steps
    out = tmp / f"{spec}-{group}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(threads),
               PYTHONWARNINGS="ignore")
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["BENCH_DRMIME_OVERRIDES"] = " ".join(args.drmime_overrides)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", spec, "--manifest", str(manifest),
           "--worker-out", str(out), "--threads", str(threads), "--seed-steps", str(seed_steps), "--names", *names]
    proc = subprocess.run(cmd, env=env, cwd=str(REPO))
    if proc.returncode != 0 or not out.is_file():
        return [{"method": spec, "group": group, "pair": n, "rtre": math.inf, "seconds": math.nan,
                 "error": f"worker exit {proc.returncode}"} for n in names], math.nan, math.nan
    data = json.loads(out.read_text())
    return data["rows"], data["maxrss_mb"], data["baseline_mb"]


def _method_rank(spec: str):
    base = spec.partition("@")[0]
    return (METHODS.index(base) if base in METHODS else 99, spec)


def summarise(rows, peaks, key_fn):
    table = {}
    for r in rows:
        table.setdefault(key_fn(r), []).append(r)
    out = []
    for key, rs in sorted(table.items(), key=lambda kv: (GROUPS.index(kv[0][1]) if kv[0][1] in GROUPS else 9,
                                                           kv[0][2] if len(kv[0]) > 2 else "",
                                                           _method_rank(kv[0][0]))):
        rt = np.array([float(r["rtre"]) for r in rs])
        secs = [float(r["seconds"]) for r in rs if not math.isnan(float(r["seconds"]))]
        row = {"method": key[0], "group": key[1]}
        if len(key) > 2:
            row["subset"] = key[2]
        row.update({"n": len(rs), "success_0.5%": float(np.mean(rt <= THRESHOLDS[0])),
                    "success_1%": float(np.mean(rt <= THRESHOLDS[1])), "median_rtre": float(np.median(rt)),
                    "median_s": float(np.median(secs)) if secs else math.nan,
                    "peak_rss_mb": peaks.get((key[0], key[1]), math.nan),
                    "errors": sum(1 for r in rs if r.get("error"))})
        out.append(row)
    return out


def write_summaries(rows, peaks, out: Path, footer: str) -> str:
    """Write summary.csv and summary.md (per group, synthetic by magnitude, multi-modality by modality)."""
    summary = summarise(rows, peaks, lambda r: (r["method"], r["group"]))
    by_mag = summarise([r for r in rows if r["group"].startswith("syn")], peaks,
                       lambda r: (r["method"], r["group"], r.get("magnitude", "")))
    by_mod = summarise([r for r in rows if r["group"] == "syn-multi" or r["group"].startswith("real-")], peaks,
                       lambda r: (r["method"], r["group"], r.get("modality", "")))
    with (out / "summary.csv").open("w", newline="") as fh:
        keys = ["method", "group", "subset", "n", "success_0.5%", "success_1%", "median_rtre", "median_s",
                "peak_rss_mb", "errors"]
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in summary + by_mag + by_mod:
            w.writerow({k: r.get(k, "") for k in keys})
    text = (markdown(summary, "Per group") + "\n" + markdown(by_mag, "Synthetic groups by magnitude", True) + "\n" +
            markdown(by_mod, "Multi-modal groups by modality (synthetic) and category (real)", True)) + footer
    (out / "summary.md").write_text(text)
    return text


def summarise_files(paths, out: Path) -> int:
    merged = {}
    fields = None
    for path in paths:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = fields or reader.fieldnames
            for r in reader:
                merged[(r["method"], r["pair"])] = r
    rows = list(merged.values())
    for r in rows:
        r["rtre"] = float(r["rtre"])
        r["seconds"] = float(r["seconds"]) if r["seconds"] not in ("", "nan") else math.nan
    peaks = {}
    for r in rows:
        if r.get("maxrss_mb") not in (None, ""):
            key = (r["method"], r["group"])
            peaks[key] = max(peaks.get(key, 0.0), float(r["maxrss_mb"]))
    with (out / "pairs.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    text = write_summaries(rows, peaks, out, f"\nrebuilt from {', '.join(str(p) for p in paths)}\n")
    print(text)
    return 0


def markdown(summary, title: str, subset: bool = False) -> str:
    head = ["group"] + (["subset"] if subset else []) + ["method", "n", "ok@0.5%", "ok@1%", "median rTRE",
                                                          "median s/pair", "peak RSS MB", "errors"]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary:
        cells = [r["group"]] + ([r.get("subset", "")] if subset else []) + [
            r["method"], str(r["n"]), f"{100 * r['success_0.5%']:.0f}%", f"{100 * r['success_1%']:.0f}%",
            "fail" if math.isinf(r["median_rtre"]) else f"{100 * r['median_rtre']:.3f}%",
            f"{r['median_s']:.2f}", f"{r['peak_rss_mb']:.0f}", str(r["errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- extras
_MAXRSS_WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter(); p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "wall = time.perf_counter() - t\n"
    "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
    "print(json.dumps({'rc': p.returncode, 'wall_s': wall, "
    "'maxrss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0}))\n"
)


def run_measured(cmd, env=None):
    """Run ``cmd`` as the only child of a fresh, small wrapper process: returns (rc, wall s, child's max RSS MB,
    output). The child's ``ru_maxrss`` includes the wrapper's ~15 MB at fork time (see :func:`_maxrss_mb`)."""
    p = subprocess.run([sys.executable, "-c", _MAXRSS_WRAPPER, *cmd], capture_output=True, text=True, cwd=str(REPO),
                       env=env)
    last = p.stdout.strip().splitlines()[-1]
    info = json.loads(last)
    return info["rc"], info["wall_s"], info["maxrss_mb"], p.stdout + p.stderr


def measure_extras(threads: int, fire: bool) -> dict:
    from drmime_pl.io.images import read_image
    from drmime_pl.evaluation.synthetic import make_pair

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    extras = {}
    walls = []
    for _ in range(3):
        rc, wall, rss, _ = run_measured([sys.executable, "-m", "drmime_pl.fit", "--help"], env)
        walls.append(wall)
    extras["cli_help_s"] = {"median": statistics.median(walls), "runs": walls, "maxrss_mb": rss}
    print(f"CLI --help: median {statistics.median(walls):.2f} s over 3 runs", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="drmime-bench-"))
    try:
        pair = make_pair(read_image(SAMPLES / "birl/images/artificial_reference.jpg"), seed=5, magnitude="small",
                         modality="same", max_side=128)
        _write_png(pair.fixed, tmp / "f.png")
        _write_png(pair.moving, tmp / "m.png")
        runs = []
        for i in range(2):
            out_dir = tmp / f"out{i}"
            cmd = [sys.executable, "-m", "drmime_pl.fit", f"data.fixed={tmp / 'f.png'}", f"data.moving={tmp / 'm.png'}",
                   "model.transform=affine", "logging.enabled=false", "logging.progress_bar=false",
                   f"output.dir={out_dir}", f"fit.threads={threads}"]
            rc, wall, rss, text = run_measured(cmd, env)
            reg_s = json.loads((out_dir / "transform.json").read_text())["seconds"] if rc == 0 else math.nan
            runs.append({"rc": rc, "wall_s": wall, "registration_s": reg_s, "overhead_s": wall - reg_s,
                         "maxrss_mb": rss})
        extras["cli_tiny_run"] = {"image_hw": list(pair.fixed_hw), "runs": runs,
                                  "median_overhead_s": statistics.median(r["overhead_s"] for r in runs)}
        print(f"CLI tiny run ({pair.fixed_hw[1]}x{pair.fixed_hw[0]}): " + ", ".join(
            f"wall {r['wall_s']:.2f} s, registration {r['registration_s']:.2f} s, overhead {r['overhead_s']:.2f} s"
            for r in runs), flush=True)

        if fire:
            out_dir = tmp / "fire"
            cmd = [sys.executable, "-m", "drmime_pl.fit", "--config", "configs/fire.yaml", "logging.enabled=false",
                   "logging.progress_bar=false", f"output.dir={out_dir}", f"fit.threads={threads}"]
            load = os.getloadavg()[0]
            rc, wall, rss, text = run_measured(cmd, env)
            info = {"rc": rc, "wall_s": wall, "maxrss_mb": rss, "load1": load, "target_mb": 3 * 1024}
            if rc == 0:
                tj = json.loads((out_dir / "transform.json").read_text())
                info.update(registration_s=tj["seconds"], steps=tj["steps"], matrix=tj["matrix"])
            else:
                info["output_tail"] = text[-2000:]
            extras["fire_full_resolution"] = info
            print(f"FIRE 2912x2912 (configs/fire.yaml): rc {rc}, wall {wall:.1f} s, peak RSS {rss:.0f} MB "
                  f"(target < 3072 MB)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return extras


def code_version() -> dict:
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=str(REPO), capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    if os.environ.get("BENCH_CODE_COMMIT"):  # a snapshot outside the repository (see RESULTS.md)
        return {"commit": os.environ["BENCH_CODE_COMMIT"], "dirty_core": [], "snapshot": str(REPO)}
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty_core": git("status", "--porcelain", "--", "drmime_pl", "configs").splitlines()}


def machine() -> dict:
    import torch

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("SimpleITK", "itk", "cv2", "pytorch_lightning"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "versions": versions}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--cache", default=str(HERE / "cache"))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--groups", default=",".join(GROUPS))
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 pairs, no seed recipe, no extras")
    ap.add_argument("--real", default=str(REAL), help="folder holding the real sets jiang/ and srif/")
    ap.add_argument("--syn-seeds", type=int, default=1, help="synthetic pairs per source x modality x magnitude")
    ap.add_argument("--seed-pairs", default="auto",
                    help="comma list of pair names for the (slow) seed recipe; 'auto': the first pair of each BIRL "
                         "group and the first small and medium pair of each synthetic group; 'all'")
    ap.add_argument("--seed-steps", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2, help="threads of SimpleITK, elastix and OpenCV")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch threads of drmime_pl (1: see RESULTS.md, 2 threads stall when the cores are shared)")
    ap.add_argument("--seed-threads", type=int, default=2, help="torch threads of the seed recipe")
    ap.add_argument("--pairs", default=None, help="comma list: run only these pair names")
    ap.add_argument("--resume", action="store_true",
                    help="keep the (method, group) results in --out/pairs.partial.jsonl from a killed run")
    ap.add_argument("--summarise", nargs="+", metavar="PAIRS_CSV",
                    help="only rebuild pairs.csv, summary.md and summary.csv in --out from these pairs.csv files "
                         "(a later file's row replaces an earlier row of the same method and pair)")
    ap.add_argument("--drmime-overrides", nargs="*", default=[],
                    help="config overrides for drmime_pl (default: none, i.e. the default config)")
    ap.add_argument("--no-extras", action="store_true")
    ap.add_argument("--no-fire", action="store_true")
    # worker mode (internal)
    ap.add_argument("--worker")
    ap.add_argument("--manifest")
    ap.add_argument("--worker-out")
    ap.add_argument("--names", nargs="*")
    args = ap.parse_args(argv)

    if args.worker:
        run_worker(args.worker, Path(args.manifest), args.names, Path(args.worker_out), args.threads, args.seed_steps)
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.summarise:
        return summarise_files(args.summarise, out)
    started = _dt.datetime.now().astimezone()
    load_start = os.getloadavg()
    manifest = build_manifest(Path(args.cache), args.quick, args.syn_seeds, Path(args.real))
    groups = [g for g in args.groups.split(",") if g]
    manifest = [e for e in manifest if e["group"] in groups]
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps([{k: v for k, v in e.items()} for e in manifest], indent=1, default=float))
    methods = [m for m in args.methods.split(",") if m]
    if args.quick:
        methods = [m for m in methods if not m.startswith("seed")]
    by_group = {g: [e["name"] for e in manifest if e["group"] == g] for g in groups}
    if args.seed_pairs == "all":
        seed_names = {e["name"] for e in manifest}
    elif args.seed_pairs == "auto":
        seed_names = set()
        for g, names in by_group.items():
            if g.startswith("birl"):
                seed_names.update(names[:1])
            else:
                for mag in ("small", "medium"):
                    seed_names.update([n for n in names if f"-{mag}-" in n][:1])
    else:
        seed_names = set(args.seed_pairs.split(","))
    print(f"{len(manifest)} pairs: " + ", ".join(f"{g} {len(n)}" for g, n in by_group.items()) +
          f"; methods {', '.join(methods)}; seed recipe on {len(seed_names)} pair(s)", flush=True)

    rows, peaks, baselines = [], {}, {}
    partial = out / "pairs.partial.jsonl"  # one line per finished (method, group): a killed run can --resume
    done = set()
    if args.resume and partial.is_file():
        for line in partial.read_text().splitlines():
            item = json.loads(line)
            rows += item["rows"]
            peaks[(item["method"], item["group"])] = item["peak"]
            baselines[(item["method"], item["group"])] = item["baseline"]
            done.add((item["method"], item["group"]))
    elif partial.exists():
        partial.unlink()
    with tempfile.TemporaryDirectory(prefix="drmime-bench-") as tmp:
        for group in groups:
            for method in methods:
                names = by_group[group]
                if method == "oracle-affine":
                    continue
                if method.startswith("seed"):
                    names = [n for n in names if n in seed_names]
                if args.pairs:
                    names = [n for n in names if n in args.pairs.split(",")]
                if not names or (method, group) in done:
                    continue
                print(f"[{time.strftime('%H:%M:%S')}] {method} on {group} ({len(names)} pairs)", flush=True)
                r, peak, base = run_method_group(method, group, names, manifest_path, Path(tmp), args)
                rows += r
                peaks[(method, group)] = peak
                baselines[(method, group)] = base
                with partial.open("a") as fh:
                    fh.write(json.dumps({"method": method, "group": group, "rows": r, "peak": peak,
                                         "baseline": base}, default=float) + "\n")

    if "oracle-affine" in methods:  # reference: the best affine matrix (least squares on the true points)
        import peers

        for e in manifest:
            m = peers.fit_affine(np.array(e["fixed_points"]), np.array(e["moving_points"]))
            rows.append({"method": "oracle-affine", "group": e["group"], "pair": e["name"], "source": e["source"],
                         "modality": e["modality"], "magnitude": e["magnitude"],
                         "fixed_hw": "x".join(str(v) for v in e["fixed_hw"]),
                         "rtre": rtre_of(m, e["fixed_points"], e["moving_points"], e["fixed_hw"]),
                         "seconds": math.nan, "matrix": json.dumps(np.round(m, 8).tolist()), "error": ""})
    fields = ["method", "group", "pair", "source", "modality", "magnitude", "fixed_hw", "rtre", "seconds",
              "cpu_s", "threads", "maxrss_mb", "load1", "matrix", "error"]
    with (out / "pairs.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    finished = _dt.datetime.now().astimezone()
    info = {"command": " ".join([Path(sys.executable).name] + sys.argv), "started": started.isoformat(timespec="seconds"),
            "finished": finished.isoformat(timespec="seconds"), "threads": args.threads,
            "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "machine": machine(),
            "code": code_version(), "drmime_overrides": args.drmime_overrides, "seed_pairs": sorted(seed_names),
            "torch_threads": args.torch_threads, "seed_threads": args.seed_threads,
            "baseline_rss_mb": {f"{m}/{g}": v for (m, g), v in baselines.items()}}
    if not (args.quick or args.no_extras):
        info["extras"] = measure_extras(args.torch_threads, fire=not args.no_fire)
    (out / "extras.json").write_text(json.dumps(info, indent=1, default=float))
    footer = (f"\nthreads: SimpleITK/elastix/OpenCV {args.threads}, drmime_pl torch {args.torch_threads}, seed recipe "
              f"torch {args.seed_threads} (a method@N row: N threads, @Np: OMP_WAIT_POLICY=PASSIVE too); load average "
              f"at start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, at end "
              f"{info['loadavg_end'][0]:.2f}; started {info['started']}, finished {info['finished']}\n")
    text = write_summaries(rows, peaks, out, footer)
    print()
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
