"""Apply a saved transform: ``python -m drmime_pl.warp`` (also ``drmime-warp``).

::

    python -m drmime_pl.warp --transform run/transform.json --moving B.tif [--like A.tif] --out B_on_A.tif \\
        [--fill 0|white|edge|NUMBER] [--order linear|nearest] [--rescale]
    python -m drmime_pl.warp --transform run/transform.json --points fixed.csv --to moving --out moving.csv

Images keep their pixel type and channel count (any number of channels, CYX or YXC, Z/T stacks: every plane is
warped); a label image wants ``--order nearest``. Points files are ANHIR CSVs (``,X,Y``) of pixel coordinates.

:func:`read_native`, :func:`warp_array` and :func:`write_native` are the pieces (``result.write_outputs`` uses them
for ``warped.tif``/``warped.png``); :func:`main` only parses arguments and turns errors into one-line messages.
"""
from __future__ import annotations

import argparse
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import write_bytes_atomic, write_text_atomic
from .errors import DrmimeError, ImageError
from .geometry import pix_trans_grid, transform_points
from .transform_io import rescale_matrix

EXIT_USAGE = 2


@dataclass
class NativeImage:
    """An image as stored: ``array`` with ``axes`` (``Y``, ``X``; ``S``/``C`` channels; ``Z``, ``T``... planes)."""

    array: np.ndarray
    axes: str
    tiff: object = None  # io_tiff.TiffImage when read from a TIFF

    @property
    def hw(self):
        return self.array.shape[self.axes.index("Y")], self.array.shape[self.axes.index("X")]


def read_native(path) -> NativeImage:
    """Read an image file keeping its pixel type and every channel. TIFF by tifffile, PNG/JPEG by torchvision
    (16-bit PNG stays 16-bit), the rest by Pillow."""
    from .io_tiff import is_tiff, read_tiff

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found" if not path.is_dir() else f"{path}: is a directory, not an image")
    if is_tiff(path):
        t = read_tiff(path)
        return _oriented(NativeImage(t.array, t.axes, t), path)
    array = None
    if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        try:
            from torchvision.io import ImageReadMode, decode_image, read_file

            array = decode_image(read_file(str(path)), mode=ImageReadMode.UNCHANGED).permute(1, 2, 0).numpy()
        except Exception:  # noqa: BLE001 - Pillow has the final word
            array = None
    if array is None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                array = np.asarray(im)
        except Exception as exc:  # noqa: BLE001
            raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return _oriented(NativeImage(np.ascontiguousarray(array), "YXS" if array.ndim == 3 else "YX"), path)


def _oriented(image: NativeImage, path) -> NativeImage:
    """Turn the pixels as the EXIF/TIFF orientation tag says, as registration reads them
    (:func:`drmime_pl.images.apply_orientation`)."""
    from .images import _orientation

    orientation = _orientation(Path(path))
    if orientation in (None, 1):
        return image
    iy, ix = image.axes.index("Y"), image.axes.index("X")
    a = np.moveaxis(image.array, (iy, ix), (-2, -1))
    ops = {2: lambda t: t[..., ::-1], 3: lambda t: t[..., ::-1, ::-1], 4: lambda t: t[..., ::-1, :],
           5: lambda t: np.swapaxes(t, -1, -2), 6: lambda t: np.rot90(t, -1, axes=(-2, -1)),
           7: lambda t: np.swapaxes(t, -1, -2)[..., ::-1, ::-1], 8: lambda t: np.rot90(t, 1, axes=(-2, -1))}
    a = np.ascontiguousarray(np.moveaxis(ops[int(orientation)](a), (-2, -1), (iy, ix)))
    return NativeImage(a, image.axes, image.tiff)


def _fill_value(fill: Union[str, float], dtype) -> Optional[float]:
    if fill == "edge":
        return None
    if fill == "white":
        if np.issubdtype(dtype, np.integer):
            return float(np.iinfo(dtype).max)
        return 1.0
    return float(fill)


def warp_array(array: np.ndarray, axes: str, matrix, out_hw: Sequence[int], order: str = "linear",
               fill: Union[str, float] = 0) -> np.ndarray:
    """Resample every plane and channel of ``array`` on an ``out_hw`` grid: ``out[y, x] = in(matrix @ (x, y, 1))``.

    Same arithmetic as :func:`drmime_pl.geometry.warp_image` (bilinear, ``grid_sample`` with
    ``align_corners=False``); ``order="nearest"`` for labels; ``fill`` is 0, ``"white"`` (the type's maximum, 1.0
    for floats), ``"edge"`` (repeat the border) or a number. Returns the input's dtype (integers rounded and
    clipped) with ``Y``/``X`` of size ``out_hw``.
    """
    h, w = int(out_hw[0]), int(out_hw[1])
    iy, ix = axes.index("Y"), axes.index("X")
    src = np.moveaxis(array, (iy, ix), (-2, -1))
    lead = src.shape[:-2]
    hm, wm = src.shape[-2:]
    dtype = array.dtype
    work = torch.float64 if dtype.itemsize >= 4 and dtype.kind in "iuf" else torch.float32
    np_work = np.float64 if work == torch.float64 else np.float32
    m = torch.linalg.inv(pix_trans_grid((hm, wm))) @ torch.as_tensor(np.asarray(matrix), dtype=torch.float64)
    mode = "nearest" if order == "nearest" else "bilinear"
    value = _fill_value(fill, dtype)
    planes = src.reshape((-1, hm, wm))
    n_planes = planes.shape[0]
    out = np.empty((n_planes, h, w), dtype=dtype)  # the result type at once: no full-size float copy of the output
    # Memory (as geometry.warp_grid): the float64 sampling grid and the float results are made for blocks of rows
    # only; grid_sample treats every output pixel on its own, so the blocks give exactly the unblocked result.
    rows = max(1, _WARP_BLOCK_PIXELS // max(1, w))
    xs = torch.arange(w, dtype=torch.float64)
    ones = torch.ones((1, 1, hm, wm), dtype=work) if value else None
    for start in range(0, n_planes, 8):  # a few planes at a time: bounded memory for stacks
        chunk = torch.from_numpy(np.ascontiguousarray(planes[start:start + 8], dtype=np_work)).unsqueeze(0)
        for r0 in range(0, h, rows):
            r1 = min(h, r0 + rows)
            ys, xx = torch.meshgrid(torch.arange(r0, r1, dtype=torch.float64), xs, indexing="ij")
            grid = transform_points(m, torch.stack([xx.reshape(-1), ys.reshape(-1)], dim=-1))
            grid = grid.view(1, r1 - r0, w, 2).to(work)
            res = F.grid_sample(chunk, grid, mode=mode, padding_mode="border" if value is None else "zeros",
                                align_corners=False)[0]
            if value:  # pad with a constant: weight the outside by what a ones image loses there
                inside = F.grid_sample(ones, grid, mode=mode, padding_mode="zeros", align_corners=False)[0]
                res = res + value * (1.0 - inside)
            out[start:start + 8, r0:r1] = _to_dtype(res.numpy(), dtype)
        del chunk
    return np.moveaxis(out.reshape(lead + (h, w)), (-2, -1), (iy, ix))


_WARP_BLOCK_PIXELS = 1 << 16  # output pixels of one plane warped at once (~100 bytes each; cf. geometry.warp_grid)


def _to_dtype(result: np.ndarray, dtype) -> np.ndarray:
    """Float samples -> ``dtype``: bool by thresholding at 0.5, integers rounded and clipped to the type's range."""
    if dtype == np.bool_:
        return result >= 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(result), info.min, info.max).astype(dtype)
    return result.astype(dtype)


def _png16_bytes(array: np.ndarray) -> bytes:
    """A 16-bit PNG (gray, gray+alpha, RGB or RGBA) of an ``H x W (x C)`` uint16 array (Pillow writes no 16-bit
    colour PNG)."""
    a = array if array.ndim == 3 else array[..., None]
    h, w, c = a.shape
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = np.ascontiguousarray(a.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def write_native(array: np.ndarray, axes: str, path, like=None) -> None:
    """Write an array (any dtype/channels for ``.tif``; 8/16-bit 1-4 channels for ``.png``; 8-bit for others)
    atomically. ``like``: the :class:`~drmime_pl.io_tiff.TiffImage` whose OME/ImageJ layout and resolution to keep.
    Raises :class:`ImageError` when the format cannot hold the data."""
    from .io_tiff import is_tiff, write_tiff

    path = Path(path)
    if is_tiff(path):
        write_tiff(array, axes, path, like=like)
        return
    planes_ok = set(axes) <= set("YXS") and axes.index("Y") < axes.index("X")
    channels = array.shape[axes.index("S")] if "S" in axes else 1
    if not planes_ok or channels > 4:
        raise ImageError(f"{path}: {array.shape} ({axes}) image needs a TIFF output (.tif)")
    if axes == "SYX":
        array = np.moveaxis(array, 0, -1)
    suffix = path.suffix.lower()
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.dtype == np.uint16 and suffix == ".png":
        data = _png16_bytes(array)
    elif array.dtype == np.uint8:
        import io

        from PIL import Image

        from .images import png_options

        buf = io.BytesIO()
        try:
            fmt = Image.registered_extensions().get(suffix)
            Image.fromarray(array).save(buf, format=fmt, **png_options(fmt))
        except (KeyError, ValueError, OSError) as exc:
            raise ImageError(f"{path}: cannot write this format ({exc}); use .tif or .png") from None
        data = buf.getvalue()
    else:
        raise ImageError(f"{path}: {array.dtype} pixels need a TIFF output (.tif)")
    write_bytes_atomic(data, path)


def warped_name(moving_path) -> str:
    """``warped.tif`` for a TIFF moving image, else ``warped.png``."""
    from .io_tiff import is_tiff

    return "warped.tif" if is_tiff(moving_path) else "warped.png"


def write_warped_native(result, out_dir) -> Optional[Path]:
    """Warp the moving image *file* of ``result`` in its own pixel type and channels onto the fixed grid and write
    ``warped.tif`` (TIFF input) or ``warped.png`` (8 or 16-bit). Returns the path, or None when ``result.moving`` is
    not a readable file (arrays given to the API) or its type does not fit a PNG: the caller writes the 8-bit
    preview then."""
    moving = result.moving
    if not isinstance(moving, str) or not Path(moving).is_file():
        return None
    try:
        image = read_native(moving)
    except ImageError:
        return None
    if tuple(image.hw) != tuple(result.moving_shape):
        return None
    path = Path(out_dir) / warped_name(moving)
    warped = warp_array(image.array, image.axes, result.matrix, result.fixed_shape)
    try:
        write_native(warped, image.axes, path, like=image.tiff)
    except ImageError:
        return None
    return path


def write_points_csv(points: np.ndarray, path) -> None:
    path = Path(path)
    text = ",X,Y\n" + "".join(f"{i},{x!r},{y!r}\n" for i, (x, y) in enumerate(np.asarray(points, float).tolist()))
    write_text_atomic(text, path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m drmime_pl.warp",
        description="Apply a saved drmime_pl transform (transform.json) to an image of the moving frame, or map "
                    "landmark CSVs between the fixed and the moving frame.",
        epilog="Images keep their pixel type and channels; every plane of a stack is warped. Points files are "
               "ANHIR CSVs (,X,Y; x = column, y = row, pixels).",
    )
    p.add_argument("--transform", "-t", required=True, help="transform.json of a run")
    p.add_argument("--moving", "-m", help="image of the moving frame to resample onto the fixed grid")
    p.add_argument("--like", help="image of the fixed frame: output size (and TIFF resolution) from it "
                                  "(default: the transform's fixed_shape)")
    p.add_argument("--out", "-o", required=True, help="output image (.tif for any type; .png 8/16-bit) or CSV")
    p.add_argument("--fill", default="0", help="outside the moving image: 0 (default), white, edge, or a number")
    p.add_argument("--order", choices=("linear", "nearest"), default="linear",
                   help="interpolation: linear (default) or nearest (label images)")
    p.add_argument("--rescale", action="store_true",
                   help="allow a moving (or --like) image of another size than the transform's: the same field of "
                        "view at another resolution, scaled edge to edge")
    p.add_argument("--points", help="landmark CSV (,X,Y) to map instead of an image")
    p.add_argument("--to", choices=("moving", "fixed"), default="moving",
                   help="with --points: the frame to map them to (fixed points -> moving, or moving -> fixed)")
    return p.parse_args(argv)


def run(args) -> str:
    """Do what the parsed arguments say; returns a one-line summary. Raises DrmimeError subclasses."""
    from .landmarks import read_landmarks_csv
    from .result import Registration

    reg = Registration.load(args.transform)
    out = Path(args.out)
    if out.is_dir():
        raise DrmimeError(f"{out}: is a directory; --out names a file")
    if not out.parent.is_dir():
        raise DrmimeError(f"{out}: folder {out.parent} does not exist")
    if args.points:
        if args.moving:
            raise DrmimeError("--points and --moving: give one of them")
        pts = read_landmarks_csv(args.points)
        mapped = reg.transform_points(pts, inverse=(args.to == "fixed"))
        write_points_csv(mapped, out)
        return f"{len(pts)} points mapped to the {args.to} frame -> {out}"
    if not args.moving:
        raise DrmimeError("give --moving IMAGE (or --points CSV)")
    fill = args.fill
    if fill not in ("white", "edge"):
        try:
            fill = float(fill)
        except ValueError:
            raise DrmimeError(f"--fill {args.fill!r}: expected 0, white, edge or a number") from None
    image = read_native(args.moving)
    fixed_hw, matrix, like = tuple(reg.fixed_shape), reg.matrix, None
    if args.like:
        like = read_native(args.like)
        fixed_hw = tuple(like.hw)
    moving_hw = tuple(image.hw)
    if (moving_hw != tuple(reg.moving_shape) or fixed_hw != tuple(reg.fixed_shape)):
        if not args.rescale:
            which = (f"--moving {args.moving} is {moving_hw[1]}x{moving_hw[0]} (W x H)" if moving_hw != tuple(reg.moving_shape)
                     else f"--like {args.like} is {fixed_hw[1]}x{fixed_hw[0]} (W x H)")
            raise ImageError(f"{which} but the transform was made for a {reg.moving_shape[1]}x{reg.moving_shape[0]} "
                             f"moving and a {reg.fixed_shape[1]}x{reg.fixed_shape[0]} fixed image; "
                             "--rescale applies it to the same field of view at another resolution")
        matrix = rescale_matrix(matrix, reg.fixed_shape, fixed_hw, reg.moving_shape, moving_hw)
    warped = warp_array(image.array, image.axes, matrix, fixed_hw, order=args.order, fill=fill)
    tiff_like = image.tiff
    if like is not None and like.tiff is not None and tiff_like is not None:
        tiff_like = type(tiff_like)(**{**tiff_like.__dict__, "resolution": like.tiff.resolution})
    write_native(warped, image.axes, out, like=tiff_like)
    return f"{args.moving} ({image.array.dtype}, axes {image.axes}) -> {out} ({fixed_hw[1]}x{fixed_hw[0]})"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        message = run(args)
    except DrmimeError as exc:
        print(f"drmime_pl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"drmime_pl: error: {getattr(exc, 'filename', None) or args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"drmime_pl: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
