"""Reading, converting and writing images.

Images are ``C x H x W`` float32 tensors in [0, 1] (C = 1 or 3). 8-bit, 16-bit and float images are scaled by
their type's range (floats: by their own min and max); RGBA loses its alpha channel; palette images are expanded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

ImageLike = Union[str, os.PathLike, np.ndarray, torch.Tensor]

# ITU-R BT.601 luma weights, as in PIL's "L" conversion.
_LUMA = torch.tensor([0.299, 0.587, 0.114])

# Pillow refuses images over ~179 Mpx by default as a decompression-bomb guard; microscopy images are often larger.
Image.MAX_IMAGE_PIXELS = None


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


def read_image(path: Union[str, os.PathLike]) -> torch.Tensor:
    """Read an image file into a ``C x H x W`` float32 tensor in [0, 1] (C = 1 or 3).

    JPEG and PNG are decoded by torchvision.io; TIFF and every other format Pillow reads go through Pillow.

    Raises:
        ImageError: missing file, a directory, a file that is not a readable image, or NaN/inf pixels.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    array = None
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
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
        return to_image_tensor(array, name=str(path))
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ImageError(f"{path}: cannot be used as an image ({exc})") from None


def to_image_tensor(image, name: str = "image", channels_first: bool | None = None) -> torch.Tensor:
    """Convert an array-like image to a ``C x H x W`` float32 tensor in [0, 1] with C = 1 or 3.

    Args:
        image: ``H x W``, ``H x W x C`` (numpy) or ``C x H x W`` (torch) array, C in {1, 3, 4}; uint8, uint16,
            bool or float. Floats already in [0, 1] are kept; other floats are min-max scaled.
        name: used in error messages.
        channels_first: layout of a 3-D input; by default torch tensors are ``C x H x W`` and numpy arrays
            ``H x W x C``.
    """
    is_tensor = isinstance(image, torch.Tensor)
    if channels_first is None:
        channels_first = is_tensor
    t = image.detach().cpu() if is_tensor else torch.from_numpy(np.array(image, copy=True))
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
    if dtype == torch.bool:
        t = t.float()
    elif dtype == torch.uint8:
        t = t.float() / 255.0
    elif dtype in (torch.uint16, torch.int32, torch.int64, torch.int16, torch.int8):
        # 16-bit data often arrives as a wider integer type; scale by the 16-bit range when it fits.
        tf = t.to(torch.float64)
        top = 65535.0 if (dtype == torch.uint16 or float(tf.max()) > 255) else 255.0
        t = (tf / top).clamp(0, 1).float()
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


def load_image(image: ImageLike, name: str = "image") -> torch.Tensor:
    """A path, numpy array or tensor -> ``C x H x W`` float32 tensor in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    return to_image_tensor(image, name=name)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """``C x H x W`` -> ``1 x H x W`` (BT.601 luma for RGB, unchanged for gray)."""
    if image.shape[0] == 1:
        return image
    return (image * _LUMA.to(image).view(3, 1, 1)).sum(0, keepdim=True)


def select_channels(fixed: torch.Tensor, moving: torch.Tensor, mode: str):
    """Choose the channels MI compares.

    Args:
        mode: ``auto`` (all channels when both images have the same count, else luminance), ``gray`` (luminance),
            ``rgb`` (both must be RGB; gray is repeated), or a channel index ``"0"``, ``"1"``, ``"2"``.
    """
    if mode == "auto":
        return (fixed, moving) if fixed.shape[0] == moving.shape[0] else (luminance(fixed), luminance(moving))
    if mode == "gray":
        return luminance(fixed), luminance(moving)
    if mode == "rgb":
        return fixed.expand(3, -1, -1).contiguous(), moving.expand(3, -1, -1).contiguous()
    if mode in ("0", "1", "2"):
        c = int(mode)
        pick = lambda im: im[c : c + 1] if im.shape[0] > c else luminance(im)  # noqa: E731
        return pick(fixed), pick(moving)
    raise ValueError(f"data.channels: unknown value {mode!r}; expected auto, gray, rgb, 0, 1 or 2")


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """``C x H x W`` float in [0, 1] -> ``H x W x C`` (or ``H x W``) uint8 array."""
    array = (image.detach().float().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def save_image_atomic(image: torch.Tensor, path: Union[str, os.PathLike]) -> None:
    """Write a ``C x H x W`` [0, 1] image to ``path`` (format from the suffix) via a temporary file and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        Image.fromarray(to_uint8_hwc(image)).save(tmp, format=Image.registered_extensions().get(path.suffix.lower()))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
