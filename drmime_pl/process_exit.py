"""End a command-line process without Python's interpreter teardown.

Why: when a command has finished, Python tears down every module it imported. For torch, torchvision (which imports
``torch._dynamo``) and Lightning that takes about 1 s on the 2-core development machine: 8.8 s against 7.8 s for a
FIRE A01 run on one thread, 3.55 s against 2.72 s for the imports alone (``benchmarks/RESULTS.md``, eighteenth
round). Nothing a user needs happens in that second: every output file is already written and closed
(``io/atomic.py``), and TensorBoard's writer is closed by Lightning at the end of ``Trainer.fit``.

What still happens before the process ends, in Python's own order: thread pools are shut down and every other
non-daemon thread is waited for, the functions registered with :mod:`atexit` run (``logging.shutdown`` among
them), stdout and stderr are flushed.

When the teardown is kept: a profiler or tracer is active (``python -m cProfile``, coverage and debuggers write
their results at exit), or ``DRMIME_PL_FULL_EXIT=1`` is set.

Only the entry points (``python -m drmime_pl.fit`` / ``evaluate`` / ``warp`` and the ``drmime-*`` scripts) call
:func:`exit_process`; ``main()`` returns its status to in-process callers as before.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Callable, NoReturn, Optional


def _status(code) -> int:
    """``sys.exit``'s meaning of ``code``: None is 0, an int is itself, anything else is printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def keeps_teardown() -> bool:
    """Whether the process should end through ``sys.exit`` (the teardown kept): see the module docstring."""
    return (sys.getprofile() is not None or sys.gettrace() is not None
            or os.environ.get("DRMIME_PL_FULL_EXIT", "") not in ("", "0"))


def exit_process(code) -> NoReturn:
    """End the process with ``sys.exit``'s status for ``code``, skipping the teardown unless
    :func:`keeps_teardown`."""
    if keeps_teardown() or threading.current_thread() is not threading.main_thread():
        sys.exit(code)
    status = _status(code)
    # What CPython's finalisation does first, in its order and through the same (private) hooks it calls:
    # threading's exit functions (thread pools let their idle threads end) and every non-daemon thread joined,
    # then the atexit functions.
    wait_for_threads: Optional[Callable[[], None]] = getattr(threading, "_shutdown", None)
    run_exit_functions: Optional[Callable[[], None]] = getattr(atexit, "_run_exitfuncs", None)
    if wait_for_threads is None or run_exit_functions is None:  # not CPython: keep the teardown, which does both
        sys.exit(status)
    wait_for_threads()
    run_exit_functions()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a closed pipe: nothing more can reach it
            pass
    os._exit(status)


def run_and_exit(main: Callable[[], object]) -> NoReturn:
    """``exit_process(main())``: the console scripts' and ``python -m`` entry point. A ``SystemExit`` from
    ``main`` (argparse's usage errors, ``--help``) ends the same way; any other exception takes Python's usual
    path (its traceback, the teardown)."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    exit_process(code)
