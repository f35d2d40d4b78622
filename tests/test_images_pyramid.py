"""Reading images of every supported kind, pyramids and automatic masks."""
import numpy as np
import pytest
import torch
from PIL import Image

from drmime_pl.errors import ImageError
from drmime_pl.core.channels import luminance, select_channels
from drmime_pl.io.images import load_image, read_image
from drmime_pl.core.pyramid import (_max_filter, auto_foreground, blur_and_halve, gaussian_blur, gaussian_pyramid,
                                     max_levels)


def test_read_8bit_rgb_png_and_jpeg(tmp_path):
    rgb = (np.arange(20 * 30 * 3) % 256).astype(np.uint8).reshape(20, 30, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    t = read_image(tmp_path / "a.png")
    assert t.shape == (3, 20, 30) and t.dtype == torch.float32
    assert torch.allclose(t, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    assert read_image(tmp_path / "a.jpg").shape == (3, 20, 30)


def test_read_16bit_gray_png_uses_full_range(tmp_path):
    gray = np.linspace(0, 65535, 40 * 50).astype(np.uint16).reshape(40, 50)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    t = read_image(tmp_path / "g16.png")
    assert t.shape == (1, 40, 50)
    assert abs(float(t.max()) - 1.0) < 1e-4 and float(t.min()) == 0.0
    assert abs(float(t[0, 20, 25]) - gray[20, 25] / 65535) < 1e-4


def test_rgba_drops_alpha_and_tiff_float(tmp_path):
    rgba = np.zeros((10, 12, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    t = read_image(tmp_path / "a.png")
    assert t.shape == (3, 10, 12) and torch.allclose(t[0], torch.full((10, 12), 200 / 255))
    f = np.linspace(-5, 5, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    t = read_image(tmp_path / "f.tif")
    assert t.shape == (1, 64, 64) and float(t.min()) == 0.0 and float(t.max()) == 1.0


def test_palette_and_arrays():
    assert load_image(np.zeros((5, 6), dtype=np.uint8)).shape == (1, 5, 6)
    assert load_image(np.zeros((5, 6, 3), dtype=np.uint8)).shape == (3, 5, 6)
    assert load_image(torch.zeros(3, 5, 6)).shape == (3, 5, 6)
    with pytest.raises(ImageError, match="channels"):
        load_image(np.zeros((5, 6, 7)))


def test_channel_selection():
    rgb, gray = torch.rand(3, 8, 8), torch.rand(1, 8, 8)
    f, m = select_channels(rgb, gray, "auto")
    assert f.shape[0] == m.shape[0] == 1 and torch.allclose(f, luminance(rgb))
    f, m = select_channels(rgb, rgb, "auto")
    assert f.shape[0] == 3
    f, m = select_channels(rgb, rgb, "1")
    assert torch.equal(f, rgb[1:2])


def test_pyramid_levels_and_normalisation():
    assert max_levels((2912, 2912), 32) == 7
    assert max_levels((64, 1000), 32) == 2
    assert max_levels((20, 20), 32) == 1
    img = torch.rand(3, 100, 131) * 0.5 + 0.2
    pyr = gaussian_pyramid(img, 3)
    assert [tuple(p.shape) for p in pyr] == [(3, 100, 131), (3, 50, 65), (3, 25, 32)]
    for p in pyr:
        assert float(p.min()) == 0.0 and abs(float(p.max()) - 1.0) < 1e-6


def test_pyramid_levels_share_the_grid_frame():
    # A bright square keeps its centre (in edge-to-edge units) on every level.
    img = torch.zeros(1, 128, 128)
    img[:, 40:56, 80:96] = 1.0
    for level in gaussian_pyramid(img, 4, sigma=1.0):
        h, w = level.shape[-2:]
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        weight = level[0] / level[0].sum()
        assert abs(float((weight * xs).sum()) / w - 88 / 128) < 0.01
        assert abs(float((weight * ys).sum()) / h - 48 / 128) < 0.01


@pytest.mark.parametrize("shape", [(3, 64, 90), (1, 33, 47), (2, 40, 17), (1, 3, 9)])
@pytest.mark.parametrize("sigma", [0.0, 1.0, 2.0])
def test_blur_and_halve_is_a_blur_then_an_edge_to_edge_resize(shape, sigma):
    # The fused even-axis kernel (and the odd-axis fallback) must give what the definition gives.
    torch.manual_seed(0)
    img = torch.rand(*shape)
    h, w = shape[-2:]
    expected = torch.nn.functional.interpolate(gaussian_blur(img, sigma)[None], size=(max(1, h // 2), max(1, w // 2)),
                                               mode="bilinear", align_corners=False)[0]
    got = blur_and_halve(img, sigma)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 1e-6


def test_auto_foreground_black_border_and_white_glass():
    img = torch.zeros(3, 200, 200)
    yy, xx = torch.meshgrid(torch.arange(200), torch.arange(200), indexing="ij")
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 < 80**2
    img[:, disc] = 0.5
    fg = auto_foreground(img)
    assert fg[100, 100] and not fg[2, 2] and abs(float(fg.float().mean()) - float(disc.float().mean())) < 0.03
    glass = 1.0 - img  # white background, dark tissue
    assert torch.equal(auto_foreground(glass), fg)
    grown = auto_foreground(img, margin=0.05)
    shrunk = auto_foreground(img, margin=-0.05)
    assert float(shrunk.float().mean()) < float(fg.float().mean()) < float(grown.float().mean())


def _border_connected_by_search(mask: np.ndarray) -> np.ndarray:
    """Reference: breadth-first search from the border pixels of the mask, 8-connected."""
    h, w = mask.shape
    seen = np.zeros_like(mask)
    todo = [(y, x) for y in range(h) for x in range(w) if mask[y, x] and (y in (0, h - 1) or x in (0, w - 1))]
    for y, x in todo:
        seen[y, x] = True
    while todo:
        y, x = todo.pop()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                v, u = y + dy, x + dx
                if 0 <= v < h and 0 <= u < w and mask[v, u] and not seen[v, u]:
                    seen[v, u] = True
                    todo.append((v, u))
    return seen


@pytest.mark.parametrize("seed", range(6))
def test_connected_to_border_matches_a_breadth_first_search(seed):
    from drmime_pl.core.pyramid import _connected_to_border

    rng = np.random.default_rng(seed)
    h, w = rng.integers(3, 60, size=2)
    mask = rng.random((h, w)) < rng.uniform(0.4, 0.7)  # near percolation: long winding paths
    mask[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = True  # and a solid block, maybe enclosed
    got = _connected_to_border(torch.from_numpy(mask)).numpy()
    np.testing.assert_array_equal(got, _border_connected_by_search(mask))


def test_separable_max_filter_is_the_square_max_filter():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 1, 37, 53, generator=g)
    for radius in (1, 4, 9):
        square = torch.nn.functional.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)
        assert torch.equal(_max_filter(x, radius), square)
