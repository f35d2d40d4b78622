"""Parts of a registration on several threads (``core/tasks.py``, ``fit.workers``): they run at once, failures
surface, and the result and files are exactly those of one thread."""
import os
import signal
import threading
import time

import numpy as np
import pytest

import drmime_pl
from drmime_pl.core import tasks

from .conftest import write_shifted_pair


def test_together_runs_the_calls_at_once_with_two_workers_and_keeps_their_order():
    meet = threading.Barrier(2, timeout=10)  # passes only when both calls wait on it at the same time

    def call(value):
        def run():
            meet.wait()
            return value, threading.get_ident()
        return run

    with tasks.workers(2):
        (first, first_thread), (second, second_thread) = tasks.together(call("a"), call("b"))
    assert (first, second) == ("a", "b")
    assert first_thread == threading.get_ident() != second_thread


def test_one_worker_runs_every_call_here_one_after_the_other():
    with tasks.workers(1):
        threads = tasks.together(threading.get_ident, threading.get_ident, threading.get_ident)
    assert threads == [threading.get_ident()] * 3
    assert tasks.together(threading.get_ident, threading.get_ident) == [threading.get_ident()] * 2  # the default


@pytest.mark.parametrize("helper_raises, expected", [(KeyError, ValueError), (KeyboardInterrupt, KeyboardInterrupt)])
def test_failures_are_raised_once_every_call_has_finished(helper_raises, expected):
    """The first failure in order is raised, an interruption (Ctrl-C, a stop signal) before any error."""
    finished = []

    def fail():
        raise ValueError("first")

    def slow_then_fail():
        time.sleep(0.2)
        finished.append("helper")  # nothing is left running behind the caller's back
        raise helper_raises("helper")

    with tasks.workers(2), pytest.raises(expected):
        tasks.together(fail, slow_then_fail)
    assert finished == ["helper"]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_a_signal_while_waiting_for_a_helper_waits_for_it_then_stops():
    class Stop(BaseException):  # as the stop signals' handler raises (training/signals.py)
        pass

    def handler(signum, frame):
        raise Stop

    finished = []

    def helper():
        time.sleep(0.5)
        finished.append("helper")
        return 2

    def here():  # returns at once: the signal arrives while this thread waits for the helper
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        return 1

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        with tasks.workers(2), pytest.raises(Stop):
            tasks.together(here, helper)
        assert finished == ["helper"]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_split_keeps_every_item_in_order():
    items = list(range(11))
    for parts in (1, 2, 3, 11, 20):
        pieces = tasks.split(items, parts)
        assert [x for piece in pieces for x in piece] == items
        assert len(pieces) == min(parts, len(items)) and all(pieces)


def test_a_registration_on_two_workers_equals_one_on_one_bit_for_bit(tmp_path):
    fixed, moving = write_shifted_pair(tmp_path, seed=3, dx=4.0, dy=-3.0)
    quick = ["fit.max_steps=30", "fit.min_steps=10", "logging.progress_bar=false"]
    results = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        results[workers] = (drmime_pl.register(str(fixed), str(moving), output_dir=str(out),
                                               overrides=quick + [f"fit.workers={workers}"]), out)
    (one, out_one), (two, out_two) = results[1], results[2]
    np.testing.assert_array_equal(one.matrix, two.matrix)  # search, polish and verdict: the same arithmetic
    assert one.quality == two.quality
    for name in ("warped.png", "overlay.png", "transform.tfm", "TransformParameters.txt"):
        assert (out_one / name).read_bytes() == (out_two / name).read_bytes(), name
    assert not list(out_two.glob(".pending*"))



@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_runs_its_parts_on_its_own_threads():
    with tasks.workers(2):
        tasks.together(lambda: 1, lambda: 2)  # the parent's pool exists now
    pid = os.fork()
    if pid == 0:  # the child: without a pool of its own the helper's call would wait forever
        done = threading.Event()
        threading.Timer(20, lambda: done.is_set() or os._exit(3)).start()
        with tasks.workers(2):
            ok = tasks.together(lambda: 1, lambda: 2) == [1, 2]
        done.set()
        os._exit(0 if ok else 4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
