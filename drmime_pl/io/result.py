"""The result of a registration (:class:`Registration`) and the files it is written to (:func:`write_outputs`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..core.geometry import transform_points, warp_image
from .atomic import write_json_atomic, write_text_atomic
from .images import ImageLike, load_image


@dataclass
class Registration:
    """A finished registration.

    Attributes:
        matrix: ``3 x 3`` ``moving_pix_trans_fixed_pix``: maps a fixed-image pixel (x, y, 1) (x = column, y = row,
            pixel centres at integers) to the moving-image pixel that lands on it; [2, 2] is 1.
        matrix_normalised: the same transform in the normalised frame (:mod:`drmime_pl.core.geometry`), fixed ->
            moving.
        coefficients_shared, coefficients_fine: matrix-exponential coefficients (all levels; finest level only).
        quality: how far the result can be trusted (:mod:`drmime_pl.core.quality`): ``suspect`` with a ``reason``,
            the NGF score ``ngf`` and its ``z`` against misaligned copies, and which candidate was ``chosen``.
    """

    matrix: np.ndarray
    matrix_normalised: np.ndarray
    coefficients_shared: np.ndarray
    coefficients_fine: np.ndarray
    transform: str
    fixed_shape: Tuple[int, int]
    moving_shape: Tuple[int, int]
    scale: float
    mi_per_level: List[float]
    steps: int
    seconds: float
    converged: bool
    seed: int
    fixed: str = "fixed image"
    moving: str = "moving image"
    output_dir: Optional[str] = None
    checkpoint: Optional[str] = None
    #: the whole fit() call, from its start to just before transform.json is written: loading, preparation,
    #: optimisation (``seconds``) and the other output files; None when unknown (older transform.json files).
    wall_seconds: Optional[float] = None
    versions: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)  # the verdict of drmime_pl.core.quality: ngf, z, suspect, reason, chosen

    @property
    def final_mi(self) -> float:
        """Mean over levels of the final MI estimate (nats, averaged over the last steps)."""
        return float(np.mean(self.mi_per_level)) if len(self.mi_per_level) else float("nan")

    def transform_points(self, points, inverse: bool = False) -> np.ndarray:
        """Map ``N x 2`` fixed-image pixel points (x, y) to moving-image pixels (``inverse=True``: moving -> fixed)."""
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        matrix = torch.as_tensor(np.asarray(self.matrix, dtype=np.float64))
        return transform_points(torch.linalg.inv(matrix) if inverse else matrix, pts).numpy()

    @classmethod
    def load(cls, path) -> "Registration":
        """Read a ``transform.json`` (keys it lacks get neutral values). Raises ``TransformFileError``."""
        from .transform_io import registration_from_json

        return registration_from_json(cls, path)

    def inverse(self) -> "Registration":
        """The inverse registration: moving pixel -> fixed pixel, shapes and image names swapped."""
        from .transform_io import inverse_registration

        return inverse_registration(self)

    def warp(self, moving) -> np.ndarray:
        """Resample ``moving`` (path, array or tensor) onto the fixed image's grid. Returns ``H x W (x C)`` float."""
        return warp(moving, self.matrix, self.fixed_shape)

    def to_json(self) -> dict:
        d = asdict(self)
        for key in ("matrix", "matrix_normalised", "coefficients_shared", "coefficients_fine"):
            d[key] = np.asarray(d[key]).tolist()
        d["final_mi"] = self.final_mi
        d["convention"] = (
            "matrix maps fixed-image pixel (x, y, 1) to moving-image pixel (x, y, 1); x = column, y = row, "
            "pixel centres at integer coordinates, (0, 0) = centre of the top-left pixel; divide by the third "
            "coordinate. matrix_normalised acts in the normalised frames: origin at each image's centre, "
            "one unit = scale pixels."
        )
        d["fixed_shape"] = list(self.fixed_shape)  # (H, W)
        d["moving_shape"] = list(self.moving_shape)
        return d


def write_outputs(result: Registration, fixed: torch.Tensor, moving: torch.Tensor, out_dir: Path, config_yaml: str,
                  warped: bool = True, overlay: bool = True, overlay_size: int = 1024, itk: bool = True,
                  elastix: bool = True, started: Optional[float] = None) -> None:
    """Write ``config.yaml``, ``warped.png``, ``overlay.png`` and, last, ``transform.json`` into ``out_dir``.

    ``started``: the ``time.perf_counter()`` at which the run began; ``result.wall_seconds`` is then set to the time
    since, just before ``transform.json`` is written.

    Every file is written under a temporary name and renamed, and ``transform.json`` comes last: when it exists,
    the run finished and every other file is whole.

    The warped image is made in a second thread (:func:`~drmime_pl.core.tasks.together`), under a temporary name,
    while this one makes the overlay and the exports; it takes its own name after them (FIRE A01: 0.9 -> 0.6 s
    with two cores; fifteenth round).
    """
    import os

    from ..core.tasks import together
    from .images import save_image_atomic
    from .native import warped_name, write_warped_native  # the moving file's own dtype and channels
    from .render import overlay_of

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_yaml, out_dir / "config.yaml")
    name = warped_name(result.moving) if isinstance(result.moving, str) else "warped.png"
    pending = out_dir / f".pending{os.getpid()}.{name}"  # the same suffix: it decides the format

    def warped_file() -> bool:
        """Whether the moving file was warped in its own type and channels and written to ``pending``."""
        return warped and write_warped_native(result, pending) is not None

    def the_others() -> None:
        if overlay:
            save_image_atomic(overlay_of(fixed, moving, result.matrix, overlay_size), out_dir / "overlay.png")
        if itk or elastix:  # transform.tfm / transform_field.mha, TransformParameters.txt (issue 11)
            write_run_exports(result, out_dir, itk=itk, elastix=elastix)

    try:
        native_written, _ = together(warped_file, the_others)
        if native_written:
            os.replace(pending, out_dir / name)
        elif warped:  # arrays given, or a pixel type the format cannot hold: the 8-bit preview
            warped_img = warp_image(moving, torch.as_tensor(result.matrix), result.fixed_shape).clamp_(0, 1)
            save_image_atomic(warped_img, out_dir / "warped.png")
    finally:
        if pending.exists():  # a failure before the rename: no warped image without its transform.json
            pending.unlink()
    if started is not None:
        import time

        result.wall_seconds = time.perf_counter() - started
    write_json_atomic(result.to_json(), out_dir / "transform.json")


def warp(moving: ImageLike, matrix, fixed_shape: Sequence[int]) -> Union[np.ndarray, torch.Tensor]:
    """Resample ``moving`` onto a fixed-image grid of ``fixed_shape = (H, W)``.

    ``out[y, x] = moving(matrix @ (x, y, 1))``, bilinear, zero outside the moving image; ``matrix`` is
    ``moving_pix_trans_fixed_pix`` as in ``Registration.matrix``.

    Returns:
        For a tensor input, a ``C x H x W`` float tensor; otherwise an ``H x W`` or ``H x W x C`` float numpy array
        in [0, 1] (the input's intensities, scaled as :func:`drmime_pl.io.images.load_image` scales them).
    """
    as_tensor = isinstance(moving, torch.Tensor)
    image = load_image(moving, name="moving image")
    out = warp_image(image, torch.as_tensor(np.asarray(matrix), dtype=torch.float64), fixed_shape[:2])
    if as_tensor:
        return out
    array = out.permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def _moving_type(path) -> Tuple[str, str]:
    """(numpy dtype name, transformix ResultImageFormat) of an image file, without decoding its pixels."""
    p = Path(str(path))
    suffix = p.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(p) as tf:
                return str(tf.series[0].dtype), "tif"
        from PIL import Image

        with Image.open(p) as im:
            mode = im.mode
        dtype = {"I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16", "I": "int32", "F": "float32"}.get(mode, "uint8")
        return dtype, "png" if suffix in (".png", ".jpg", ".jpeg") else "mha"
    except Exception:  # noqa: BLE001 - unknown: float MetaImage holds anything
        return "float32", "mha"


def write_run_exports(result, out_dir, itk: bool = True, elastix: bool = True) -> list:
    """:func:`~drmime_pl.io.export_itk.write_exports` for a finished :class:`Registration`: spacing/origin from the
    input files when they are TIFFs with resolution tags (else 1 and 0); transformix writes the moving file's type."""
    from .export_itk import write_exports
    from .io_tiff import geometry_of

    if not (itk or elastix):
        return []
    moving_path = result.moving if isinstance(result.moving, str) and Path(result.moving).is_file() else None
    fixed_path = result.fixed if isinstance(result.fixed, str) and Path(result.fixed).is_file() else None
    dtype, fmt = _moving_type(moving_path) if moving_path else ("float32", "mha")
    return write_exports(result.matrix, result.fixed_shape, out_dir, geometry_of(fixed_path), geometry_of(moving_path),
                         itk=itk, elastix=elastix, moving_dtype=dtype, moving_format=fmt)
