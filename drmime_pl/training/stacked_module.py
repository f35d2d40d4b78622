"""The LightningModule for ``N`` pairs registered at once (issue 9): one optimisation loop, every tensor with a
leading pair dimension.

Pair ``n`` is optimised exactly as :class:`~drmime_pl.training.module.DrmimeModule` would optimise it alone: its own
statistics network, transform coefficients and moving average (stacked parameters; Adam's update is element-wise,
so one Adam over the stack is ``N`` independent Adams), the same sampled pixels (its own seeded sampler), the loss a
sum over pairs (so each pair's gradient is its own). What differs is only the arithmetic's order (batched matrix
products), so results agree with one-pair runs to floating-point noise, not bit for bit.

The moving levels of all pairs are zero-padded to the largest pair's size at each level, with the validity weight
as an extra channel, so one ``grid_sample`` per level serves every pair: a point's grid coordinate is rescaled into
the padded image, and the padding reads as zero, exactly as outside an image.

A pair stops moving once it has converged or its loss turned non-finite (``active`` False: its terms leave the loss
and :class:`~drmime_pl.training.callbacks.PerPairStopping` holds its coefficients); the loop stops when no pair is
active.
"""
from __future__ import annotations

from typing import Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from ..core.estimator import StackedMineEstimator
from ..core.geometry import frame_matrix, matrix_from_coefficients, pixel_matrix_from_normalised, transform_points
from ..core.transforms import MatrixExpTransform
from .module import adam_with_schedule


def _padded_grid_matrix(hw: Sequence[int], padded_hw: Sequence[int]) -> torch.Tensor:
    """``padded_grid_trans_grid`` (``3 x 3``): an image's grid frame (align_corners=False) -> the grid frame of the
    image zero-padded at the bottom and right to ``padded_hw``."""
    sy, sx = hw[0] / padded_hw[0], hw[1] / padded_hw[1]
    return torch.tensor([[sx, 0.0, sx - 1.0], [0.0, sy, sy - 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


class StackedPairsModule(pl.LightningModule):
    """Registers ``N`` moving images (pyramids held here) to fixed images whose pixels arrive in stacked batches
    (:class:`~drmime_pl.training.stacked_data.StackedSampler`).

    Args:
        estimator: :class:`~drmime_pl.core.estimator.StackedMineEstimator` of the ``N`` pairs.
        transform: :class:`~drmime_pl.core.transforms.MatrixExpTransform` of the ``N`` pairs.
        moving_pyramids: per pair, ``L_n`` images ``C_n x H x W``, finest first.
        moving_weights: per pair, ``L_n`` validity maps ``H x W`` or None (then every sample counts, as in
            :class:`~drmime_pl.training.module.DrmimeModule`).
        fixed_hws, moving_hws, scales: per pair, full-resolution sizes and pixels per normalised unit.
        channels: ``C``, the most channels of any pair.
        other arguments: as :class:`~drmime_pl.training.module.DrmimeModule`.
    """

    def __init__(self, estimator: StackedMineEstimator, transform: MatrixExpTransform,
                 moving_pyramids: Sequence[Sequence[torch.Tensor]],
                 moving_weights: Sequence[Optional[Sequence[torch.Tensor]]], fixed_hws, moving_hws, scales,
                 channels: int, lr_mine: float = 3e-3, lr_shared: float = 3e-3, lr_fine: float = 1e-4,
                 amsgrad: bool = True, lr_final_factor: float = 0.05, warmup_steps: int = 50, max_steps: int = 500,
                 log_every_n_steps: int = 10):
        super().__init__()
        self.save_hyperparameters(ignore=["estimator", "transform", "moving_pyramids", "moving_weights"])
        self.estimator, self.transform = estimator, transform
        n = len(moving_pyramids)
        self.pairs, self.channels = n, int(channels)
        self.levels = max(len(p) for p in moving_pyramids)
        self.fixed_hws = [tuple(hw) for hw in fixed_hws]
        self.moving_hws = [tuple(hw) for hw in moving_hws]
        self.scales = [float(s) for s in scales]
        grid_trans_norm = torch.zeros(n, self.levels, 3, 3, dtype=torch.float64)
        for level in range(self.levels):
            sizes = [p[level].shape[-2:] for p in moving_pyramids if level < len(p)]
            padded_hw = (max(s[0] for s in sizes), max(s[1] for s in sizes))
            stack = torch.zeros(n, self.channels + 1, *padded_hw)
            for i, pyramid in enumerate(moving_pyramids):
                moving_grid = frame_matrix(self.moving_hws[i], "norm", "grid", self.scales[i])
                if level >= len(pyramid):
                    grid_trans_norm[i, level] = moving_grid  # a placeholder level: its scores are ignored
                    continue
                image = pyramid[level]
                c, (h, w) = image.shape[0], image.shape[-2:]
                stack[i, :c, :h, :w] = image
                weight = moving_weights[i][level] if moving_weights[i] is not None else 1.0
                stack[i, self.channels, :h, :w] = weight
                grid_trans_norm[i, level] = _padded_grid_matrix((h, w), padded_hw) @ moving_grid
            self.register_buffer(f"moving_{level}", stack, persistent=False)
        # fixed normalised frame -> the padded moving level's grid frame, applied after H: N x L x 3 x 3.
        self.register_buffer("padded_grid_trans_norm", grid_trans_norm.float(), persistent=False)
        self.register_buffer("level_valid", torch.tensor([[lv < len(p) for lv in range(self.levels)]
                                                          for p in moving_pyramids]), persistent=False)
        self.register_buffer("weighted", torch.tensor([w is not None for w in moving_weights]), persistent=False)
        self.register_buffer("active", torch.ones(n, dtype=torch.bool))
        self.register_buffer("mi_ema", torch.zeros(n, self.levels))
        self.nonfinite_pairs = torch.zeros(n, dtype=torch.bool)

    def mutual_information(self, batch):
        """Per-pair, per-level MI estimates and objectives, ``N x L`` each."""
        fixed_norm, fixed, permutation = batch["fixed_norm"], batch["fixed"], batch["permutation"]
        n, levels, b = permutation.shape
        with torch.autocast(device_type=self.device.type, enabled=False):  # geometry in float32 (DrmimeModule)
            matrices = self.padded_grid_trans_norm @ self.transform.level_matrices(levels)  # N x L x 3 x 3
            grid = transform_points(matrices.reshape(n * levels, 3, 3), fixed_norm.float().reshape(n * levels, b, 2))
            grid = grid.reshape(n, levels, b, 2)
            sampled = torch.stack([
                F.grid_sample(getattr(self, f"moving_{level}"), grid[:, level, None], mode="bilinear",
                              padding_mode="zeros", align_corners=False)[:, :, 0].transpose(1, 2)  # N x B x (C + 1)
                for level in range(levels)
            ], 1).to(fixed.dtype)  # N x L x B x (C + 1)
        moving = sampled[..., : self.channels]
        weights = sampled[..., self.channels].detach().clamp(0, 1)
        weights = torch.where(self.weighted[:, None, None], weights, torch.ones_like(weights))
        return self.estimator(fixed, moving, permutation, weights)

    def training_step(self, batch, batch_idx):
        mi, objective = self.mutual_information(batch)
        valid = self.level_valid
        count = valid.sum(1).clamp_min(1)
        per_pair = torch.where(valid, objective, torch.zeros_like(objective)).sum(1) / count  # N
        finite = torch.isfinite(per_pair)
        self.nonfinite_pairs = (self.active & ~finite).detach()
        use = self.active & finite
        if not bool(use.any()):
            return None
        # The sum, not the mean, over pairs: each pair's gradient is what it would be alone.
        loss = -torch.where(use, per_pair, torch.zeros_like(per_pair)).sum()
        with torch.no_grad():
            mi = mi.detach()
            ema = torch.where(self.mi_ema == 0, mi, 0.95 * self.mi_ema + 0.05 * mi)
            self.mi_ema.copy_(torch.where(use[:, None] & valid, ema, self.mi_ema))
        if self.logger is not None and self.global_step % self.hparams.log_every_n_steps == 0:
            mean_mi = torch.where(valid, mi, torch.zeros_like(mi)).sum(1) / count
            values = {"train/loss": loss.detach(), "train/active_pairs": use.sum().float()}
            values.update({f"pair{i}/mi_mean": mean_mi[i] for i in range(self.pairs)})
            self.log_dict(values, on_step=True, on_epoch=False, batch_size=1)
        return loss

    @torch.no_grad()
    def normalised_matrices(self) -> torch.Tensor:
        """Finest-level ``moving_norm_trans_fixed_norm`` per pair, float64 ``N x 3 x 3``."""
        return self.transform.matrix(finest=True).detach().double().cpu()

    @torch.no_grad()
    def pixel_matrix_of(self, pair: int, coefficients: torch.Tensor) -> torch.Tensor:
        """``moving_pix_trans_fixed_pix`` of pair ``pair`` for given (finest-level) coefficients, float64 ``3 x 3``."""
        h = matrix_from_coefficients(coefficients.double().cpu(), self.transform.basis.double().cpu())
        return pixel_matrix_from_normalised(h, self.fixed_hws[pair], self.moving_hws[pair], self.scales[pair])

    def configure_optimizers(self):
        return adam_with_schedule(self.estimator.parameters(), self.transform.shared, self.transform.fine, self.hparams)
