"""Gaussian pyramids and foreground masks.

Level 0 is the full-resolution image; level l+1 is level l blurred by a Gaussian (``sigma`` pixels of level l) and
resized by 1/2 *edge to edge* (``F.interpolate(..., align_corners=False)`` with an explicit size), so a point's
grid-frame coordinate (see :mod:`drmime_pl.core.geometry`) is the same on every level.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F

from .channels import luminance


def max_levels(hw: Sequence[int], min_size: int = 32) -> int:
    """Largest level count such that the coarsest level's short side keeps at least ``min_size`` pixels."""
    short = min(int(hw[0]), int(hw[1]))
    if short < min_size:
        return 1
    return 1 + int(math.floor(math.log2(short / min_size)))


def gaussian_kernel1d(sigma: float, dtype=torch.float32) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a ``C x H x W`` image with reflect padding. Same shape out."""
    if sigma <= 0:
        return image
    k = gaussian_kernel1d(sigma, torch.float64).tolist()
    r = (len(k) - 1) // 2
    x = image.unsqueeze(0)  # 1 x C x H x W
    mode = "reflect" if min(image.shape[-2:]) > r else "replicate"
    # A weighted sum of shifted views of the padded image, one axis at a time. (conv2d on the CPU unfolds the
    # image: ~77 bytes per pixel for a 7-tap kernel; this needs the padded copy and the result, 8 bytes.)
    x = _blur_axis(x, k, -1, (r, r, 0, 0), mode)
    x = _blur_axis(x, k, -2, (0, 0, r, r), mode)
    return x[0]


def _blur_axis(x: torch.Tensor, k, dim: int, pad, mode: str) -> torch.Tensor:
    padded = F.pad(x, pad, mode=mode)
    n = x.shape[dim]
    out = padded.narrow(dim, 0, n) * k[0]
    for i in range(1, len(k)):
        out.add_(padded.narrow(dim, i, n), alpha=k[i])
    return out


def blur_and_halve(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """The next pyramid level of a ``C x H x W`` image: :func:`gaussian_blur` by ``sigma``, then resized edge to edge
    (bilinear, ``align_corners=False``) to ``C x max(1, H // 2) x max(1, W // 2)``.

    One axis at a time, as both steps are separable. Along an axis of even length the resize averages pixel pairs
    ``2i, 2i + 1``, so the blur and that average are one kernel of ``2 r + 2`` taps evaluated at every other pixel:
    a fraction of the work and memory traffic of blurring every pixel first (a 2912 x 2912 RGB level: 0.39 ->
    0.15 s, thirteenth round). An odd axis is blurred and then resized as before. Same result up to float rounding.
    """
    k = gaussian_kernel1d(sigma, torch.float64).tolist() if sigma > 0 else [1.0]
    mode = "reflect" if min(image.shape[-2:]) > (len(k) - 1) // 2 else "replicate"
    x = _halve_axis(image.unsqueeze(0), k, -1, mode)
    return _halve_axis(x, k, -2, mode)[0]


def _halve_axis(x: torch.Tensor, k, dim: int, mode: str) -> torch.Tensor:
    """Blur ``1 x C x H x W`` along ``dim`` (-1 or -2) by the kernel ``k`` (``2 r + 1`` taps, ``mode`` padding) and
    resize that axis from ``n`` to ``max(1, n // 2)`` pixels edge to edge."""
    n, r = x.shape[dim], (len(k) - 1) // 2
    m = max(1, n // 2)
    pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
    if n % 2 == 1:
        blurred = _blur_axis(x, k, dim, pad, mode) if r > 0 else x
        size = (blurred.shape[-2], m) if dim == -1 else (m, blurred.shape[-1])
        return F.interpolate(blurred, size=size, mode="bilinear", align_corners=False)
    padded = F.pad(x, pad, mode=mode) if r > 0 else x
    # out[i] = (b[2i] + b[2i + 1]) / 2 with b[j] = sum_t k[t] padded[j + t], i.e. sum_t c[t] padded[2i + t]:
    taps = [0.5 * k[0]] + [0.5 * (k[t] + k[t - 1]) for t in range(1, len(k))] + [0.5 * k[-1]]

    def every_other(t: int) -> torch.Tensor:  # padded[2i + t] for i < m, along dim
        return padded[..., t:t + 2 * m:2] if dim == -1 else padded[..., t:t + 2 * m:2, :]

    out = every_other(0) * taps[0]
    for t in range(1, len(taps)):
        out.add_(every_other(t), alpha=taps[t])
    return out


def min_max_normalise(image: torch.Tensor) -> torch.Tensor:
    """Scale a ``C x H x W`` image to [0, 1] over all its channels (a constant image becomes zeros)."""
    lo, hi = image.amin(), image.amax()
    return (image - lo).div_(hi - lo) if float(hi - lo) > 0 else torch.zeros_like(image)


def gaussian_pyramid(image: torch.Tensor, levels: int, sigma: float = 1.0, normalise: bool = True,
                     highpass_sigma: float = 0.0) -> List[torch.Tensor]:
    """Build ``levels`` images, finest first, each ``C x H_l x W_l`` with ``H_{l+1} = max(1, H_l // 2)``.

    Each level is min-max normalised to [0, 1] when ``normalise`` is set (as in the DRMIME notebooks).
    With ``highpass_sigma > 0`` each level has its own Gaussian blur of that many level pixels subtracted first
    (a band-pass pyramid): slow illumination changes, which differ between photographs, no longer steer MI.
    """
    out = [image]
    for _ in range(levels - 1):
        out.append(blur_and_halve(out[-1], sigma))
    if highpass_sigma > 0:
        out = [x - gaussian_blur(x, highpass_sigma) for x in out]
    return [min_max_normalise(x) for x in out] if normalise else out


def downsample_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``H x W`` bool mask -> ``size`` bool mask (a coarse pixel is foreground when most of it is)."""
    m = F.interpolate(mask[None, None].float(), size=tuple(size), mode="area")[0, 0]
    return m >= 0.5


def _fill_runs(region: torch.Tensor, allowed: torch.Tensor, dim: int) -> torch.Tensor:
    """Spread ``region`` along ``dim`` (0: columns, 1: rows) over each unbroken run of ``allowed`` pixels: a run
    that touches the region joins it. ``h x w`` bool tensors."""
    h, w = allowed.shape
    run = (~allowed).long().cumsum(dim)  # constant along each run of allowed pixels, per row (column)
    line = torch.arange(h).view(-1, 1) if dim == 1 else torch.arange(w).view(1, -1)
    ids = (run + line * (allowed.shape[dim] + 1)).reshape(-1)  # each row (column) gets its own range of run ids
    touched = torch.zeros(int(ids.max()) + 1, dtype=torch.bool)
    touched[ids[(region & allowed).reshape(-1)]] = True
    return touched[ids].view(h, w) & allowed


def _connected_to_border(candidates: torch.Tensor) -> torch.Tensor:
    """The pixels of an ``h x w`` bool mask that are 8-connected to the image border through the mask.

    Geodesic reconstruction from the border: whole runs of mask pixels along rows and columns join at once, and a
    3x3 dilation (restricted to the mask) adds the diagonal steps, until nothing changes. Each round is linear in
    the pixels, and the rounds needed grow with the turns of the winding paths, not their length.
    """
    seeds = torch.zeros_like(candidates)
    seeds[0, :], seeds[-1, :], seeds[:, 0], seeds[:, -1] = True, True, True, True
    region = seeds & candidates
    allowed = candidates.float()[None, None]
    while True:
        previous = region
        region = _fill_runs(_fill_runs(region, candidates, 1), candidates, 0)
        region = (F.max_pool2d(region.float()[None, None], 3, stride=1, padding=1) * allowed)[0, 0] > 0.5
        if torch.equal(region, previous):
            return region


def _max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over the ``(2 radius + 1)^2`` square around each pixel of ``1 x 1 x h x w`` (outside ignored): a row
    pass and a column pass, which cost ``2 (2 radius + 1)`` comparisons per pixel instead of its square."""
    k = 2 * radius + 1
    x = F.max_pool2d(x, (1, k), stride=1, padding=(0, radius))
    return F.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))


def _is_object(foreground: torch.Tensor, radius_fraction: float = 0.02, keep: float = 0.6) -> bool:
    """Is an ``h x w`` foreground a solid object (tissue, a field of view, an image pasted on a canvas) rather than
    thin structure on a uniform fill (roads on a map, lit windows in a night photograph)?

    A morphological opening by a square of half-side ``radius_fraction`` of the long side keeps most of a solid
    object and removes thin structure; the foreground counts as an object when at least ``keep`` of it survives.
    """
    radius = max(1, int(round(radius_fraction * max(foreground.shape))))
    x = foreground[None, None].float()
    opened = _max_filter(-_max_filter(-x, radius), radius)
    return float(opened.sum()) >= keep * float(x.sum())


#: A background is near black (every channel at most this) or near white (every channel at least ``WHITE``):
#: the fill around a field of view, air around a head, glass around tissue, no-data corners of a rotated scene. A
#: mid-grey border colour is a textured image's median (a dark infrared scene, a night sky), not a background: on
#: the real benchmark pairs such "backgrounds" (colours 0.08-0.31) swallowed 64-86% of the image.
BLACK, WHITE = 0.05, 0.75
#: Part of the border that must have the background colour: a background that surrounds an object covers most of
#: the border; black fill that only *touches* it (the corners of a rotated scene, a field of view cut by the image's
#: edge) covers less and is accepted down to ``FILL_BORDER`` of it.
SURROUND_BORDER, FILL_BORDER = 0.75, 0.3
#: Fill is black to within this (on the blurred copy), tighter than ``threshold``: no-data pixels are written as 0,
#: while a night photograph's dark sky, which must stay foreground, sits at 0.03-0.10.
FILL_TOLERANCE = 0.03


def auto_foreground(image: torch.Tensor, threshold: float = 0.08, max_side: int = 512, margin: float = 0.0,
                    full_size: bool = True) -> torch.Tensor:
    """Foreground mask: everything but the background, the region of the border's colour connected to the border.

    Two kinds of background (the colour must be near black or near white, see ``BLACK``/``WHITE``):

    * *surrounding*: at least ``SURROUND_BORDER`` of the border has the background colour: the black border around
      a fundus photograph, white glass around tissue, air around a head. Its outline is part of the object (tissue's
      shape is a shared cue between stains), so ``margin`` applies as given.
    * *fill*: black (to ``FILL_TOLERANCE``) on ``FILL_BORDER`` or more of the border: the no-data corners of a
      rotated or resampled scene (remote sensing), a field of view cut by the image's edge. Its edge is an artefact
      of how the image was made, not of the scene, and would pull the alignment towards any straight edge of the
      other image, so the mask is always *shrunk* by ``|margin|``.

    Pixels of the background colour *inside* the object (a dark vessel in a retina, tissue that an intensity remap
    took to the glass's value) stay foreground. The mask is computed on a copy at most ``max_side`` pixels wide
    (blurred), so its cost does not grow with the image, and returned at full size.

    Args:
        image: ``C x H x W`` in [0, 1].
        threshold: distance (max over channels) from the background colour above which a pixel is foreground.
        margin: grow (> 0) or shrink (< 0) a surrounding background's mask by this fraction of the image's long
            side. Growing keeps the outline of tissue, a strong shared cue between stains; shrinking drops the rim
            of a camera's field of view, which is the same in both images whatever their alignment.
        full_size: return the mask at the image's size (else at the reduced size it was computed at).

    Returns:
        ``H x W`` bool tensor. Everything is foreground when there is no background as above or when the mask
        would keep less than 1% of the image or not a solid object.
    """
    c, h, w = image.shape
    factor = max(1, int(math.ceil(max(h, w) / max_side)))
    small = F.avg_pool2d(image.unsqueeze(0), factor, ceil_mode=True)[0] if factor > 1 else image
    small = gaussian_blur(small, 1.0)
    border = torch.cat([small[:, 0, :], small[:, -1, :], small[:, :, 0], small[:, :, -1]], dim=1)  # C x P
    background = border.median(dim=1).values.view(c, 1, 1)
    near = lambda colour, tol: float(((border - colour.view(c, 1)).abs().amax(0) <= tol).float().mean())  # noqa: E731
    black = torch.zeros_like(background)
    extreme = float(background.amax()) <= BLACK or float(background.amin()) >= WHITE
    # The border decides the kind before the flood fill, which costs most; then the mask must keep 1% and be a
    # solid object.
    if extreme and near(background, threshold) >= SURROUND_BORDER:
        kind = "surrounding"
    elif near(black, FILL_TOLERANCE) >= FILL_BORDER:
        kind, background, threshold, margin = "fill", black, min(threshold, FILL_TOLERANCE), -abs(margin)
    else:
        kind = None
    if kind is not None:
        fg_small = ~_connected_to_border((small - background).abs().amax(0) <= threshold)
        if float(fg_small.float().mean()) < 0.01 or not _is_object(fg_small):
            kind = None
    if kind is None:
        return torch.ones((h, w) if full_size else small.shape[-2:], dtype=torch.bool)
    radius = int(round(abs(margin) * max(small.shape[-2:])))
    if radius > 0:
        pool = lambda m: _max_filter(m[None, None].float(), radius)[0, 0] > 0.5  # noqa: E731
        fg_small = pool(fg_small) if margin > 0 else ~pool(~fg_small)
    if not full_size:
        return fg_small
    return F.interpolate(fg_small[None, None].float(), size=(h, w), mode="nearest")[0, 0] > 0.5


def sampling_weights(image: torch.Tensor, mask: torch.Tensor, mode: str, edge_floor: float = 0.1) -> torch.Tensor:
    """Per-pixel sampling weights of one fixed level.

    Args:
        image: ``C x H x W`` level.
        mask: ``H x W`` bool.
        mode: ``uniform`` (every pixel of the mask alike) or ``edges`` (proportional to the gradient magnitude plus
            ``edge_floor`` times its mean: structure such as vessels is sampled often, flat areas still sometimes).

    Returns:
        ``H x W`` float weights, zero outside the mask.
    """
    if mode == "uniform":
        return mask.float()
    gray = luminance(image)[0]
    gx = torch.zeros_like(gray)
    gy = torch.zeros_like(gray)
    gx[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    gy[1:-1, :] = gray[2:, :] - gray[:-2, :]
    magnitude = torch.sqrt(gx * gx + gy * gy) * mask
    mean = magnitude.sum() / mask.sum().clamp_min(1)
    return (magnitude + edge_floor * mean.clamp_min(1e-8)) * mask
