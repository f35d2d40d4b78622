"""Bad input, faults and reproducibility, through the command line (real subprocesses) and the Python API.

Every bad input must give: a one-line message naming the file or setting, exit status 2 (CLI) or a typed
exception (API), and no transform.json.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import drmime_pl
from drmime_pl.core.checks import degeneracy
from drmime_pl.errors import CheckpointError, ConfigError, ImageError, RegistrationError
from drmime_pl.core.geometry import warp_image

from .conftest import REPO, textured_image, write_png

QUICK = ["fit.max_steps=30", "fit.min_steps=30", "data.batch_size=128", "logging.progress_bar=false"]


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad input files, made once."""
    d = tmp_path_factory.mktemp("inputs")
    moving = textured_image(128, seed=5)
    fixed = warp_image(moving, torch.tensor([[1, 0, 3.0], [0, 1, -2.0], [0, 0, 1]], dtype=torch.float64), (128, 128))
    f = {"fixed": write_png(d / "fixed.png", fixed), "moving": write_png(d / "moving.png", moving)}
    f["dir"] = d / "a_directory"
    f["dir"].mkdir()
    (d / "notes.png").write_text("not an image")
    f["not_image"] = d / "notes.png"
    jpeg = d / "full.jpg"
    Image.fromarray((fixed[0] * 255).byte().numpy()).save(jpeg, quality=95)
    f["truncated_jpeg"] = d / "truncated.jpg"
    f["truncated_jpeg"].write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    f["truncated_png"] = d / "truncated.png"
    f["truncated_png"].write_bytes(f["fixed"].read_bytes()[: f["fixed"].stat().st_size // 2])
    f["tiny"] = write_png(d / "tiny.png", torch.rand(1, 8, 8))
    f["one_px_wide"] = write_png(d / "one_px_wide.png", torch.rand(1, 200, 1))
    f["constant"] = write_png(d / "constant.png", torch.full((1, 128, 128), 0.4))
    nan = np.random.default_rng(0).random((128, 128)).astype(np.float32)
    nan[5, 7] = np.nan
    Image.fromarray(nan, mode="F").save(d / "nan.tif")
    f["nan_tiff"] = d / "nan.tif"
    inf = np.random.default_rng(0).random((128, 128)).astype(np.float32)
    inf[9, 9] = np.inf
    Image.fromarray(inf, mode="F").save(d / "inf.tif")
    f["inf_tiff"] = d / "inf.tif"
    f["mask_wrong_size"] = write_png(d / "mask_small.png", torch.ones(1, 64, 64))
    f["mask_empty"] = write_png(d / "mask_empty.png", torch.zeros(1, 128, 128))
    (d / "bad.yaml").write_text("data: [unclosed\n  - : :\n")
    f["bad_yaml"] = d / "bad.yaml"
    # A real checkpoint of an affine run on this pair, to resume from with mismatching settings.
    reg = drmime_pl.register(str(f["fixed"]), str(f["moving"]), transform="affine", log=True,
                             overrides=QUICK + [f"logging.log_dir={d / 'logs'}"])
    f["ckpt"] = Path(reg.checkpoint)
    return f


def cli(args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "drmime_pl.fit", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def base_args(files, tmp_path, fixed=None, moving=None):
    return [f"data.fixed={fixed or files['fixed']}", f"data.moving={moving or files['moving']}",
            f"output.dir={tmp_path / 'out'}", f"logging.log_dir={tmp_path / 'logs'}", *QUICK]


# ------------------------------------------------------------------------- bad input: one case per line
CASES = {
    # name: (overrides builder, expected words in the message, exception type for the API)
    "missing file": (lambda f: {"fixed": "no/such/image.png"}, ["no/such/image.png", "not found"], ImageError),
    "directory": (lambda f: {"fixed": f["dir"]}, ["a_directory", "directory"], ImageError),
    "not an image": (lambda f: {"fixed": f["not_image"]}, ["notes.png", "not a readable image"], ImageError),
    "truncated jpeg": (lambda f: {"fixed": f["truncated_jpeg"]}, ["truncated.jpg", "truncated"], ImageError),
    "truncated png": (lambda f: {"moving": f["truncated_png"]}, ["truncated.png", "truncated"], ImageError),
    "8x8 image": (lambda f: {"fixed": f["tiny"]}, ["tiny.png", "8x8", "data.min_level_size"], ImageError),
    "1 px wide": (lambda f: {"moving": f["one_px_wide"]}, ["one_px_wide.png", "1x200"], ImageError),
    "constant": (lambda f: {"fixed": f["constant"]}, ["constant.png", "constant", "impossible"], ImageError),
    "nan tiff": (lambda f: {"fixed": f["nan_tiff"]}, ["nan.tif", "NaN or infinite"], ImageError),
    "inf tiff": (lambda f: {"moving": f["inf_tiff"]}, ["inf.tif", "NaN or infinite"], ImageError),
    "mask size": (lambda f: {"extra": [f"data.fixed_mask={f['mask_wrong_size']}"]}, ["mask_small.png", "64x64"],
                  ImageError),
    "mask empty": (lambda f: {"extra": [f"data.fixed_mask={f['mask_empty']}"]}, ["mask_empty.png", "empty"],
                   ImageError),
    "unknown key": (lambda f: {"extra": ["data.fixd=a.png"]}, ["data.fixd", "unknown"], ConfigError),
    "wrong type": (lambda f: {"extra": ["fit.max_steps=lots"]}, ["fit.max_steps"], ConfigError),
    "lr zero": (lambda f: {"extra": ["optim.lr_mine=0"]}, ["optim.lr_mine", "> 0"], ConfigError),
    "lr negative": (lambda f: {"extra": ["optim.lr_shared=-0.1"]}, ["optim.lr_shared", "> 0"], ConfigError),
    "batch zero": (lambda f: {"extra": ["data.batch_size=0"]}, ["data.batch_size"], ConfigError),
    "levels zero": (lambda f: {"extra": ["data.levels=0"]}, ["data.levels"], ConfigError),
    "steps zero": (lambda f: {"extra": ["fit.max_steps=0"]}, ["fit.max_steps"], ConfigError),
    "steps negative": (lambda f: {"extra": ["fit.max_steps=-5"]}, ["fit.max_steps"], ConfigError),
    "ckpt missing": (lambda f: {"extra": ["fit.ckpt_path=no/such.ckpt"]}, ["no/such.ckpt", "not found"],
                     CheckpointError),
    "ckpt other model": (lambda f: {"extra": [f"fit.ckpt_path={f['ckpt']}", "model.transform=perspective"]},
                         ["last.ckpt", "affine", "perspective"], CheckpointError),
    "ckpt other pair": (lambda f: {"moving": f["fixed"], "extra": [f"fit.ckpt_path={f['ckpt']}",
                                                                    "model.transform=affine"]},
                        ["last.ckpt", "another image pair"], CheckpointError),
}


def _apply(case, files):
    spec = CASES[case][0](files)
    return spec.get("fixed"), spec.get("moving"), spec.get("extra", [])


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_cli(case, files, tmp_path):
    fixed, moving, extra = _apply(case, files)
    args = base_args(files, tmp_path, fixed, moving) + extra
    if "model.transform" not in " ".join(extra):
        args.append("model.transform=affine")
    proc = cli(args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in CASES[case][1]:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "out" / "transform.json").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_api(case, files, tmp_path):
    fixed, moving, extra = _apply(case, files)
    transform = "perspective" if "model.transform=perspective" in extra else "affine"
    extra = [e for e in extra if not e.startswith("model.transform")]
    with pytest.raises(CASES[case][2]) as info:
        drmime_pl.register(str(fixed or files["fixed"]), str(moving or files["moving"]), transform=transform,
                           overrides=QUICK + extra, output_dir=str(tmp_path / "out"))
    assert "\n" not in str(info.value)
    for word in CASES[case][1]:
        assert word in str(info.value)
    assert not (tmp_path / "out" / "transform.json").exists()


def test_config_file_missing_and_not_yaml(files, tmp_path):
    proc = cli(["--config", "nowhere.yaml"], cwd=tmp_path)
    assert proc.returncode == 2 and "nowhere.yaml: config file not found" in proc.stderr
    proc = cli(["--config", str(files["bad_yaml"])], cwd=tmp_path)
    assert proc.returncode == 2 and "bad.yaml: not valid YAML" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ConfigError, match="not valid YAML"):
        drmime_pl.register(files["fixed"], files["moving"], config=str(files["bad_yaml"]))


def test_16bit_image_registers(files, tmp_path):
    sixteen = (np.asarray(Image.open(files["fixed"]), dtype=np.uint16) * 257)
    Image.fromarray(sixteen).save(tmp_path / "f16.png")
    assert np.asarray(Image.open(tmp_path / "f16.png")).max() > 255
    reg = drmime_pl.register(str(tmp_path / "f16.png"), str(files["moving"]), transform="translation",
                             overrides=["data.batch_size=256", "logging.progress_bar=false"])
    assert np.allclose(reg.matrix[:2, 2], [3.0, -2.0], atol=0.5)


# ------------------------------------------------------------------------------------------------ faults
def test_outputs_are_atomic(files, tmp_path, monkeypatch):
    import drmime_pl.io.images as images

    def crash(image, path):
        Path(path).with_name(f".{Path(path).name}.tmp").write_bytes(b"half")  # a half-written temporary
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images, "save_image_atomic", crash)
    with pytest.raises(drmime_pl.DrmimeError, match="cannot write the results"):
        drmime_pl.register(str(files["fixed"]), str(files["moving"]), transform="affine", overrides=QUICK,
                           output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "transform.json").exists()
    assert not (tmp_path / "out" / "warped.png").exists()


def test_save_image_atomic_leaves_no_partial_file(tmp_path, monkeypatch):
    from drmime_pl.io.images import save_image_atomic

    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        save_image_atomic(torch.rand(3, 8, 8), tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_nan_loss_stops_and_keeps_last_good_transform(files, tmp_path, monkeypatch):
    from drmime_pl.training.module import DrmimeModule

    original = DrmimeModule.mutual_information

    def poisoned(self, batch):
        mi, objective = original(self, batch)
        if self.global_step >= 20:
            objective = objective * float("nan")
        return mi, objective

    monkeypatch.setattr(DrmimeModule, "mutual_information", poisoned)
    with pytest.raises(RegistrationError, match="NaN or infinite at step 21.*last good transform is in") as info:
        drmime_pl.register(str(files["fixed"]), str(files["moving"]), transform="affine", log=True,
                           overrides=QUICK + [f"logging.log_dir={tmp_path / 'logs'}"],
                           output_dir=str(tmp_path / "out"))
    ckpt = torch.load(str(info.value).split("is in ")[1].split(";")[0].split(". ")[0], weights_only=False)
    shared = ckpt["state_dict"]["transform.shared"]
    assert torch.isfinite(shared).all() and float(shared.abs().sum()) > 0  # moved, and finite
    assert not (tmp_path / "out" / "transform.json").exists()


def test_nan_loss_cli_exit_code(files, tmp_path):
    proc = cli(base_args(files, tmp_path) + ["optim.lr_mine=1e30"], cwd=tmp_path)
    assert proc.returncode == 1 and "NaN or infinite" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "transform.json").exists()


def test_degenerate_transform_is_reported(files, tmp_path):
    # model.keep_best=false: the optimised transform is the result, so its degeneracy must be caught.
    flies_off = ["fit.max_steps=60", "optim.lr_shared=3", "optim.warmup_steps=0"]
    with pytest.raises(RegistrationError, match="out of view"):
        drmime_pl.register(str(files["fixed"]), str(files["moving"]), transform="translation",
                           overrides=QUICK + flies_off + ["model.keep_best=false"], output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "transform.json").exists()


def test_keep_best_replaces_a_transform_that_flew_off(files, tmp_path):
    # With the default model.keep_best the start (or identity) replaces the runaway transform, and says so.
    reg = drmime_pl.register(str(files["fixed"]), str(files["moving"]), transform="translation",
                             overrides=QUICK + ["fit.max_steps=60", "optim.lr_shared=3", "optim.warmup_steps=0"])
    assert reg.quality["chosen"] in ("initial", "identity"), reg.quality
    assert reg.quality["ngf_optimised"] is None or reg.quality["ngf_optimised"] < reg.quality["ngf"]  # None: no overlap


def test_degeneracy_checks():
    hw = (100, 100)
    assert degeneracy(np.eye(3), hw, hw) is None
    assert "area" in degeneracy(np.diag([0.01, 0.01, 1.0]), hw, hw)
    assert "out of view" in degeneracy(np.array([[1, 0, 500.0], [0, 1, 0], [0, 0, 1]]), hw, hw)
    assert "infinity" in degeneracy(np.array([[1, 0, 0], [0, 1, 0], [-0.02, 0, 1.0]]), hw, hw)
    assert "NaN" in degeneracy(np.full((3, 3), np.nan), hw, hw)


def _wait_for(path: Path, proc, timeout=90):
    start = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() - start < timeout, f"{path} never appeared"
        time.sleep(0.2)


def _long_run(files, tmp_path, *extra):
    args = base_args(files, tmp_path) + ["model.transform=affine", "fit.max_steps=400", "fit.min_steps=400",
                                         "logging.checkpoint_every_n_steps=20", *extra]
    return subprocess.Popen([sys.executable, "-m", "drmime_pl.fit", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_then_resume_finishes(files, tmp_path):
    proc = _long_run(files, tmp_path)
    ckpt = tmp_path / "logs" / "drmime" / "version_0" / "checkpoints" / "last.ckpt"
    _wait_for(ckpt, proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (tmp_path / "out" / "transform.json").exists()
    step = torch.load(ckpt, weights_only=False)["global_step"]
    assert 0 < step < 400
    done = cli(base_args(files, tmp_path) + ["model.transform=affine", "fit.max_steps=400", "fit.min_steps=400",
                                             f"fit.ckpt_path={ckpt}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "out" / "transform.json").read_text())
    assert result["steps"] == 400
    assert np.allclose(np.array(result["matrix"])[:2, 2], [3.0, -2.0], atol=1.0)


def test_sigint_saves_checkpoint_and_says_how_to_resume(files, tmp_path):
    proc = _long_run(files, tmp_path)
    _wait_for(tmp_path / "logs" / "drmime" / "version_0" / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted at step" in stderr and "resume with fit.ckpt_path=" in stderr and "Traceback" not in stderr
    ckpt = Path(stderr.split("fit.ckpt_path=")[-1].strip())
    assert ckpt.is_file() and 0 < torch.load(ckpt, weights_only=False)["global_step"] < 400
    assert not (tmp_path / "out" / "transform.json").exists()


# --------------------------------------------------------------------------------------- reproducibility
def test_same_inputs_same_matrix_and_versions_recorded(files, tmp_path):
    runs = []
    for name in ("a", "b"):
        reg = drmime_pl.register(str(files["fixed"]), str(files["moving"]), transform="affine", overrides=QUICK,
                                 output_dir=str(tmp_path / name))
        runs.append(json.loads((tmp_path / name / "transform.json").read_text()))
    assert runs[0]["matrix"] == runs[1]["matrix"]
    assert runs[0]["seed"] == 0
    assert set(runs[0]["versions"]) >= {"drmime_pl", "torch", "pytorch_lightning"}
    assert runs[0]["versions"]["torch"] == torch.__version__


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_requested_without_gpu_is_a_config_error(files, tmp_path):
    with pytest.raises(ConfigError, match="fit.accelerator='gpu'"):
        drmime_pl.register(str(files["fixed"]), str(files["moving"]), overrides=QUICK + ["fit.accelerator=gpu"])
    proc = cli(base_args(files, tmp_path) + ["fit.accelerator=gpu"], cwd=tmp_path)
    assert proc.returncode == 2 and "fit.accelerator" in proc.stderr and "Traceback" not in proc.stderr
