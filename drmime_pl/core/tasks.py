"""Independent parts of one registration at once, on Python threads: both images' preparation, the search's
candidates, both directions of a symmetric score, the output files.

torch's own threads (``fit.threads``) share every small operation and spin while they wait for each other: beside
another busy process that made runs several times slower. Here each thread runs whole operations of its own part,
single-threaded, and torch releases the GIL while they compute, so a second core shortens the run and a busy one
costs only the time-sharing (fifteenth round, ``benchmarks/RESULTS.md``).

How many threads a call may use is set by :func:`workers`: a one-pair run sets it to ``fit.workers`` (default: one
per core); elsewhere it is 1, as in the workers of a batched run, which already spread its pairs over the cores.
Work sent to the pool's threads runs serially there, so nested calls never wait on the pool.
"""
from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor, wait
from contextvars import ContextVar
from typing import Callable, Iterator, List, Sequence, TypeVar

T = TypeVar("T")

_WORKERS: ContextVar[int] = ContextVar("drmime_pl_task_workers", default=1)
_POOL: List[ThreadPoolExecutor] = []  # made on first use, one for the process
if hasattr(os, "register_at_fork"):  # a forked child has none of the pool's threads: it makes its own pool
    os.register_at_fork(after_in_child=_POOL.clear)


def cpu_count() -> int:
    """This process's share of the CPU cores: all it may run on, or 1/k of them with ``k`` processes on this
    machine (``LOCAL_WORLD_SIZE``, set by Lightning's launcher and torchrun: ``evaluate --devices k``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    return max(1, cores // processes)


@contextlib.contextmanager
def workers(count: int) -> Iterator[int]:
    """Within the block, :func:`together` uses up to ``count`` threads (0: one per core); yields the count."""
    count = cpu_count() if int(count) <= 0 else int(count)
    token = _WORKERS.set(count)
    try:
        yield count
    finally:
        _WORKERS.reset(token)


def _pool() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=max(1, cpu_count() - 1), thread_name_prefix="drmime_pl-task"))
    return _POOL[0]


def together(*calls: Callable[[], T]) -> List[T]:
    """``[call() for call in calls]``, the first in this thread and the others on up to :func:`count` - 1 pool
    threads at the same time (those past them here, after the first). When calls raise, the first of them in
    order is raised once all have finished (an interruption before any error)."""
    if len(calls) <= 1 or _WORKERS.get() <= 1:
        return [call() for call in calls]
    helpers = min(len(calls) - 1, _WORKERS.get() - 1)
    futures = {i: _pool().submit(calls[i]) for i in range(1, 1 + helpers)}
    outcomes: list = [None] * len(calls)
    for i in [0] + list(range(1 + helpers, len(calls))):
        outcomes[i] = _outcome(calls[i])
    interrupted = None
    for i, future in futures.items():
        while not future.done():
            try:
                wait([future])
            except BaseException as exc:  # noqa: BLE001 - Ctrl-C or a stop signal: wait on, so that no call is left
                interrupted = interrupted or exc  # running (and writing files) behind the caller's back
        outcomes[i] = _outcome(future.result)
    # An interruption (KeyboardInterrupt, a stop signal) comes first: it is why the others may have failed.
    interrupted = interrupted or next((v for failed, v in outcomes if failed and not isinstance(v, Exception)), None)
    if interrupted is not None:
        raise interrupted
    for failed, value in outcomes:
        if failed:
            raise value
    return [value for _, value in outcomes]


def _outcome(call: Callable[[], T]):
    """``(False, call())``, or ``(True, the exception)``."""
    try:
        return False, call()
    except BaseException as exc:  # noqa: BLE001 - raised by together() once every call has finished
        return True, exc


def split(items: Sequence[T], parts: int) -> List[Sequence[T]]:
    """``items`` in up to ``parts`` consecutive, nearly equal, non-empty slices."""
    parts = max(1, min(int(parts), len(items)))
    bounds = [round(k * len(items) / parts) for k in range(parts + 1)]
    return [items[bounds[k]:bounds[k + 1]] for k in range(parts)]


def count() -> int:
    """How many threads :func:`together` may use here."""
    return _WORKERS.get()
