"""The command line ends without Python's teardown, and nothing that should happen at exit is lost
(drmime_pl/process_exit.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A process that ends through run_and_exit: a module-level object whose __del__ prints only when Python tears the
# module down; an atexit function and a non-daemon thread that each write a file; an idle thread pool left open
# (its thread ends only when Python's exit shuts the pool down); output still buffered for a pipe.
SCRIPT = textwrap.dedent("""
    import atexit, sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path
    from drmime_pl.process_exit import run_and_exit

    out = Path(sys.argv[1])

    class Noisy:
        def __del__(self):
            print("torn down", flush=True)

    noisy = Noisy()
    pool = ThreadPoolExecutor(1)  # kept: a pool Python's exit must shut down
    atexit.register(lambda: (out / "atexit.txt").write_text("ran"))

    def late():
        time.sleep(0.3)
        (out / "thread.txt").write_text("ran")

    def main():
        threading.Thread(target=late).start()
        pool.submit(print, "pool", flush=True).result()
        print("x" * 100000)  # more than a pipe's buffer holds
        print("the end")  # still in stdout's buffer when main returns: lost unless flushed
        return {code}

    run_and_exit(main)
""")


def run_script(tmp_path: Path, code: str, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(code=code))
    base = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as on a pipe
    return subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60,
                          env={**base, **env})


def test_fast_exit_skips_the_teardown_and_keeps_what_exit_promises(tmp_path):
    done = run_script(tmp_path, "3", DRMIME_PL_FULL_EXIT="0")  # hangs (timeout) if the pool's thread is not ended
    assert done.returncode == 3
    assert "x" * 100000 in done.stdout
    assert done.stdout.rstrip().endswith("the end")  # flushed
    assert "torn down" not in done.stdout  # no teardown
    assert (tmp_path / "atexit.txt").read_text() == "ran"
    assert (tmp_path / "thread.txt").read_text() == "ran"  # waited for, as Python waits
    assert done.stdout.startswith("pool")


def test_full_exit_on_request_tears_down(tmp_path):
    done = run_script(tmp_path, "0", DRMIME_PL_FULL_EXIT="1")
    assert done.returncode == 0
    assert "torn down" in done.stdout
    assert (tmp_path / "atexit.txt").read_text() == "ran"


@pytest.mark.parametrize("code, status", [("None", 0), ("'usage: bad'", 1), ("sys.exit(2)", 2)])
def test_exit_status_is_sys_exits(tmp_path, code, status):
    done = run_script(tmp_path, code, DRMIME_PL_FULL_EXIT="0")
    assert done.returncode == status
    assert ("usage: bad" in done.stderr) == (status == 1)
    assert "torn down" not in done.stdout


def test_command_line_help_is_complete_on_a_pipe(capsys, monkeypatch):
    from drmime_pl.fit import main

    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps to it, here and in the child

    with pytest.raises(SystemExit):
        main(["--help"])
    in_process = capsys.readouterr().out
    done = subprocess.run([sys.executable, "-m", "drmime_pl.fit", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0
    assert len(in_process) > 1000
    assert done.stdout == in_process


def test_command_line_usage_error_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "drmime_pl.fit", "--config", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "missing.yaml" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_console_script_ends_through_run_and_exit():
    import importlib
    import inspect
    import tomllib

    from .conftest import REPO

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"drmime-fit", "drmime-evaluate", "drmime-warp"}
    for target in scripts.values():
        module, name = target.split(":")
        entry = getattr(importlib.import_module(module), name)
        assert "run_and_exit(main)" in inspect.getsource(entry), target


def test_a_profiler_still_writes_its_results(tmp_path):
    """``python -m cProfile`` writes its file after the module returns: the teardown is kept under a profiler."""
    stats = tmp_path / "fit.prof"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "drmime_pl.fit", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert stats.stat().st_size > 1000
