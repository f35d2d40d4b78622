"""Issue 7: untrusted files and user mistakes.

Each case must end in one line on stderr, exit status 2 and nothing written (or, for image formats, the right
pixels): crafted checkpoints that would run code, decompression bombs, FIFOs, palette PNGs, 32-bit TIFFs, EXIF
orientation, config values that used to end in tracebacks, unusable output folders, a full disk while a checkpoint
is written, and FIRE pair names that would escape the output folder.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import drmime_pl
from drmime_pl.errors import CheckpointError, ConfigError, ImageError
from drmime_pl.io.images import read_image

from .conftest import REPO, textured_image, write_png, write_shifted_pair

QUICK = ["fit.max_steps=20", "fit.min_steps=20", "data.batch_size=128", "logging.progress_bar=false",
         "model.transform=affine", "model.init=identity"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_shifted_pair(tmp_path_factory.mktemp("pair"), seed=3, dx=2.0, dy=-1.0)


def run_cli(module, args, cwd, timeout=120, code=None):
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})


def fit_args(pair, tmp_path, *extra):
    return [f"data.fixed={pair[0]}", f"data.moving={pair[1]}", f"output.dir={tmp_path / 'out'}",
            f"logging.log_dir={tmp_path / 'logs'}", *QUICK, *extra]


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("drmime_pl"), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def no_temporaries(root: Path):
    return [p for p in root.rglob("*") if ".tmp" in p.name]


# ------------------------------------------------------------------------------------- 1. crafted checkpoint
class _RunsCode:
    """Pickles to a call of os.system: loading it with weights_only=False runs the command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _crafted_checkpoint(tmp_path) -> tuple:
    marker = tmp_path / "code_ran"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"identity": _RunsCode(marker)}}, ckpt)
    return ckpt, marker


def test_crafted_checkpoint_runs_no_code_cli(pair, tmp_path):
    ckpt, marker = _crafted_checkpoint(tmp_path)
    proc = run_cli("drmime_pl.fit", fit_args(pair, tmp_path, f"fit.ckpt_path={ckpt}"), cwd=tmp_path)
    assert_one_line_error(proc, "evil.ckpt", "refused")
    assert not marker.exists(), "the checkpoint's pickle ran code"
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()


def test_lightning_resume_loads_weights_only(tmp_path):
    from drmime_pl.training.checkpoint_io import AtomicCheckpointIO

    ckpt, marker = _crafted_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="refused"):
        AtomicCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()
    torch.save({"global_step": 3, "state_dict": {"w": torch.ones(2)}}, tmp_path / "plain.ckpt")
    assert AtomicCheckpointIO().load_checkpoint(tmp_path / "plain.ckpt")["global_step"] == 3


def test_weights_only_warning_is_not_silenced():
    import inspect

    from drmime_pl.training import fit as fit_module

    assert "weights_only" not in inspect.getsource(fit_module.quiet_lightning)


# -------------------------------------------------------------------------------------- 2. decompression bomb
def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(path: Path, width: int = 60000, height: int = 60000) -> Path:
    """A small PNG whose header declares width x height 8-bit grey pixels (the data: 64 rows of zeros)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * ((width + 1) * 64), 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def test_decompression_bomb_refused_before_decoding_cli(pair, tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100_000
    proc = run_cli("drmime_pl.fit", fit_args(pair, tmp_path, f"data.moving={bomb}"), cwd=tmp_path, timeout=60)
    assert_one_line_error(proc, "bomb.png", "60000x60000", "data.max_pixels")
    assert not (tmp_path / "out").exists()


def test_max_pixels_setting(pair, tmp_path):
    with pytest.raises(ImageError, match="data.max_pixels=10000"):
        drmime_pl.register(str(pair[0]), str(pair[1]), overrides=QUICK + ["data.max_pixels=10000"])
    with pytest.raises(ImageError, match="mask.png.*data.max_pixels"):  # masks are files too
        big = write_png(tmp_path / "mask.png", torch.ones(1, 129, 129))
        drmime_pl.register(str(pair[0]), str(pair[1]), fixed_mask=str(big),
                           overrides=QUICK + [f"data.max_pixels={128 * 128}"])
    reg = drmime_pl.register(str(pair[0]), str(pair[1]), overrides=QUICK + [f"data.max_pixels={128 * 128}"])
    assert reg.fixed_shape == (128, 128)


# ------------------------------------------------------------------------------------------ 12. not a file
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_not_read(pair, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    proc = run_cli("drmime_pl.fit", fit_args(pair, tmp_path, f"data.fixed={fifo}"), cwd=tmp_path, timeout=60)
    assert_one_line_error(proc, "pipe.png", "not a regular file")
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(fifo)


# ----------------------------------------------------------------------------------- 8-10. pixels as shown
def test_palette_png_is_expanded_to_rgb(tmp_path):
    rng = np.random.default_rng(0)
    indices = rng.integers(0, 4, (40, 50), dtype=np.uint8)
    im = Image.fromarray(indices, mode="P")
    im.putpalette([250, 10, 10, 10, 200, 30, 0, 0, 255, 128, 128, 128] + [0, 0, 0] * 252)
    im.save(tmp_path / "palette.png")
    with Image.open(tmp_path / "palette.png") as check:
        assert check.mode == "P"
        expected = np.asarray(check.convert("RGB"), dtype=np.float32) / 255.0
    got = read_image(tmp_path / "palette.png")
    assert got.shape == (3, 40, 50)
    assert np.allclose(got.permute(1, 2, 0).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("dtype", ["int32", "uint32"])
def test_32bit_tiff_is_not_clipped(tmp_path, dtype):
    import tifffile

    values = np.linspace(0, 4_000_000, 64 * 64).reshape(64, 64).astype(dtype)
    tifffile.imwrite(tmp_path / "counts.tif", values)
    got = read_image(tmp_path / "counts.tif")[0].double().numpy()
    expected = values.astype(np.float64) / values.max()  # min is 0: the image's own range
    assert np.allclose(got, expected, atol=1e-6)
    assert (got >= 0.999999).sum() == 1  # only the brightest pixel is white, nothing clipped


def test_int32_array_scaled_by_its_range():
    from drmime_pl.io.images import to_image_tensor

    t = to_image_tensor(np.array([[-5, 0], [70000, 100000]], dtype=np.int32))
    assert torch.allclose(t[0], torch.tensor([[0.0, 5 / 100005], [70005 / 100005, 1.0]]))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_for_png(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, (30, 44), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as im:
        shown = np.asarray(ImageOps.exif_transpose(im))
    got = (read_image(tmp_path / "o.png")[0] * 255).round().to(torch.uint8).numpy()
    assert got.shape == shown.shape and np.array_equal(got, shown)


def test_exif_rotated_jpeg_equals_the_transposed_image(tmp_path):
    """A JPEG stored sideways with orientation 6 reads as the upright image (as a viewer shows it), and a fixed
    landmark maps as in the upright image."""
    upright = (textured_image(96, seed=2)[0].numpy() * 255).astype(np.uint8)[:, :80]  # 96 rows x 80 columns
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # rotated 90 deg counter-clockwise: orientation 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "sideways.jpg", quality=100, subsampling=0, exif=exif)
    Image.fromarray(upright).save(tmp_path / "upright.jpg", quality=100, subsampling=0)
    got, ref = read_image(tmp_path / "sideways.jpg"), read_image(tmp_path / "upright.jpg")
    assert got.shape == ref.shape == (1, 96, 80)
    assert float((got - ref).abs().mean()) < 2 / 255
    # the landmark at row 10, column 70 of the upright image is that pixel of what was read
    assert abs(float(got[0, 10, 70]) - upright[10, 70] / 255) < 8 / 255


# ------------------------------------------------------------------------- 11. config mistakes: exit 2, one line
CONFIG_CASES = {
    "seed -1": (["fit.seed=-1"], ["fit.seed"]),
    "unset env interpolation": (["data.fixed=${oc.env:DRMIME_SURELY_UNSET}"], ["data.fixed", "DRMIME_SURELY_UNSET"]),
    "list index past the end": (["model.mine_hidden.5=3"], ["model.mine_hidden.5"]),
    "huge batch": (["data.batch_size=1000000000"], ["data.batch_size", "GB"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_mistakes_are_one_line_errors(case, pair, tmp_path):
    extra, words = CONFIG_CASES[case]
    proc = run_cli("drmime_pl.fit", fit_args(pair, tmp_path, *extra), cwd=tmp_path, timeout=60)
    assert_one_line_error(proc, *words)
    assert not (tmp_path / "out").exists() and not (tmp_path / "logs").exists()


def test_precision_64_registers(pair, tmp_path):
    proc = run_cli("drmime_pl.fit", fit_args(pair, tmp_path, "fit.precision=64", "logging.enabled=false"),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "transform.json").is_file()


def test_config_yaml_is_resolved(pair, tmp_path, monkeypatch):
    monkeypatch.setenv("DRMIME_TEST_STEPS", "12")
    drmime_pl.register(str(pair[0]), str(pair[1]), overrides=QUICK + ["fit.max_steps=${oc.env:DRMIME_TEST_STEPS}",
                                                                      "fit.min_steps=${fit.max_steps}"],
                       output_dir=str(tmp_path / "out"))
    text = (tmp_path / "out" / "config.yaml").read_text()
    assert "${" not in text and "max_steps: 12" in text and "min_steps: 12" in text


# ----------------------------------------------------------------------------------- 6. unusable folders
FOLDER_CASES = {
    "log_dir is a file": ("logging.log_dir", lambda t: t / "afile"),
    "output.dir is a file": ("output.dir", lambda t: t / "afile"),
    "output.dir under a file": ("output.dir", lambda t: t / "afile" / "sub"),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_unusable_folder_found_before_the_images(case, pair, tmp_path):
    key, where = FOLDER_CASES[case]
    (tmp_path / "afile").write_text("a file")
    # the fixed image does not exist either: the folder must be reported first (checked before loading)
    proc = run_cli("drmime_pl.fit", fit_args(pair, tmp_path, "data.fixed=no_such.png", f"{key}={where(tmp_path)}"),
                   cwd=tmp_path, timeout=60)
    assert_one_line_error(proc, key, "afile")
    assert not (tmp_path / "logs").exists() and not (tmp_path / "out").exists()


def test_unwritable_folder_is_a_config_error(pair, tmp_path, monkeypatch):
    import drmime_pl.io.rundir as rundir

    monkeypatch.setattr(rundir.os, "access", lambda path, mode: Path(path) != tmp_path / "ro")
    (tmp_path / "ro").mkdir()
    with pytest.raises(ConfigError, match="output.dir.*not writable"):
        drmime_pl.register(str(pair[0]), str(pair[1]), overrides=QUICK, output_dir=str(tmp_path / "ro" / "x"))


# ------------------------------------------------------------------------- 11. a full disk while checkpointing
DISK_FULL = """
import errno, sys
from pytorch_lightning.plugins.io import TorchCheckpointIO

def full(self, checkpoint, path, storage_options=None):
    with open(path, "wb") as fh:
        fh.write(b"partial")
    raise OSError(errno.ENOSPC, "No space left on device")

TorchCheckpointIO.save_checkpoint = full
from drmime_pl.fit import main
sys.exit(main(sys.argv[1:]))
"""


def test_disk_full_while_checkpointing(pair, tmp_path):
    proc = run_cli(None, fit_args(pair, tmp_path, "logging.checkpoint_every_n_steps=5"), cwd=tmp_path,
                   code=DISK_FULL)
    assert_one_line_error(proc, "last.ckpt", "No space left on device")
    assert not (tmp_path / "out" / "transform.json").exists()
    assert no_temporaries(tmp_path) == []
    assert not list((tmp_path / "logs").rglob("*.ckpt"))


# ---------------------------------------------------------------------------- 13. FIRE names stay inside OUT
def test_fire_pair_name_dotdot_is_refused(tmp_path):
    fire = tmp_path / "FIRE"
    (fire / "Ground Truth").mkdir(parents=True)
    (fire / "Images").mkdir()
    (fire / "Ground Truth" / "control_points_.._1_2.txt").write_text("1 2 3 4\n")
    (tmp_path / "transforms").mkdir()
    proc = run_cli("drmime_pl.evaluate", ["--fire", str(fire), "--transforms", str(tmp_path / "transforms"),
                                          "--out", str(tmp_path / "out" / "inner")], cwd=tmp_path, timeout=60)
    assert_one_line_error(proc, "'..'", "plain folder name")
    assert not (tmp_path / "out").exists()
