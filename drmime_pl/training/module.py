"""The LightningModule: an MI estimator + a transform, optimised on all pyramid levels at once."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import pytorch_lightning as pl
import torch

from ..core.estimator import MutualInformationEstimator
from ..core.geometry import (
    frame_matrix,
    matrix_from_coefficients,
    pixel_matrix_from_normalised,
    sample_at_grid,
    transform_points,
)
from ..core.transforms import Transform

#: State-dict keys of checkpoints written before the estimator owned the MINE network and its moving average.
_LEGACY_KEYS = (("mine.", "estimator.network."), ("log_ma", "estimator.log_ma"),
                ("ma_initialised", "estimator.ma_initialised"))


class DrmimeModule(pl.LightningModule):
    """Registers a moving image (pyramid held here) to the fixed image whose pixels arrive in batches.

    Each step warps the moving pyramid *only at the sampled fixed points* (``grid_sample`` on ``L x B`` points),
    so its cost does not depend on the image size. Loss = -mean over levels of the estimator's objective (for
    :class:`~drmime_pl.core.estimator.MineEstimator`, the Donsker-Varadhan MI bound of one shared MINE network).

    Args:
        estimator: scores fixed against warped moving intensities (:mod:`drmime_pl.core.estimator`); owns its
            learnt state (saved in checkpoints).
        transform: the fixed -> moving transform (:class:`~drmime_pl.core.transforms.Transform`).
        moving_pyramid: ``L`` images ``C x H_l x W_l`` (not saved in checkpoints: rebuilt from the image files).
        moving_weights: optional ``L`` masks ``H_l x W_l`` in [0, 1]: where the moving image is valid. A sample
            whose warped point falls where the weight is 0 (background, outside the image) does not count, so MI
            cannot grow by mapping the fixed foreground onto the moving background.
        fixed_hw, moving_hw: full-resolution ``(H, W)`` of both images.
        scale: pixels per normalised unit.
        lr_mine, lr_shared, lr_fine: Adam learning rates of the three parameter groups.
        amsgrad: Adam's amsgrad variant (DRMIME's choice).
        lr_final_factor: cosine decay of every learning rate to this fraction at ``max_steps``.
        warmup_steps: the transform's learning rates ramp up linearly over these first steps, so that MINE has
            learnt a useful statistic before it steers the transform.
        max_steps: length of the schedule.
        log_every_n_steps: how often scalars are logged.
        identity: transform model and image-pair fingerprint, saved with the hyper-parameters so that a
            checkpoint of another run is refused on resume.
    """

    def __init__(
        self,
        estimator: MutualInformationEstimator,
        transform: Transform,
        moving_pyramid: Sequence[torch.Tensor],
        moving_weights: Sequence[torch.Tensor] | None,
        fixed_hw: Sequence[int],
        moving_hw: Sequence[int],
        scale: float,
        lr_mine: float = 3e-3,
        lr_shared: float = 3e-3,
        lr_fine: float = 1e-4,
        amsgrad: bool = True,
        lr_final_factor: float = 0.05,
        warmup_steps: int = 50,
        max_steps: int = 500,
        log_every_n_steps: int = 10,
        identity: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["estimator", "transform", "moving_pyramid", "moving_weights"])
        self.estimator = estimator
        self.transform = transform
        self.levels = len(moving_pyramid)
        self.channels = moving_pyramid[0].shape[0]
        self.weighted = moving_weights is not None
        for level, image in enumerate(moving_pyramid):
            if self.weighted:  # the weight rides along as an extra channel: one grid_sample per level
                image = torch.cat([image, moving_weights[level].to(image).unsqueeze(0)])
            self.register_buffer(f"moving_{level}", image, persistent=False)
        # fixed normalised frame -> moving grid_sample frame, applied after H.
        self.register_buffer("moving_grid_trans_norm", frame_matrix(moving_hw, "norm", "grid", scale).float(),
                             persistent=False)
        self.fixed_hw, self.moving_hw, self.scale = tuple(fixed_hw), tuple(moving_hw), float(scale)
        # State that must survive a resume lives in persistent buffers (saved in the checkpoint); the estimator's
        # own state (MINE's moving average) lives in the estimator.
        self.register_buffer("mi_ema", torch.zeros(self.levels))
        self.nonfinite_step = False

    def moving_pyramid(self) -> List[torch.Tensor]:
        """The moving levels, ``C x H_l x W_l`` (without the weight channel)."""
        return [getattr(self, f"moving_{level}")[: self.channels] for level in range(self.levels)]

    # ---------------------------------------------------------------- the objective
    def mutual_information(self, batch: Dict[str, torch.Tensor]):
        """Per-level MI estimates and the objective to maximise (``L`` each): the moving pyramid sampled at the
        batch's fixed points mapped by the transform, scored by the estimator."""
        fixed_norm, fixed, permutation = batch["fixed_norm"], batch["fixed"], batch["permutation"]
        levels = permutation.shape[0]
        # Geometry and sampling stay in float32 under mixed precision: matrix_exp's gradient vanishes in bf16, and
        # bf16 coordinates would be off by a sizeable fraction of a pixel. Only the estimator runs in low precision.
        with torch.autocast(device_type=self.device.type, enabled=False):
            matrices = self.moving_grid_trans_norm @ self.transform.level_matrices(levels)  # L x 3 x 3
            moving_grid = transform_points(matrices, fixed_norm.float())  # L x B x 2
            sampled = torch.stack(
                [sample_at_grid(getattr(self, f"moving_{level}"), moving_grid[level]) for level in range(levels)]
            ).to(fixed.dtype)  # L x B x (C [+ 1])
        moving = sampled[..., : self.channels]  # L x B x C
        weights = sampled[..., self.channels].detach().clamp(0, 1) if self.weighted else None  # L x B
        return self.estimator(fixed, moving, permutation, weights)

    def on_load_checkpoint(self, checkpoint):
        """Checkpoints of earlier versions kept MINE as ``mine.*`` and its moving average on the module: rename."""
        state = checkpoint.get("state_dict")
        if not state or any(key.startswith("estimator.") for key in state):
            return
        for key in list(state):
            for old, new in _LEGACY_KEYS:
                if key == old or (old.endswith(".") and key.startswith(old)):
                    state[new + key[len(old):]] = state.pop(key)
                    break

    def training_step(self, batch, batch_idx):
        mi, objective = self.mutual_information(batch)
        loss = -objective.mean()
        self.nonfinite_step = not bool(torch.isfinite(loss))
        if self.nonfinite_step:
            return None  # no optimiser step: the parameters keep the last good transform (NonFiniteGuard stops)
        with torch.no_grad():
            self.mi_ema.copy_(torch.where(self.mi_ema == 0, mi.detach(), 0.95 * self.mi_ema + 0.05 * mi.detach()))
        # Without a logger (the quiet API, logging.enabled=false) Lightning would still collect the scalars: ~25 ms.
        if self.logger is not None and self.global_step % self.hparams.log_every_n_steps == 0:
            self._log_scalars(loss, mi)
        return loss

    def _log_scalars(self, loss, mi):
        values = {"train/loss": loss.detach(), "train/mi_mean": mi.detach().mean()}
        values.update({f"train/mi_level{level}": mi[level].detach() for level in range(self.levels)})
        matrix = self.pixel_matrix()
        values.update({f"matrix/m{r}{c}": matrix[r, c].float() for r in range(3) for c in range(3)})
        shared, fine = self.transform.coefficients()
        values.update({f"coef/shared{i}": v for i, v in enumerate(shared)})
        values.update({f"coef/fine{i}": v for i, v in enumerate(fine)})
        self.log_dict(values, on_step=True, on_epoch=False, batch_size=1)

    # ---------------------------------------------------------------- results
    @torch.no_grad()
    def normalised_matrix(self) -> torch.Tensor:
        """Finest-level ``moving_norm_trans_fixed_norm``, float64 ``3 x 3``."""
        return self.transform.matrix(finest=True).detach().double().cpu()

    @torch.no_grad()
    def pixel_matrix(self) -> torch.Tensor:
        """``moving_pix_trans_fixed_pix`` (full resolution), float64 ``3 x 3``."""
        return pixel_matrix_from_normalised(self.normalised_matrix(), self.fixed_hw, self.moving_hw, self.scale)

    @torch.no_grad()
    def pixel_matrix_of(self, coefficients: torch.Tensor) -> torch.Tensor:
        """``moving_pix_trans_fixed_pix`` for given (finest-level) coefficients, float64 ``3 x 3``."""
        h = matrix_from_coefficients(coefficients.double().cpu(), self.transform.basis.double().cpu())
        return pixel_matrix_from_normalised(h, self.fixed_hw, self.moving_hw, self.scale)

    # ---------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        return adam_with_schedule(self.estimator.parameters(), self.transform.shared, self.transform.fine, self.hparams)


def without_cpu_accelerator_check(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``optimizer``, made to skip torch's per-step accelerator check while all its parameters are on the CPU.

    Before each step, torch's Adam asks whether CUDA graphs are being captured, which on a machine without a GPU
    tries to load NVIDIA's management library again every time: 0.35 ms of a 9 ms step (thirteenth round). The
    updates are Adam's exactly, and the class stays ``torch.optim.Adam`` (TensorBoard's ``lr-Adam/*`` tags)."""
    check = getattr(optimizer, "_accelerator_graph_capture_health_check", None)
    if check is None:  # a torch without the check
        return optimizer

    def health_check() -> None:
        if any(p.device.type != "cpu" for group in optimizer.param_groups for p in group["params"]):
            check()

    optimizer._accelerator_graph_capture_health_check = health_check
    return optimizer


def fused_adam(groups, amsgrad: bool) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` over ``groups()`` (a function returning the parameter groups), fused: one kernel
    updates every parameter instead of torch's default Python loop over them. On the CPU, MINE's step of Adam took
    0.09 instead of 0.23 ms, about 4% of MINE's time (sixteenth round, ``benchmarks/RESULTS.md``). The same update
    rule; the last bits of the results differ from the loop's. A torch or device without fused Adam (CPU before
    torch 2.4) gets the default one."""
    try:
        return torch.optim.Adam(groups(), amsgrad=amsgrad, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups(), amsgrad=amsgrad)


def adam_with_schedule(estimator_parameters, shared, fine, hp) -> dict:
    """Adam over the estimator's parameters and the shared and fine coefficients (learning rates ``hp.lr_mine``,
    ``hp.lr_shared``, ``hp.lr_fine``), each decayed by a cosine to ``hp.lr_final_factor`` at ``hp.max_steps``; the
    transform's rates also ramp up over ``hp.warmup_steps``. Lightning's ``configure_optimizers`` dict."""
    estimator_parameters = list(estimator_parameters)

    def groups() -> list:  # new dicts on each call: Adam writes its defaults into them
        return [{"params": estimator_parameters, "lr": hp.lr_mine, "name": "mine"},
                {"params": [shared], "lr": hp.lr_shared, "name": "shared"},
                {"params": [fine], "lr": hp.lr_fine, "name": "fine"}]

    optimizer = without_cpu_accelerator_check(fused_adam(groups, hp.amsgrad))
    total, floor = max(1, hp.max_steps), hp.lr_final_factor

    def cosine(step: int) -> float:
        t = min(step, total) / total
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    warmup = max(0, hp.warmup_steps)

    def warm_cosine(step: int) -> float:
        return cosine(step) * (min(1.0, (step + 1) / (warmup + 1)) if warmup else 1.0)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [cosine, warm_cosine, warm_cosine])
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
