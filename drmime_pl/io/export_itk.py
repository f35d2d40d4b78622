"""Export a registration to ITK (SimpleITK) and elastix/transformix files.

``transform.json["matrix"]`` maps a fixed-image pixel (x, y, 1) to the moving-image pixel sampled for it: with pixel
centres at integers this is *exactly* ITK's resampling transform (fixed -> moving) in index space, i.e. in physical
space when spacing is 1 and origin 0. With spacing ``s`` and origin ``o`` (physical = ``o + s * index`` on each
axis, direction identity) the physical transform is::

    T_phys = A_moving @ matrix @ inv(A_fixed),   A = [[s_x, 0, o_x], [0, s_y, o_y], [0, 0, 1]]

Files (all text except the field, all pure functions of numbers here; :func:`write_exports` writes them atomically):

* ``transform.tfm``: ``#Insight Transform File V1.0``, ``AffineTransform_double_2_2`` (parameters ``a00 a01 a10 a11
  t_x t_y``, fixed parameters = centre 0 0), for every model up to affine. ITK has no 2-D perspective transform: for
  ``perspective`` the transform is written as a dense displacement field ``transform_field.mha`` (MetaImage, 2-vector
  float32 per fixed pixel, 8 bytes a pixel, the fixed image's spacing and origin; ``T(p) = p + d(p)``), which
  SimpleITK reads as a ``DisplacementFieldTransform`` (after a cast to ``sitkVectorFloat64``); no ``.tfm`` then.
* ``TransformParameters.txt``: elastix ``AffineTransform`` (up to affine) or ``DeformationFieldTransform``
  pointing at ``transform_field.mha`` (perspective), with the fixed grid (``Size``, ``Spacing``, ``Origin``),
  linear resampling (``FinalBSplineInterpolationOrder 1``) and ``DefaultPixelValue 0``, so that
  ``transformix -tp TransformParameters.txt -in moving -out dir`` gives the image ``drmime_pl.warp`` gives.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from .atomic import write_bytes_atomic as _write_atomic

TFM_NAME = "transform.tfm"
FIELD_NAME = "transform_field.mha"
ELASTIX_NAME = "TransformParameters.txt"


@dataclass(frozen=True)
class Geometry:
    """Physical placement of an image: physical = origin + spacing * index (x then y), direction identity."""

    spacing: Tuple[float, float] = (1.0, 1.0)
    origin: Tuple[float, float] = (0.0, 0.0)

    def matrix(self) -> np.ndarray:
        """``3 x 3`` index (x, y, 1) -> physical (x, y, 1)."""
        (sx, sy), (ox, oy) = self.spacing, self.origin
        return np.array([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]])


UNIT = Geometry()


def is_affine(matrix, tol: float = 1e-12) -> bool:
    m = np.asarray(matrix, dtype=np.float64)
    return abs(m[2, 0]) <= tol and abs(m[2, 1]) <= tol


def physical_matrix(matrix, fixed: Geometry = UNIT, moving: Geometry = UNIT) -> np.ndarray:
    """Pixel ``moving_pix_trans_fixed_pix`` -> physical fixed -> moving ``3 x 3`` (last entry scaled to 1)."""
    m = moving.matrix() @ np.asarray(matrix, dtype=np.float64) @ np.linalg.inv(fixed.matrix())
    return m / m[2, 2]


def pixel_matrix(physical, fixed: Geometry = UNIT, moving: Geometry = UNIT) -> np.ndarray:
    """Inverse of :func:`physical_matrix`."""
    m = np.linalg.inv(moving.matrix()) @ np.asarray(physical, dtype=np.float64) @ fixed.matrix()
    return m / m[2, 2]


def _num(v: float) -> str:
    return repr(float(v))


def tfm_text(physical) -> str:
    """ITK Insight Transform File of an affine physical fixed -> moving matrix."""
    m = np.asarray(physical, dtype=np.float64)
    if not is_affine(m):
        raise ValueError("a perspective matrix has no ITK 2-D transform class; write a displacement field")
    m = m / m[2, 2]
    params = [m[0, 0], m[0, 1], m[1, 0], m[1, 1], m[0, 2], m[1, 2]]
    return ("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_2_2\n"
            f"Parameters: {' '.join(_num(p) for p in params)}\nFixedParameters: 0 0\n")


def parse_tfm(text: str, name: str = "transform") -> np.ndarray:
    """Physical fixed -> moving ``3 x 3`` of a single 2-D ``.tfm`` transform: Affine, MatrixOffset, Translation,
    Euler2D, Similarity2D (double or float). Raises ValueError for anything else."""
    fields = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            fields.setdefault(k.strip(), v.strip())
    kind = fields.get("Transform", "")
    try:
        p = [float(x) for x in fields.get("Parameters", "").split()]
        fp = [float(x) for x in fields.get("FixedParameters", "").split()]
    except ValueError:
        raise ValueError(f"{name}: unreadable Parameters/FixedParameters") from None
    base = kind.split("_")[0]
    if not kind.endswith("_2_2") and not kind.endswith("_2"):
        raise ValueError(f"{name}: expected a 2-D ITK transform, got {kind or 'nothing'!r}")
    centre = np.array(fp[:2] if len(fp) >= 2 else [0.0, 0.0])
    if base in ("AffineTransform", "MatrixOffsetTransformBase") and len(p) == 6:
        a, t = np.array(p[:4]).reshape(2, 2), np.array(p[4:6])
    elif base == "TranslationTransform" and len(p) == 2:
        a, t, centre = np.eye(2), np.array(p), np.zeros(2)
    elif base == "Euler2DTransform" and len(p) == 3:
        c, s = np.cos(p[0]), np.sin(p[0])
        a, t = np.array([[c, -s], [s, c]]), np.array(p[1:3])
    elif base == "Similarity2DTransform" and len(p) == 4:
        c, s = p[0] * np.cos(p[1]), p[0] * np.sin(p[1])
        a, t = np.array([[c, -s], [s, c]]), np.array(p[2:4])
    else:
        raise ValueError(f"{name}: unsupported ITK transform {kind!r} with {len(p)} parameters (expected an affine, "
                         "translation, Euler2D or Similarity2D transform)")
    # ITK: T(x) = A (x - c) + c + t
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = a, t + centre - a @ centre
    return m


def displacement_field(physical, fixed_hw: Sequence[int], fixed: Geometry = UNIT) -> np.ndarray:
    """``H x W x 2`` float32 physical displacement ``T(p) - p`` at every fixed pixel centre."""
    h, w = int(fixed_hw[0]), int(fixed_hw[1])
    m = np.asarray(physical, dtype=np.float64)
    px = (fixed.origin[0] + fixed.spacing[0] * np.arange(w, dtype=np.float64))[None, :]  # 1 x W
    py = (fixed.origin[1] + fixed.spacing[1] * np.arange(h, dtype=np.float64))[:, None]  # H x 1
    out = np.empty((h, w, 2), dtype=np.float32)
    den = m[2, 0] * px + m[2, 1] * py + m[2, 2]  # H x W
    out[..., 0] = (m[0, 0] * px + m[0, 1] * py + m[0, 2]) / den - px
    out[..., 1] = (m[1, 0] * px + m[1, 1] * py + m[1, 2]) / den - py
    return out


def mha_bytes(field: np.ndarray, fixed: Geometry = UNIT) -> bytes:
    """A MetaImage (``.mha``) of an ``H x W x 2`` float32 vector image. Uncompressed: zlib saves under 10% on
    float displacements and costs seconds for a large image."""
    field = np.ascontiguousarray(field, dtype="<f4")
    h, w, c = field.shape
    data = field.tobytes()
    header = (
        "ObjectType = Image\nNDims = 2\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "CompressedData = False\nTransformMatrix = 1 0 0 1\n"
        f"Offset = {_num(fixed.origin[0])} {_num(fixed.origin[1])}\nCenterOfRotation = 0 0\n"
        f"AnatomicalOrientation = ??\nElementSpacing = {_num(fixed.spacing[0])} {_num(fixed.spacing[1])}\n"
        f"DimSize = {w} {h}\nElementNumberOfChannels = {c}\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    )
    return header.encode("ascii") + data


def elastix_text(physical, fixed_hw: Sequence[int], fixed: Geometry = UNIT, field_file: Optional[str] = None,
                 pixel_type: str = "float", image_format: str = "mha") -> str:
    """elastix/transformix ``TransformParameters.txt``: an ``AffineTransform``, or with ``field_file`` a
    ``DeformationFieldTransform`` reading that displacement field."""
    h, w = int(fixed_hw[0]), int(fixed_hw[1])
    m = np.asarray(physical, dtype=np.float64)
    m = m / m[2, 2]
    if field_file is None:
        if not is_affine(m):
            raise ValueError("a perspective matrix needs a deformation field (field_file)")
        params = [m[0, 0], m[0, 1], m[1, 0], m[1, 1], m[0, 2], m[1, 2]]
        transform = (f'(Transform "AffineTransform")\n(NumberOfParameters 6)\n'
                     f"(TransformParameters {' '.join(_num(p) for p in params)})\n(CenterOfRotationPoint 0 0)\n")
    else:
        transform = (f'(Transform "DeformationFieldTransform")\n(NumberOfParameters 0)\n'
                     f'(DeformationFieldFileName "{field_file}")\n(DeformationFieldInterpolationOrder 1)\n')
    return (
        "// drmime_pl: fixed (output) physical point -> moving physical point; apply with\n"
        "// transformix -tp TransformParameters.txt -in moving_image -out out_dir\n"
        + transform
        + '(InitialTransformParametersFileName "NoInitialTransform")\n(HowToCombineTransforms "Compose")\n'
        '(FixedImageDimension 2)\n(MovingImageDimension 2)\n'
        '(FixedInternalImagePixelType "float")\n(MovingInternalImagePixelType "float")\n'
        f"(Size {w} {h})\n(Index 0 0)\n(Spacing {_num(fixed.spacing[0])} {_num(fixed.spacing[1])})\n"
        f"(Origin {_num(fixed.origin[0])} {_num(fixed.origin[1])})\n(Direction 1 0 0 1)\n"
        '(UseDirectionCosines "true")\n'
        '(ResampleInterpolator "FinalBSplineInterpolator")\n(FinalBSplineInterpolationOrder 1)\n'
        '(Resampler "DefaultResampler")\n(DefaultPixelValue 0)\n'
        f'(ResultImageFormat "{image_format}")\n(ResultImagePixelType "{pixel_type}")\n(CompressResultImage "false")\n'
    )


#: numpy dtype -> elastix ResultImagePixelType
ELASTIX_PIXEL_TYPES = {"uint8": "unsigned char", "uint16": "unsigned short", "int16": "short", "int8": "char",
                       "uint32": "unsigned int", "int32": "int", "float32": "float", "float64": "double"}




def write_exports(matrix, fixed_hw: Sequence[int], out_dir, fixed: Geometry = UNIT, moving: Geometry = UNIT,
                  itk: bool = True, elastix: bool = True, moving_dtype: str = "float32",
                  moving_format: str = "mha") -> list:
    """Write ``transform.tfm`` or ``transform_field.mha`` (``itk``) and ``TransformParameters.txt`` (``elastix``)
    into ``out_dir`` for the pixel matrix ``matrix`` (fixed px -> moving px). Returns the paths written.

    ``moving_dtype`` and ``moving_format`` choose transformix's ``ResultImagePixelType`` and ``ResultImageFormat``
    (the moving image's own, so that transformix writes what was read).
    """
    out_dir = Path(out_dir)
    phys = physical_matrix(matrix, fixed, moving)
    written = []
    affine = is_affine(phys, tol=1e-12 * max(1.0, float(np.abs(phys).max())))
    if not affine and (itk or elastix):
        _write_atomic(mha_bytes(displacement_field(phys, fixed_hw, fixed), fixed), out_dir / FIELD_NAME)
        written.append(out_dir / FIELD_NAME)
    if itk and affine:
        phys_affine = phys.copy()
        phys_affine[2, :2] = 0.0
        _write_atomic(tfm_text(phys_affine).encode(), out_dir / TFM_NAME)
        written.append(out_dir / TFM_NAME)
    if elastix:
        phys_affine = phys.copy()
        if affine:
            phys_affine[2, :2] = 0.0
        text = elastix_text(phys_affine, fixed_hw, fixed, None if affine else str((out_dir / FIELD_NAME).resolve()),
                            pixel_type=ELASTIX_PIXEL_TYPES.get(str(moving_dtype), "float"), image_format=moving_format)
        _write_atomic(text.encode(), out_dir / ELASTIX_NAME)
        written.append(out_dir / ELASTIX_NAME)
    return written
