"""From two images (paths, arrays or tensors) and a config to everything the optimisation needs."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from ..core.channels import select_channels
from ..core.geometry import TRANSFORM_DOFS, pair_scale
from ..core.init import moments_init
from ..core.pyramid import auto_foreground, downsample_mask, gaussian_pyramid, max_levels, sampling_weights
from ..core.tasks import together
from ..errors import ImageError
from ..io.images import ImageLike, load_image

_MIN_FOREGROUND_PIXELS = 16


@dataclass
class PreparedPair:
    """Both images at full size (original channels, for outputs), their pyramids (compared channels, finest
    first, each level in [0, 1]), the fixed image's sampling weights and the moving image's validity weights per
    level, and the initial coefficients."""

    fixed_name: str
    moving_name: str
    fixed: torch.Tensor  # C_f x H x W
    moving: torch.Tensor  # C_m x Hm x Wm
    fixed_pyramid: List[torch.Tensor]
    moving_pyramid: List[torch.Tensor]
    fixed_weights: List[torch.Tensor]
    moving_weights: Optional[List[torch.Tensor]]
    scale: float
    init: Optional[torch.Tensor]
    # The global search scored levels of exactly its sizes already (core/search.py: exact_levels_change_nothing), so
    # a second opinion's search on exact levels would repeat it: it searches a finer scale grid instead.
    search_levels_exact: bool = False

    @property
    def fixed_hw(self) -> Tuple[int, int]:
        return tuple(self.fixed.shape[-2:])

    @property
    def moving_hw(self) -> Tuple[int, int]:
        return tuple(self.moving.shape[-2:])

    @property
    def levels(self) -> int:
        return len(self.fixed_pyramid)

    @property
    def channels(self) -> int:
        return self.fixed_pyramid[0].shape[0]

    def fingerprint(self) -> str:
        """Short hash of both images' coarsest levels, stored in checkpoints to refuse another pair's checkpoint."""
        h = hashlib.sha1()
        for img in (self.fixed_pyramid[-1], self.moving_pyramid[-1]):
            h.update(str(tuple(img.shape)).encode())
            h.update((img * 255).round().to(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]


def _name(image: ImageLike, default: str) -> str:
    return str(image) if isinstance(image, (str,)) or hasattr(image, "__fspath__") else default


def load_mask(mask: ImageLike, fixed_hw, name: str, max_pixels=None) -> torch.Tensor:
    """A mask image (non-zero = use) of the fixed image's size -> ``H x W`` bool."""
    m = load_image(mask, name=name, max_pixels=max_pixels)
    if tuple(m.shape[-2:]) != tuple(fixed_hw):
        raise ImageError(
            f"{name}: mask is {m.shape[-1]}x{m.shape[-2]} (W x H) but the fixed image is {fixed_hw[1]}x{fixed_hw[0]}"
        )
    m = m.amax(0) > 0
    if int(m.sum()) < _MIN_FOREGROUND_PIXELS:
        raise ImageError(f"{name}: mask is empty (fewer than {_MIN_FOREGROUND_PIXELS} non-zero pixels)")
    return m


def _search(moments: torch.Tensor, fixed_pyr, masks, moving_pyr, moving_weights, fixed_hw, moving_hw, scale,
            model, exact_levels: bool = False, scale_steps: Optional[int] = None) -> torch.Tensor:
    """Coefficients of the best initial transform of :func:`drmime_pl.core.search.global_search`: every rotation,
    scales 0.5-2 (``scale_steps`` of them; None: the search's default) and shifts up to half the image, with
    identity and the moments estimate competing."""
    from ..core.geometry import generator_basis, matrix_from_coefficients
    from ..core.search import SCALE_STEPS, Candidate, global_search

    moments_matrix = matrix_from_coefficients(moments.double(), generator_basis(model).double())
    moments_scale = float(torch.linalg.det(moments_matrix[:2, :2]).clamp_min(1e-12).sqrt())
    seeds = [Candidate(0.0, 1.0, torch.zeros(2, dtype=torch.float64)),
             Candidate(0.0, moments_scale, moments_matrix[:2, 2].clone())]
    best = global_search(fixed_pyr, masks, moving_pyr, moving_weights, fixed_hw, moving_hw, scale, model, seeds,
                         exact_levels=exact_levels, scale_steps=scale_steps or SCALE_STEPS)[0]
    return best.coefficients(model)


def prepare_pair(fixed: ImageLike, moving: ImageLike, data_cfg, init: str = "moments", model: str = "perspective",
                 fixed_mask: Optional[ImageLike] = None, init_matrix: Optional[str] = None,
                 search_exact_levels: bool = False, search_scale_steps: Optional[int] = None) -> PreparedPair:
    """Load, check and preprocess a pair. ``search_exact_levels``: the search (``init="search"``) scores on levels
    of exactly its sizes (:func:`drmime_pl.core.search.global_search`'s ``exact_levels``); ``search_scale_steps``:
    its grid's number of scales (None: the search's default).

    Raises:
        ImageError: unreadable files, an image too small for one pyramid level (short side < ``min_level_size``),
            a constant image (no information: MI is zero for every transform), a bad mask.
    """
    fixed_name, moving_name = _name(fixed, "fixed image"), _name(moving, "moving image")
    max_pixels = getattr(data_cfg, "max_pixels", None)  # checked against each file's header before decoding
    # Both images at once, here and below (core/tasks.py): on FIRE A01 reading, pyramids and masks 0.91 -> 0.52 s.
    fixed_t, moving_t = together(lambda: load_image(fixed, name=fixed_name, max_pixels=max_pixels),
                                 lambda: load_image(moving, name=moving_name, max_pixels=max_pixels))
    for img, name in ((fixed_t, fixed_name), (moving_t, moving_name)):
        h, w = img.shape[-2:]
        if min(h, w) < data_cfg.min_level_size:
            raise ImageError(
                f"{name}: image is {w}x{h} pixels; registration needs at least {data_cfg.min_level_size} on the short "
                f"side (data.min_level_size)"
            )
        if float(img.amax() - img.amin()) <= 0:
            raise ImageError(f"{name}: image is constant (no information); registration is impossible")
    f_sel, m_sel = select_channels(fixed_t, moving_t, data_cfg.channels)
    for img, name in ((f_sel, fixed_name), (m_sel, moving_name)):
        if float(img.amax() - img.amin()) <= 0:
            raise ImageError(f"{name}: the compared channel(s) are constant (data.channels={data_cfg.channels!r})")
    levels = min(int(data_cfg.levels), max_levels(fixed_t.shape[-2:], data_cfg.min_level_size),
                 max_levels(moving_t.shape[-2:], data_cfg.min_level_size))

    def fixed_side():
        """The fixed pyramid, its masks and its sampling weights per level."""
        pyramid = gaussian_pyramid(f_sel, levels, data_cfg.blur_sigma, highpass_sigma=data_cfg.highpass_sigma)
        if fixed_mask is not None:
            mask0 = load_mask(fixed_mask, fixed_t.shape[-2:], _name(fixed_mask, "fixed mask"), max_pixels)
        elif data_cfg.auto_mask:
            mask0 = auto_foreground(fixed_t, data_cfg.mask_threshold, margin=data_cfg.mask_margin)
        else:
            mask0 = torch.ones(fixed_t.shape[-2:], dtype=torch.bool)
        masks = [mask0] + [downsample_mask(mask0, img.shape[-2:]) for img in pyramid[1:]]
        # A level whose mask vanished when shrunk keeps all its pixels rather than none.
        masks = [m if int(m.sum()) >= _MIN_FOREGROUND_PIXELS else torch.ones_like(m) for m in masks]
        # Uniform sampling needs only the masks (bool, 1 byte per pixel) rather than float weights (4 bytes).
        weights = [m if data_cfg.sampling == "uniform" else sampling_weights(img, m, data_cfg.sampling)
                   for img, m in zip(pyramid, masks)]
        return pyramid, masks, weights

    def moving_side():
        """The moving pyramid and its validity weights per level (None: all valid)."""
        pyramid = gaussian_pyramid(m_sel, levels, data_cfg.blur_sigma, highpass_sigma=data_cfg.highpass_sigma)
        if not data_cfg.auto_mask:
            return pyramid, None
        mask0 = auto_foreground(moving_t, data_cfg.mask_threshold, margin=data_cfg.mask_margin).float()
        # Without a background there are no weights: a fixed point warped outside the moving image then samples
        # zero and still counts. Dropping it instead would let MI grow by pushing hard-to-match parts out of view.
        if bool((mask0 > 0).all()):
            return pyramid, None
        return pyramid, [mask0] + [torch.nn.functional.interpolate(mask0[None, None], size=img.shape[-2:],
                                                                   mode="area")[0, 0] for img in pyramid[1:]]

    (fixed_pyr, masks, weights), (moving_pyr, moving_weights) = together(fixed_side, moving_side)

    scale = pair_scale(fixed_t.shape[-2:])
    init_coefficients = None
    if init_matrix:  # model.init_matrix: start from a saved transform instead (issue 11), no moments, no search
        from ..io.transform_io import initial_coefficients

        init_coefficients = initial_coefficients(init_matrix, fixed, moving, fixed_t.shape[-2:], moving_t.shape[-2:],
                                                 scale, model)
        init = "matrix"
    if init in ("moments", "search"):
        # Moments compare the two foregrounds as they are (no margin), whatever mask the sampling uses.
        fixed_small = auto_foreground(fixed_t, data_cfg.mask_threshold, max_side=256, full_size=False)
        moving_mask = auto_foreground(moving_t, data_cfg.mask_threshold, max_side=256, full_size=False)
        no_background = bool(fixed_small.all()) or bool(moving_mask.all())
        if no_background:  # the "foreground" says nothing: moments start from identity
            init_coefficients = torch.zeros(TRANSFORM_DOFS[model])
        else:
            init_coefficients = moments_init(fixed_small, moving_mask, fixed_t.shape[-2:], moving_t.shape[-2:],
                                             scale, model)
        if init == "search":
            init_coefficients = _search(init_coefficients, fixed_pyr, masks, moving_pyr, moving_weights,
                                        fixed_t.shape[-2:], moving_t.shape[-2:], scale, model, search_exact_levels,
                                        search_scale_steps)
    from ..core.search import exact_levels_change_nothing

    return PreparedPair(fixed_name, moving_name, fixed_t, moving_t, fixed_pyr, moving_pyr, weights, moving_weights,
                        scale, init_coefficients,
                        search_levels_exact=init == "search" and exact_levels_change_nothing(fixed_pyr, moving_pyr))
