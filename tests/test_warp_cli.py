"""Issue 11: ``python -m drmime_pl.warp`` applies a saved transform to images and landmark files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from drmime_pl.core.resample import warp_array
from drmime_pl.io.native import read_native
from drmime_pl.warp import main

from .io_helpers import AFFINE, PERSPECTIVE, REPO, inside_mask, pattern, run_warp_cli

FIXED_HW, MOVING_HW = (60, 80), (70, 90)


@pytest.fixture
def transform(tmp_path):
    path = tmp_path / "transform.json"
    path.write_text(json.dumps({"matrix": PERSPECTIVE.tolist(), "fixed_shape": list(FIXED_HW),
                                "moving_shape": list(MOVING_HW), "transform": "perspective"}))
    return path


def test_function_and_module_named_warp_both_work():
    """``drmime_pl.warp`` stays the API function even once the ``drmime_pl.warp`` submodule is imported."""
    code = (
        "import numpy as np, drmime_pl\n"
        "from drmime_pl import warp\n"
        "a = np.random.rand(20, 30)\n"
        "assert warp(a, np.eye(3), (20, 30)).shape == (20, 30)\n"
        "import drmime_pl.warp\n"
        "assert drmime_pl.warp(a, np.eye(3), (10, 12)).shape == (10, 12)\n"
        "from drmime_pl import warp as again\n"
        "np.testing.assert_allclose(again(a, np.eye(3), (20, 30)), a, atol=1e-5)\n"
        "from drmime_pl.warp import main\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    r = run_warp_cli("--help")
    assert r.returncode == 0 and "--transform" in r.stdout and "--points" in r.stdout


def test_dtype_channels_and_stack_kept(tmp_path, transform):
    tifffile = pytest.importorskip("tifffile")
    # uint16 RGB PNG (16-bit colour) -> 16-bit PNG
    rgb16 = np.stack([np.rint(pattern(*MOVING_HW, 65535, p)).astype(np.uint16) for p in (0, 1, 2)], -1)
    from drmime_pl.io.native import png_bytes

    (tmp_path / "m16.png").write_bytes(png_bytes(rgb16))
    assert main(["-t", str(transform), "--moving", str(tmp_path / "m16.png"), "--out", str(tmp_path / "o16.png")]) == 0
    out = read_native(tmp_path / "o16.png")
    assert out.array.dtype == np.uint16 and out.array.shape == FIXED_HW + (3,)
    # a ZCYX uint16 stack -> every plane warped, shape and dtype kept
    stack = np.stack([np.stack([np.rint(pattern(*MOVING_HW, 4095, z + c)).astype(np.uint16) for c in range(2)])
                      for z in range(3)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    assert main(["-t", str(transform), "--moving", str(tmp_path / "stack.tif"), "--out", str(tmp_path / "o.tif")]) == 0
    with tifffile.TiffFile(tmp_path / "o.tif") as tf:
        got, axes = tf.series[0].asarray(), tf.series[0].axes
    assert got.dtype == np.uint16 and got.shape == (3, 2) + FIXED_HW and axes == "ZCYX"
    inside = inside_mask(PERSPECTIVE, FIXED_HW, MOVING_HW)
    single = warp_array(stack[2, 1], "YX", PERSPECTIVE, FIXED_HW)
    np.testing.assert_array_equal(got[2, 1], single)
    assert got[2, 1][inside].max() > 3000  # 12-bit data keeps its range (not scaled, not darkened)


def test_labels_nearest_and_fill(tmp_path, transform):
    labels = (np.arange(MOVING_HW[0] * MOVING_HW[1]).reshape(MOVING_HW) // 97 % 7 * 30 + 5).astype(np.uint8)
    Image.fromarray(labels).save(tmp_path / "labels.png")
    out = tmp_path / "l.png"
    assert main(["-t", str(transform), "--moving", str(tmp_path / "labels.png"), "--out", str(out),
                 "--order", "nearest", "--fill", "white"]) == 0
    got = np.asarray(Image.open(out))
    assert set(np.unique(got)) <= set(np.unique(labels)) | {255}
    outside = ~inside_mask(PERSPECTIVE, FIXED_HW, MOVING_HW, margin=-1.0)
    assert outside.any() and (got[outside] == 255).all()
    edge = warp_array(labels, "YX", PERSPECTIVE, FIXED_HW, order="nearest", fill="edge")
    assert set(np.unique(edge)) <= set(np.unique(labels))


def test_points_both_ways(tmp_path, transform):
    pts = np.array([[10.0, 20.0], [30.5, 40.25], [0.0, 0.0]])
    (tmp_path / "fixed.csv").write_text(",X,Y\n" + "".join(f"{i},{x},{y}\n" for i, (x, y) in enumerate(pts)))
    r = run_warp_cli("-t", transform, "--points", tmp_path / "fixed.csv", "--to", "moving", "--out", tmp_path / "m.csv")
    assert r.returncode == 0, r.stderr
    assert main(["-t", str(transform), "--points", str(tmp_path / "m.csv"), "--to", "fixed",
                 "--out", str(tmp_path / "back.csv")]) == 0
    from drmime_pl.io.landmarks import read_landmarks_csv

    moved = read_landmarks_csv(tmp_path / "m.csv")
    den = PERSPECTIVE[2, 0] * 10 + PERSPECTIVE[2, 1] * 20 + 1
    np.testing.assert_allclose(moved[0], (PERSPECTIVE[:2] @ [10, 20, 1]) / den, atol=1e-9)
    np.testing.assert_allclose(read_landmarks_csv(tmp_path / "back.csv"), pts, atol=1e-9)


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, transform, capsys):
    img = tmp_path / "m.png"
    Image.fromarray(np.rint(pattern(*MOVING_HW)).astype(np.uint8)).save(img)
    wrong = tmp_path / "small.png"
    Image.fromarray(np.rint(pattern(40, 50)).astype(np.uint8)).save(wrong)
    bad = tmp_path / "bad.json"
    bad.write_text('{"matrix": [1, 2]}')
    out = tmp_path / "out.png"
    cases = [
        (["-t", tmp_path / "missing.json", "--moving", img], "missing.json: transform file not found"),
        (["-t", bad, "--moving", img], "bad.json"),
        (["-t", transform, "--moving", tmp_path / "nope.png"], "nope.png: file not found"),
        (["-t", transform, "--moving", wrong], "--rescale"),
        (["-t", transform, "--moving", img, "--fill", "pink"], "--fill"),
    ]
    r = run_warp_cli(*cases[0][0], "--out", out)  # as a process: exit status 2, one line, no traceback
    assert r.returncode == 2 and r.stderr.strip() == f"drmime_pl: error: {tmp_path / 'missing.json'}: transform file not found"
    for args, expected in cases:
        code = main([str(a) for a in args] + ["--out", str(out)])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("drmime_pl: error: "), lines
        assert expected in lines[0]
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # --rescale: the same field of view at another resolution
    assert main(["-t", str(transform), "--moving", str(wrong), "--out", str(out), "--rescale"]) == 0
    assert np.asarray(Image.open(out)).shape == FIXED_HW
    # --like sets the output grid
    like = tmp_path / "like.png"
    Image.fromarray(np.zeros((120, 160), np.uint8)).save(like)
    assert main(["-t", str(transform), "--moving", str(img), "--like", str(like), "--rescale", "--out", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (120, 160)


def test_affine_warp_matches_geometry_warp():
    """warp_array is the same arithmetic as the registration's own warp (geometry.warp_image)."""
    import torch

    from drmime_pl.core.geometry import warp_image

    img = pattern(*MOVING_HW, 1.0).astype(np.float32)
    a = warp_array(img, "YX", AFFINE, FIXED_HW)
    b = warp_image(torch.from_numpy(img)[None], torch.tensor(AFFINE), FIXED_HW)[0].numpy()
    assert a.dtype == np.float32 and np.abs(a - b).max() < 1e-5


def test_native_read_follows_the_orientation_tag(tmp_path):
    """warp reads pixels turned as registration reads them (EXIF orientation), so the matrix applies to both."""
    from drmime_pl.io.images import read_image

    a = np.rint(pattern(30, 50)).astype(np.uint8)
    for orientation in (3, 6):
        im = Image.fromarray(a)
        exif = im.getexif()
        exif[0x0112] = orientation
        im.save(tmp_path / "o.png", exif=exif)
        native = read_native(tmp_path / "o.png").array.astype(np.float64) / 255.0
        np.testing.assert_allclose(native, read_image(tmp_path / "o.png")[0].numpy(), atol=1e-6)


@pytest.mark.parametrize("dtype, order, fill", [(np.uint8, "linear", 0), (np.uint16, "nearest", "white"),
                                                (np.float32, "linear", "edge"), (np.int32, "linear", 7.5),
                                                (np.bool_, "nearest", 0)])
def test_warp_array_by_row_blocks_is_exact(monkeypatch, dtype, order, fill):
    """Memory: warp_array samples blocks of rows (issue 7); the result equals the unblocked one bit for bit, for a
    stack of more planes than are warped at once (8), each dtype, interpolation and fill."""
    import drmime_pl.core.resample as resample

    stack = np.stack([pattern(*MOVING_HW, 1000.0, p) for p in range(11)])  # 11 x H x W
    stack = stack > 500 if dtype == np.bool_ else stack.astype(dtype)
    monkeypatch.setattr(resample, "_WARP_BLOCK_PIXELS", 1 << 40)  # the whole output grid at once
    whole = resample.warp_array(stack, "ZYX", PERSPECTIVE, FIXED_HW, order=order, fill=fill)
    monkeypatch.setattr(resample, "_WARP_BLOCK_PIXELS", 7 * FIXED_HW[1] + 5)  # 7 rows, the last block shorter
    blocked = resample.warp_array(stack, "ZYX", PERSPECTIVE, FIXED_HW, order=order, fill=fill)
    assert blocked.dtype == whole.dtype == stack.dtype and blocked.shape == (11,) + FIXED_HW
    np.testing.assert_array_equal(blocked, whole)
    monkeypatch.setattr(resample, "_WARP_BLOCK_PIXELS", 1)  # one row at a time
    np.testing.assert_array_equal(resample.warp_array(stack, "ZYX", PERSPECTIVE, FIXED_HW, order=order, fill=fill),
                                  whole)


@pytest.mark.parametrize("shape", [(23, 31), (23, 31, 2), (23, 31, 3), (23, 31, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_writer_round_trips_every_pixel(tmp_path, shape, dtype):
    # png_bytes filters rows itself (Up, modulo 256): a decoder must get every value back, 8 and 16 bits.
    from drmime_pl.io.native import png_bytes

    rng = np.random.default_rng(1)
    array = rng.integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)
    (tmp_path / "a.png").write_bytes(png_bytes(array))
    back = read_native(tmp_path / "a.png").array
    np.testing.assert_array_equal(back.reshape(array.shape), array)
