"""The DRMIME seed notebooks' recipe, re-implemented as a reference point for benchmarks/compare.py.

Faithful to the notebooks (see ../shared/DRMIME.md), including their known weaknesses:

* both images are assumed to have the same size: the moving image is resized to the fixed image's size first
  (bilinear, edge to edge); the returned pixel matrix accounts for that resize;
* Gaussian pyramid of 6 levels: blur sigma 1 on the full image, then per level a Gaussian of sigma 2*2/6 and a
  factor-2 reduction (skimage ``pyramid_gaussian(gaussian(I, 1), downscale=2)``, re-done with torch because
  scikit-image is not a dependency here); every level min-max normalised to [0, 1] (``cv2.normalize(NORM_MINMAX)``);
* coordinates normalised per axis to [-1, 1] with ``align_corners=True`` (``2 x / (w - 1) - 1``), so the generator
  B2/B3 are shears in pixels for non-square images, as in the notebooks;
* the transform is ``expm(sum v_i B_i)`` with the notebooks' affine generators B0=(0,2), B1=(1,2), B2=(0,1),
  B3=(1,0), B4=diag(1,-1,0), B5=diag(0,-1,1), a shared vector v_L on every level plus v_1 added on the finest level;
  the exponential is the notebooks' 10-term Taylor series;
* every iteration warps each *whole* pyramid level of the moving image (grid_sample of every pixel), then samples
  the same pixel indices ``torch.randperm(int(0.1 * h * w))`` drawn once per level before the loop: that is the
  *first* 10% of the pixel indices (the top rows), in shuffled order;
* MINE: an MLP 2C -> 100 -> 100 -> 1 (ReLU), Donsker-Varadhan bound with the marginal made by shuffling the moving
  half of the samples; loss = -(1/L) sum over levels of the bound;
* Adam with amsgrad, learning rates MINE 1e-3, v_L 1e-3, v_1 1e-4; 500 iterations; no stopping rule.
"""
from __future__ import annotations

import math
import time
from typing import Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LEVELS = 6
SAMPLING = 0.1
N_NEURONS = 100


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``C x H x W`` separable Gaussian, reflect padding (skimage ``gaussian`` uses 'nearest'; close enough)."""
    radius = max(1, int(math.ceil(4.0 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[0]
    y = x.unsqueeze(0)
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


def _minmax(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if float(hi - lo) > 0 else torch.zeros_like(x)


def pyramid(image: torch.Tensor, levels: int = LEVELS):
    """skimage-style Gaussian pyramid of ``gaussian(image, sigma=1)``: sizes ceil(h / 2^l), min-max normalised."""
    out = [_gaussian_blur(image, 1.0)]
    for _ in range(levels - 1):
        prev = out[-1]
        h, w = prev.shape[-2:]
        sm = _gaussian_blur(prev, 2.0 * 2.0 / 6.0)
        size = (int(math.ceil(h / 2.0)), int(math.ceil(w / 2.0)))
        out.append(F.interpolate(sm[None], size=size, mode="bilinear", align_corners=False)[0])
    return [_minmax(x) for x in out]


class HomographyNet(nn.Module):
    """The notebooks' affine model: ``H = expm(C)`` (10-term Taylor series), ``C = sum (v_L + [s == 0] v_1) B``."""

    def __init__(self):
        super().__init__()
        b = torch.zeros(6, 3, 3)
        b[0, 0, 2] = 1.0
        b[1, 1, 2] = 1.0
        b[2, 0, 1] = 1.0
        b[3, 1, 0] = 1.0
        b[4, 0, 0], b[4, 1, 1] = 1.0, -1.0
        b[5, 1, 1], b[5, 2, 2] = -1.0, 1.0
        self.register_buffer("B", b)
        self.v1 = nn.Parameter(torch.zeros(6, 1, 1))
        self.vL = nn.Parameter(torch.zeros(6, 1, 1))

    def forward(self, s: int) -> torch.Tensor:
        c = torch.sum(self.B * self.vL, 0)
        if s == 0:
            c = c + torch.sum(self.B * self.v1, 0)
        a = torch.eye(3)
        h = a
        for i in range(1, 10):
            a = torch.mm(a / i, c)
            h = h + a
        return h


class Mine(nn.Module):
    def __init__(self, channels: int, n_neurons: int = N_NEURONS):
        super().__init__()
        self.channels = channels
        self.fc1 = nn.Linear(2 * channels, n_neurons)
        self.fc2 = nn.Linear(n_neurons, n_neurons)
        self.fc3 = nn.Linear(n_neurons, 1)

    def t(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    def forward(self, x: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
        """``x``: H x W x 2C (fixed channels, then warped moving channels) of one level."""
        c = self.channels
        x = x.reshape(-1, x.shape[-1])
        ind_perm = ind[torch.randperm(len(ind))]
        z1 = self.t(x[ind, :])
        z2 = self.t(torch.cat((x[ind, 0:c], x[ind_perm, c : 2 * c]), 1))
        return torch.mean(z1) - torch.log(torch.mean(torch.exp(z2)))


def perspective_transform(image: torch.Tensor, h: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Warp a whole ``C x H x W`` level: out(p) = image(H p), p in the per-axis [-1, 1] frame (align_corners)."""
    xv, yv = xy[..., 0], xy[..., 1]
    den = xv * h[2, 0] + yv * h[2, 1] + h[2, 2]
    xvt = (xv * h[0, 0] + yv * h[0, 1] + h[0, 2]) / den
    yvt = (xv * h[1, 0] + yv * h[1, 1] + h[1, 2]) / den
    grid = torch.stack([xvt, yvt], 2).unsqueeze(0)
    return F.grid_sample(image.unsqueeze(0), grid, align_corners=True).squeeze(0)


def _norm_from_pix(h: int, w: int) -> np.ndarray:
    """align_corners=True frame: pixel (x, y, 1) -> (2 x / (w - 1) - 1, 2 y / (h - 1) - 1, 1)."""
    return np.array([[2.0 / (w - 1), 0.0, -1.0], [0.0, 2.0 / (h - 1), -1.0], [0.0, 0.0, 1.0]])


def register_seed(fixed: np.ndarray, moving: np.ndarray, steps: int = 500, seed: int = 0,
                  lr_mine: float = 1e-3, lr_shared: float = 1e-3, lr_fine: float = 1e-4,
                  first_indices: bool = True) -> Tuple[np.ndarray, dict]:
    """Register with the notebooks' recipe.

    Args:
        fixed, moving: ``H x W x C`` or ``H x W`` float arrays in [0, 1] (C = 1 or 3; when the counts differ both
            are converted to luminance).
        first_indices: the notebooks' sampling (the first 10% of pixel indices); ``False`` draws a random 10% of
            all pixels once instead (only to check this re-implementation; the benchmark keeps the notebooks' way).

    Returns:
        (``3 x 3`` moving_pix_trans_fixed_pix of the *original* moving image, info dict with ``seconds`` and
        ``final_loss``).
    """
    torch.manual_seed(seed)
    f = torch.as_tensor(np.asarray(fixed, dtype=np.float32))
    m = torch.as_tensor(np.asarray(moving, dtype=np.float32))
    f = f.unsqueeze(-1) if f.ndim == 2 else f
    m = m.unsqueeze(-1) if m.ndim == 2 else m
    f, m = f.permute(2, 0, 1).contiguous(), m.permute(2, 0, 1).contiguous()
    if f.shape[0] != m.shape[0]:
        luma = torch.tensor([0.299, 0.587, 0.114])
        to_gray = lambda x: x if x.shape[0] == 1 else (x * luma.view(3, 1, 1)).sum(0, keepdim=True)  # noqa: E731
        f, m = to_gray(f), to_gray(m)
    start = time.perf_counter()
    hf, wf = f.shape[-2:]
    hm, wm = m.shape[-2:]
    m_resized = F.interpolate(m[None], size=(hf, wf), mode="bilinear", align_corners=False)[0]
    channels = f.shape[0]
    pyr_f, pyr_m = pyramid(f), pyramid(m_resized)
    xy_lst, ind_lst = [], []
    for lvl in pyr_f:
        h_, w_ = lvl.shape[-2:]
        y_, x_ = torch.meshgrid(torch.arange(0, h_).float(), torch.arange(0, w_).float(), indexing="ij")
        y_, x_ = 2.0 * y_ / (h_ - 1) - 1.0, 2.0 * x_ / (w_ - 1) - 1.0
        xy_lst.append(torch.stack([x_, y_], 2))
        if first_indices:
            ind_lst.append(torch.randperm(int(h_ * w_ * SAMPLING)))  # the first 10% of the indices, as the notebooks
        else:
            ind_lst.append(torch.randperm(h_ * w_)[: int(h_ * w_ * SAMPLING)])

    homography = HomographyNet()
    mine = Mine(channels)
    optimizer = torch.optim.Adam([{"params": mine.parameters(), "lr": lr_mine},
                                  {"params": [homography.vL], "lr": lr_shared},
                                  {"params": [homography.v1], "lr": lr_fine}], amsgrad=True)
    n_levels = len(pyr_f)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = 0.0
        for s in range(n_levels - 1, -1, -1):
            warped = perspective_transform(pyr_m[s], homography(s), xy_lst[s])
            mi = mine(torch.cat([pyr_f[s], warped], 0).permute(1, 2, 0), ind_lst[s])
            loss = loss - (1.0 / n_levels) * mi
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        h_norm = homography(0).double().numpy()
    seconds = time.perf_counter() - start
    # fixed pix -> fixed norm -> resized-moving norm -> resized-moving pix -> original moving pix
    resized_pix_from_norm = np.linalg.inv(_norm_from_pix(hf, wf))
    orig_from_resized = np.array([[wm / wf, 0.0, 0.5 * wm / wf - 0.5], [0.0, hm / hf, 0.5 * hm / hf - 0.5],
                                  [0.0, 0.0, 1.0]])
    matrix = orig_from_resized @ resized_pix_from_norm @ h_norm @ _norm_from_pix(hf, wf)
    matrix = matrix / matrix[2, 2]
    return matrix, {"seconds": seconds, "final_loss": float(loss.detach())}
