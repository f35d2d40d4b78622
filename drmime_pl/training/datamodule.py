"""Mini-batches of fixed-image pixels from every pyramid level.

Batch k (the k-th training step) is drawn by a generator seeded with ``(seed, k)`` alone, so sampling needs no
hidden state: a run resumed from a checkpoint at step k draws exactly the batches an uninterrupted run would.
The seed is stored in the checkpoint through :meth:`PyramidDataModule.state_dict`.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from ..core.geometry import frame_matrix


def _step_generator(seed: int, step: int) -> torch.Generator:
    # Mix seed and step into one 63-bit seed; distinct (seed, step) pairs give unrelated streams.
    return torch.Generator().manual_seed((int(seed) * 0x9E3779B1 + int(step) * 0x85EBCA77 + 0x2545F491) % (2**63 - 1))


def _allowed_indices(flat_weights: torch.Tensor, block: int = 1 << 18) -> torch.Tensor:
    """Flat indices of the non-zero weights, int32 when they fit (4 bytes per pixel, not 8), found block by block
    so that no int64 copy of the whole image is ever made (a block's temporaries: ~4 MB)."""
    n = flat_weights.numel()
    dtype = torch.int32 if n < 2**31 else torch.int64
    out = torch.empty(int(torch.count_nonzero(flat_weights)), dtype=dtype)  # no image-sized temporary
    at = 0
    for start in range(0, n, block):
        found = (flat_weights[start:start + block] != 0).nonzero().squeeze(1)
        out[at:at + found.numel()] = found.to(dtype) + start
        at += found.numel()
    return out


class PixelBatchSampler:
    """Draws, for every level, ``batch_size`` pixels of the fixed image at random with probability proportional to
    a per-level weight map (uniform over a mask, or favouring edges, see :func:`sampling_weights`).

    A batch is a dict of level-stacked tensors:

    * ``fixed_norm``: ``L x B x 2`` pixel centres in the fixed image's normalised frame (x, y; level-invariant),
    * ``fixed``: ``L x B x C`` fixed intensities at those pixels (exact, no interpolation),
    * ``permutation``: ``L x B`` shuffle that pairs fixed i with moving permutation[i] for the marginal samples.

    Args:
        fixed_pyramid: ``L`` images ``C x H_l x W_l``, finest first.
        weights: ``L`` maps ``H_l x W_l`` >= 0 (zero: never sampled), proportional to the sampling probability.
        fixed_hw: full-resolution ``(H, W)``.
        scale: pixels per normalised unit (:func:`drmime_pl.core.geometry.pair_scale`).
    """

    def __init__(self, fixed_pyramid: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], fixed_hw, scale: float,
                 batch_size: int, seed: int):
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.levels = len(fixed_pyramid)
        self.flat = [img.reshape(img.shape[0], -1).t().contiguous() for img in fixed_pyramid]  # L x (HW x C)
        # Per level: binary weights -> the list of allowed flat indices (uniform draw, O(B));
        # graded weights -> their CDF (inverse-CDF draw, O(B log N)). Either way independent of the image size.
        self.tables = []
        for w in weights:
            flat_w = w.reshape(-1)
            if flat_w.dtype == torch.bool or bool(((flat_w == 0) | (flat_w == flat_w.max())).all()):
                self.tables.append(("uniform", _allowed_indices(flat_w)))
            else:
                cdf = torch.cumsum(flat_w.double(), 0)
                self.tables.append(("cdf", cdf / cdf[-1]))
        fixed_norm_trans_grid = frame_matrix(fixed_hw, "grid", "norm", scale).float()  # 3 x 3, diagonal
        # Per level: pixel (col, row) -> normalised, through the level-invariant grid frame, as a scale and an offset
        # per axis.
        self.to_norm = []
        for img in fixed_pyramid:
            h, w = img.shape[-2:]
            norm_trans_pix = fixed_norm_trans_grid @ frame_matrix((h, w), "pix", "grid").float()  # 3 x 3
            self.to_norm.append((w, norm_trans_pix.diagonal()[:2].clone(), norm_trans_pix[:2, 2].clone()))

    def batch(self, step: int) -> Dict[str, torch.Tensor]:
        g = _step_generator(self.seed, step)
        norms, values, perms = [], [], []
        for flat, (kind, table), (w, scale_xy, offset_xy) in zip(self.flat, self.tables, self.to_norm):
            if kind == "uniform":
                pick = table[torch.randint(table.numel(), (self.batch_size,), generator=g)].long()  # B flat indices
            else:
                u = torch.rand(self.batch_size, generator=g, dtype=torch.float64)
                pick = torch.searchsorted(table, u, right=True).clamp_(max=table.numel() - 1)
            xy = torch.stack([pick % w, torch.div(pick, w, rounding_mode="floor")], -1).float()  # B x 2 pixels
            norms.append(xy * scale_xy + offset_xy)
            values.append(flat[pick])
            perms.append(torch.randperm(self.batch_size, generator=g))
        return {"fixed_norm": torch.stack(norms), "fixed": torch.stack(values), "permutation": torch.stack(perms)}


class _EndlessBatches(IterableDataset):
    def __init__(self, sampler: PixelBatchSampler, start_step: Callable[[], int]):
        self.sampler = sampler
        self.start_step = start_step

    def __iter__(self):
        step = self.start_step()
        while True:
            yield self.sampler.batch(step)
            step += 1


class PyramidDataModule(pl.LightningDataModule):
    """LightningDataModule around :class:`PixelBatchSampler`; an endless stream, one batch per training step."""

    def __init__(self, sampler: PixelBatchSampler):
        super().__init__()
        self.sampler = sampler

    def _start_step(self) -> int:
        # Read when the loader's iterator is created, after a checkpoint has restored the global step.
        return int(self.trainer.global_step) if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_EndlessBatches(self.sampler, self._start_step), batch_size=None, num_workers=0)

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.sampler.seed, "batch_size": self.sampler.batch_size, "levels": self.sampler.levels}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.sampler.seed = int(state["seed"])
