"""The result of a registration and the files it is written to."""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from .atomic import write_json_atomic, write_text_atomic  # noqa: F401 - write_json_atomic: re-exported
from .geometry import transform_points, warp_image


@dataclass
class Registration:
    """A finished registration.

    Attributes:
        matrix: ``3 x 3`` ``moving_pix_trans_fixed_pix``: maps a fixed-image pixel (x, y, 1) (x = column, y = row,
            pixel centres at integers) to the moving-image pixel that lands on it; [2, 2] is 1.
        matrix_normalised: the same transform in the normalised frame (:mod:`drmime_pl.geometry`), fixed -> moving.
        coefficients_shared, coefficients_fine: matrix-exponential coefficients (all levels; finest level only).
        quality: how far the result can be trusted (:mod:`drmime_pl.quality`): ``suspect`` with a ``reason``,
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
    quality: dict = field(default_factory=dict)  # the verdict of drmime_pl.quality: ngf, z, suspect, reason, chosen

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
        from .api import warp

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


def library_versions() -> dict:
    import pytorch_lightning

    from . import __version__

    return {"drmime_pl": __version__, "torch": torch.__version__, "pytorch_lightning": pytorch_lightning.__version__,
            "python": platform.python_version()}




def write_outputs(result: Registration, fixed: torch.Tensor, moving: torch.Tensor, out_dir: Path, config_yaml: str,
                  warped: bool = True, overlay: bool = True, overlay_size: int = 1024, itk: bool = True,
                  elastix: bool = True, started: Optional[float] = None) -> None:
    """Write ``config.yaml``, ``warped.png``, ``overlay.png`` and, last, ``transform.json`` into ``out_dir``.

    ``started``: the ``time.perf_counter()`` at which the run began; ``result.wall_seconds`` is then set to the time
    since, just before ``transform.json`` is written.

    Every file is written under a temporary name and renamed, and ``transform.json`` comes last: when it exists,
    the run finished and every other file is whole.
    """
    from .images import save_image_atomic
    from .render import overlay_of

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_yaml, out_dir / "config.yaml")
    if overlay:
        save_image_atomic(overlay_of(fixed, moving, result.matrix, overlay_size), out_dir / "overlay.png")
    if warped:
        from .warp_cli import write_warped_native  # the moving file's own dtype and channels (issue 11)

        if write_warped_native(result, out_dir) is None:  # an array or tensor given, not a file
            warped_img = warp_image(moving, torch.as_tensor(result.matrix), result.fixed_shape).clamp_(0, 1)
            save_image_atomic(warped_img, out_dir / "warped.png")
    if itk or elastix:  # transform.tfm / transform_field.mha, TransformParameters.txt (issue 11)
        from .export_itk import write_run_exports

        write_run_exports(result, out_dir, itk=itk, elastix=elastix)
    if started is not None:
        import time

        result.wall_seconds = time.perf_counter() - started
    write_json_atomic(result.to_json(), out_dir / "transform.json")
