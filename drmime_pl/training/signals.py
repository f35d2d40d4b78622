"""SIGINT, SIGTERM and SIGHUP: stop cleanly and exit with the shell's code for the signal (128 + its number).

During training :class:`drmime_pl.training.callbacks.GracefulInterrupt` catches the three signals, stops after the current
step and saves ``last.ckpt``. Outside training (loading images, writing results, between evaluate's pairs),
:func:`signals_as_interrupts` turns SIGTERM and SIGHUP into :class:`Interrupted`, a ``KeyboardInterrupt`` as Ctrl-C
is, so ``finally`` blocks run: no temporary file is left behind and the exit status says which signal stopped the
run. A scheduler that sends SIGTERM sees 143, not 0.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

#: The signals that stop a run cleanly (SIGHUP where the platform has it).
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                                 getattr(signal, "SIGHUP", None)) if s is not None)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived outside a training step (``signum``: which one)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal_name(signum))
        self.signum = int(signum)
        _LAST[0] = self.signum


_LAST = [None]


def last_signal(default: int = signal.SIGINT) -> int:
    """The signal of the latest :class:`Interrupted` (Lightning turns it into ``sys.exit(1)``, losing it)."""
    return int(_LAST[0]) if _LAST[0] is not None else int(default)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 SIGINT, 143 SIGTERM, 129 SIGHUP)."""
    return 128 + int(signum)


def signum_of(exc: BaseException) -> int:
    """The signal behind an interruption (a plain ``KeyboardInterrupt`` is Ctrl-C)."""
    return int(getattr(exc, "signum", signal.SIGINT))


def _raise(signum, frame):
    raise Interrupted(signum)


@contextmanager
def signals_as_interrupts():
    """While inside, SIGTERM and SIGHUP raise :class:`Interrupted` (SIGINT keeps raising ``KeyboardInterrupt``).
    Only in the main thread (elsewhere Python cannot set handlers); the previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for s in STOP_SIGNALS:
        if s != signal.SIGINT:
            previous[s] = signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
