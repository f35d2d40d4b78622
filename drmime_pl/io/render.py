"""Pictures for people: checkerboards and colour overlays of the fixed and the warped moving image."""
from __future__ import annotations

import torch

from ..core.channels import luminance
from ..core.geometry import frame_matrix, warp_image
from ..core.pyramid import min_max_normalise


def checkerboard(fixed: torch.Tensor, warped: torch.Tensor, tiles: int = 8) -> torch.Tensor:
    """Alternate square tiles of the fixed and the warped image (gray, each min-max scaled). ``3 x H x W``."""
    a, b = min_max_normalise(luminance(fixed)), min_max_normalise(luminance(warped))
    h, w = a.shape[-2:]
    side = max(1, max(h, w) // tiles)
    ys = torch.arange(h, device=a.device).view(-1, 1) // side
    xs = torch.arange(w, device=a.device).view(1, -1) // side
    pick = ((ys + xs) % 2 == 0).unsqueeze(0)
    return torch.where(pick, a, b).expand(3, -1, -1).contiguous()


def colour_overlay(fixed: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
    """Fixed in magenta, warped moving in green: aligned structure turns gray/white. ``3 x H x W``."""
    a, b = min_max_normalise(luminance(fixed))[0], min_max_normalise(luminance(warped))[0]
    return torch.stack([a, b, a])


def resize_long_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Shrink a ``C x H x W`` image (antialiased) so that its long side is at most ``size``."""
    h, w = image.shape[-2:]
    if max(h, w) <= size:
        return image
    f = size / max(h, w)
    out = torch.nn.functional.interpolate(
        image.unsqueeze(0).float(), size=(max(1, round(h * f)), max(1, round(w * f))), mode="bilinear",
        antialias=True, align_corners=False,
    )
    return out[0]


def overlay_of(fixed: torch.Tensor, moving: torch.Tensor, moving_pix_trans_fixed_pix, size: int) -> torch.Tensor:
    """:func:`colour_overlay` of the fixed image and the warped moving image, long side at most ``size``.

    Both images are shrunk first and the small moving copy is warped onto the small fixed grid, so the cost does
    not grow with the images (no full-size warp just for a preview). ``3 x h x w``.
    """
    small_fixed = resize_long_side(fixed, size)
    factor = max(small_fixed.shape[-2:]) / max(fixed.shape[-2:])
    small_moving = resize_long_side(moving, max(1, round(max(moving.shape[-2:]) * factor)))
    # small pixel -> full-size pixel through the grid frame, which resizing edge to edge leaves unchanged
    matrix = (frame_matrix(small_moving.shape[-2:], "grid", "pix") @ frame_matrix(moving.shape[-2:], "pix", "grid")
              @ torch.as_tensor(moving_pix_trans_fixed_pix, dtype=torch.float64)
              @ frame_matrix(fixed.shape[-2:], "grid", "pix") @ frame_matrix(small_fixed.shape[-2:], "pix", "grid"))
    warped = warp_image(small_moving, matrix, small_fixed.shape[-2:]).clamp_(0, 1)
    return colour_overlay(small_fixed, warped)
