"""Speed of drmime_pl beside elastix's command line, per pair, with the accuracy of both (issue 10).

    PYTHONPATH=. python benchmarks/speed.py                          # imports, table pairs, 82 Jiang pairs
    PYTHONPATH=. python benchmarks/speed.py --pairs table --no-cli   # the issue's table, API and elastix only
    PYTHONPATH=. python benchmarks/speed.py --pairs jiang --limit 3  # quick check on the first 3 Jiang pairs
    PYTHONPATH=. python benchmarks/speed.py --out results/speed      # also write speed.csv (every row) there
    PYTHONPATH=. python benchmarks/speed.py --pairs none --per-step  # ms per step at 1x and 4x the pixels

Options: ``--pairs table,jiang`` (sections; ``none`` for neither), ``--limit N`` (first N Jiang pairs),
``--no-cli``, ``--no-elastix``, ``--no-imports``, ``--threads N`` (default 1), ``--workers N`` (default 1),
``--data DIR`` (default
``../shared/data`` beside the repository), ``--elastix-params FILE``, ``--per-step [--steps S]``, ``--out DIR``.

Pairs: the issue's table (BIRL rat kidney HE -> PanCytokeratin from samples/birl with its landmark CSVs; FIRE A01,
A01_1 fixed, with FIRE's control points, from ``DATA/fire``; Jiang Retina_101, VN_1, MRI_PET_1) and the 82 pairs of
``DATA/real/jiang/pairs.csv`` (landmark CSVs ``,X,Y``, 0-based pixels; point i of the fixed file matches point i of
the moving file, up to the shorter file).

What is run, per pair, one after the other (API, command line, elastix), on the same files. ``--threads N`` is
torch's threads (``fit.threads``), ``--workers W`` drmime_pl's threads for the parts of a pair that run at once
(``fit.workers``; the default config has 0, one per core); elastix gets ``-threads`` the larger of the two, so that
both tools may use the same cores. With ``--workers 1`` (the default here) each tool runs on one core.
- **API**: ``drmime_pl.register(fixed, moving, overrides=["fit.threads=N", "fit.workers=W"])`` in this one
  long-lived process (the default config = ``configs/default.yaml``; nothing written to disk). A first warm-up call
  (BIRL artificial pair, 20 steps) is made before any timing and is excluded. torch.set_num_threads(N) in this
  process.
- **CLI**: ``python -m drmime_pl.fit --config configs/default.yaml data.fixed=... data.moving=... output.dir=...
  logging.enabled=false fit.threads=N fit.workers=W``, a whole process (Python start-up, imports, reading,
  registration, writing transform.json, the warped image and the overlay).
- **elastix**: ``elastix -f fixed -m moving -p benchmarks/speed_elastix/affine.txt -out DIR -threads max(N, W)``, a
  whole process: elastix 5 from PATH with its default affine parameter map (the file is itk-elastix's
  ``GetDefaultParameterMap("affine")`` written out), which writes its warped image (result.0.nii) and
  TransformParameters.0.txt. elastix is given the same PNG/JPEG files as drmime_pl: ITK's readers convert colour
  to grey (luminance) when elastix reads them into its float images, so there is no conversion step to count.
  Its affine (fixed physical -> moving physical, about CenterOfRotationPoint) is turned into a 3x3 fixed-pixel ->
  moving-pixel matrix with the images' spacing/origin as ITK reads them (a JPEG's JFIF density gives a spacing
  other than 1: the BIRL JPEGs have 0.357 mm; ITK ignores PNG's pHYs).
Whole processes are timed with a wall clock around ``/usr/bin/time -f`` (or, without GNU time, inside a small
launcher), which gives their own peak RSS and CPU seconds (a child forked from this large process would report
this process's peak). The API's peak RSS is this process's peak during the call (VmHWM after resetting it through
/proc/self/clear_refs; elsewhere: sampled), i.e. including the imported libraries.

Columns:
- ``API s`` / ``CLI s`` / ``elastix s``: seconds per pair (wall); ``ratio``: drmime_pl's seconds / elastix's.
- ``steps``: optimisation steps of the API run. ``RSS MB``: peak resident memory, MB (1e6 bytes).
- ``rTRE %``: median landmark error (fixed landmark mapped by the matrix vs its moving landmark) / fixed image
  diagonal, in percent; ``ok``: success = rTRE <= 1 %. ``n/a``: no landmarks; ``failed``: the run raised / exited
  non-zero (the CSV has the error). ``--out DIR``: ``DIR/speed.csv`` (every row, every section) and, per pair,
  ``DIR/runs/<pair>/`` with the command line's transform.json, elastix's TransformParameters.0.txt and both logs.
- Jiang summary: median seconds per pair; throughput = pairs per minute of the API loop (sum of the calls) vs a
  shell-style loop of command-line processes (sum of the processes); success rate and median rTRE over the pairs.
- Imports: whole-process wall seconds (median of --repeats runs) of ``python -c pass`` (start-up),
  ``python -c "import torch"``, ``python -c "import drmime_pl"``, ``python -m drmime_pl.fit --help`` and the
  imports of a run (drmime_pl's training module and Lightning), with Python's teardown at exit and without it (ended
  by ``os._exit``, as the command line ends since the eighteenth round); the tables' ``CLI - imports`` column
  subtracts the last from the command line's time (issue 10's goal: imports + 2 s for a 1000x1000 pair).
- ``--per-step``: ms per optimisation step (``Registration.seconds / .steps``) on the rat kidney pair at 1x and at
  2x2 its pixels (a step must not grow with the image).

Run it on a quiet machine: other processes on the cores slow torch down many times over; the load average before
and after is printed.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import drmime_pl

ROOT = Path(__file__).resolve().parents[1]
BIRL = ROOT / "samples" / "birl"
ELASTIX_PARAMS = Path(__file__).resolve().parent / "speed_elastix" / "affine.txt"
#: What a registration from the command line imports before it reads an image (Lightning loads only then).
RUN_IMPORTS_CODE = "import drmime_pl.training.fit, pytorch_lightning"
#: The same, ended as the command line ends (drmime_pl.process_exit: no interpreter teardown, about 0.8 s here):
#: what the tables' ``CLI - imports`` column subtracts.
RUN_IMPORTS_NO_TEARDOWN_CODE = RUN_IMPORTS_CODE + ", os; os._exit(0)"
RUN_IMPORTS = f'imports of a run, ended like the command line: python -c "{RUN_IMPORTS_NO_TEARDOWN_CODE}"'
#: the package the children import: the same as this process's
PKG_ROOT = Path(drmime_pl.__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
SUCCESS_RTRE = 0.01


# ----------------------------------------------------------------------------------------------------- pairs
def table_pairs(data: Path):
    """The issue's table: (name, fixed, moving, fixed landmarks, moving landmarks); landmarks may be None."""
    kidney = BIRL / "rat-kidney_" / "scale-5pc"
    yield ("BIRL rat kidney", kidney / "Rat-Kidney_HE.jpg", kidney / "Rat-Kidney_PanCytokeratin.jpg",
           kidney / "Rat-Kidney_HE.csv", kidney / "Rat-Kidney_PanCytokeratin.csv")
    fire = data / "fire"
    points = fire / "control_points_A01_1_2.txt"  # x1 y1 x2 y2, image 1 = fixed
    yield "FIRE A01", fire / "A01_1.jpg", fire / "A01_2.jpg", points, points
    jiang = {row[0]: row[1:] for row in jiang_pairs(data)}
    for label, name in (("Jiang Retina_101", "med_retina-retina_101"), ("Jiang VN_1", "cv_rgb_nir-vn_1"),
                        ("Jiang MRI_PET_1", "med_mr_pet-mri_pet_1")):
        if name in jiang:
            yield (label, *jiang[name])
        else:
            print(f"note: {name} not in {data / 'real/jiang/pairs.csv'}; row skipped", file=sys.stderr)


def jiang_pairs(data: Path):
    path = data / "real" / "jiang" / "pairs.csv"
    if not path.is_file():
        print(f"note: {path} not found: no Jiang pairs", file=sys.stderr)
        return
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            opt = lambda key: path.parent / row[key] if row.get(key) else None  # noqa: E731
            yield row["name"], path.parent / row["fixed_image"], path.parent / row["moving_image"], \
                opt("fixed_landmarks"), opt("moving_landmarks")


def read_points(path: Path, moving: bool = False) -> np.ndarray:
    """n x 2 pixel coordinates (x = column, y = row). ANHIR CSV (``,X,Y``), or FIRE's ``x1 y1 x2 y2`` lines
    (columns 0-1 the fixed image's, 2-3 the moving image's)."""
    if path.suffix.lower() == ".txt":
        points = np.loadtxt(path, ndmin=2)
        return points[:, 2:4] if moving else points[:, 0:2]
    with open(path, newline="") as fh:
        rows = [row for row in csv.reader(fh) if row]
    header = [h.strip().lower() for h in rows[0]]
    ix, iy = header.index("x"), header.index("y")
    return np.array([[float(row[ix]), float(row[iy])] for row in rows[1:]], dtype=float).reshape(-1, 2)


def landmarks(fixed_csv, moving_csv):
    """(fixed points, moving points) paired up to the shorter file, or None when there are none."""
    if not fixed_csv or not moving_csv or not Path(fixed_csv).is_file() or not Path(moving_csv).is_file():
        return None
    f, m = read_points(Path(fixed_csv)), read_points(Path(moving_csv), moving=True)
    n = min(len(f), len(m))
    return (f[:n], m[:n]) if n else None


def accuracy(matrix, points, fixed_size):
    """(rTRE, median TRE px) of ``matrix`` (fixed pixel -> moving pixel, projective allowed); None without points."""
    if points is None or matrix is None:
        return None
    fixed, moving = points
    mapped = np.c_[fixed, np.ones(len(fixed))] @ np.asarray(matrix, dtype=float).T
    mapped = mapped[:, :2] / mapped[:, 2:3]
    tre = float(np.median(np.linalg.norm(mapped - moving, axis=1)))
    width, height = fixed_size
    return tre / float(np.hypot(width, height)), tre


# ------------------------------------------------------------------------------------------------ processes
#: Runs a command in a grandchild of a small process and writes its "wall user sys maxrss_kb" (the fallback where
#: GNU time is missing). A child forked from this benchmark would report this process's peak RSS (Linux keeps the
#: pre-exec peak in ru_maxrss), so the peak must come from a fork of a small process.
_LAUNCHER = """import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{time.perf_counter() - start} {usage.ru_utime} {usage.ru_stime} {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def run_process(cmd, log_path: Path, env=None):
    """Run ``cmd`` as a whole process: (wall seconds, peak RSS bytes, CPU seconds, exit code) of that process alone,
    measured by GNU time (``/usr/bin/time -f``) or, without it, by a small Python launcher (not counted)."""
    stats = log_path.with_suffix(".stats")
    stats.unlink(missing_ok=True)
    if GNU_TIME:
        wrapped = [GNU_TIME, "-f", "%e %U %S %M", "-o", str(stats), *cmd]
    else:
        wrapped = [sys.executable, "-c", _LAUNCHER, str(stats), *cmd]
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        rc = subprocess.run(wrapped, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
        seconds = time.perf_counter() - start
    try:  # GNU time puts "Command exited with non-zero status N" before the numbers
        wall, user, system, maxrss_kb = stats.read_text().strip().splitlines()[-1].split()
    except (OSError, ValueError, IndexError):
        return seconds, None, None, rc if rc else -1
    if not GNU_TIME:
        seconds = float(wall)  # the launcher's start-up is not the command's
    return seconds, int(maxrss_kb) * 1024, float(user) + float(system), rc


def mb(nbytes):
    return None if nbytes is None else nbytes / 1e6


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PKG_ROOT), env.get("PYTHONPATH")) if p)
    return env


def tail(path: Path, lines=3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])[-300:]
    except OSError:
        return ""


class PeakRSS:
    """Peak resident memory (bytes) of this process inside the block: Linux's VmHWM after resetting it
    (``/proc/self/clear_refs``), else /proc/self/statm sampled every 20 ms, else the lifetime ``ru_maxrss``."""

    def __enter__(self):
        self._hwm = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._hwm = self._vm_hwm() is not None
        except OSError:
            pass
        if not self._hwm:
            self.peak, self._stop = self._rss(), threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    @staticmethod
    def _vm_hwm():
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    @staticmethod
    def _rss() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    def __exit__(self, *exc):
        if self._hwm:
            self.peak = self._vm_hwm()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self._rss())


# --------------------------------------------------------------------------------------------------- elastix
def read_elastix_parameters(path: Path) -> dict:
    """elastix parameter/transform file -> {key: [values as str]}."""
    params = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*\((\w+)\s+(.*)\)\s*(//.*)?$", line)
        if match:
            params[match.group(1)] = [v.strip('"') for v in re.findall(r'"[^"]*"|\S+', match.group(2))]
    return params


def itk_geometry(path: Path):
    """(spacing (sx, sy), origin (ox, oy)) of a 2-D image as ITK reads it: SimpleITK's header read when installed,
    else the rule of ITK's JPEG reader (JFIF density in dots per inch / cm -> mm; PNG: 1, ITK ignores pHYs)."""
    try:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return np.array(reader.GetSpacing()[:2], float), np.array(reader.GetOrigin()[:2], float)
    except Exception:  # noqa: BLE001 - not installed or unreadable: ITK's reader rules below
        pass
    spacing = np.ones(2)
    with Image.open(path) as image:
        info = image.info
        if image.format == "JPEG" and info.get("jfif_unit") in (1, 2):
            density = np.array(info["jfif_density"], float)
            spacing = (25.4 if info["jfif_unit"] == 1 else 10.0) / np.where(density > 0, density, np.nan)
    spacing = np.where(np.isfinite(spacing) & (spacing > 0), spacing, 1.0)
    return spacing, np.zeros(2)


def elastix_matrix(transform_file: Path, moving_image: Path) -> np.ndarray:
    """elastix's affine TransformParameters.0.txt -> 3 x 3 fixed pixel (x, y, 1) -> moving pixel.

    ITK's affine maps fixed physical p to moving physical A (p - c) + c + t (c = CenterOfRotationPoint);
    physical = origin + direction @ (spacing * pixel) for the fixed image (from the file) and the moving image."""
    params = read_elastix_parameters(transform_file)
    if params.get("Transform", [""])[0] != "AffineTransform":
        raise ValueError(f"{transform_file}: not an AffineTransform")
    if params.get("InitialTransformParametersFileName", ["NoInitialTransform"])[0] != "NoInitialTransform":
        raise ValueError(f"{transform_file}: has an initial transform; not handled")
    p = np.array(params["TransformParameters"], float)
    a, t = p[:4].reshape(2, 2), p[4:6]
    c = np.array(params.get("CenterOfRotationPoint", ["0", "0"]), float)
    physical = np.eye(3)
    physical[:2, :2], physical[:2, 2] = a, t + c - a @ c
    spacing = np.array(params.get("Spacing", ["1", "1"]), float)
    origin = np.array(params.get("Origin", ["0", "0"]), float)
    direction = np.array(params.get("Direction", ["1", "0", "0", "1"]), float).reshape(2, 2).T  # column-major
    fixed_to_physical = np.eye(3)
    fixed_to_physical[:2, :2], fixed_to_physical[:2, 2] = direction @ np.diag(spacing), origin
    m_spacing, m_origin = itk_geometry(moving_image)
    moving_to_physical = np.eye(3)
    moving_to_physical[:2, :2], moving_to_physical[:2, 2] = np.diag(m_spacing), m_origin
    return np.linalg.inv(moving_to_physical) @ physical @ fixed_to_physical


def elastix_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.strip().split(":")[-1].strip() or "?"
    except Exception:  # noqa: BLE001
        return "?"


# ------------------------------------------------------------------------------------------------------ runs
def run_api(fixed: Path, moving: Path, threads: int, workers: int) -> dict:
    row = {}
    start = time.perf_counter()
    try:
        with PeakRSS() as memory:
            reg = drmime_pl.register(str(fixed), str(moving),
                                     overrides=[f"fit.threads={threads}", f"fit.workers={workers}"])
        row["api_s"] = time.perf_counter() - start
        row["api_peak_rss_mb"] = memory.peak / 1e6
        row["api_steps"] = reg.steps
        row["api_suspect"] = (reg.quality or {}).get("suspect")
        row["_api_matrix"] = np.asarray(reg.matrix, float)
    except Exception as error:  # noqa: BLE001 - a failed registration is a row, not the end of the benchmark
        row["api_s"] = time.perf_counter() - start
        row["api_error"] = f"{type(error).__name__}: {error}"[:300]
    return row


def run_cli(fixed: Path, moving: Path, threads: int, workers: int, work: Path) -> dict:
    out = work / "cli"
    config = str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else "default"
    cmd = [sys.executable, "-m", "drmime_pl.fit", "--config", config, f"data.fixed={fixed}",
           f"data.moving={moving}", f"output.dir={out}", "logging.enabled=false", f"fit.threads={threads}",
           f"fit.workers={workers}"]
    seconds, rss, cpu, rc = run_process(cmd, work / "cli.log", env=child_env())
    row = {"cli_s": seconds, "cli_peak_rss_mb": mb(rss), "cli_cpu_s": cpu, "cli_rc": rc}
    try:
        import json

        saved = json.loads((out / "transform.json").read_text())
        row["_cli_matrix"] = np.array(saved["matrix"], float)
        if isinstance(saved.get("steps"), int):
            row["cli_steps"] = saved["steps"]
    except Exception as error:  # noqa: BLE001
        row["cli_error"] = f"rc {rc}: {type(error).__name__}: {error}; log: {tail(work / 'cli.log')}"[:300]
    return row


def run_elastix(binary: str, params: Path, fixed: Path, moving: Path, threads: int, work: Path) -> dict:
    out = work / "elastix"
    out.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "-f", str(fixed), "-m", str(moving), "-p", str(params), "-out", str(out), "-threads", str(threads)]
    seconds, rss, cpu, rc = run_process(cmd, work / "elastix.log")
    row = {"elastix_s": seconds, "elastix_peak_rss_mb": mb(rss), "elastix_cpu_s": cpu, "elastix_rc": rc}
    transform = out / "TransformParameters.0.txt"
    try:
        if rc != 0 or not transform.is_file():
            raise RuntimeError("no TransformParameters.0.txt")
        row["_elastix_matrix"] = elastix_matrix(transform, moving)
    except Exception as error:  # noqa: BLE001
        row["elastix_error"] = f"rc {rc}: {type(error).__name__}: {error}; log: {tail(work / 'elastix.log')}"[:300]
    return row


def run_pair(args, name, fixed, moving, fixed_lm, moving_lm, section, keep: Path | None) -> dict:
    with Image.open(fixed) as image:
        size = image.size  # (W, H)
    points = landmarks(fixed_lm, moving_lm)
    row = {"section": section, "pair": name, "fixed": str(fixed), "moving": str(moving), "width": size[0],
           "height": size[1], "landmarks": 0 if points is None else len(points[0]), "threads": args.threads,
           "workers": args.workers,
           "load_before": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="drmime-speed-") as tmp:
        work = Path(tmp)
        row.update(run_api(fixed, moving, args.threads, args.workers))
        if not args.no_cli:
            row.update(run_cli(fixed, moving, args.threads, args.workers, work))
        if args.elastix:
            row.update(run_elastix(args.elastix, args.elastix_params, fixed, moving, max(args.threads, args.workers),
                                   work))
        if keep is not None:  # the small outputs, to look into a row afterwards
            dest = keep / re.sub(r"[^\w.-]+", "_", f"{section}-{name}")
            dest.mkdir(parents=True, exist_ok=True)
            for src in ("cli/transform.json", "cli.log", "elastix/TransformParameters.0.txt", "elastix.log"):
                if (work / src).is_file():
                    shutil.copy(work / src, dest / src.replace("/", "-"))
    for tool in ("api", "cli", "elastix"):
        matrix = row.pop(f"_{tool}_matrix", None)
        if f"{tool}_s" not in row:
            continue
        if matrix is None:
            row[f"{tool}_rtre_pct"], row[f"{tool}_success"] = "failed", False
            continue
        score = accuracy(matrix, points, size)
        if score is None:
            row[f"{tool}_rtre_pct"], row[f"{tool}_success"] = "n/a", ""
        else:
            row[f"{tool}_rtre_pct"], row[f"{tool}_tre_px"] = 100 * score[0], score[1]
            row[f"{tool}_success"] = score[0] <= SUCCESS_RTRE
    for tool in ("api", "cli"):
        if f"{tool}_s" in row and row.get("elastix_s"):
            row[f"ratio_{tool}_elastix"] = row[f"{tool}_s"] / row["elastix_s"]
    return row


# --------------------------------------------------------------------------------------------------- output
def fmt(value, spec=".2f", missing="-"):
    if value is None or value == "":
        return missing
    if isinstance(value, str):
        return value
    return format(value, spec)


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(rows, args):
    tools = ["api"] + ([] if args.no_cli else ["cli"]) + (["elastix"] if args.elastix else [])
    label = {"api": "API", "cli": "CLI", "elastix": "elastix"}
    after_imports = "cli" in tools and args.run_imports_s is not None
    header = ["pair", "size"] + [f"{label[t]} s" for t in tools] + (["CLI - imports s"] if after_imports else [])
    header += [f"{label[t]}/elastix" for t in tools if t != "elastix" and args.elastix]
    header += ["steps"] + [f"{label[t]} RSS MB" for t in tools] + [f"{label[t]} rTRE %" for t in tools]
    body = []
    for r in rows:
        line = [r["pair"], f"{r['width']}x{r['height']}"] + [fmt(r.get(f"{t}_s")) for t in tools]
        if after_imports:
            line.append(fmt(r["cli_s"] - args.run_imports_s if isinstance(r.get("cli_s"), float) else None))
        line += [fmt(r.get(f"ratio_{t}_elastix"), ".1f") for t in tools if t != "elastix" and args.elastix]
        line += [fmt(r.get("api_steps"), "d")] + [fmt(r.get(f"{t}_peak_rss_mb"), ".0f") for t in tools]
        line += [fmt(r.get(f"{t}_rtre_pct")) + (" ok" if r.get(f"{t}_success") is True else "") for t in tools]
        body.append(line)
    print(markdown(header, body))
    for t in tools:
        if t != "elastix" and args.elastix:
            ratios = [r[f"ratio_{t}_elastix"] for r in rows if r.get(f"ratio_{t}_elastix")]
            if ratios:
                print(f"\nmedian ratio {label[t]} / elastix: {statistics.median(ratios):.1f}", end="")
    print("\n(`ok`: rTRE <= 1 %; `n/a`: no landmarks; `failed`: the run raised or exited non-zero"
          + ("; `CLI - imports`: the command line's seconds less the median seconds of the imports of a run, "
             f"{args.run_imports_s:.2f} s)" if after_imports else ")"))


def print_summary(rows, args):
    tools = [("api", "drmime_pl API (one process)")]
    if not args.no_cli:
        tools.append(("cli", "drmime_pl CLI (process per pair)"))
    if args.elastix:
        tools.append(("elastix", "elastix CLI (process per pair)"))
    body = []
    for tool, name in tools:
        times = [r[f"{tool}_s"] for r in rows if f"{tool}_s" in r]
        if not times:
            continue
        rss = [r[f"{tool}_peak_rss_mb"] for r in rows if r.get(f"{tool}_peak_rss_mb")]
        scored = [r for r in rows if isinstance(r.get(f"{tool}_success"), bool)]
        ok = sum(r[f"{tool}_success"] for r in scored)
        rtre = [r[f"{tool}_rtre_pct"] for r in scored if not isinstance(r.get(f"{tool}_rtre_pct"), str)]
        failed = sum(r.get(f"{tool}_rtre_pct") == "failed" for r in rows)
        body.append([name, len(times), f"{statistics.median(times):.2f}", f"{sum(times):.1f}",
                     f"{60 * len(times) / sum(times):.1f}", fmt(statistics.median(rss) if rss else None, ".0f"),
                     fmt(max(rss) if rss else None, ".0f"),
                     f"{ok}/{len(scored)} ({100 * ok / len(scored):.0f} %)" if scored else "n/a",
                     fmt(statistics.median(rtre) if rtre else None), failed])
    print(markdown(["", "pairs", "median s/pair", "total s", "pairs/min", "median peak RSS MB", "max peak RSS MB",
                    "success (rTRE <= 1 %)", "median rTRE %", "failed"], body))
    for tool in ("api", "cli"):
        ratios = [r[f"ratio_{tool}_elastix"] for r in rows if r.get(f"ratio_{tool}_elastix")]
        if ratios:
            print(f"\nmedian per-pair ratio {tool.upper()} / elastix: {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f})", end="")
    print("\n(pairs/min: pairs over the summed per-pair wall seconds: the API loop in this process vs a shell-style "
          "loop of whole processes; median rTRE over the pairs with landmarks, failed runs excluded)")


CSV_COLUMNS = ["section", "pair", "width", "height", "landmarks", "threads", "workers", "load_before",
               "api_s", "cli_s", "elastix_s", "ratio_api_elastix", "ratio_cli_elastix",
               "api_rtre_pct", "cli_rtre_pct", "elastix_rtre_pct", "api_success", "cli_success", "elastix_success",
               "api_tre_px", "cli_tre_px", "elastix_tre_px", "api_peak_rss_mb", "cli_peak_rss_mb",
               "elastix_peak_rss_mb", "cli_cpu_s", "elastix_cpu_s", "api_steps", "cli_steps", "api_suspect",
               "cli_rc", "elastix_rc"]


def write_csv(rows, path: Path):
    keys = [k for k in CSV_COLUMNS if any(k in row for row in rows)]
    for row in rows:
        keys += [k for k in row if k not in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    print(f"\nwrote {path} ({len(rows)} rows)")


# ------------------------------------------------------------------------------------------------ sections
def imports_section(args, rows):
    commands = [("Python start-up: python -c pass", [sys.executable, "-c", "pass"]),
                ("python -c \"import torch\"", [sys.executable, "-c", "import torch"]),
                ("python -c \"import drmime_pl\"", [sys.executable, "-c", "import drmime_pl"]),
                ("python -m drmime_pl.fit --help", [sys.executable, "-m", "drmime_pl.fit", "--help"]),
                (f'the same imports with the teardown: python -c "{RUN_IMPORTS_CODE}"',
                 [sys.executable, "-c", RUN_IMPORTS_CODE]),
                (RUN_IMPORTS, [sys.executable, "-c", RUN_IMPORTS_NO_TEARDOWN_CODE])]
    body = []
    with tempfile.TemporaryDirectory(prefix="drmime-speed-") as tmp:
        for name, cmd in commands:
            runs = [run_process(cmd, Path(tmp) / "log", env=child_env()) for _ in range(args.repeats)]
            if any(r[3] != 0 for r in runs):
                print(f"note: {name} exited {runs[0][3]}: {tail(Path(tmp) / 'log')}", file=sys.stderr)
            seconds = statistics.median(r[0] for r in runs)
            rss = mb(max((r[1] for r in runs if r[1]), default=None))
            cpu = statistics.median(r[2] or 0.0 for r in runs)
            body.append([name, f"{seconds:.2f}", f"{min(r[0] for r in runs):.2f}", f"{cpu:.2f}", fmt(rss, ".0f")])
            rows.append({"section": "imports", "pair": name, "cli_s": seconds, "cli_cpu_s": cpu,
                         "cli_peak_rss_mb": rss, "repeats": args.repeats})
            if name == RUN_IMPORTS:
                args.run_imports_s = seconds
    print(f"\n## Import time (whole processes, median of {args.repeats})\n")
    print(markdown(["command", "median s", "min s", "CPU s", "peak RSS MB"], body))


def pairs_section(args, title, pairs, rows, keep):
    done = []
    print(f"\n## {title}\n", flush=True)
    for i, (name, fixed, moving, fixed_lm, moving_lm) in enumerate(pairs, 1):
        if not Path(fixed).is_file() or not Path(moving).is_file():
            print(f"note: {name}: {fixed} or {moving} missing; skipped", file=sys.stderr)
            continue
        row = run_pair(args, name, Path(fixed), Path(moving), fixed_lm, moving_lm, title.split()[0].lower(), keep)
        done.append(row)
        errors = "; ".join(f"{k}: {v}" for k, v in row.items() if k.endswith("_error"))
        print(f"  [{i}/{len(pairs)}] {name}: API {fmt(row.get('api_s'))} s, CLI {fmt(row.get('cli_s'))} s, "
              f"elastix {fmt(row.get('elastix_s'))} s; rTRE % API {fmt(row.get('api_rtre_pct'))}, CLI "
              f"{fmt(row.get('cli_rtre_pct'))}, elastix {fmt(row.get('elastix_rtre_pct'))}"
              + (f"; {errors}" if errors else ""), file=sys.stderr, flush=True)
    rows += done
    return done


def per_step_section(args, rows):
    kidney = BIRL / "rat-kidney_" / "scale-5pc"
    fixed = np.asarray(Image.open(kidney / "Rat-Kidney_HE.jpg").convert("RGB"))
    moving = np.asarray(Image.open(kidney / "Rat-Kidney_PanCytokeratin.jpg").convert("RGB"))
    up = lambda a: np.asarray(Image.fromarray(a).resize((2 * a.shape[1], 2 * a.shape[0]), Image.BILINEAR))  # noqa
    overrides = [f"fit.threads={args.threads}", f"fit.workers={args.workers}", f"fit.max_steps={args.steps}"]
    body, per_step = [], {}
    for label, f, m in (("1x", fixed, moving), ("4x", up(fixed), up(moving))):
        try:  # without the stopping rule where the config still has that key
            reg = drmime_pl.register(f, m, overrides=overrides + ["fit.converge_every=0"])
        except drmime_pl.ConfigError:
            reg = drmime_pl.register(f, m, overrides=overrides)
        per_step[label] = 1000 * reg.seconds / reg.steps
        body.append([f"rat kidney {label}", f"{f.shape[1]}x{f.shape[0]}", reg.steps, f"{reg.seconds:.2f}",
                     f"{per_step[label]:.2f}"])
        rows.append({"section": "per-step", "pair": f"rat kidney {label}", "width": f.shape[1],
                     "height": f.shape[0], "api_steps": reg.steps, "api_optimisation_s": reg.seconds,
                     "api_ms_per_step": per_step[label], "threads": args.threads})
    print("\n## Per step (API, Registration.seconds / .steps)\n")
    print(markdown(["pair", "size", "steps", "optimisation s", "ms per step"], body))
    print(f"\nratio 4x / 1x: {per_step['4x'] / per_step['1x']:.2f} (target <= 1.5)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", default="table,jiang", help="sections: table, jiang (comma-separated) or none")
    parser.add_argument("--limit", type=int, default=None, help="only the first N Jiang pairs")
    parser.add_argument("--no-cli", action="store_true", help="skip the command-line (whole process) runs")
    parser.add_argument("--no-elastix", action="store_true", help="skip elastix")
    parser.add_argument("--no-imports", action="store_true", help="skip the import-time section")
    parser.add_argument("--threads", type=int, default=1, help="threads of torch (API, CLI) and elastix")
    parser.add_argument("--workers", type=int, default=1,
                        help="drmime_pl's fit.workers (API, CLI); elastix gets -threads max(--threads, --workers)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder with fire/ and real/jiang/ (default: ../shared/data)")
    parser.add_argument("--elastix-params", type=Path, default=ELASTIX_PARAMS)
    parser.add_argument("--repeats", type=int, default=3, help="runs per import-time command")
    parser.add_argument("--per-step", action="store_true", help="ms per step at 1x and 4x the pixels")
    parser.add_argument("--steps", type=int, default=200, help="steps for --per-step")
    parser.add_argument("--out", type=Path, help="write speed.csv (every row) and the runs' small outputs there")
    args = parser.parse_args()
    sections = {s.strip() for s in args.pairs.split(",") if s.strip() and s.strip() != "none"}
    unknown = sections - {"table", "jiang"}
    if unknown:
        parser.error(f"--pairs: unknown section(s) {sorted(unknown)}")

    torch.set_num_threads(args.threads)
    args.run_imports_s = None  # set by the imports section
    args.elastix = None if args.no_elastix else shutil.which("elastix")
    print("# drmime_pl speed beside elastix\n")
    print(f"- {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load average before: "
          f"{os.getloadavg()[0]:.2f}")
    print(f"- drmime_pl {drmime_pl.__version__} from {PKG_ROOT}; torch {torch.__version__}, Python "
          f"{sys.version.split()[0]}")
    print(f"- threads: {args.threads} (API: torch.set_num_threads + fit.threads; CLI: fit.threads), workers: "
          f"{args.workers} (fit.workers); elastix: -threads {max(args.threads, args.workers)}")
    if args.elastix:
        print(f"- elastix {elastix_version(args.elastix)} ({args.elastix}), default affine parameter map "
              f"{args.elastix_params.relative_to(ROOT) if args.elastix_params.is_relative_to(ROOT) else args.elastix_params}"
              "; reads the same colour PNG/JPEG files (ITK converts them to grey)")
    elif not args.no_elastix:
        print("- note: elastix not found on PATH: its columns are skipped (Debian: apt-get install elastix)")
    print("- API: drmime_pl.register in this process, first (warm-up) call excluded; CLI and elastix: whole "
          "processes, peak RSS of that process")

    rows = []
    if not args.no_imports:
        imports_section(args, rows)
    keep = args.out / "runs" if args.out else None
    if sections or args.per_step:
        drmime_pl.register(str(BIRL / "images/artificial_reference.jpg"),
                           str(BIRL / "images/artificial_moving-affine.jpg"),
                           overrides=[f"fit.threads={args.threads}", f"fit.workers={args.workers}",
                                      "fit.max_steps=20"])  # warm-up, excluded
    if "table" in sections:
        done = pairs_section(args, "Table pairs", list(table_pairs(args.data)), rows, keep)
        print_table(done, args)
    if "jiang" in sections:
        pairs = list(jiang_pairs(args.data))[: args.limit]
        done = pairs_section(args, f"Jiang pairs ({len(pairs)} of {args.data / 'real/jiang'})", pairs, rows, keep)
        if done:
            print_summary(done, args)
    if args.per_step:
        per_step_section(args, rows)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.out:
        write_csv(rows, args.out / "speed.csv")


if __name__ == "__main__":
    main()
