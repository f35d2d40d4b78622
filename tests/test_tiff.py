"""Issue 11: TIFFs of any channel count and pixel type register, and the warped output keeps dtype and channels."""
from __future__ import annotations

import numpy as np
import pytest

import drmime_pl
from drmime_pl.errors import ImageError
from drmime_pl.io.images import read_image
from drmime_pl.io.io_tiff import read_tiff
from drmime_pl.core.resample import warp_array

from .io_helpers import pattern

tifffile = pytest.importorskip("tifffile")
HW = (96, 112)
SHIFT = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0], [0, 0, 1.0]])  # fixed px -> moving px
FAST = ["fit.max_steps=40", "fit.min_steps=0", "data.batch_size=256", "data.min_level_size=16"]


def _pair(channels: int, top: float, dtype):
    fixed = np.stack([pattern(*HW, top, phase=1.3 * c) for c in range(channels)])  # C x H x W
    moving = warp_array(fixed, "CYX", np.linalg.inv(SHIFT), HW, fill="edge")  # moving(M p) = fixed(p)
    return np.rint(fixed).astype(dtype), np.rint(moving).astype(dtype)


def test_uint16_two_channel_tiff_registers_and_keeps_type(tmp_path):
    fixed, moving = _pair(2, 4095, np.uint16)  # 12-bit data in 16-bit pixels
    tifffile.imwrite(tmp_path / "f.tif", fixed, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "m.tif", moving, metadata={"axes": "CYX"})
    assert read_image(tmp_path / "m.tif").shape == (2,) + HW  # both channels, not one page
    reg = drmime_pl.register(str(tmp_path / "f.tif"), str(tmp_path / "m.tif"), transform="translation",
                             output_dir=str(tmp_path / "run"), overrides=FAST)
    assert np.isfinite(reg.matrix).all()
    with tifffile.TiffFile(tmp_path / "run" / "warped.tif") as tf:
        warped, axes = tf.series[0].asarray(), tf.series[0].axes
    assert warped.dtype == np.uint16 and warped.shape == (2,) + HW and axes == "CYX"
    assert 3000 < warped.max() <= 4095  # the 12-bit range is kept, not stretched or darkened
    assert not (tmp_path / "run" / "warped.png").exists() and (tmp_path / "run" / "overlay.png").is_file()
    assert (tmp_path / "run" / "transform.tfm").is_file()
    # the warped file is the registration's matrix applied to the moving file
    np.testing.assert_array_equal(warped, warp_array(moving, "CYX", reg.matrix, HW))


def test_four_channel_ome_tiff_registers_by_channel_name(tmp_path):
    names = ["DAPI", "CD3", "CD8", "PanCK"]
    fixed, moving = _pair(4, 255, np.uint8)
    for name, arr in (("f.ome.tif", fixed), ("m.ome.tif", moving)):
        tifffile.imwrite(tmp_path / name, arr, ome=True, metadata={"axes": "CYX", "Channel": {"Name": names}})
    img = read_image(tmp_path / "m.ome.tif")
    assert img.shape == (4,) + HW and img.channel_names == names
    reg = drmime_pl.register(str(tmp_path / "f.ome.tif"), str(tmp_path / "m.ome.tif"), transform="translation",
                             output_dir=str(tmp_path / "run"), overrides=FAST + ["data.channels=CD8"])
    out = read_tiff(tmp_path / "run" / "warped.tif")
    assert out.array.dtype == np.uint8 and out.array.shape == (4,) + HW and out.ome and out.channel_names == names
    assert np.abs(reg.matrix[:2, 2] - SHIFT[:2, 2]).max() < 5.0  # a short run, near the shift
    with pytest.raises(ImageError, match="data.channels='CD99'"):
        drmime_pl.register(str(tmp_path / "f.ome.tif"), str(tmp_path / "m.ome.tif"), overrides=FAST + ["data.channels=CD99"])


def test_layouts_and_channel_index(tmp_path):
    # YXC with alpha drops alpha; an ImageJ ZCYX hyperstack uses every channel of the first plane
    rgba = (np.random.default_rng(0).random(HW + (4,)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=("unassalpha",))
    assert read_image(tmp_path / "rgba.tif").shape == (3,) + HW
    stack = np.stack([np.stack([np.full(HW, 10 * z + c, np.uint8) for c in range(5)]) for z in range(2)])
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    t = read_image(tmp_path / "ij.tif")
    assert t.shape == (5,) + HW and abs(float(t[4, 0, 0]) - 4 / 255) < 1e-6
    from drmime_pl.core.channels import select_channels

    f, m = select_channels(t, t, "4")  # an index past 2
    assert f.shape == (1,) + HW and abs(float(f[0, 0, 0]) - 4 / 255) < 1e-6
    with pytest.raises(ImageError, match="5 channels"):
        select_channels(t, t, "7")
    from drmime_pl.config import load_config

    assert load_config(None, ["data.channels=12"]).data.channels == "12"
