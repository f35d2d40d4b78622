"""Issue 11, part 6: files land where the user said, and configs are usable by name from anywhere.

* ``drmime_pl/configs/*.yaml`` (package data) and the repository's ``configs/*.yaml`` are the same files;
* ``--config fire`` resolves from any working directory, and the bundled sample paths in it too;
* with ``output.dir`` set, logs and checkpoints go under ``<output.dir>/logs``, nothing under ``./logs``;
* ``drmime-fit`` works with the working directory outside the repository.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drmime_pl.config import load_config
from drmime_pl.errors import ConfigError
from drmime_pl.paths import CONFIGS_DIR, find_config, log_root, packaged_configs, resume_run_dir

from .conftest import REPO, nonmonotonic, textured_image, write_png

REPO_CONFIGS = REPO / "configs"


def test_packaged_configs_are_the_repository_configs():
    repo = sorted(p.name for p in REPO_CONFIGS.glob("*.yaml"))
    packaged = sorted(p.name for p in CONFIGS_DIR.glob("*.yaml"))
    assert repo == packaged and "default.yaml" in packaged and "fire.yaml" in packaged
    for name in repo:
        assert (REPO_CONFIGS / name).read_bytes() == (CONFIGS_DIR / name).read_bytes(), (
            f"configs/{name} and drmime_pl/configs/{name} differ: edit one, copy it over the other")


def test_pyproject_ships_the_configs():
    assert '"configs/*.yaml"' in (REPO / "pyproject.toml").read_text()


def test_config_by_name_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert packaged_configs() == ["anhir", "default", "fire"]
    for name in ("fire", "fire.yaml"):
        cfg = load_config(name)
        assert cfg.logging.name == "fire" and cfg.model.transform == "perspective"
        if (REPO / "samples" / "fire").is_dir():  # the bundled sample, found from elsewhere
            assert Path(cfg.data.fixed).is_absolute() and Path(cfg.data.fixed).is_file()
            assert Path(cfg.data.moving).is_file()
    assert load_config("default").data.fixed is None
    # Overrides are the user's own paths: never rewritten.
    assert load_config("fire", ["data.fixed=samples/fire/A01_1.jpg"]).data.fixed == "samples/fire/A01_1.jpg"
    # A file in the working directory is used as given; a path with a folder part is never looked up by name.
    (tmp_path / "fire.yaml").write_text("logging:\n  name: mine\n")
    assert load_config("fire.yaml").logging.name == "mine"
    with pytest.raises(ConfigError, match="configs/fire.yaml: config file not found.*anhir, default, fire"):
        load_config("configs/fire.yaml")
    with pytest.raises(ConfigError, match="nowhere: config file not found"):
        find_config("nowhere")


def test_repository_configs_still_work_from_the_root(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config("configs/fire.yaml")
    assert cfg.data.fixed == "samples/fire/A01_1.jpg"  # exists from the root: left relative


def test_cli_config_by_name_from_another_directory(tmp_path):
    # A bad override stops before any image is read: the error names the key, not a missing config file.
    proc = subprocess.run([sys.executable, "-m", "drmime_pl.fit", "--config", "fire", "fit.max_steps=0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "fit.max_steps" in proc.stderr and "not found" not in proc.stderr, proc.stderr


def test_log_root_and_resume_run_dir(tmp_path):
    assert log_root("logs", None) == Path("logs")
    assert log_root("logs", "runs/ab") == Path("runs/ab/logs")
    assert log_root(str(tmp_path / "tb"), "runs/ab") == tmp_path / "tb"
    run = tmp_path / "logs" / "x" / "version_3"
    (run / "checkpoints").mkdir(parents=True)
    assert resume_run_dir(run / "checkpoints" / "last.ckpt") == run
    assert resume_run_dir(tmp_path / "elsewhere.ckpt") is None
    assert resume_run_dir(None) is None


def test_drmime_fit_outside_the_repository_writes_only_under_output_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fixed_img = textured_image(128, seed=5)
    fixed = write_png(data / "a.png", fixed_img)
    moving = write_png(data / "b.png", torch.roll(nonmonotonic(fixed_img), shifts=(1, 2), dims=(1, 2)))
    work = tmp_path / "work"
    work.mkdir()
    exe = shutil.which("drmime-fit")
    cmd = [exe] if exe else [sys.executable, "-m", "drmime_pl.fit"]
    proc = subprocess.run(
        [*cmd, "--config", "default", f"data.fixed={fixed}", f"data.moving={moving}", "output.dir=out",
         "fit.max_steps=20", "fit.min_steps=20", "data.batch_size=128", "model.transform=affine",
         "model.init=identity", "output.warped=false", "output.itk=false", "output.elastix=false"],
        cwd=work, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert not (work / "logs").exists()
    assert sorted(p.name for p in work.iterdir()) == ["out"]
    out = work / "out"
    result = json.loads((out / "transform.json").read_text())
    assert result["steps"] == 20 and result["wall_seconds"] > 0
    run = out / "logs" / "drmime" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    assert (work / result["checkpoint"]).resolve() == (run / "checkpoints" / "last.ckpt").resolve()
