"""``python -m drmime_pl.evaluate``: scores checked against numbers computed here by hand (plain numpy), failed
pairs, bad usage, and one short end-to-end registration on a tiny FIRE-layout folder."""
from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drmime_pl import evaluate
from drmime_pl.evaluate import auc, auc_steps, main, success_curve
from drmime_pl.evaluation import datasets, sources

REPO = Path(__file__).resolve().parents[1]
BIRL = REPO / "samples" / "birl"
FIRE_SAMPLE = REPO / "samples" / "fire" / "A01_1.jpg"
SIZE = 256

# Tiny FIRE pairs: fixed px -> moving px. S01 is a pure translation (registered end to end below), P01 a homography.
TRUE = {
    "S01": np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]]),
    "P01": np.array([[1.01, 0.02, 3.0], [-0.015, 0.99, -2.0], [1e-5, -2e-5, 1.0]]),
    "A01": np.array([[0.98, -0.03, -4.0], [0.03, 0.98, 5.0], [0.0, 0.0, 1.0]]),
}


# ------------------------------------------------------------------------------------------------ helpers


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    h = np.c_[points, np.ones(len(points))] @ np.asarray(matrix, dtype=np.float64).T
    return h[:, :2] / h[:, 2:]


def landmarks(path: Path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2), ndmin=2)


def write_transform(folder: Path, name: str, matrix, fixed_shape, seconds=1.5, steps=42) -> None:
    (folder / name).mkdir(parents=True, exist_ok=True)
    data = {"matrix": np.asarray(matrix, dtype=np.float64).tolist(), "fixed_shape": list(fixed_shape),
            "seconds": seconds, "steps": steps}
    (folder / name / "transform.json").write_text(json.dumps(data))


def read_pairs(out: Path) -> dict:
    with (out / "pairs.csv").open(newline="") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


def summary_table(out: Path) -> dict:
    """summary.md's table as {first cell: [cells]} (bold markers stripped)."""
    rows = {}
    for line in (out / "summary.md").read_text().splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def birl_row(name: str) -> dict:
    with (BIRL / "pairs.csv").open(newline="") as fh:
        return next(r for r in csv.DictReader(fh) if r["name"] == name)


def hand_tre(name: str, matrix) -> tuple:
    """Per-landmark TRE and the fixed image's diagonal, from the sample files, without drmime_pl."""
    row = birl_row(name)
    fixed, moving = landmarks(BIRL / row["fixed_landmarks"]), landmarks(BIRL / row["moving_landmarks"])
    n = min(len(fixed), len(moving))
    errors = np.sqrt(((apply(matrix, fixed[:n]) - moving[:n]) ** 2).sum(axis=1))
    with Image.open(BIRL / row["fixed_image"]) as im:
        w, h = im.size
    return errors, math.sqrt(w * w + h * h), (h, w)


@pytest.fixture(scope="module")
def fire_dir(tmp_path_factory) -> Path:
    """FIRE layout with three 256x256 pairs made from the shipped A01_1.jpg and the known matrices in TRUE."""
    import drmime_pl

    root = tmp_path_factory.mktemp("fire")
    (root / "Images").mkdir()
    (root / "Ground Truth").mkdir()
    with Image.open(FIRE_SAMPLE) as im:
        im.draft("RGB", (SIZE * 2, SIZE * 2))  # JPEG decodes at a reduced scale: fast
        moving = np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
    grid = np.array([(x, y) for x in (50.0, 90.0, 130.0, 170.0, 210.0) for y in (60.0, 128.0, 200.0)])
    for name, matrix in TRUE.items():
        fixed = drmime_pl.warp(moving, matrix, (SIZE, SIZE))  # fixed(p) = moving(matrix p)
        Image.fromarray((np.clip(fixed, 0, 1) * 255 + 0.5).astype(np.uint8)).save(root / "Images" / f"{name}_1.jpg")
        Image.fromarray(moving).save(root / "Images" / f"{name}_2.jpg")
        lines = [" ".join(repr(float(v)) for v in (*p, *q)) for p, q in zip(grid, apply(matrix, grid))]
        (root / "Ground Truth" / f"control_points_{name}_1_2.txt").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------------------------------ pure scoring


def test_success_curve_and_auc_by_hand():
    errors = [0.0, 2.5, 10.0, 30.0, float("nan")]  # the NaN is a failed pair: never a success
    assert success_curve(errors, [0, 2.5, 5, 25, 100]).tolist() == [0.2, 0.4, 0.4, 0.6, 0.8]
    # exact area: mean of max(0, 1 - e / 25) = (1 + 0.9 + 0.6 + 0 + 0) / 5
    assert auc(errors, 25) == pytest.approx(0.5, abs=1e-12)
    # integer thresholds 1..25, e < i: 25 + 23 + 15 + 0 + 0 successes out of 25 * 5
    assert auc_steps(errors, 25) == pytest.approx(63 / 125, abs=1e-12)
    dense = np.linspace(0, 25, 100001)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    assert trapezoid(success_curve(errors, dense), dense) / 25 == pytest.approx(0.5, abs=1e-4)
    assert math.isnan(auc([], 25)) and np.isnan(success_curve([], [1.0])).all()


def test_summarise_groups_and_counts_failed_pairs_as_failures():
    r = evaluate.PairResult
    results = [r("S01", "S", tre_mean=1.0, rtre_median=0.1, rtre_mean=0.1), r("S02", "S", tre_mean=7.0),
               r("A01", "A", status="failed", error="boom"), r("P01", "P", tre_mean=20.0)]
    rows = {row["group"]: row for row in evaluate.summarise(results, "fire")}
    assert [row["group"] for row in evaluate.summarise(results, "fire")] == ["S", "P", "A", "all"]
    assert rows["S"]["auc"] == pytest.approx((24 / 25 + 18 / 25) / 2)
    assert rows["A"]["auc"] == 0.0 and rows["A"]["failed"] == 1 and math.isnan(rows["A"]["mean_tre"])
    assert rows["all"]["success"][5.0] == pytest.approx(1 / 4)
    assert rows["all"]["success"][25.0] == pytest.approx(3 / 4)
    assert rows["all"]["median_tre"] == pytest.approx(7.0)  # over the three scored pairs


# ------------------------------------------------------------------------------------------------ ANHIR / BIRL


def test_birl_transforms_match_hand_computed_tre(tmp_path, capsys):
    known = {"artificial-rigid": np.eye(3), "rat-kidney-he-pancytokeratin": translation(5.0, -3.0)}
    transforms = tmp_path / "transforms"
    expected = {}
    for name, matrix in known.items():
        errors, diagonal, hw = hand_tre(name, matrix)
        write_transform(transforms, name, matrix, hw)
        expected[name] = (errors, diagonal, hw)

    rc = main(["--pairs", str(BIRL / "pairs.csv"), "--transforms", str(transforms), "--out", str(tmp_path / "out"),
               "--only", "artificial-rigid", "--only", "rat-kidney*"])
    assert rc == 0
    rows = read_pairs(tmp_path / "out")
    assert sorted(rows) == sorted(known)
    for name, (errors, diagonal, hw) in expected.items():
        row = rows[name]
        assert row["status"] == "ok" and row["error"] == ""
        assert int(row["n_landmarks"]) == len(errors)
        assert (int(row["fixed_height"]), int(row["fixed_width"])) == hw
        for key, value in (("tre_mean", errors.mean()), ("tre_median", np.median(errors)), ("tre_max", errors.max()),
                           ("rtre_mean", errors.mean() / diagonal), ("rtre_median", np.median(errors) / diagonal),
                           ("rtre_max", errors.max() / diagonal)):
            assert float(row[key]) == pytest.approx(value, rel=1e-8), (name, key)
        assert float(row["seconds"]) == 1.5 and row["steps"] == "42"
    assert int(rows["rat-kidney-he-pancytokeratin"]["n_landmarks"]) == 69  # 71 vs 69 landmarks: the shorter

    medians = [np.median(e) / d for e, d, _ in expected.values()]
    table = summary_table(tmp_path / "out")
    assert table["all"][:3] == ["2", "0", format(float(np.median(medians)), ".4g")]
    assert table["mono"][:2] == ["1", "0"] and table["multi"][:2] == ["1", "0"]
    success = [f"{100 * np.mean([m <= t for m in medians]):.1f}%" for t in (0.005, 0.01, 0.02, 0.05)]
    assert table["all"][-4:] == success
    assert (tmp_path / "out" / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "[1/2] artificial-rigid ... median rTRE" in err and "[2/2] rat-kidney-he-pancytokeratin" in err


def test_failed_pairs_are_reported_and_the_others_scored(tmp_path, capsys):
    rigid = birl_row("artificial-rigid")
    ab = {k: str(BIRL / rigid[k]) for k in ("fixed_image", "moving_image", "fixed_landmarks", "moving_landmarks")}
    rows = {
        "good": ab,
        "no-landmarks": {**ab, "moving_landmarks": str(tmp_path / "missing.csv")},
        "nan-matrix": ab,
        "no-transform": ab,
        "wrong-size": ab,
        "missing-image": {**ab, "fixed_image": "missing.jpg"},  # --transforms does not need the images
    }
    pairs_csv = tmp_path / "pairs.csv"
    with pairs_csv.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", "fixed_image", "moving_image", "fixed_landmarks", "moving_landmarks", "modality"])
        for name, r in rows.items():
            writer.writerow([name] + [r[k] for k in ("fixed_image", "moving_image", "fixed_landmarks",
                                                     "moving_landmarks")] + ["x"])
    transforms = tmp_path / "transforms"
    for name in ("good", "no-landmarks", "missing-image"):
        write_transform(transforms, name, translation(3.0, 4.0), (600, 800))
    write_transform(transforms, "nan-matrix", [[1, 0, float("nan")], [0, 1, 0], [0, 0, 1]], (600, 800))
    write_transform(transforms, "wrong-size", np.eye(3), (100, 100))

    rc = main(["--pairs", str(pairs_csv), "--transforms", str(transforms), "--out", str(tmp_path / "out")])
    assert rc == 0
    out = read_pairs(tmp_path / "out")
    assert {n: r["status"] for n, r in out.items()} == {
        "good": "ok", "no-landmarks": "failed", "nan-matrix": "failed", "no-transform": "failed",
        "wrong-size": "failed", "missing-image": "ok"}
    assert "missing.csv" in out["no-landmarks"]["error"] and "not found" in out["no-landmarks"]["error"]
    assert "NaN" in out["nan-matrix"]["error"]
    assert "no transform.json" in out["no-transform"]["error"]
    assert "100x100" in out["wrong-size"]["error"] and "800x600" in out["wrong-size"]["error"]
    errors, _, _ = hand_tre("artificial-rigid", translation(3.0, 4.0))
    assert float(out["good"]["tre_mean"]) == pytest.approx(errors.mean(), rel=1e-8)
    assert out["no-transform"]["tre_mean"] == "" and out["no-transform"]["n_landmarks"] == "0"
    assert summary_table(tmp_path / "out")["all"][:2] == ["6", "4"]
    captured = capsys.readouterr()
    assert "6 pairs evaluated, 4 failed" in captured.out
    assert "[3/6] nan-matrix ... FAILED:" in captured.err


# ------------------------------------------------------------------------------------------------ FIRE


def test_fire_discovery_and_categories(fire_dir):
    pairs = datasets.discover_fire(fire_dir)
    assert [(p.name, p.group) for p in pairs] == [("A01", "A"), ("P01", "P"), ("S01", "S")]
    assert pairs[0].fixed_image == fire_dir / "Images" / "A01_1.jpg"
    assert pairs[0].moving_image == fire_dir / "Images" / "A01_2.jpg"
    assert [p.name for p in datasets.select_pairs(pairs, ["S*", "A*"], ["A01"])] == ["S01"]


def test_fire_success_rates_and_auc_with_known_errors(fire_dir, tmp_path):
    transforms = tmp_path / "transforms"
    write_transform(transforms, "S01", TRUE["S01"], (SIZE, SIZE))  # error 0
    write_transform(transforms, "P01", translation(1.5, 2.0) @ TRUE["P01"], (SIZE, SIZE))  # error 2.5 px everywhere
    write_transform(transforms, "A01", translation(18.0, 24.0) @ TRUE["A01"], (SIZE, SIZE))  # 30 px: beyond 25

    rc = main(["--fire", str(fire_dir), "--transforms", str(transforms), "--out", str(tmp_path / "out")])
    assert rc == 0
    rows = read_pairs(tmp_path / "out")
    assert {n: r["status"] for n, r in rows.items()} == {"A01": "ok", "P01": "ok", "S01": "ok"}
    assert float(rows["S01"]["tre_max"]) == pytest.approx(0.0, abs=1e-6)
    assert float(rows["P01"]["tre_mean"]) == pytest.approx(2.5, abs=1e-6)
    assert float(rows["A01"]["tre_mean"]) == pytest.approx(30.0, abs=1e-6)
    assert int(rows["P01"]["n_landmarks"]) == 15

    by_group = {row["group"]: row for row in evaluate.summarise(
        [evaluate.PairResult(n, n[0], tre_mean=float(r["tre_mean"])) for n, r in rows.items()], "fire")}
    # exact AUC: S 1, P 1 - 2.5/25 = 0.9, A 0; 1-px steps: P (25 - 2) / 25 = 0.92
    for group, (a, a_steps) in {"S": (1.0, 1.0), "P": (0.9, 0.92), "A": (0.0, 0.0), "all": (1.9 / 3, 1.92 / 3)}.items():
        assert by_group[group]["auc"] == pytest.approx(a, abs=1e-9)
        assert by_group[group]["auc_steps"] == pytest.approx(a_steps, abs=1e-9)
    table = summary_table(tmp_path / "out")
    assert list(table) == ["category", "S", "P", "A", "all"]
    assert table["S"][:8] == ["1", "0", "1.000", "1.000", "100.0%", "100.0%", "100.0%", "100.0%"]
    assert table["P"][:8] == ["1", "0", "0.900", "0.920", "100.0%", "100.0%", "100.0%", "100.0%"]
    assert table["A"][:8] == ["1", "0", "0.000", "0.000", "0.0%", "0.0%", "0.0%", "0.0%"]
    assert table["all"][:8] == ["3", "0", "0.633", "0.640", "66.7%", "66.7%", "66.7%", "66.7%"]


def test_fire_registers_end_to_end_and_rescoring_matches(fire_dir, tmp_path, capsys):
    fire = tmp_path / "fire"
    shutil.copytree(fire_dir, fire)
    # A02 has control points but no images: it fails, S01 is registered.
    (fire / "Ground Truth" / "control_points_A02_1_2.txt").write_text("10 10 12 12\n")
    out = tmp_path / "out"
    rc = main(["--fire", str(fire), "--only", "S01", "--only", "A02", "--out", str(out),
               "model.transform=translation", "fit.max_steps=60", "fit.min_steps=0", "data.batch_size=256",
               "data.levels=3", "logging.enabled=false", "output.overlay=false"])
    assert rc == 0
    rows = read_pairs(out)
    assert rows["A02"]["status"] == "failed" and "A02_1.jpg" in rows["A02"]["error"]
    s01 = rows["S01"]
    assert s01["status"] == "ok" and int(s01["steps"]) > 0 and float(s01["seconds"]) > 0
    assert float(s01["tre_mean"]) < 1.5  # from 3.6 px; a flipped matrix convention would give about 7 px
    for name in ("pairs.csv", "summary.md", "success.png"):
        assert (out / name).stat().st_size > 0
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind
    assert (out / "transforms" / "S01" / "transform.json").is_file()
    assert not (out / "transforms" / "A02" / "transform.json").exists()
    table = summary_table(out)
    assert table["A"][:4] == ["1", "1", "0.000", "0.000"] and table["all"][:2] == ["2", "1"]
    err = capsys.readouterr().err
    assert "[1/2] A02 ... FAILED:" in err and "[2/2] S01 ... mean TRE" in err

    # the layout written while registering is what --transforms reads: the same numbers come back
    rc = main(["--fire", str(fire), "--only", "S01", "--transforms", str(out / "transforms"),
               "--out", str(tmp_path / "again")])
    assert rc == 0
    again = read_pairs(tmp_path / "again")["S01"]
    assert {k: again[k] for k in s01} == s01


def test_batched_evaluation_writes_what_one_at_a_time_reads(fire_dir, tmp_path, capsys, monkeypatch):
    """--batch-size 2: S01 and A01 in one optimisation loop, A02 (no images) failed in its place; the result files
    are those of one-pair runs, so a --batch-size 1 run afterwards re-scores them instead of registering again.
    Each pair's landmark file is read once."""
    import drmime_pl.evaluation.run as run_module

    reads = []
    read_points = run_module.read_points
    monkeypatch.setattr(run_module, "read_points", lambda pair: reads.append(pair.name) or read_points(pair))
    fire = tmp_path / "fire"
    shutil.copytree(fire_dir, fire)
    (fire / "Ground Truth" / "control_points_A02_1_2.txt").write_text("10 10 12 12\n")
    out = tmp_path / "out"
    args = ["--fire", str(fire), "--only", "S01", "--only", "A0*", "--out", str(out), "model.transform=affine",
            "fit.max_steps=80", "fit.min_steps=0", "data.batch_size=256", "data.levels=3", "output.overlay=false",
            "model.init=identity"]
    assert main(args + ["--batch-size", "2"]) == 0
    assert sorted(reads) == ["A01", "A02", "S01"]
    rows = read_pairs(out)
    assert list(rows) == ["A01", "A02", "S01"]
    assert rows["A02"]["status"] == "failed" and "A02_1.jpg" in rows["A02"]["error"]
    assert float(rows["S01"]["tre_mean"]) < 1.5 and float(rows["A01"]["tre_mean"]) < 2.0
    err = capsys.readouterr().err
    assert "[1/3] A01 ... mean TRE" in err and "[2/3] A02 ... FAILED:" in err and "[3/3] S01 ... mean TRE" in err
    assert list((out / "logs" / "drmime-batch").glob("version_*/events.out.tfevents.*"))  # one TensorBoard run
    assert main(args) == 0  # one at a time now: nothing registered again
    again = read_pairs(out)
    assert {k: again["S01"][k] for k in ("tre_mean", "steps")} == {k: rows["S01"][k] for k in ("tre_mean", "steps")}
    s01_line = next(line for line in capsys.readouterr().err.splitlines() if line.startswith("[3/3] S01"))
    assert "registered earlier" in s01_line


@pytest.mark.parametrize("interrupt", ["keyboard", "registration"])
def test_interrupt_writes_the_pairs_done_and_exits_130(fire_dir, tmp_path, monkeypatch, capsys, interrupt):
    from drmime_pl.errors import RegistrationInterrupted

    transforms = tmp_path / "transforms"
    for name in TRUE:
        write_transform(transforms, name, TRUE[name], (SIZE, SIZE))
    real = sources.transform_from_dir

    def stop_at_p01(folder):
        get = real(folder)

        def wrapped(pair):
            if pair.name == "P01":  # second of A01, P01, S01
                raise KeyboardInterrupt if interrupt == "keyboard" else RegistrationInterrupted("interrupted at step 7")
            return get(pair)

        return wrapped

    monkeypatch.setattr(sources, "transform_from_dir", stop_at_p01)
    out = tmp_path / "out"
    assert main(["--fire", str(fire_dir), "--transforms", str(transforms), "--out", str(out)]) == 130
    assert list(read_pairs(out)) == ["A01"]
    assert "INTERRUPTED after 1 of 3 pairs" in (out / "summary.md").read_text()
    assert "[2/3] P01 ... interrupted" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ usage


def test_missing_pairs_file_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "nope.csv"
    proc = subprocess.run([sys.executable, "-m", "drmime_pl.evaluate", "--pairs", str(missing),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "not found" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["columns", "no-truth", "transforms-dir", "config-key", "no-match", "duplicate"])
def test_bad_usage_in_process(tmp_path, capsys, case):
    bad = tmp_path / "pairs.csv"
    bad.write_text("name,fixed_image,moving_image\na,x.jpg,y.jpg\n")
    dup = tmp_path / "dup.csv"
    dup.write_text("name,fixed_image,moving_image,fixed_landmarks,moving_landmarks\na,1,2,3,4\na,1,2,3,4\n")
    (tmp_path / "fire").mkdir()
    argv, expect = {
        "columns": (["--pairs", str(bad)], "missing column(s) fixed_landmarks, moving_landmarks"),
        "no-truth": (["--fire", str(tmp_path / "fire")], "Ground Truth"),
        "transforms-dir": (["--pairs", str(BIRL / "pairs.csv"), "--transforms", str(tmp_path / "t")], "not found"),
        "config-key": (["--pairs", str(BIRL / "pairs.csv"), "model.nonsense=1"], "model.nonsense"),
        "no-match": (["--pairs", str(BIRL / "pairs.csv"), "--only", "zzz*"], "no pair matches"),
        "duplicate": (["--pairs", str(dup)], "appears twice"),
    }[case]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], lines
