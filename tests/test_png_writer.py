"""The PNG writer of warped images (``io/native.png_bytes``), checked by a decoder written here from the PNG
specification, on arrays laid out as a warp leaves them (planes seen as H x W x C) and as Pillow gives them."""
import struct
import zlib

import numpy as np
import pytest

from drmime_pl.io.native import png_bytes


def decode_up_filtered_png(data: bytes) -> np.ndarray:
    """Pixels of a non-interlaced PNG whose rows all use filter 2 (Up), as ``H x W x C`` (uint8 or uint16)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, colour = header[:4]
    channels = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, -1)
    assert (raw[:, 0] == 2).all()  # every row filtered by Up
    rows = np.cumsum(raw[:, 1:].astype(np.int64), axis=0) % 256  # undo "minus the row above"
    rows = rows.astype(np.uint8)
    if depth == 16:
        return rows.view(">u2").astype(np.uint16).reshape(h, w, channels)
    return rows.reshape(h, w, channels)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_of_planes_holds_the_pixels(dtype, channels):
    rng = np.random.default_rng(channels)
    planes = rng.integers(0, np.iinfo(dtype).max, (channels, 23, 31), endpoint=True).astype(dtype)
    as_warped = np.moveaxis(planes, 0, -1)  # H x W x C, not contiguous: how warp_array returns a colour image
    assert not as_warped.flags["C_CONTIGUOUS"] or channels == 1
    for image in (as_warped, np.ascontiguousarray(as_warped)):
        data = png_bytes(image[..., 0] if channels == 1 else image)
        np.testing.assert_array_equal(decode_up_filtered_png(data), np.ascontiguousarray(as_warped))
