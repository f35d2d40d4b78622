"""Register every pair of a list, with no landmarks to score: ``python -m drmime_pl.fit --pairs PAIRS.csv --out DIR``.

What a shell loop of ``python -m drmime_pl.fit`` over the pairs would give, in one process: the imports (about
4 s on a 2-core CPU, more than a small pair's registration) are paid once, and the pairs are registered
``batch_size`` at a time in one optimisation loop (:mod:`drmime_pl.training.fit_many`), the next batch prepared
meanwhile. Each pair's files are those of a one-pair run, in ``DIR/transforms/<name>/``: the layout ``evaluate``
writes and reads, so ``python -m drmime_pl.evaluate --transforms DIR/transforms`` scores them once landmarks exist,
and a list started again with the same ``--out`` and configuration skips the pairs it finished. ``DIR/results.csv``
has a row per pair, rewritten after each.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

from ..errors import RegistrationInterrupted
from ..io.atomic import write_text_atomic
from .datasets import Pair
from .reports import csv_text
from .run import pair_error

#: Columns of ``results.csv``. ``matrix``: fixed pixel (x, y, 1) -> moving pixel, row-major JSON (as in
#: ``transform.json``); ``output_dir``: the pair's result files.
RESULT_COLUMNS = ["name", "status", "error", "suspect", "reason", "seconds", "steps", "fixed_height", "fixed_width",
                  "registered_earlier", "matrix", "output_dir"]


@dataclass
class Registered:
    """One row of ``results.csv``."""

    name: str
    output_dir: str
    status: str = "ok"  # ok | failed
    error: str = ""
    suspect: Optional[bool] = None
    reason: str = ""
    seconds: float = math.nan
    steps: Optional[int] = None
    fixed_height: Optional[int] = None
    fixed_width: Optional[int] = None
    registered_earlier: bool = False
    matrix: str = ""  # row-major JSON; empty for a failed pair

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def as_row(pair: Pair, outcome: Union[dict, BaseException], out: Path) -> Registered:
    """The row of ``pair`` from its transform source's outcome (:mod:`drmime_pl.evaluation.sources`: a transform
    dict, or the exception that ended the pair)."""
    row = Registered(name=pair.name, output_dir=str(out / "transforms" / pair.name))
    if isinstance(outcome, BaseException):
        row.status, row.error = "failed", pair_error(outcome)
        return row
    row.suspect, row.reason = outcome.get("suspect"), outcome.get("reason") or ""
    row.seconds, row.steps = outcome["seconds"], outcome["steps"]
    row.fixed_height, row.fixed_width = outcome["fixed_shape"]
    row.registered_earlier = bool(outcome.get("skipped", False))
    row.matrix = json.dumps([[float(v) for v in r] for r in outcome["matrix"]])
    return row


def progress_line(row: Registered) -> str:
    if not row.ok:
        return f"FAILED: {row.error}"
    verdict = f"SUSPECT: {row.reason}" if row.suspect else "ok"
    if row.registered_earlier:
        return f"{verdict} [registered earlier; --redo registers again]"
    return f"{verdict} ({row.seconds:.1f} s)" if math.isfinite(row.seconds) else verdict


def _one_at_a_time(pairs: Sequence[Pair], get: Callable[[Pair], dict], reraise: bool
                   ) -> Iterator[Tuple[Pair, Union[dict, BaseException]]]:
    for pair in pairs:
        try:
            yield pair, get(pair)
        except (KeyboardInterrupt, RegistrationInterrupted):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad pair must not stop the others
            if reraise:
                raise
            yield pair, exc


def register_list(pairs: Sequence[Pair], source, out: Path, batch_size: int = 1, reraise: bool = False):
    """Register ``pairs`` in order with ``source`` (:func:`~drmime_pl.evaluation.sources.transform_by_registration`),
    ``batch_size`` at a time when it is more than 1; one progress line per pair on stderr and ``out/results.csv``
    rewritten after each. Returns ``(rows, interrupted)``: ``interrupted`` is False, or the number of the signal
    that stopped the list (SIGINT, SIGTERM, SIGHUP) after the pairs done so far. ``reraise``: a failed pair's
    exception propagates (``fit.debug``)."""
    from ..training.signals import signum_of

    rows: List[Registered] = []
    n = len(pairs)
    batched = batch_size > 1
    outcomes = source.batched(pairs, batch_size) if batched else _one_at_a_time(pairs, source, reraise)
    for i in range(1, n + 1):
        head = f"[{i}/{n}] {pairs[i - 1].name} ... "
        if not batched:  # the name first, the verdict when its registration ends
            print(head, end="", file=sys.stderr, flush=True)
        try:
            pair, outcome = next(outcomes)
        except (KeyboardInterrupt, RegistrationInterrupted) as exc:
            print("interrupted" if not batched else f"{head}interrupted", file=sys.stderr, flush=True)
            return rows, signum_of(exc)
        if reraise and isinstance(outcome, BaseException):
            raise outcome
        row = as_row(pair, outcome, out)
        print(progress_line(row) if not batched else head + progress_line(row), file=sys.stderr, flush=True)
        rows.append(row)
        write_text_atomic(csv_text(rows, RESULT_COLUMNS), out / "results.csv")
    return rows, False


def summary_line(rows: Sequence[Registered], total: int, out: Path) -> str:
    failed = sum(not r.ok for r in rows)
    suspect = sum(bool(r.ok and r.suspect) for r in rows)
    return (f"{len(rows)} of {total} pairs: {len(rows) - failed} registered ({suspect} suspect), {failed} failed. "
            f"Outputs: {out / 'results.csv'}, {out / 'transforms'}/")
