"""``python -m drmime_pl.fit --pairs PAIRS.csv --out DIR``: every pair of a list registered in one process, a
failed pair reported without stopping the others, a list started again skipping what it finished, bad usage
refused before anything is written."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from drmime_pl.cli import fit_main

from .conftest import write_shifted_pair

#: Known translations (fixed px -> moving px) of the built pairs.
SHIFTS = {"left": (3.0, -2.0), "right": (-4.0, 5.0)}
QUIET = ["logging.enabled=false"]


def write_list(folder: Path, missing: bool = True) -> Path:
    """``pairs.csv`` with the columns a registration list needs (no landmarks), paths relative to it; with
    ``missing``, a third pair whose moving image does not exist."""
    rows = []
    for name, (dx, dy) in SHIFTS.items():
        (folder / name).mkdir(parents=True)
        write_shifted_pair(folder / name, seed=len(rows), dx=dx, dy=dy)
        rows.append([name, f"{name}/fixed.png", f"{name}/moving.png"])
    if missing:
        rows.append(["broken", "left/fixed.png", "broken/moving.png"])
    path = folder / "pairs.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([["name", "fixed_image", "moving_image"]] + rows)
    return path


def read_results(out: Path) -> dict:
    with (out / "results.csv").open(newline="") as fh:
        return {row["name"]: row for row in csv.DictReader(fh)}


def corner_error(matrix, dx: float, dy: float, size: int = 128) -> float:
    corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], dtype=float)
    truth = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype=float)
    return float(np.abs(corners @ np.asarray(matrix).T - corners @ truth.T)[:, :2].max())


@pytest.mark.parametrize("batch_size", [1, 2])
def test_list_registers_every_pair_reports_the_failed_one_and_skips_finished_ones(tmp_path, capsys, batch_size):
    pairs, out = write_list(tmp_path / "data"), tmp_path / "out"
    assert fit_main(["--pairs", str(pairs), "--out", str(out), "--batch-size", str(batch_size)] + QUIET) == 1
    err = capsys.readouterr().err
    assert "[1/3] left ... ok" in err and "[3/3] broken ... FAILED:" in err and "broken/moving.png" in err
    rows = read_results(out)
    assert list(rows) == ["left", "right", "broken"]
    for name, (dx, dy) in SHIFTS.items():
        row = rows[name]
        assert row["status"] == "ok" and row["error"] == ""
        matrix = json.loads(row["matrix"])
        assert corner_error(matrix, dx, dy) < 1.0, (name, matrix)
        folder = Path(row["output_dir"])
        assert folder == out / "transforms" / name
        saved = json.loads((folder / "transform.json").read_text())
        assert np.allclose(saved["matrix"], matrix)
        assert (folder / "warped.png").is_file() and (folder / "transform.tfm").is_file()
    assert rows["broken"]["status"] == "failed" and rows["broken"]["matrix"] == ""
    assert not (out / "transforms" / "broken" / "transform.json").exists()

    # Started again: the finished pairs are not registered again, the broken one is tried again.
    assert fit_main(["--pairs", str(pairs), "--out", str(out), "--batch-size", str(batch_size)] + QUIET) == 1
    assert "[1/3] left ... ok [registered earlier" in capsys.readouterr().err
    again = read_results(out)
    assert [again[n]["registered_earlier"] for n in SHIFTS] == ["True", "True"]
    assert all(again[n]["matrix"] == rows[n]["matrix"] for n in SHIFTS)


def test_a_list_whose_pairs_all_register_exits_0_and_ignores_landmark_columns(tmp_path, capsys):
    data = tmp_path / "data"
    pairs = write_list(data, missing=False)
    with pairs.open() as fh:  # an evaluate list: landmark and modality columns are read, and not needed
        lines = fh.read().splitlines()
    lines = [lines[0] + ",fixed_landmarks,moving_landmarks,modality"] + [line + ",,,synthetic" for line in lines[1:]]
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert fit_main(["--pairs", str(pairs), "--out", str(out), "--batch-size", "2"] + QUIET) == 0
    assert "2 of 2 pairs: 2 registered" in capsys.readouterr().out
    assert [row["status"] for row in read_results(out).values()] == ["ok", "ok"]


def test_interrupted_list_keeps_the_pairs_done_and_exits_130(tmp_path, capsys, monkeypatch):
    import drmime_pl.training.fit as training_fit

    real_fit, calls = training_fit.fit, []

    def fit_then_ctrl_c(cfg, *args, **kwargs):
        calls.append(cfg.output.dir)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(cfg, *args, **kwargs)

    monkeypatch.setattr(training_fit, "fit", fit_then_ctrl_c)
    pairs, out = write_list(tmp_path / "data"), tmp_path / "out"
    assert fit_main(["--pairs", str(pairs), "--out", str(out), "--batch-size", "1"] + QUIET) == 130
    captured = capsys.readouterr()
    assert "interrupted after 1 of 3 pairs" in captured.err
    assert list(read_results(out)) == ["left"]
    assert not (out / "transforms" / "right" / "transform.json").exists()


@pytest.mark.parametrize("case", ["no-out", "out-alone", "batch-alone", "columns", "ckpt", "mask", "out-is-file",
                                  "config-key"])
def test_bad_usage_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, case):
    pairs = write_list(tmp_path / "data", missing=False)
    out = tmp_path / "out"
    args = {
        "no-out": ["--pairs", str(pairs)],
        "out-alone": ["--out", str(out)],
        "batch-alone": ["--batch-size", "2"],
        "columns": ["--pairs", str(tmp_path / "bad.csv"), "--out", str(out)],
        "ckpt": ["--pairs", str(pairs), "--out", str(out), "fit.ckpt_path=last.ckpt"],
        "mask": ["--pairs", str(pairs), "--out", str(out), "data.fixed_mask=mask.png"],
        "out-is-file": ["--pairs", str(pairs), "--out", str(tmp_path / "taken")],
        "config-key": ["--pairs", str(pairs), "--out", str(out), "fit.max_stepz=3"],
    }[case]
    (tmp_path / "bad.csv").write_text("name,fixed_image\nx,a.png\n")
    (tmp_path / "taken").write_text("a file")
    try:
        status = fit_main(args)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error" in err, err
    expected = {"no-out": "--pairs needs --out", "out-alone": "go with --pairs", "batch-alone": "go with --pairs",
                "columns": "missing column(s) moving_image", "ckpt": "fit.ckpt_path", "mask": "data.fixed_mask",
                "out-is-file": "not a folder", "config-key": "max_stepz"}[case]
    assert expected in err
    assert not out.exists()
    assert (tmp_path / "taken").read_text() == "a file"


def test_a_fixed_mask_column_gives_each_pair_its_mask(tmp_path, capsys):
    """The mask is read for its pair: an empty one fails that pair (and only it), a good one is used and recorded
    in the pair's config.yaml (so that a list started again with another mask registers the pair again)."""
    from PIL import Image

    data = tmp_path / "data"
    pairs = write_list(data, missing=False)
    square = np.zeros((128, 128), dtype=np.uint8)
    square[16:112, 16:112] = 255
    Image.fromarray(square).save(data / "left" / "mask.png")
    Image.fromarray(np.zeros((128, 128), dtype=np.uint8)).save(data / "right" / "mask.png")
    lines = pairs.read_text().splitlines()
    lines = [lines[0] + ",fixed_mask"] + [line + f",{line.split(',')[0]}/mask.png" for line in lines[1:]]
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert fit_main(["--pairs", str(pairs), "--out", str(out), "--batch-size", "2"] + QUIET) == 1
    rows = read_results(out)
    assert rows["left"]["status"] == "ok" and corner_error(json.loads(rows["left"]["matrix"]), *SHIFTS["left"]) < 1.0
    assert rows["right"]["status"] == "failed" and "mask is empty" in rows["right"]["error"]
    assert "right/mask.png" in rows["right"]["error"]
    config = (out / "transforms" / "left" / "config.yaml").read_text()
    assert str(data / "left" / "mask.png") in config
