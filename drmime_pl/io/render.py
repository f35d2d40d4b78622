"""Pictures for people: checkerboards and colour overlays of the fixed and the warped moving image."""
from __future__ import annotations

import torch

from ..core.channels import luminance
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
