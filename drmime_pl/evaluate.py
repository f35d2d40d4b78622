"""``python -m drmime_pl.evaluate``: register a landmark data set (ANHIR/BIRL pairs or FIRE) and score it.

Usage::

    python -m drmime_pl.evaluate --pairs samples/birl/pairs.csv --out eval/birl model.transform=affine
    python -m drmime_pl.evaluate --fire /data/FIRE --config configs/fire.yaml --out eval/fire
    python -m drmime_pl.evaluate --fire /data/FIRE --transforms eval/fire/transforms --out eval/fire-again

Inputs
------
``--pairs PAIRS.csv`` (ANHIR/BIRL): columns ``name, fixed_image, moving_image, fixed_landmarks, moving_landmarks``
and optionally ``modality`` (the group of the summary); paths relative to the CSV's folder. Landmark files are
CSVs with columns ``,X,Y``.

``--fire FIRE_DIR``: the folder as FIRE ships it. Pairs are discovered from the ground truth,
``FIRE_DIR/Ground Truth/control_points_<pair>_1_2.txt`` (lines ``x1 y1 x2 y2``, image 1 = fixed); the images are
``FIRE_DIR/Images/<pair>_1.jpg`` (fixed) and ``<pair>_2.jpg`` (moving). The category is the first letter of the
pair name (S, P or A).

Transforms
----------
When evaluate registers, each pair's result files go to ``OUT/transforms/<pair name>/`` (``transform.json`` and
whatever ``output.*`` asks for). ``--transforms DIR`` skips registration and reads ``DIR/<pair name>/transform.json``
instead (its ``matrix``: fixed px -> moving px, ``fixed_shape``; ``seconds`` and ``steps`` if present), so
``--transforms OUT/transforms`` re-scores an earlier run, and any other method can be scored by writing that layout.

Scores
------
TRE of a landmark = ``| matrix(fixed_i) - moving_i |`` in moving-image pixels (ANHIR's rule); rTRE = TRE /
diagonal of the fixed image. Per pair: mean, median, max. ANHIR ranks by the median over pairs of the per-pair
median rTRE; FIRE by the area under the success-rate curve of the per-pair mean TRE over 0..25 px. A pair that
could not be scored (``failed``) never counts as a success; medians and means are over the scored pairs.

Exit status: 0 when the evaluation completed (failed pairs included), 2 for bad usage, 130 / 143 / 129 when
stopped by SIGINT / SIGTERM / SIGHUP (the outputs then cover the pairs done so far). Started again with the same
``--out``, pairs already registered with the same config are re-scored, not registered again (``--redo``).
"""
from __future__ import annotations

import argparse
import copy
import csv
import fnmatch
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import DrmimeError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

FIRE_MAX_PX = 25.0  # the FIRE success curve runs over thresholds 0..25 px
FIRE_TABLE_PX = (5.0, 10.0, 15.0, 25.0)  # success rates shown in summary.md
FIRE_CATEGORIES = ("S", "P", "A")
ANHIR_MAX_RTRE = 0.05  # the plotted rTRE range
ANHIR_TABLE_RTRE = (0.005, 0.01, 0.02, 0.05)

#: Defaults evaluate applies after --config and before the command-line overrides (which may change them back):
#: no Lightning progress bar between the per-pair lines, and no full-size warped.png per pair.
EVAL_DEFAULTS = ("logging.progress_bar=false", "output.warped=false")

CSV_COLUMNS = ("name", "group", "status", "error", "n_landmarks", "tre_mean", "tre_median", "tre_max", "rtre_mean",
               "rtre_median", "rtre_max", "fixed_height", "fixed_width", "seconds", "steps", "suspect")
REQUIRED_PAIR_COLUMNS = ("name", "fixed_image", "moving_image", "fixed_landmarks", "moving_landmarks")


class UsageError(DrmimeError):
    """Bad command line or unusable input list: reported in one line, exit status 2."""


@dataclass
class Pair:
    """One image pair to score. ``control_points`` (FIRE) replaces the two landmark files (ANHIR)."""

    name: str
    group: str
    fixed_image: Optional[Path]
    moving_image: Optional[Path]
    fixed_landmarks: Optional[Path] = None
    moving_landmarks: Optional[Path] = None
    control_points: Optional[Path] = None


@dataclass
class PairResult:
    name: str
    group: str
    status: str = "ok"  # ok | failed
    error: str = ""
    n_landmarks: int = 0
    tre_mean: float = math.nan
    tre_median: float = math.nan
    tre_max: float = math.nan
    rtre_mean: float = math.nan
    rtre_median: float = math.nan
    rtre_max: float = math.nan
    fixed_height: Optional[int] = None
    fixed_width: Optional[int] = None
    seconds: float = math.nan
    steps: Optional[int] = None
    suspect: Optional[bool] = None  # transform.json's quality verdict, when it has one
    skipped: bool = False  # registered by an earlier run with the same config (not a CSV column)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ----------------------------------------------------------------------------------------------- pure scoring


def success_curve(errors: Sequence[float], thresholds: Sequence[float]) -> np.ndarray:
    """Fraction of pairs whose error is ``<= t`` for each threshold ``t``. NaN/inf (failed) never succeed.

    Returns a float array of ``len(thresholds)``; NaNs when ``errors`` is empty.
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if e.size == 0:
        return np.full(t.shape, np.nan)
    e = np.where(np.isfinite(e), e, np.inf)
    return (e[None, :] <= t[:, None]).mean(axis=1)


def auc(errors: Sequence[float], max_threshold: float = FIRE_MAX_PX) -> float:
    """Area under the success-rate curve over thresholds ``[0, max_threshold]``, divided by ``max_threshold``.

    Exact for the step curve: a pair with error ``e`` is a success for ``t >= e``, so it contributes
    ``max(0, 1 - e / max_threshold)``; the AUC is the mean of that over pairs (failed pairs contribute 0).
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        return math.nan
    e = np.where(np.isfinite(e), e, np.inf)
    return float(np.clip(1.0 - e / float(max_threshold), 0.0, 1.0).mean())


def auc_steps(errors: Sequence[float], max_threshold: int = int(FIRE_MAX_PX)) -> float:
    """The AUC as several published FIRE scripts compute it: the mean over integer thresholds ``i = 1..max`` of
    the fraction of pairs with error ``< i``. It exceeds :func:`auc` by ``frac(e) / max`` per pair (< 0.04 at 25 px).
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    if e.size == 0:
        return math.nan
    e = np.where(np.isfinite(e), e, np.inf)
    steps = np.arange(1, int(max_threshold) + 1, dtype=np.float64)
    return float((e[None, :] < steps[:, None]).mean())


def pair_score(result: PairResult, mode: str) -> float:
    """The per-pair number the success curve uses: FIRE mean TRE (px), ANHIR median rTRE; inf when failed."""
    if not result.ok:
        return math.inf
    return result.tre_mean if mode == "fire" else result.rtre_median


def group_order(results: Iterable[PairResult], mode: str) -> List[str]:
    groups = sorted({r.group for r in results if r.group})
    if mode == "fire":
        groups = [g for g in FIRE_CATEGORIES if g in groups] + [g for g in groups if g not in FIRE_CATEGORIES]
    return groups


def _nan_stat(fn, values: List[float]) -> float:
    return float(fn(values)) if values else math.nan


def summarise(results: Sequence[PairResult], mode: str) -> List[dict]:
    """One row per group (in :func:`group_order`) and a last row ``all``.

    Keys: ``group, pairs, failed, median_rtre`` (median over scored pairs of the per-pair median rTRE),
    ``mean_rtre`` (mean of per-pair mean rTRE), ``median_tre`` / ``mean_tre`` (of the per-pair mean TRE, px),
    ``success`` (threshold -> success rate over *all* pairs), and for FIRE ``auc`` and ``auc_steps``.
    """
    rows = []
    for group in group_order(results, mode) + ["all"]:
        members = [r for r in results if group == "all" or r.group == group]
        scored = [r for r in members if r.ok]
        scores = [pair_score(r, mode) for r in members]
        thresholds = FIRE_TABLE_PX if mode == "fire" else ANHIR_TABLE_RTRE
        row = {
            "group": group, "pairs": len(members), "failed": len(members) - len(scored),
            "median_rtre": _nan_stat(np.median, [r.rtre_median for r in scored]),
            "mean_rtre": _nan_stat(np.mean, [r.rtre_mean for r in scored]),
            "median_tre": _nan_stat(np.median, [r.tre_mean for r in scored]),
            "mean_tre": _nan_stat(np.mean, [r.tre_mean for r in scored]),
            "success": dict(zip(thresholds, (float(v) for v in success_curve(scores, thresholds)))),
        }
        if mode == "fire":
            row["auc"] = auc(scores, FIRE_MAX_PX)
            row["auc_steps"] = auc_steps(scores, int(FIRE_MAX_PX))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ text output


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100.0 * value:.1f}%"


def flag_quality(results: Sequence[PairResult], mode: str) -> Optional[dict]:
    """How well the ``suspect`` flag predicts failure: the share of failures flagged and of successes flagged.

    Failure = not a success at rTRE <= 1% (ANHIR-style) or mean TRE <= 10 px (FIRE), or an unscored pair. None
    when no pair carries a verdict."""
    judged = [r for r in results if r.suspect is not None]
    if not judged:
        return None
    limit = 10.0 if mode == "fire" else 0.01
    failed = [r for r in judged if not (pair_score(r, mode) <= limit)]
    good = [r for r in judged if pair_score(r, mode) <= limit]
    return {"limit": limit, "failures": len(failed), "failures_flagged": sum(bool(r.suspect) for r in failed),
            "successes": len(good), "successes_flagged": sum(bool(r.suspect) for r in good)}


def flag_markdown(flags: Optional[dict], mode: str) -> str:
    if flags is None:
        return ""
    what = f"mean TRE <= {flags['limit']:g} px" if mode == "fire" else f"median rTRE <= {flags['limit']:g}"
    share = lambda k, n: f"{flags[k]} of {flags[n]}" + (f" ({flags[k] / flags[n]:.0%})" if flags[n] else "")  # noqa
    return (f"\nThe `suspect` flag of `transform.json` (success = {what}): it flags "
            f"{share('failures_flagged', 'failures')} failures and {share('successes_flagged', 'successes')} "
            f"successes.\n")


def summary_markdown(rows: Sequence[dict], mode: str, title: str) -> str:
    """The Markdown report: a title line, the table and the definitions of its columns."""
    if mode == "fire":
        head = ["category", "pairs", "failed", "AUC", "AUC (1-px steps)"]
        head += [f"success <= {t:g} px" for t in FIRE_TABLE_PX] + ["median TRE px", "mean TRE px"]
    else:
        head = ["group", "pairs", "failed", "median rTRE", "mean rTRE", "median TRE px"]
        head += [f"success rTRE <= {t:g}" for t in ANHIR_TABLE_RTRE]
    rule = "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", rule]
    for row in rows:
        group = f"**{row['group']}**" if row["group"] == "all" else row["group"]
        cells = [group, str(row["pairs"]), str(row["failed"])]
        if mode == "fire":
            cells += [_fmt(row["auc"], ".3f"), _fmt(row["auc_steps"], ".3f")]
            cells += [_pct(row["success"][t]) for t in FIRE_TABLE_PX]
            cells += [_fmt(row["median_tre"], ".2f"), _fmt(row["mean_tre"], ".2f")]
        else:
            cells += [_fmt(row["median_rtre"], ".4g"), _fmt(row["mean_rtre"], ".4g"), _fmt(row["median_tre"], ".2f")]
            cells += [_pct(row["success"][t]) for t in ANHIR_TABLE_RTRE]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if mode == "fire":
        lines.append("Per pair: mean TRE over its control points (px, fixed image 1 -> moving image 2). Success at t: "
                     "mean TRE <= t px. AUC: area under the success rate over t in [0, 25] px, divided by 25 (exact "
                     "for the step curve); AUC (1-px steps): mean over t = 1..25 px of the rate of mean TRE < t, as "
                     "several published FIRE scripts compute it. Failed pairs count as failures in success rates "
                     "and AUC; TRE medians and means are over the scored pairs.")
    else:
        lines.append("rTRE = TRE / diagonal of the fixed image. median rTRE: median over pairs of the per-pair median "
                     "rTRE (ANHIR's ranking); mean rTRE: mean of the per-pair mean rTRE; median TRE px: median of "
                     "the per-pair mean TRE. Success at t: per-pair median rTRE <= t. Failed pairs count as "
                     "failures in success rates; medians and means are over the scored pairs.")
    return "\n".join(lines) + "\n"


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else format(value, ".10g")
    return str(value)


def pairs_csv_text(results: Sequence[PairResult]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in results:
        writer.writerow([_csv_value(getattr(r, c)) for c in CSV_COLUMNS])
    return buf.getvalue()


def plot_success(results: Sequence[PairResult], mode: str, path: Path) -> None:
    """``success.png``: success rate against the threshold, one curve per group and one for all pairs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    top = FIRE_MAX_PX if mode == "fire" else ANHIR_MAX_RTRE
    thresholds = np.linspace(0.0, top, 501)
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    groups = group_order(results, mode)
    for group in groups + ["all"]:
        if group == "all" and len(groups) == 1:
            continue  # the one group is the whole set
        members = [r for r in results if group == "all" or r.group == group]
        scores = [pair_score(r, mode) for r in members]
        label = f"{group} ({len(members)} pairs"
        label += f", AUC {auc(scores, FIRE_MAX_PX):.3f})" if mode == "fire" else ")"
        style = {"color": "black", "linewidth": 2.0} if group == "all" else {"linewidth": 1.3}
        ax.step(thresholds, success_curve(scores, thresholds), where="post", label=label, **style)
    ax.set_xlim(0.0, top)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("threshold on the mean TRE (px)" if mode == "fire" else "threshold on the median rTRE")
    ax.set_ylabel("success rate")
    ax.set_title("FIRE: success rate" if mode == "fire" else "Landmark pairs: success rate")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    from .atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def write_report(out: Path, results: Sequence[PairResult], mode: str, title: str) -> str:
    """Write ``pairs.csv``, ``summary.md`` and ``success.png`` atomically; return the Markdown."""
    from .atomic import write_text_atomic

    write_text_atomic(pairs_csv_text(results), out / "pairs.csv")
    text = summary_markdown(summarise(results, mode), mode, title) + flag_markdown(flag_quality(results, mode), mode)
    write_text_atomic(text, out / "summary.md")
    plot_success(results, mode, out / "success.png")
    return text


# ------------------------------------------------------------------------------------------------ pair lists


def _check_name(name: str, where: str) -> None:
    if not name:
        raise UsageError(f"{where}: empty pair name")
    if name in (".", "..") or "/" in name or "\\" in name:
        raise UsageError(f"{where}: pair name {name!r} must be a plain folder name (no / or \\)")


def read_pairs_csv(path) -> List[Pair]:
    """ANHIR/BIRL pair list. Raises :class:`UsageError` for a missing file, missing columns or bad names.

    A row with an empty path cell stays in the list (it is reported as a failed pair).
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: pairs file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            # cells beyond the header come under the key None: ignored
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: unreadable pairs file ({exc})") from None
    missing = [c for c in REQUIRED_PAIR_COLUMNS if c not in fields]
    if missing:
        raise UsageError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_PAIR_COLUMNS)}"
                         " [, modality]")
    base = path.parent
    resolve = lambda cell: (base / cell) if cell else None  # noqa: E731 - absolute cells stay absolute
    pairs, seen = [], set()
    for i, row in enumerate(rows, start=2):
        if not any(row.values()):
            continue
        name = row["name"]
        _check_name(name, f"{path}, line {i}")
        if name in seen:
            raise UsageError(f"{path}, line {i}: pair name {name!r} appears twice")
        seen.add(name)
        pairs.append(Pair(name=name, group=row.get("modality", ""), fixed_image=resolve(row["fixed_image"]),
                          moving_image=resolve(row["moving_image"]), fixed_landmarks=resolve(row["fixed_landmarks"]),
                          moving_landmarks=resolve(row["moving_landmarks"])))
    if not pairs:
        raise UsageError(f"{path}: no pairs listed")
    return pairs


def fire_category(name: str) -> str:
    """FIRE's category is the first letter of the pair name: S, P or A."""
    return name[:1].upper()


def _fire_image(images: Path, stem: str) -> Path:
    jpg = images / f"{stem}.jpg"
    if jpg.exists():
        return jpg
    others = sorted(p for p in images.glob(f"{stem}.*") if p.is_file())
    return others[0] if others else jpg


def discover_fire(folder) -> List[Pair]:
    """All pairs with ground truth: ``Ground Truth/control_points_<pair>_1_2.txt``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: FIRE folder not found")
    truth = folder / "Ground Truth"
    if not truth.is_dir():
        raise UsageError(f"{folder}: no 'Ground Truth' folder (expected FIRE's layout: Images/, Ground Truth/)")
    prefix, suffix = "control_points_", "_1_2.txt"
    names = sorted(p.name[len(prefix):-len(suffix)] for p in truth.glob(f"{prefix}*{suffix}") if p.is_file())
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"{truth}: no control_points_<pair>_1_2.txt files")
    for n in names:  # a name becomes a folder under OUT/transforms/: no "..", no separators
        _check_name(n, str(truth / f"{prefix}{n}{suffix}"))
    images = folder / "Images"
    return [Pair(name=n, group=fire_category(n), fixed_image=_fire_image(images, f"{n}_1"),
                 moving_image=_fire_image(images, f"{n}_2"), control_points=truth / f"{prefix}{n}{suffix}")
            for n in names]


def select_pairs(pairs: Sequence[Pair], only: Sequence[str] = (), exclude: Sequence[str] = ()) -> List[Pair]:
    """Keep pairs whose name matches any ``only`` glob (all when none given) and no ``exclude`` glob."""
    keep = [p for p in pairs if not only or any(fnmatch.fnmatchcase(p.name, g) for g in only)]
    return [p for p in keep if not any(fnmatch.fnmatchcase(p.name, g) for g in exclude)]


# ------------------------------------------------------------------------------------------------ one pair


def read_points(pair: Pair) -> Tuple[np.ndarray, np.ndarray]:
    """(fixed, moving) ``N x 2`` points of a pair, paired up to the shorter list. Raises DrmimeError."""
    from .landmarks import pair_up, read_fire_control_points, read_landmarks_csv

    if pair.control_points is not None:
        fixed, moving = read_fire_control_points(pair.control_points)
    else:
        if pair.fixed_landmarks is None or pair.moving_landmarks is None:
            which = "fixed_landmarks" if pair.fixed_landmarks is None else "moving_landmarks"
            raise DrmimeError(f"no {which} file given")
        fixed, moving = read_landmarks_csv(pair.fixed_landmarks), read_landmarks_csv(pair.moving_landmarks)
    fixed, moving = pair_up(fixed, moving)
    if len(fixed) == 0:
        raise DrmimeError("no landmarks to compare")
    return fixed, moving


def check_matrix(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3):
        raise DrmimeError(f"matrix has shape {m.shape}, expected 3 x 3")
    if not np.isfinite(m).all():
        raise DrmimeError("matrix contains NaN or infinite entries")
    return m


def read_transform(path: Path) -> dict:
    """``transform.json`` -> ``{matrix, fixed_shape, seconds, steps}``. Raises DrmimeError."""
    if not path.is_file():
        raise DrmimeError(f"{path}: no transform.json (the registration did not finish)")
    try:
        data = json.loads(path.read_text())
        matrix = check_matrix(data["matrix"])
        fixed_shape = (int(data["fixed_shape"][0]), int(data["fixed_shape"][1]))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DrmimeError(f"{path}: unusable transform.json ({exc.__class__.__name__}: {exc})") from None
    except DrmimeError as exc:
        raise DrmimeError(f"{path}: {exc}") from None
    seconds = data.get("seconds")
    steps = data.get("steps")
    suspect = (data.get("quality") or {}).get("suspect") if isinstance(data.get("quality"), dict) else None
    return {"matrix": matrix, "fixed_shape": fixed_shape,
            "seconds": float(seconds) if isinstance(seconds, (int, float)) else math.nan,
            "steps": int(steps) if isinstance(steps, int) else None,
            "suspect": bool(suspect) if isinstance(suspect, bool) else None}


def image_size(path: Optional[Path]) -> Optional[Tuple[int, int]]:
    """(H, W) from the file's header, or None when it cannot be read (only used as a cross-check)."""
    if path is None or not path.is_file():
        return None
    try:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        with Image.open(path) as im:
            return int(im.size[1]), int(im.size[0])
    except Exception:  # noqa: BLE001
        return None


def transform_from_dir(folder: Path) -> Callable[[Pair], dict]:
    """A transform source that reads ``folder/<pair name>/transform.json`` and checks the fixed image's size."""

    def get(pair: Pair) -> dict:
        t = read_transform(folder / pair.name / "transform.json")
        hw = image_size(pair.fixed_image)
        if hw is not None and hw != t["fixed_shape"]:
            raise DrmimeError(
                f"transform.json is for a {t['fixed_shape'][1]}x{t['fixed_shape'][0]} fixed image but "
                f"{pair.fixed_image} is {hw[1]}x{hw[0]} (W x H): transforms of another data set or scale?")
        return t

    return get


def finished_earlier(folder: Path, config_yaml: str) -> Optional[dict]:
    """The result of an earlier registration of this pair with the same configuration, or None: its
    ``transform.json`` must be complete (readable, with a finite 3 x 3 matrix and ``fixed_shape``) and its
    ``config.yaml`` equal to ``config_yaml``."""
    try:
        if (folder / "config.yaml").read_text() != config_yaml:
            return None
        return read_transform(folder / "transform.json")
    except (OSError, UnicodeDecodeError, DrmimeError):
        return None


def transform_by_registration(cfg, out: Path, redo: bool = False) -> Callable[[Pair], dict]:
    """A transform source that registers the pair with ``cfg`` and writes its files to ``out/transforms/<name>/``.

    A pair whose folder already holds a complete ``transform.json`` made with the same configuration (a run that
    was interrupted, then started again) is not registered again, unless ``redo``; its result is re-scored.
    """
    from omegaconf import OmegaConf

    from .fit import fit

    def get(pair: Pair) -> dict:
        folder = out / "transforms" / pair.name
        c = copy.deepcopy(cfg)
        c.output.dir = str(folder)
        if c.logging.enabled:
            c.logging.name = f"{c.logging.name}-{pair.name}"
        if not redo:
            done = finished_earlier(folder, OmegaConf.to_yaml(c, resolve=True))
            if done is not None:
                done["skipped"] = True
                return done
        stale = folder / "transform.json"
        if stale.exists():
            stale.unlink()  # a failed re-run must not leave an older result to be re-scored later
        for label, p in (("fixed", pair.fixed_image), ("moving", pair.moving_image)):
            if p is None:
                raise DrmimeError(f"no {label} image given")
        result = fit(c, fixed=str(pair.fixed_image), moving=str(pair.moving_image))
        return {"matrix": check_matrix(result.matrix), "fixed_shape": tuple(int(v) for v in result.fixed_shape),
                "seconds": float(result.seconds), "steps": int(result.steps),
                "suspect": result.quality.get("suspect") if result.quality else None}

    return get


def evaluate_pair(pair: Pair, get_transform: Callable[[Pair], dict], reraise: bool = False) -> PairResult:
    """Score one pair. Any error makes it ``failed`` with a one-line message (``reraise``: let it propagate)."""
    from .landmarks import tre, tre_summary

    result = PairResult(name=pair.name, group=pair.group)
    try:
        fixed_pts, moving_pts = read_points(pair)  # first: a missing landmark file costs no registration
        t = get_transform(pair)
        result.skipped = bool(t.get("skipped", False))
        result.seconds, result.steps = t["seconds"], t["steps"]
        result.suspect = t.get("suspect")
        result.fixed_height, result.fixed_width = t["fixed_shape"]
        errors = tre(t["matrix"], fixed_pts, moving_pts)
        if not np.isfinite(errors).all():
            raise DrmimeError("the transform maps a landmark to infinity")
        result.n_landmarks = len(errors)
        for key, value in tre_summary(errors, t["fixed_shape"]).items():
            setattr(result, key, value)
    except Exception as exc:  # noqa: BLE001 - one bad pair must not stop the others
        if reraise or isinstance(exc, _interrupted_error()):
            raise
        result.status = "failed"
        text = (str(exc).strip().splitlines() or [""])[0]
        result.error = text if isinstance(exc, DrmimeError) else f"{exc.__class__.__name__}: {text}"
    return result


def _interrupted_error():
    from .fit import RegistrationInterrupted  # Ctrl-C inside fit(): checkpoint saved, then this is raised

    return RegistrationInterrupted


def progress_line(result: PairResult, mode: str) -> str:
    if not result.ok:
        return f"FAILED: {result.error}"
    score = f"mean TRE {result.tre_mean:.2f} px" if mode == "fire" else f"median rTRE {result.rtre_median:.4f}"
    secs = f" ({result.seconds:.1f} s)" if math.isfinite(result.seconds) else ""
    return score + secs + (" [registered earlier; --redo registers again]" if result.skipped else "")


# ------------------------------------------------------------------------------------------------ command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None):
    parser = _Parser(
        prog="python -m drmime_pl.evaluate",
        description="Register every pair of a landmark data set (ANHIR/BIRL pairs CSV or FIRE) and report TRE, "
                    "rTRE and success rates.",
        epilog="Any key=value after the options overrides the registration config, e.g. model.transform=affine "
               "fit.max_steps=300. Outputs: OUT/pairs.csv, OUT/summary.md, OUT/success.png and, when registering, "
               "OUT/transforms/<pair>/transform.json (re-score them later with --transforms OUT/transforms).",
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", metavar="PAIRS.csv", help="ANHIR/BIRL pair list (name, fixed_image, moving_image, "
                     "fixed_landmarks, moving_landmarks[, modality]); paths relative to its folder")
    src.add_argument("--fire", metavar="FIRE_DIR", help="FIRE folder (Images/, Ground Truth/)")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--transforms", metavar="DIR",
                        help="score DIR/<pair>/transform.json instead of registering")
    parser.add_argument("--config", "-c", default=None, help="registration config YAML")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="evaluate only pairs whose name matches (repeatable), e.g. --only 'A*'")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                        help="skip pairs whose name matches (repeatable), e.g. --exclude P37")
    parser.add_argument("--redo", action="store_true",
                        help="register every pair again (by default a pair whose OUT/transforms/<pair>/transform.json "
                             "is complete and was made with the same config is re-scored, not re-registered)")
    parser.add_argument("overrides", nargs="*", help="OmegaConf dotlist overrides: section.key=value")
    return parser.parse_args(argv)


def _setup(args):
    """Everything that can be wrong with the command line, checked before the first pair. Raises DrmimeError."""
    mode = "fire" if args.fire else "anhir"
    pairs = discover_fire(args.fire) if args.fire else read_pairs_csv(args.pairs)
    selected = select_pairs(pairs, args.only, args.exclude)
    if not selected:
        raise UsageError(f"no pair matches --only {args.only} / --exclude {args.exclude} "
                         f"(names: {', '.join(p.name for p in pairs[:5])}{', ...' if len(pairs) > 5 else ''})")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: --out exists and is not a folder")
    cfg = None
    if args.transforms:
        folder = Path(args.transforms)
        if not folder.is_dir():
            raise UsageError(f"{folder}: --transforms folder not found")
        if args.config or args.overrides:
            print("drmime_pl.evaluate: note: --transforms given, so --config and the overrides are not used",
                  file=sys.stderr)
        source_factory = lambda: transform_from_dir(folder)  # noqa: E731
    else:
        from .config import load_config

        cfg = load_config(args.config, list(EVAL_DEFAULTS) + list(args.overrides))
        if cfg.fit.ckpt_path:
            raise UsageError("fit.ckpt_path resumes one registration; it cannot be used for a whole data set")
        source_factory = lambda: transform_by_registration(cfg, out, redo=args.redo)  # noqa: E731
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    source = args.fire or args.pairs
    if cfg is not None:
        what = "registered with " + " ".join([args.config or "the default config"] + list(args.overrides))
    else:
        what = f"transforms from {args.transforms}"
    title = f"{'FIRE' if mode == 'fire' else 'Landmark'} evaluation: {source} ({what})"
    return mode, selected, out, cfg, source_factory(), title


def run(pairs: Sequence[Pair], get_transform, mode: str, out: Path, reraise: bool = False):
    """Score the pairs in order, one progress line each on stderr; rewrite ``pairs.csv`` after each pair.

    Returns ``(results, interrupted)``: ``interrupted`` is False, or the number of the signal that stopped the
    run (SIGINT, SIGTERM, SIGHUP); the report files are written by the caller.
    """
    from .atomic import write_text_atomic

    results: List[PairResult] = []
    n = len(pairs)
    for i, pair in enumerate(pairs, start=1):
        print(f"[{i}/{n}] {pair.name} ... ", end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            result = evaluate_pair(pair, get_transform, reraise=reraise)
        except (KeyboardInterrupt, _interrupted_error()) as exc:  # Ctrl-C/SIGTERM/SIGHUP, between or in a pair
            from .signals import signum_of

            print("interrupted", file=sys.stderr)
            return results, signum_of(exc)
        line = progress_line(result, mode)
        if result.ok and not math.isfinite(result.seconds):
            line += f" ({time.perf_counter() - start:.1f} s)"
        print(line, file=sys.stderr, flush=True)
        results.append(result)
        write_text_atomic(pairs_csv_text(results), out / "pairs.csv")
    return results, False


def main(argv=None) -> int:
    from .signals import signals_as_interrupts

    with signals_as_interrupts():  # SIGTERM and SIGHUP stop like Ctrl-C: report for the pairs done, exit 143 / 129
        return _main(argv)


def _main(argv=None) -> int:
    from .signals import exit_code

    args = parse_args(argv)
    debug = any(o.replace(" ", "").lower() == "fit.debug=true" for o in args.overrides)
    try:
        mode, pairs, out, cfg, get_transform, title = _setup(args)
    except DrmimeError as exc:
        if debug:
            raise
        print(f"drmime_pl.evaluate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reraise = bool(cfg is not None and cfg.fit.debug)
    results, interrupted = run(pairs, get_transform, mode, out, reraise=reraise)
    if not results:
        print("drmime_pl.evaluate: interrupted before the first pair finished; nothing written", file=sys.stderr)
        return exit_code(interrupted or 2)
    if interrupted:
        title += f" - INTERRUPTED after {len(results)} of {len(pairs)} pairs"
    text = write_report(out, results, mode, title)
    failed = sum(not r.ok for r in results)
    print(text, end="")
    print(f"\n{len(results)} pairs evaluated, {failed} failed. Outputs: {out / 'pairs.csv'}, {out / 'summary.md'}, "
          f"{out / 'success.png'}" + (f", {out / 'transforms'}/" if cfg is not None else ""))
    if interrupted:
        print(f"drmime_pl.evaluate: interrupted after {len(results)} of {len(pairs)} pairs", file=sys.stderr)
        return exit_code(interrupted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
