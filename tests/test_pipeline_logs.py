"""Issue 11, part 5: logs that fit a pipeline.

* stderr not a terminal: plain lines (no carriage return, at most one per ``logging.every_n_steps * 10`` steps), a
  final wall-time line, no Lightning wording; ``transform.json`` has ``wall_seconds``.
* resuming from ``<run>/checkpoints/last.ckpt`` writes into the same run folder and TensorBoard run, without
  warnings; TensorBoard holds the resolved config.
* stderr a terminal: a tqdm bar described as ``register``, without ``Epoch`` or ``v_num``.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from drmime_pl.training.progress import format_seconds, plain_every

from .conftest import REPO, nonmonotonic, textured_image, write_png

QUICK = ["data.batch_size=128", "model.transform=affine", "model.init=identity", "output.warped=false",
         "output.itk=false", "output.elastix=false", "logging.image_every_n_steps=0"]
PROGRESS = re.compile(r"^drmime_pl: step (\d+)/(\d+)  MI \S+  corner motion \S+( px)?  elapsed .+  ETA <= .+$")


def make_pair(folder: Path):
    fixed = textured_image(128, seed=3)
    moving = torch.roll(nonmonotonic(fixed), shifts=(2, -3), dims=(1, 2))
    return write_png(folder / "fixed.png", fixed), write_png(folder / "moving.png", moving)


def env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}


def run_fit(cwd: Path, *args, stderr=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "drmime_pl.fit", *args], cwd=cwd, stdout=subprocess.PIPE,
                          stderr=stderr, text=True, env=env(), timeout=300)


def check_plain_stderr(stderr: str, every_n_steps: int, steps_run: int):
    assert "\r" not in stderr
    assert "Epoch" not in stderr and "v_num" not in stderr
    assert "warn" not in stderr.lower(), stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    progress = [line for line in lines if PROGRESS.match(line)]
    assert progress, stderr
    assert len(progress) <= max(1, steps_run // (every_n_steps * 10)), stderr
    assert re.match(r"^drmime_pl: done: .* after \d+ steps; optimisation .+, wall time .+$", lines[-1]), lines[-1]
    assert len(lines) == len(progress) + 1, stderr  # nothing else: no Lightning notices
    return progress


def test_plain_lines_wall_seconds_and_resume_into_the_same_run(tmp_path):
    fixed, moving = make_pair(tmp_path)
    args = [f"data.fixed={fixed}", f"data.moving={moving}", "logging.every_n_steps=2",
            "logging.checkpoint_every_n_steps=20", *QUICK]
    first = run_fit(tmp_path, *args, "fit.max_steps=40", "fit.min_steps=40")
    assert first.returncode == 0, first.stderr
    progress = check_plain_stderr(first.stderr, every_n_steps=2, steps_run=40)
    assert [int(PROGRESS.match(line).group(1)) for line in progress] == [20, 40]
    assert "wall time" in first.stdout

    run = tmp_path / "logs" / "drmime" / "version_0"
    result = json.loads((run / "transform.json").read_text())
    assert result["steps"] == 40
    assert result["wall_seconds"] >= result["seconds"] > 0
    events_before = sorted(p.name for p in run.glob("events.out.tfevents.*"))
    assert len(events_before) == 1

    # Resume: same run folder, same TensorBoard run (a second events file next to the first), no warnings.
    ckpt = run / "checkpoints" / "last.ckpt"
    second = run_fit(tmp_path, *args, "fit.max_steps=60", "fit.min_steps=60", f"fit.ckpt_path={ckpt}")
    assert second.returncode == 0, second.stderr
    progress = check_plain_stderr(second.stderr, every_n_steps=2, steps_run=20)
    assert [int(PROGRESS.match(line).group(1)) for line in progress] == [60]
    assert sorted(p.name for p in (tmp_path / "logs" / "drmime").iterdir()) == ["version_0"]
    events_after = sorted(p.name for p in run.glob("events.out.tfevents.*"))
    assert len(events_after) == 2 and set(events_before) < set(events_after)
    resumed = json.loads((run / "transform.json").read_text())
    assert resumed["steps"] == 60 and resumed["wall_seconds"] > 0

    # TensorBoard holds the resolved config as text.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / events_before[0]), size_guidance={"tensors": 0})
    acc.Reload()
    assert "config/text_summary" in acc.Tags()["tensors"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "transform: affine" in text and str(fixed) in text
    # The last steps' scalars reached the file before the process ended (it skips Python's teardown:
    # drmime_pl/process_exit.py).
    last_step = max(event.step for tag in acc.Tags()["scalars"] for event in acc.Scalars(tag))
    assert last_step >= 38, last_step


def test_terminal_gets_a_register_bar(tmp_path):
    import fcntl
    import pty
    import struct
    import termios

    fixed, moving = make_pair(tmp_path)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a pty starts 0 columns wide
    proc = subprocess.Popen(
        [sys.executable, "-m", "drmime_pl.fit", f"data.fixed={fixed}", f"data.moving={moving}", "fit.max_steps=20",
         "fit.min_steps=20", "logging.enabled=false", f"output.dir={tmp_path / 'out'}", *QUICK],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave, text=True, env=env())
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    stdout = proc.stdout.read()
    assert proc.wait(timeout=120) == 0, stdout
    shown = b"".join(chunks).decode(errors="replace")
    assert "register" in shown and "20/20" in shown, shown
    assert "Epoch" not in shown and "v_num" not in shown, shown
    assert "drmime_pl: step" not in shown  # the plain lines are for pipelines only
    assert json.loads((tmp_path / "out" / "transform.json").read_text())["wall_seconds"] > 0


def test_helpers():
    assert plain_every(10) == 100 and plain_every(1) == 10
    assert format_seconds(12.34) == "12.3 s" and format_seconds(245) == "4m05s" and format_seconds(7380) == "2h03m"
    assert format_seconds(float("nan")) == "?"


def test_registration_without_wall_seconds_still_constructs():
    from drmime_pl.io.result import Registration

    import numpy as np

    reg = Registration(matrix=np.eye(3), matrix_normalised=np.eye(3), coefficients_shared=np.zeros(6),
                       coefficients_fine=np.zeros(6), transform="affine", fixed_shape=(8, 8), moving_shape=(8, 8),
                       scale=4.0, mi_per_level=[0.1], steps=1, seconds=0.1, converged=False, seed=0)
    assert reg.wall_seconds is None and reg.to_json()["wall_seconds"] is None
