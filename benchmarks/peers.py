"""The registration methods that benchmarks/compare.py runs, each as ``f(fixed, moving, **settings) -> 3 x 3``.

Every function returns ``moving_pix_trans_fixed_pix``: the matrix that maps a fixed-image pixel (x, y, 1) (x = column,
pixel centres at integers) to the moving-image pixel that corresponds to it (drmime_pl's convention).

* SimpleITK and elastix transforms map a point of the fixed image's physical space to the moving image's: with
  origin 0 and spacing 1 (what ``GetImageFromArray`` gives) physical points are pixel (x, y), so their transform
  *is* this matrix; it is read by mapping a grid of points and fitting an affine matrix (exact for affine).
* OpenCV's ``findTransformECC(template, input, W)`` finds W with ``input(W p) ~ template(p)`` (the warp that
  ``warpPerspective(input, W, flags=WARP_INVERSE_MAP)`` applies): with template = fixed and input = moving, W is
  this matrix too (checked by ``benchmarks/check_directions.py``).

Images come in as ``H x W`` (gray) or ``H x W x 3`` float32 arrays in [0, 1]; the classic tools get luminance.
"""
from __future__ import annotations

import math
import os
import time
from typing import Optional

import numpy as np

THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def to_gray(image: np.ndarray) -> np.ndarray:
    """BT.601 luminance of an ``H x W x 3`` array (``H x W`` passes through). float32."""
    if image.ndim == 2:
        return image.astype(np.float32)
    return (image[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares ``3 x 3`` affine matrix with dst ~ A src (``N x 2`` points)."""
    a = np.c_[src, np.ones(len(src))]
    sol, *_ = np.linalg.lstsq(a, dst, rcond=None)  # 3 x 2
    m = np.eye(3)
    m[:2, :] = sol.T
    return m


def _probe_points(hw) -> np.ndarray:
    h, w = hw
    xs, ys = np.meshgrid(np.linspace(0, w - 1, 5), np.linspace(0, h - 1, 5))
    return np.c_[xs.ravel(), ys.ravel()]


# ---------------------------------------------------------------------------------------------------- SimpleITK
#: The SimpleITK setting used in the benchmark (chosen by benchmarks/tune_peers.py, see RESULTS.md).
SITK_DEFAULT = dict(init="geometry", bins=32, sampling=0.25, shrink=(4, 2, 1), sigmas=(2, 1, 0), lr=1.0,
                    iterations=300, optimizer="gd", estimate="each", conv_min=1e-8, conv_window=30)


def register_sitk(fixed: np.ndarray, moving: np.ndarray, init: str = "geometry", bins: int = 32,
                  sampling: float = 0.2, shrink=(8, 4, 2, 1), sigmas=(4, 2, 1, 0), lr: float = 1.0,
                  iterations: int = 300, optimizer: str = "gd", estimate: str = "once", conv_min: float = 1e-6, conv_window: int = 10,
                  min_step: float = 1e-4, strategy: str = "random", seed: int = 0) -> np.ndarray:
    """SimpleITK ImageRegistrationMethod: Mattes MI, affine, centred initialisation, multi-resolution.

    Args:
        init: ``geometry`` or ``moments`` (CenteredTransformInitializer).
        bins: Mattes histogram bins; sampling: random sampling fraction per level.
        shrink, sigmas: shrink factors and smoothing sigmas (pixels) per level, coarse to fine.
        lr, iterations, optimizer: ``gd`` gradient descent or ``rsgd`` regular step gradient descent.
        estimate: for ``gd``, estimate the learning rate from the physical shift ``once`` per level or ``each``
            iteration. conv_min, conv_window: ``gd`` stops when the metric's convergence value (over a window of
            iterations) falls below conv_min. min_step: ``rsgd``'s smallest step.
        strategy: ``random`` or ``regular`` metric sampling.
    """
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(THREADS)
    f = sitk.GetImageFromArray(to_gray(fixed))
    m = sitk.GetImageFromArray(to_gray(moving))
    mode = (sitk.CenteredTransformInitializerFilter.GEOMETRY if init == "geometry"
            else sitk.CenteredTransformInitializerFilter.MOMENTS)
    initial = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(2), mode)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    reg.SetMetricSamplingStrategy(reg.RANDOM if strategy == "random" else reg.REGULAR)
    reg.SetMetricSamplingPercentage(sampling, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    if optimizer == "gd":
        reg.SetOptimizerAsGradientDescent(learningRate=lr, numberOfIterations=iterations,
                                          convergenceMinimumValue=conv_min, convergenceWindowSize=conv_window,
                                          estimateLearningRate=reg.Once if estimate == "once" else reg.EachIteration)
    else:
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=lr, minStep=min_step, numberOfIterations=iterations,
                                                     relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel(list(sigmas))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    tx = reg.Execute(f, m)
    pts = _probe_points(fixed.shape[:2])
    moved = np.array([tx.TransformPoint((float(x), float(y))) for x, y in pts])
    return fit_affine(pts, moved)


# ------------------------------------------------------------------------------------------------------ elastix
def register_elastix(fixed: np.ndarray, moving: np.ndarray, centred: bool = False) -> np.ndarray:
    """itk-elastix with ``GetDefaultParameterMap("affine")`` unchanged (it starts from the identity transform).

    ``centred=True`` adds ``AutomaticTransformInitialization=true`` (geometrical centres); not used by
    compare.py: on same-size pairs it is the identity, and on the BIRL pairs it was checked by hand (RESULTS.md).
    """
    import itk

    f = itk.GetImageFromArray(np.ascontiguousarray(to_gray(fixed)))
    m = itk.GetImageFromArray(np.ascontiguousarray(to_gray(moving)))
    params = itk.ParameterObject.New()
    pmap = params.GetDefaultParameterMap("affine")
    if centred:
        pmap["AutomaticTransformInitialization"] = ["true"]
        pmap["AutomaticTransformInitializationMethod"] = ["GeometricalCenter"]
    params.AddParameterMap(pmap)
    _, result = itk.elastix_registration_method(f, m, parameter_object=params, log_to_console=False,
                                                number_of_threads=THREADS)
    pm = result.GetParameterMap(0)
    p = np.array([float(v) for v in pm["TransformParameters"]])
    c = np.array([float(v) for v in pm["CenterOfRotationPoint"]])
    a = p[:4].reshape(2, 2)
    t = p[4:6]
    # ITK AffineTransform: T(x) = A (x - c) + c + t, fixed physical -> moving physical (= pixels here)
    out = np.eye(3)
    out[:2, :2] = a
    out[:2, 2] = t + c - a @ c
    return out


# ------------------------------------------------------------------------------------------------------ OpenCV
ECC_DEFAULT = dict(min_size=48, iterations=100, eps=1e-5, gauss=5, init="centre")


def _ecc_scale(level: int) -> np.ndarray:
    """Full-resolution pixel (x, y, 1) -> pixel of pyramid level ``level``: pyrDown keeps the even pixels of the
    blurred image, so coarse pixel i sits on fine pixel 2 i (no half-pixel offset)."""
    s = 0.5 ** level
    return np.diag([s, s, 1.0])


def register_ecc(fixed: np.ndarray, moving: np.ndarray, min_size: int = 48, iterations: int = 100,
                 eps: float = 1e-5, gauss: int = 5, init: str = "centre") -> np.ndarray:
    """OpenCV ECC, MOTION_HOMOGRAPHY, coarse to fine over a pyrDown pyramid (coarsest short side >= ``min_size``).

    The estimate starts at the translation that puts the image centres together (``init="centre"``) or identity.
    A level where ECC does not converge keeps the previous level's estimate.
    """
    import cv2

    cv2.setNumThreads(THREADS)
    f0, m0 = to_gray(fixed), to_gray(moving)
    levels = max(1, 1 + int(math.floor(math.log2(min(min(f0.shape), min(m0.shape)) / min_size))))
    pf, pm = [f0], [m0]
    for _ in range(levels - 1):
        pf.append(cv2.pyrDown(pf[-1]))
        pm.append(cv2.pyrDown(pm[-1]))
    warp = np.eye(3)
    if init == "centre":
        warp[0, 2] = (m0.shape[1] - f0.shape[1]) / 2.0
        warp[1, 2] = (m0.shape[0] - f0.shape[0]) / 2.0
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps)
    for lvl in range(levels - 1, -1, -1):
        # full-resolution matrix -> this level: p_l = S p_0 with S = scale 2^-l (pyrDown: size ceil(/2))
        sf = sm = _ecc_scale(lvl)
        w_l = (sm @ warp @ np.linalg.inv(sf)).astype(np.float32)
        w_l /= w_l[2, 2]
        try:
            _, w_l = cv2.findTransformECC(pf[lvl], pm[lvl], w_l, cv2.MOTION_HOMOGRAPHY, criteria, None, gauss)
        except cv2.error:
            continue
        if not np.isfinite(w_l).all():
            continue
        warp = np.linalg.inv(sm) @ w_l.astype(np.float64) @ sf
        warp /= warp[2, 2]
    return warp


# ---------------------------------------------------------------------------------------------------- drmime_pl
def register_drmime(fixed, moving, transform: Optional[str] = "affine", overrides=()) -> np.ndarray:
    """``drmime_pl.register`` with the default config (``overrides`` appended; ``transform=None`` keeps the
    default model). ``fixed``/``moving``: arrays."""
    import drmime_pl

    res = drmime_pl.register(fixed, moving, transform=transform, overrides=list(overrides))
    return np.asarray(res.matrix, dtype=np.float64)


def register_seed(fixed, moving, steps: int = 500) -> np.ndarray:
    from seed_recipe import register_seed as run

    matrix, _ = run(fixed, moving, steps=steps)
    return matrix


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start
