"""MINE: a statistics network and the Donsker-Varadhan lower bound on mutual information (Belghazi et al. 2018).

``MI(A; B) >= E_joint[T] - log E_marginal[exp T]``; maximising the right-hand side over T estimates MI in nats.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import nn


class MineNetwork(nn.Module):
    """Statistics network ``T(a, b)``: an MLP on the concatenated intensities of both images.

    Args:
        in_features: 2 * C (fixed channels + moving channels).
        hidden: widths of the hidden layers (the DRMIME notebooks use ``[100, 100]``).
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        layers, width = [], in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x in_features`` -> ``N``."""
        return self.net(x).squeeze(-1)


def log_mean_exp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log(mean(exp(x)))`` computed with logsumexp, so large scores do not overflow."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def donsker_varadhan(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    """DV bound per row: ``mean(t_joint) - log mean exp(t_marginal)``.

    Args:
        t_joint, t_marginal: ``... x N`` network scores.

    Returns:
        ``...`` MI estimates in nats.
    """
    return t_joint.float().mean(-1) - log_mean_exp(t_marginal.float(), -1)


def bias_corrected_surrogate(
    t_joint: torch.Tensor, t_marginal: torch.Tensor, log_moving_average: torch.Tensor
) -> torch.Tensor:
    """Surrogate whose gradient is MINE's bias-corrected gradient (MINE paper, section 3.2).

    The gradient of ``log mean exp T`` is ``grad(mean exp T) / mean exp T``; the mini-batch denominator biases it.
    MINE replaces the denominator by a moving average ``ma``. ``mean exp(T) / ma`` (computed in log space, ma
    detached) has exactly that gradient. Add ``(value - value.detach())`` to the DV estimate to keep its value.

    Args:
        t_joint, t_marginal: ``L x N`` scores.
        log_moving_average: ``L`` log of the moving average of ``mean exp(t_marginal)``.

    Returns:
        ``L`` surrogate bound (its value is not the MI; its gradient is the corrected one).
    """
    ratio = torch.exp(log_mean_exp(t_marginal.float(), -1) - log_moving_average.detach())
    return t_joint.float().mean(-1) - ratio


def update_log_moving_average(
    log_ma: torch.Tensor, t_marginal: torch.Tensor, rate: float, initialised: bool
) -> torch.Tensor:
    """``ma <- (1 - rate) ma + rate mean exp(t_marginal)``, in log space. ``L`` -> ``L``."""
    current = log_mean_exp(t_marginal.detach().float(), -1)
    if not initialised:
        return current
    return torch.logaddexp(log_ma + math.log1p(-rate), current + math.log(rate))


def shuffled_pairs(fixed: torch.Tensor, moving: torch.Tensor, permutation: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Joint and marginal network inputs for one batch.

    Args:
        fixed: ``... x N x C`` fixed intensities.
        moving: ``... x N x C`` moving intensities at the corresponding (warped) points.
        permutation: ``... x N`` indices; the marginal pairs fixed[i] with moving[permutation[i]].

    Returns:
        joint, marginal: ``... x N x 2C``.
    """
    shuffled = torch.gather(moving, -2, permutation.unsqueeze(-1).expand_as(moving))
    return torch.cat([fixed, moving], -1), torch.cat([fixed, shuffled], -1)
