"""Issue 7: signals, concurrent runs, reused output folders and resuming an evaluation.

* SIGTERM and SIGHUP stop ``fit`` like Ctrl-C (checkpoint, how to resume, exit 143 / 129) and ``evaluate`` with its
  report for the pairs done;
* two runs started at once get two ``version_N`` folders;
* a reused ``output.dir`` never keeps an earlier run's ``transform.json``, and no ``*.tmp<pid>`` file survives;
* ``evaluate`` started again skips the pairs already registered with the same config (``--redo`` registers them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch


from .conftest import REPO, write_shifted_pair

QUICK = ["data.batch_size=128", "logging.progress_bar=false", "model.transform=affine", "model.init=identity"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_shifted_pair(tmp_path_factory.mktemp("pair"), seed=4, dx=2.0, dy=-1.0)


def env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}


def fit_args(pair, tmp_path, *extra):
    return [f"data.fixed={pair[0]}", f"data.moving={pair[1]}", f"logging.log_dir={tmp_path / 'logs'}", *QUICK, *extra]


def wait_for(path: Path, proc, timeout=90):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() - start < timeout, f"{path} never appeared"
        time.sleep(0.1)


def temporaries(root: Path):
    return [p for p in root.rglob("*") if ".tmp" in p.name]


# ------------------------------------------------------------------------------- 3 + 5. SIGTERM / SIGHUP in fit
@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_fit_stops_on_signal_saves_and_exits_128_plus_n(pair, tmp_path, signame, code):
    out = tmp_path / "out"
    out.mkdir()
    (out / "transform.json").write_text('{"matrix": "from an earlier run"}')  # a reused output.dir
    proc = subprocess.Popen(
        [sys.executable, "-m", "drmime_pl.fit", *fit_args(pair, tmp_path, f"output.dir={out}", "fit.max_steps=3000",
                                                          "fit.min_steps=3000", "logging.checkpoint_every_n_steps=10")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    wait_for(tmp_path / "logs" / "drmime" / "version_0" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(getattr(signal, signame))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "interrupted at step" in stderr and signame in stderr and "resume with fit.ckpt_path=" in stderr
    assert "Traceback" not in stderr
    ckpt = Path(stderr.split("fit.ckpt_path=")[-1].strip())
    assert ckpt.is_file() and 0 < torch.load(ckpt, weights_only=True)["global_step"] < 3000
    assert not (out / "transform.json").exists(), "an earlier run's transform.json survived"
    assert temporaries(tmp_path) == []


SIGTERM_WHILE_WRITING = """
import os, signal, sys, time
from PIL import Image

real_save = Image.Image.save

def slow_save(self, fp, *args, **kwargs):
    real_save(self, fp, *args, **kwargs)          # the temporary file is on disk ...
    os.kill(os.getpid(), signal.SIGTERM)          # ... when the scheduler stops the job
    time.sleep(5)

Image.Image.save = slow_save
from drmime_pl.fit import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_writing_results_leaves_no_temporary(pair, tmp_path):
    proc = subprocess.run([sys.executable, "-c", SIGTERM_WHILE_WRITING,
                           *fit_args(pair, tmp_path, f"output.dir={tmp_path / 'out'}", "logging.enabled=false",
                                     "fit.max_steps=10", "fit.min_steps=10")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env())
    assert proc.returncode == 143, proc.stderr
    assert "SIGTERM" in proc.stderr and "Traceback" not in proc.stderr
    assert temporaries(tmp_path) == []
    assert not (tmp_path / "out" / "transform.json").exists()


# ---------------------------------------------------------------------------------------- 3. SIGTERM in evaluate
def _pairs_csv(tmp_path, pair, names=("a", "b"), missing=()) -> Path:
    """Pairs of the same images; the pairs named in ``missing`` lack their moving landmarks (they fail at once)."""
    pts = np.array([[30.0, 40.0], [90.0, 20.0], [60.0, 100.0]])
    (tmp_path / "fixed.csv").write_text(",X,Y\n" + "".join(f"{i},{x},{y}\n" for i, (x, y) in enumerate(pts)))
    (tmp_path / "moving.csv").write_text(",X,Y\n" + "".join(f"{i},{x + 2},{y - 1}\n" for i, (x, y) in enumerate(pts)))
    rows = "".join(f"{n},{pair[0]},{pair[1]},fixed.csv,{'gone.csv' if n in missing else 'moving.csv'}\n"
                   for n in names)
    path = tmp_path / "pairs.csv"
    path.write_text("name,fixed_image,moving_image,fixed_landmarks,moving_landmarks\n" + rows)
    return path


@pytest.mark.parametrize("batch_size", [1, 2])
def test_evaluate_sigterm_reports_pairs_done_and_exits_143(pair, tmp_path, batch_size):
    """One pair at a time, or b alone in a batch (a fails before the optimisation): b is interrupted."""
    pairs = _pairs_csv(tmp_path, pair, missing=("a",))  # a fails at once, b registers until the signal
    out = tmp_path / "eval"
    proc = subprocess.Popen(
        [sys.executable, "-m", "drmime_pl.evaluate", "--pairs", str(pairs), "--out", str(out),
         "--batch-size", str(batch_size), f"logging.log_dir={tmp_path / 'logs'}", "fit.max_steps=3000",
         "fit.min_steps=3000", "logging.checkpoint_every_n_steps=10", *QUICK],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    if batch_size == 1:  # b's own run folder, once it has a checkpoint
        wait_for(tmp_path / "logs" / "drmime-b" / "version_0" / "checkpoints" / "last.ckpt", proc)
    else:  # the batch's run folder is made just before its optimisation starts
        wait_for(tmp_path / "logs" / "drmime-batch" / "version_0", proc)
        time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "[2/2] b ... interrupted" in stderr and "Traceback" not in stderr
    assert "INTERRUPTED after 1 of 2 pairs" in (out / "summary.md").read_text()
    assert (out / "pairs.csv").read_text().splitlines()[1].startswith("a,")
    assert temporaries(out) == []


# ------------------------------------------------------------------------------------ 4. concurrent run folders
def test_concurrent_claims_get_distinct_folders(tmp_path):
    from drmime_pl.io.rundir import claim_run_dir

    barrier = threading.Barrier(12)
    versions = []

    def claim():
        barrier.wait()  # all threads claim at the same moment
        versions.append(claim_run_dir(tmp_path, "drmime"))

    threads = [threading.Thread(target=claim) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions) == list(range(12))
    assert sorted(p.name for p in (tmp_path / "drmime").iterdir()) == sorted(f"version_{v}" for v in range(12))


def test_two_runs_started_at_once_write_two_results(pair, tmp_path):
    args = fit_args(pair, tmp_path, "fit.max_steps=15", "fit.min_steps=15", "output.warped=false")
    procs = [subprocess.Popen([sys.executable, "-m", "drmime_pl.fit", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env()) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    folders = {line.split("outputs:")[1].strip() for o in outs for line in o[0].splitlines() if "outputs:" in line}
    assert len(folders) == 2, outs
    for folder in folders:
        result = json.loads((Path(folder) / "transform.json").read_text())
        assert result["checkpoint"].startswith(folder)


# ----------------------------------------------------------------------------------- 7. evaluate resumes
def test_evaluate_skips_pairs_done_and_redo_registers_again(pair, tmp_path, monkeypatch, capsys):
    import drmime_pl.training.fit as fit_module
    from drmime_pl.evaluate import main

    pairs = _pairs_csv(tmp_path, pair)
    out = tmp_path / "eval"
    args = ["--pairs", str(pairs), "--out", str(out), "--batch-size", "1", "logging.enabled=false",
            "fit.max_steps=15", "fit.min_steps=15", *QUICK]  # one pair at a time: each registration is a fit()
    assert main(args) == 0
    first = (out / "pairs.csv").read_text()
    calls = []
    real_fit = fit_module.fit
    monkeypatch.setattr(fit_module, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    capsys.readouterr()
    assert main(args) == 0  # started again: nothing to register
    assert calls == [] and (out / "pairs.csv").read_text() == first
    assert capsys.readouterr().err.count("registered earlier") == 2
    (out / "transforms" / "a" / "transform.json").write_text('{"matrix": [1, 2')  # half a file (killed)
    assert main(args) == 0
    assert len(calls) == 1  # a again (its transform.json is incomplete), b skipped
    calls.clear()
    assert main(args + ["--redo", "--only", "b"]) == 0
    assert len(calls) == 1
    calls.clear()
    assert main(args[:-1] + ["model.init=moments", "--only", "b"]) == 0  # another config: registered again
    assert len(calls) == 1
