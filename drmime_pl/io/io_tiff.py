"""TIFF in and out with tifffile: any channel count, CYX or YXC, OME and ImageJ hyperstacks, any pixel type.

* :func:`read_tiff` -> :class:`TiffImage`: the first series as stored (``array`` with its ``axes``, e.g. ``YX``,
  ``YXS``, ``CYX``, ``ZCYX``, ``TZCYXS``), OME channel names, ImageJ/OME flags and the physical :class:`Geometry`.
* :func:`registration_planes`: ``C x H x W`` of the first Z/T plane with every channel (C and S axes), the
  associated-alpha sample dropped: what registration compares (:func:`drmime_pl.io.images.read_tiff_tensor` makes
  the float tensor of it).
* :func:`write_tiff`: write an array with axes back (OME or ImageJ when the input was), resolution kept.

Spacing follows ITK's TIFF reader, so exported transforms agree with what SimpleITK/elastix read from the same
file: ResolutionUnit inch -> ``25.4 / XResolution`` (mm), centimetre -> ``10 / XResolution`` (mm), none -> 1.
The origin is 0 (ITK ignores XPosition/YPosition).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import ImageError
from .export_itk import Geometry

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".btf", ".tf8")
CHANNEL_AXES = "CS"


def is_tiff(path) -> bool:
    return str(path).lower().endswith((".tif", ".tiff", ".btf", ".tf8"))


@dataclass
class TiffImage:
    array: np.ndarray
    axes: str
    geometry: Geometry = field(default_factory=Geometry)
    channel_names: List[str] = field(default_factory=list)
    ome: bool = False
    imagej: bool = False
    alpha: bool = False  # the last S sample is (associated or unassociated) alpha
    resolution: Optional[tuple] = None  # (x, y, unit) as tifffile writes it back

    @property
    def hw(self):
        return self.array.shape[self.axes.index("Y")], self.array.shape[self.axes.index("X")]


def _geometry(page) -> tuple:
    tags = page.tags
    try:
        xr = tags["XResolution"].value if "XResolution" in tags else None
        yr = tags["YResolution"].value if "YResolution" in tags else xr
        unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    except Exception:  # noqa: BLE001 - malformed tags: unit spacing
        return Geometry(), None
    if xr is None:
        return Geometry(), None
    x = xr[0] / xr[1] if xr[1] else 0.0
    y = yr[0] / yr[1] if yr[1] else 0.0
    resolution = (x, y, unit)
    if x <= 0 or y <= 0 or unit not in (2, 3):
        return Geometry(), resolution
    per = 25.4 if unit == 2 else 10.0
    return Geometry(spacing=(per / x, per / y)), resolution


def _ome_channel_names(xml: Optional[str]) -> List[str]:
    if not xml:
        return []
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    names = []
    for el in root.iter():
        if el.tag.endswith("}Channel") or el.tag == "Channel":
            names.append(el.get("Name") or el.get("ID") or "")
        if el.tag.endswith("}Image") and names:
            break
    return names


def read_tiff(path) -> TiffImage:
    """Read the first series of a TIFF. Raises :class:`ImageError` for an unreadable file."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            array = series.asarray()
            axes = series.axes
            page = series.pages[0] if series.pages else tf.pages[0]
            geometry, resolution = _geometry(page)
            names = _ome_channel_names(tf.ome_metadata) if tf.is_ome else []
            extrasamples = page.extrasamples if hasattr(page, "extrasamples") else ()
            alpha = bool(len(extrasamples) and int(extrasamples[-1]) in (1, 2))
            out = TiffImage(array, axes, geometry, names, bool(tf.is_ome), bool(tf.is_imagej), alpha, resolution)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds
        raise ImageError(f"{path}: not a readable TIFF ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if "Y" not in out.axes or "X" not in out.axes:
        raise ImageError(f"{path}: TIFF series has axes {out.axes!r}; expected Y and X")
    return out


def registration_planes(img: TiffImage) -> np.ndarray:
    """``C x H x W`` (native dtype): every channel (C and S axes; pages of a TIFF without axis metadata) of the
    first plane of the other axes (Z, T, ...). An alpha sample is dropped."""
    a, axes = img.array, img.axes
    if img.alpha and "S" in axes and a.shape[axes.index("S")] > 1:
        a = np.take(a, range(a.shape[axes.index("S")] - 1), axis=axes.index("S"))
    # Pages of a TIFF without axis metadata (tifffile's Q / I axes) are channels when nothing else is.
    channel_axes = CHANNEL_AXES if any(ax in CHANNEL_AXES for ax in axes) else "QI"
    keep = [ax for ax in axes if ax in "YX" + channel_axes]
    index = tuple(slice(None) if ax in keep else 0 for ax in axes)
    a = a[index]
    axes = "".join(keep)
    chan = [ax for ax in axes if ax in channel_axes]
    order = [axes.index(ax) for ax in chan] + [axes.index("Y"), axes.index("X")]
    a = np.transpose(a, order)
    return a.reshape((-1,) + a.shape[-2:])


def write_tiff(array: np.ndarray, axes: str, path, like: Optional[TiffImage] = None) -> None:
    """Write ``array`` (with ``axes``) as a TIFF (OME or ImageJ when ``like`` was), via a temporary name."""
    import tifffile

    from .atomic import atomic_path

    path = Path(path)
    kwargs = {}
    if like is not None and like.resolution is not None:
        x, y, unit = like.resolution
        if x > 0 and y > 0:
            kwargs["resolution"] = (x, y)
            kwargs["resolutionunit"] = unit
    if axes.endswith("YXS") and array.shape[-1] in (3, 4) and array.dtype in (np.uint8, np.uint16):
        kwargs["photometric"] = "rgb"
        if array.shape[-1] == 4:
            kwargs["extrasamples"] = ("unassalpha",)
    elif "S" not in axes:
        kwargs["photometric"] = "minisblack"
    with atomic_path(path) as tmp:
        if like is not None and like.ome:
            meta = {"axes": axes}
            if like.channel_names:
                meta["Channel"] = {"Name": list(like.channel_names)}
            tifffile.imwrite(tmp, array, ome=True, metadata=meta, **kwargs)
        elif like is not None and like.imagej and array.dtype in (np.uint8, np.uint16, np.float32):
            tifffile.imwrite(tmp, array, imagej=True, metadata={"axes": axes},
                             **{k: v for k, v in kwargs.items() if k != "extrasamples"})
        else:
            tifffile.imwrite(tmp, array, metadata={"axes": axes}, **kwargs)


def geometry_of(path) -> Geometry:
    """Spacing/origin of an image file as ITK reads it: TIFF resolution tags, else unit spacing and zero origin."""
    if path is None or not is_tiff(path) or not Path(path).is_file():
        return Geometry()
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            return _geometry(tf.series[0].pages[0] if tf.series else tf.pages[0])[0]
    except Exception:  # noqa: BLE001
        return Geometry()
