"""Reading, converting and writing images.

Images are ``C x H x W`` float32 tensors in [0, 1] (C = 1 or 3). 8-bit and 16-bit unsigned images are scaled by
their type's range; signed and 32/64-bit integer images, and floats outside [0, 1], by their own min and max;
RGBA loses its alpha channel; palette images are expanded to RGB. The EXIF/TIFF orientation tag is applied, as image
viewers do, for every format.

Files are checked before they are decoded: only regular files are opened (a FIFO would block forever), and the
pixel count declared in the header must not exceed ``max_pixels`` (``data.max_pixels``), a decompression-bomb guard.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError

ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor]

# Pillow refuses images over ~179 Mpx by default as a decompression-bomb guard; microscopy images are often larger,
# so the limit is ours: data.max_pixels, checked against the header before anything is decoded (read_image).
Image.MAX_IMAGE_PIXELS = None

#: Default of ``data.max_pixels``: 400 megapixels (20000 x 20000). A registration needs about 40 bytes per pixel of
#: the larger grey image (more for RGB), so the limit keeps a pair under about 16 GB, within a 24 GiB machine.
DEFAULT_MAX_PIXELS = 400_000_000

# Modes whose torchvision decoding (UNCHANGED) gives the image's real values; others (palette "P", 1-bit, CMYK
# JPEG, ...) go through Pillow, which converts them.
_TORCHVISION_MODES = ("L", "LA", "RGB", "RGBA", "I;16", "I;16B", "I;16L", "I")
_ORIENTATION_TAG = 0x0112


def _check_regular_file(path: Path) -> None:
    """Refuse what is not a regular file before opening it: a FIFO or device would block or never end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: is not a regular file (a FIFO, socket or device); not read")


def _read_header(path: Path) -> Tuple[Optional[Tuple[int, int]], Optional[str], Optional[str]]:
    """``((width, height), mode, format)`` from the header alone (Pillow opens lazily); Nones if Pillow cannot
    identify the file. For a TIFF that Pillow does not open, tifffile's lazy series shape gives the size."""
    try:
        with Image.open(path) as im:
            return (int(im.size[0]), int(im.size[1])), im.mode, im.format
    except Exception:  # noqa: BLE001 - not an image Pillow knows: the readers below report it
        pass
    try:
        from .io_tiff import is_tiff

        if is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                series = tf.series[0]
                axes, shape = series.axes, series.shape
                return (int(shape[axes.index("X")]), int(shape[axes.index("Y")])), None, "TIFF"
    except Exception:  # noqa: BLE001
        pass
    return None, None, None


def _orientation(path: Path) -> int:
    """The EXIF (JPEG, PNG, WebP) or TIFF orientation tag, 1 (as stored) when there is none."""
    try:
        with Image.open(path) as im:
            value = int(im.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - unreadable metadata: as stored
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Turn a stored ``C x H x W`` image the way the orientation tag says it is displayed (as
    ``PIL.ImageOps.exif_transpose``): 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
    7 transverse, 8 rotate 90 counter-clockwise."""
    if orientation in (None, 1):
        return image
    ops = {
        2: lambda t: t.flip(-1),
        3: lambda t: t.flip(-1, -2),
        4: lambda t: t.flip(-2),
        5: lambda t: t.transpose(-1, -2),
        6: lambda t: torch.rot90(t, -1, dims=(-2, -1)),
        7: lambda t: t.transpose(-1, -2).flip(-1, -2),
        8: lambda t: torch.rot90(t, 1, dims=(-2, -1)),
    }
    out = ops[int(orientation)](image).contiguous()
    names = getattr(image, "channel_names", None)
    if names:
        out.channel_names = names
    return out


def _read_with_torchvision(path: Path) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    data = read_file(str(path))
    return decode_image(data, mode=ImageReadMode.UNCHANGED)  # C x H x W, uint8 (or uint16 for 16-bit PNG)


def _read_with_pillow(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return np.asarray(im, dtype=np.uint16)
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1", "LA", "PA"):
            im = im.convert("RGBA" if im.mode in ("LA", "PA") else "RGB" if im.mode != "1" else "L")
        return np.asarray(im)


def read_image(path: Union[str, os.PathLike], max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read an image file into a ``C x H x W`` float32 tensor in [0, 1] (C = 1 or 3).

    JPEG and PNG are decoded by torchvision.io (palette, 1-bit and CMYK images by Pillow); TIFF by tifffile;
    every other format Pillow reads by Pillow. The orientation tag (EXIF or TIFF) is applied.

    Args:
        max_pixels: refuse, before decoding, an image whose header declares more pixels (None: no limit).

    Raises:
        ImageError: missing file, a directory or other non-regular file, too many pixels, a file that is not a
            readable image, or NaN/inf pixels.
    """
    path = Path(path)
    _check_regular_file(path)
    size, mode, _ = _read_header(path)
    if size is not None and max_pixels is not None and size[0] * size[1] > int(max_pixels):
        w, h = size
        raise ImageError(
            f"{path}: image declares {w}x{h} pixels ({w * h / 1e6:.1f} megapixels), more than data.max_pixels="
            f"{int(max_pixels)}; not decoded (raise data.max_pixels if this machine has about 40 bytes of memory "
            f"per pixel)"
        )
    orientation = _orientation(path) if size is not None else 1
    from .io_tiff import is_tiff

    if is_tiff(path):  # tifffile: any channel count, CYX/YXC, OME/ImageJ hyperstacks (issue 11)
        return apply_orientation(read_tiff_tensor(path), orientation)
    array = None
    if path.suffix.lower() in (".jpg", ".jpeg", ".png") and (mode is None or mode in _TORCHVISION_MODES):
        try:
            array = _read_with_torchvision(path)
        except Exception:  # noqa: BLE001 - e.g. a PNG mode torchvision does not decode; Pillow has the final word
            array = None
    if array is None:
        try:
            array = _read_with_pillow(path)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    try:
        image = to_image_tensor(array, name=str(path), channels_first=isinstance(array, torch.Tensor), copy=False)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ImageError(f"{path}: cannot be used as an image ({exc})") from None
    return apply_orientation(image, orientation)


def to_image_tensor(image, name: str = "image", channels_first: bool | None = None, copy: bool = True) -> torch.Tensor:
    """Convert an array-like image to a ``C x H x W`` float32 tensor in [0, 1] with C = 1 or 3.

    Args:
        image: ``H x W``, ``H x W x C`` (numpy) or ``C x H x W`` (torch) array, C in {1, 3, 4}; bool, any integer
            type or float. uint8 and uint16 are scaled by their type's range (255, 65535); signed and 32/64-bit
            integers have no fixed white level and are scaled by the image's own min and max. Floats already in
            [0, 1] are kept; other floats are min-max scaled.
        name: used in error messages.
        channels_first: layout of a 3-D input; by default torch tensors are ``C x H x W`` and numpy arrays
            ``H x W x C``.
        copy: a float32 numpy input in [0, 1] is copied (False: the result may share its memory).
    """
    is_tensor = isinstance(image, torch.Tensor)
    if channels_first is None:
        channels_first = is_tensor
    if is_tensor:
        t = image.detach().cpu()
    else:
        a = np.asarray(image)
        if a.dtype.byteorder not in ("=", "|"):  # big-endian data: torch needs native byte order
            a = a.astype(a.dtype.newbyteorder("="))
        elif not a.flags.writeable or (copy and a.dtype == np.float32):
            a = np.array(a, copy=True)  # other types are converted below, which copies anyway
        t = torch.from_numpy(a)
    if t.ndim == 2:
        t = t.unsqueeze(0)
    elif t.ndim == 3:
        if not channels_first:
            t = t.permute(2, 0, 1)
    else:
        raise ImageError(f"{name}: expected a 2-D or 3-D image, got shape {tuple(t.shape)}")
    if t.shape[0] not in (1, 2, 3, 4):
        raise ImageError(f"{name}: expected 1, 3 or 4 channels, got {t.shape[0]} (shape {tuple(t.shape)})")
    if t.shape[0] in (2, 4):  # gray + alpha or RGBA: drop alpha
        t = t[:-1]
    dtype = t.dtype
    # The conversions to float32 also make the layout contiguous in the same pass: decoders hand over channels-last
    # views (C x H x W strides of H x W x C), and converting first and copying after took twice as long.
    as_float = dict(dtype=torch.float32, memory_format=torch.contiguous_format)
    if dtype == torch.bool:
        t = t.to(**as_float)
    elif dtype == torch.uint8:
        t = t.to(**as_float).div_(255.0)
    elif dtype == torch.uint16:
        t = t.to(**as_float).div_(65535.0)
    elif dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint32, torch.uint64):
        # No fixed white level (signed data, or 32-bit counts far above 65535): the image's own range.
        tf = t.to(torch.float64)
        lo, hi = float(tf.min()), float(tf.max())
        t = tf.sub_(lo).div_(hi - lo).float() if hi > lo else torch.zeros(t.shape, dtype=torch.float32)
    elif t.is_floating_point():
        t = t.float()
        if not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise ImageError(f"{name}: {bad} pixel(s) are NaN or infinite; replace them (or mask them) first")
        lo, hi = float(t.min()), float(t.max())
        if lo < 0.0 or hi > 1.0:
            t = (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)
    else:
        raise ImageError(f"{name}: unsupported pixel type {dtype}")
    return t.contiguous()


def read_tiff_tensor(path):
    """A TIFF -> ``C x H x W`` float32 tensor in [0, 1] for registration: every channel of the first plane (any
    count; alpha dropped), each scaled as :func:`to_image_tensor` scales its type. OME channel
    names ride along as the tensor's ``channel_names`` attribute (for ``data.channels=<name>``)."""
    from .io_tiff import read_tiff, registration_planes

    img = read_tiff(path)
    planes = registration_planes(img)  # C x H x W, native dtype
    if planes.dtype == np.uint32 or planes.dtype == np.uint64:
        planes = planes.astype(np.int64)
    if planes.dtype == np.float16:
        planes = planes.astype(np.float32)
    if planes.shape[0] in (1, 3):
        t = to_image_tensor(planes, name=str(path), channels_first=True)
    else:  # 2 or 4+ separate channels (not gray+alpha / RGBA): keep them all
        t = torch.cat([to_image_tensor(c, name=str(path)) for c in planes])
    if img.channel_names and len(img.channel_names) == t.shape[0]:
        t.channel_names = list(img.channel_names)
    return t


def load_image(image: ImageLike, name: str = "image", max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A path, numpy array or tensor -> ``C x H x W`` float32 tensor in [0, 1] (``max_pixels``: for files, see
    :func:`read_image`)."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, max_pixels=max_pixels)
    return to_image_tensor(image, name=name)


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """``C x H x W`` float in [0, 1] -> ``H x W x C`` (or ``H x W``) uint8 array."""
    scaled = image.detach().float().clamp(0, 1).mul_(255.0).add_(0.5)  # one float copy, then in place
    array = scaled.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    del scaled
    return array[..., 0] if array.shape[-1] == 1 else array


def png_options(fmt) -> dict:
    """Pillow save options: PNGs with zlib level 1, which encodes about 4x faster than Pillow's default 6 for files
    about 10-20% larger (a 2912 x 2912 RGB warped image: ~1 s instead of ~4 s)."""
    return {"compress_level": 1} if fmt == "PNG" else {}


def save_image_atomic(image: torch.Tensor, path: Union[str, os.PathLike]) -> None:
    """Write a ``C x H x W`` [0, 1] image to ``path`` (format from the suffix) via a temporary file and rename."""
    from .atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fmt = Image.registered_extensions().get(path.suffix.lower())
        Image.fromarray(to_uint8_hwc(image)).save(tmp, format=fmt, **png_options(fmt))
