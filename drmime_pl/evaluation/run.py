"""The evaluation loop: score the pairs one after another, one progress line each, ``pairs.csv`` rewritten after
every pair; a stop signal ends the loop with the pairs done so far."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..errors import DrmimeError, RegistrationInterrupted
from ..io.atomic import write_text_atomic
from .datasets import Pair, read_points
from .metrics import PairResult, tre, tre_summary
from .reports import pairs_csv_text


def evaluate_pair(pair: Pair, get_transform: Callable[[Pair], dict], reraise: bool = False,
                  points=None) -> PairResult:
    """Score one pair. Any error makes it ``failed`` with a one-line message (``reraise``: let it propagate).
    ``points``: the pair's landmarks ``(fixed, moving)`` when already read."""
    result = PairResult(name=pair.name, group=pair.group)
    try:
        # first: a missing landmark file costs no registration
        fixed_pts, moving_pts = read_points(pair) if points is None else points
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
        if reraise or isinstance(exc, RegistrationInterrupted):  # Ctrl-C inside fit(): checkpoint saved
            raise
        result.status = "failed"
        result.error = pair_error(exc)
    return result


def pair_error(exc: BaseException) -> str:
    """Why a pair failed, in one line: the message of a :class:`DrmimeError` (a user's input, a failed
    registration), else the exception's class and the first line of its message."""
    text = (str(exc).strip().splitlines() or [""])[0]
    return text if isinstance(exc, DrmimeError) else f"{exc.__class__.__name__}: {text}"


def progress_line(result: PairResult, mode: str) -> str:
    if not result.ok:
        return f"FAILED: {result.error}"
    score = f"mean TRE {result.tre_mean:.2f} px" if mode == "fire" else f"median rTRE {result.rtre_median:.4f}"
    secs = f" ({result.seconds:.1f} s)" if math.isfinite(result.seconds) else ""
    return score + secs + (" [registered earlier; --redo registers again]" if result.skipped else "")


def run(pairs: Sequence[Pair], get_transform, mode: str, out: Path, reraise: bool = False,
        csv_path: Optional[Path] = None, prefix: Optional[str] = None, batch_size: int = 1):
    """Score the pairs in order, one progress line each on stderr; rewrite ``pairs.csv`` after each pair.

    Returns ``(results, interrupted)``: ``interrupted`` is False, or the number of the signal that stopped the
    run (SIGINT, SIGTERM, SIGHUP); the report files are written by the caller. ``csv_path``: the file rewritten
    after each pair instead of ``out/pairs.csv``; ``prefix``: each progress line starts with it and is printed
    whole when the pair is done (several processes share stderr: :mod:`drmime_pl.evaluation.sharded`).
    ``batch_size`` > 1 with a source that registers (``get_transform.batched``): pairs are registered that many at
    a time in one optimisation loop, and their lines come when their batch is done.
    """
    results: List[PairResult] = []
    n = len(pairs)
    csv_path = out / "pairs.csv" if csv_path is None else csv_path
    batched = batch_size > 1 and hasattr(get_transform, "batched")
    if batched:  # a pair whose landmarks cannot be read costs no registration, as one at a time
        landmarks = _readable_landmarks(pairs)
        to_register = [pair for pair in pairs if id(pair) in landmarks]
        outcomes = get_transform.batched(to_register, batch_size)
    for i, pair in enumerate(pairs, start=1):
        head = f"[{i}/{n}] {pair.name} ... "
        if prefix is None and not batched:
            print(head, end="", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            if batched and id(pair) in landmarks:
                _, outcome = next(outcomes)
                result = evaluate_pair(pair, _known(outcome), reraise=reraise, points=landmarks[id(pair)])
            else:
                result = evaluate_pair(pair, get_transform, reraise=reraise)
        except (KeyboardInterrupt, RegistrationInterrupted) as exc:  # Ctrl-C/SIGTERM/SIGHUP, between or in a pair
            from ..training.signals import signum_of

            print("interrupted" if prefix is None and not batched else f"{prefix or ''}{head}interrupted",
                  file=sys.stderr, flush=True)
            return results, signum_of(exc)
        line = progress_line(result, mode)
        if result.ok and not math.isfinite(result.seconds):
            line += f" ({time.perf_counter() - start:.1f} s)"
        print(line if prefix is None and not batched else f"{prefix or ''}{head}{line}", file=sys.stderr, flush=True)
        results.append(result)
        write_text_atomic(pairs_csv_text(results), csv_path)
    return results, False


def _readable_landmarks(pairs: Sequence[Pair]) -> dict:
    """``id(pair) -> (fixed, moving)`` landmarks of the pairs whose landmark files can be read (each read once)."""
    out = {}
    for pair in pairs:
        try:
            out[id(pair)] = read_points(pair)
        except Exception:  # noqa: BLE001 - evaluate_pair reports it
            continue
    return out


def _known(outcome):
    """A transform source for a pair whose outcome (a transform dict or the exception that ended it) is known."""

    def get(pair: Pair) -> dict:
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return get
