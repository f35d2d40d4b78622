"""``evaluate --devices N``: the pairs split over processes by Lightning Fabric (gloo on CPU), the report merged by
rank 0 and equal to a one-process run's; a bad pair on one rank does not stop the others; a sharded run resumes."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from drmime_pl.evaluation import sharded
from drmime_pl.evaluation.metrics import PairResult

from .conftest import REPO, write_shifted_pair

SHIFTS = {"p0": (3.0, -2.0), "p1": (-4.0, 1.5), "p2": (2.5, 3.0), "p3": (-1.0, -3.5)}
FAST = ["fit.max_steps=20", "fit.min_steps=20", "data.batch_size=128", "model.transform=translation",
        "fit.threads=1"]
POINTS = np.array([[20.0, 30.0], [100.0, 40.0], [64.0, 64.0], [30.0, 110.0], [90.0, 100.0]])


def write_points(path: Path, points: np.ndarray) -> str:
    path.write_text(",X,Y\n" + "".join(f"{i},{x},{y}\n" for i, (x, y) in enumerate(points)))
    return path.name


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Four shifted pairs and ``bad`` (a moving image that is not an image), listed first; ``pairs.csv``."""
    root = tmp_path_factory.mktemp("devices")
    rows = []
    for seed, name in enumerate(["bad"] + list(SHIFTS)):
        folder = root / name
        folder.mkdir()
        dx, dy = SHIFTS.get(name, (1.0, 1.0))
        write_shifted_pair(folder, seed=seed, dx=dx, dy=dy)
        if name == "bad":
            (folder / "moving.png").write_text("not an image")
        write_points(folder / "fixed.csv", POINTS)
        write_points(folder / "moving.csv", POINTS + [dx, dy])
        rows.append([name] + [f"{name}/{f}" for f in ("fixed.png", "moving.png", "fixed.csv", "moving.csv")])
    with (root / "pairs.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "fixed_image", "moving_image", "fixed_landmarks", "moving_landmarks"])
        writer.writerows(rows)
    return root


def evaluate(dataset: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "drmime_pl.evaluate", "--pairs", str(dataset / "pairs.csv"), "--out", str(out),
           *options, *FAST]
    return subprocess.run(cmd, cwd=dataset, env=env, capture_output=True, text=True, timeout=300)


def rows(out: Path):
    with (out / "pairs.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def matrix(out: Path, name: str) -> np.ndarray:
    return np.array(json.loads((out / "transforms" / name / "transform.json").read_text())["matrix"])


def files(out: Path, name: str):
    """The files of a pair's result folder, names only (run-folder version numbers and event file names vary)."""
    return sorted(p.name if "events.out" not in p.name else "events" for p in (out / "transforms" / name).rglob("*")
                  if p.is_file())


@pytest.fixture(scope="module")
def runs(dataset):
    """The five pairs (``bad`` first), by one process and by two (``--devices 2``: gloo on CPU)."""
    one, two = dataset / "one", dataset / "two"
    # One pair at a time: each registration is then the same computation in either run (batches, which differ
    # between the runs, would change the arithmetic's order: test_devices_2_with_batches).
    r1 = evaluate(dataset, one, "--batch-size", "1")
    r2 = evaluate(dataset, two, "--devices", "2", "--accelerator", "cpu", "--batch-size", "1")
    assert r1.returncode == 0, r1.stderr[-3000:]
    assert r2.returncode == 0, r2.stderr[-3000:]
    return one, two, r2


@pytest.mark.slow
def test_devices_2_report_equals_one_process(runs):
    one, two, r2 = runs
    a, b = rows(one), rows(two)
    assert [r["name"] for r in a] == [r["name"] for r in b] == ["bad"] + list(SHIFTS)  # same rows, same order
    for ra, rb in zip(a, b):
        for key in ra:
            if key == "seconds":
                continue  # timing
            if key.startswith(("tre_", "rtre_")) and ra[key]:
                assert float(rb[key]) == pytest.approx(float(ra[key]), abs=1e-6), key
            else:
                assert rb[key] == ra[key], key
        if ra["status"] == "ok":
            np.testing.assert_allclose(matrix(two, rb["name"]), matrix(one, ra["name"]), atol=1e-6, rtol=0)
            assert files(two, rb["name"]) == files(one, ra["name"])  # rank 1's pairs write TensorBoard events too
    assert (two / "summary.md").read_text() == (one / "summary.md").read_text()
    assert (two / "success.png").is_file()
    assert not list(two.glob(".rank*")), "rank files are deleted after the merge"
    assert "rank 0 of 2" in r2.stderr and "rank 1 of 2" in r2.stderr  # two processes did the work
    for name in ("p0", "p2"):  # pairs[1::2]: rank 1's
        assert any(line.startswith("rank 1: ") and name in line for line in r2.stderr.splitlines())


@pytest.mark.slow
def test_devices_2_with_batches(dataset, runs):
    """Each rank registers its pairs in batches (here of 2); the report has the same rows, and the same scores up
    to run-to-run noise, as one process registering one pair at a time."""
    batched = dataset / "two_batched"
    r = evaluate(dataset, batched, "--devices", "2", "--accelerator", "cpu", "--batch-size", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = rows(runs[0]), rows(batched)
    assert [(x["name"], x["status"]) for x in b] == [(x["name"], x["status"]) for x in a]
    for ra, rb in zip(a[1:], b[1:]):
        assert float(rb["tre_mean"]) == pytest.approx(float(ra["tre_mean"]), abs=0.05)
    # rank 0: [bad, p1] then [p3]; rank 1: [p0, p2]. One TensorBoard run per batch that optimised something.
    assert len(list((batched / "logs" / "drmime-batch").glob("version_*"))) == 3


@pytest.mark.slow
def test_bad_pair_on_one_rank_does_not_stop_the_others(runs):
    """``bad`` (rank 0's first pair: a moving image that cannot be read) is a failed row with its error; every other
    pair, on both ranks, is registered and scored."""
    got = rows(runs[1])
    assert got[0]["name"] == "bad" and got[0]["status"] == "failed" and "moving.png" in got[0]["error"]
    assert [row["status"] for row in got[1:]] == ["ok"] * 4
    for row in got[1:]:
        assert float(row["tre_mean"]) < 1.0  # registered: the shifts are found
        assert (runs[1] / "transforms" / row["name"] / "transform.json").is_file()


def test_rank_results_round_trip_and_merge_in_pair_order(tmp_path):
    """What a rank writes, rank 0 reads back exactly (NaN, None and infinities included), in the pairs' order."""
    a = PairResult(name="a", group="g", tre_mean=1.25, n_landmarks=3, fixed_height=5, fixed_width=6, steps=20,
                   suspect=False, seconds=0.1 + 0.2)
    b = PairResult(name="b", group="g", status="failed", error="x", tre_max=math.inf)
    for rank, results in ((0, [a]), (1, [b])):
        sharded.write_json_atomic({"rank": rank, "interrupted": 0,
                                   "results": [sharded._result_to_json(r) for r in results]},
                                  sharded.rank_file(tmp_path, rank))
    named = [type("P", (), {"name": n})() for n in "bca"]
    merged, interrupted = sharded.merge(named, tmp_path, 2)
    assert interrupted is False and [r.name for r in merged] == ["b", "a"]
    assert merged[1] == a
    assert merged[0].tre_max == math.inf and math.isnan(merged[0].tre_mean) and merged[0].steps is None
    assert not list(tmp_path.iterdir())


def test_bad_devices_is_a_usage_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "drmime_pl.evaluate", "--pairs", "x.csv", "--out", str(tmp_path),
                        "--devices", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--devices" in r.stderr and ">= 1" in r.stderr
