"""The report of a landmark evaluation: ``pairs.csv``, ``summary.md`` (with how well the ``suspect`` flag predicts
failures) and ``success.png``, each written atomically."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..io.atomic import atomic_path, write_text_atomic
from .metrics import (
    ANHIR_MAX_RTRE,
    ANHIR_TABLE_RTRE,
    FIRE_MAX_PX,
    FIRE_TABLE_PX,
    PairResult,
    auc,
    group_order,
    pair_score,
    success_curve,
    summarise,
)

CSV_COLUMNS = ("name", "group", "status", "error", "n_landmarks", "tre_mean", "tre_median", "tre_max", "rtre_mean",
               "rtre_median", "rtre_max", "fixed_height", "fixed_width", "seconds", "steps", "suspect")


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


def csv_text(rows: Sequence[object], columns: Sequence[str]) -> str:
    """A CSV with a header of ``columns`` and, per row, those attributes of it (:func:`_csv_value`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_csv_value(getattr(r, c)) for c in columns])
    return buf.getvalue()


def pairs_csv_text(results: Sequence[PairResult]) -> str:
    return csv_text(results, CSV_COLUMNS)


def plot_success(results: Sequence[PairResult], mode: str, path: Path):
    """``success.png``: success rate against the threshold, one curve per group and one (black) for all pairs.
    Returns where the data lie in the image (:class:`~drmime_pl.evaluation.plot.Axes`)."""
    from .plot import COLOURS, Curve, step_plot

    top = FIRE_MAX_PX if mode == "fire" else ANHIR_MAX_RTRE
    thresholds = np.linspace(0.0, top, 501)
    groups = group_order(results, mode)
    curves = []
    for group in groups + ["all"]:
        if group == "all" and len(groups) == 1:
            continue  # the one group is the whole set
        members = [r for r in results if group == "all" or r.group == group]
        scores = [pair_score(r, mode) for r in members]
        label = f"{group} ({len(members)} pairs"
        label += f", AUC {auc(scores, FIRE_MAX_PX):.3f})" if mode == "fire" else ")"
        colour, width = ((0, 0, 0), 2) if group == "all" else (COLOURS[len(curves) % len(COLOURS)], 1)
        curves.append(Curve(thresholds, success_curve(scores, thresholds), label, colour, width))
    x_label = "threshold on the mean TRE (px)" if mode == "fire" else "threshold on the median rTRE"
    title = "FIRE: success rate" if mode == "fire" else "Landmark pairs: success rate"
    # y up to 1.04: a curve at 1 stays clear of the frame
    image, axes = step_plot(curves, top, 1.04, x_label, "success rate", title, y_ticks=np.linspace(0.0, 1.0, 6))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return axes


def write_report(out: Path, results: Sequence[PairResult], mode: str, title: str) -> str:
    """Write ``pairs.csv``, ``summary.md`` and ``success.png`` atomically; return the Markdown."""
    write_text_atomic(pairs_csv_text(results), out / "pairs.csv")
    text = summary_markdown(summarise(results, mode), mode, title) + flag_markdown(flag_quality(results, mode), mode)
    write_text_atomic(text, out / "summary.md")
    plot_success(results, mode, out / "success.png")
    return text
