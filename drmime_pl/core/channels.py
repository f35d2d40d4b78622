"""The channels mutual information compares: luminance and the choice between the two images' channels."""
from __future__ import annotations

import torch

from ..errors import ImageError

# ITU-R BT.601 luma weights, as in PIL's "L" conversion.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def luminance(image: torch.Tensor) -> torch.Tensor:
    """``C x H x W`` -> ``1 x H x W`` (BT.601 luma for RGB, unchanged for gray)."""
    if image.shape[0] == 1:
        return image
    if image.shape[0] != 3:  # 2 or 4+ separate channels (multi-channel TIFF): their mean
        return image.mean(0, keepdim=True)
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
    if mode.isdigit() or any(mode in (getattr(im, "channel_names", None) or ()) for im in (fixed, moving)):
        def pick(im):  # a channel index, or an OME channel name (the TIFF reader attaches channel_names)
            names = getattr(im, "channel_names", None) or []
            c = names.index(mode) if mode in names else int(mode) if mode.isdigit() else -1
            if c < 0 or (c >= im.shape[0] and im.shape[0] > 3):
                raise ImageError(f"data.channels={mode!r}: image has {im.shape[0]} channels"
                                 + (f" named {', '.join(names)}" if names else ""))
            return im[c : c + 1] if im.shape[0] > c else luminance(im)

        return pick(fixed), pick(moving)
    raise ImageError(f"data.channels={mode!r}: no channel of that name in either image; expected auto, gray, rgb, "
                     "a channel index or an OME channel name")
