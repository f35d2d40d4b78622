"""Mutual-information estimators: the objective of the optimisation, behind one interface.

An estimator scores, per pyramid level, the fixed intensities of a batch of sampled points against the moving
intensities found at their warped positions: ``forward(fixed, moving, permutation, weights) -> (mi, objective)``.
It owns whatever it learns or tracks between steps (network weights, moving averages) as parameters and
persistent buffers, so that a checkpoint saves it and a resumed run continues it. :class:`MineEstimator` is
DRMIME's estimator; another (a Parzen-window or histogram MI, as a baseline) drops in by implementing
:class:`MutualInformationEstimator`.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from .mine import (MineNetwork, StackedMineNetwork, bias_corrected_surrogate, donsker_varadhan, shuffled_pairs,
                   update_log_moving_average)


class MutualInformationEstimator(nn.Module):
    """The interface of an MI estimator (see the module's docstring)."""

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, permutation: torch.Tensor,
                weights: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-level MI estimates and the objective to maximise.

        Args:
            fixed: ``L x B x C`` fixed intensities at the sampled points.
            moving: ``L x B x C`` moving intensities at their warped positions.
            permutation: ``L x B``; the marginal (independent) pairs are fixed ``i`` with moving ``permutation[i]``.
            weights: optional ``L x B`` in [0, 1]: how much each warped point counts (0: it fell where the moving
                image is not valid).

        Returns:
            ``(mi, objective)``, ``L`` each: the estimate in nats, and what the optimiser maximises (its value may
            equal ``mi`` while its gradient differs, e.g. MINE's bias correction).
        """
        raise NotImplementedError


class MineEstimator(MutualInformationEstimator):
    """MINE (Belghazi et al. 2018): one statistics network shared by all levels, scored by the Donsker-Varadhan
    bound, with the optional moving-average bias correction of the gradient (its state: ``log_ma`` and
    ``ma_initialised``, persistent buffers).

    Args:
        in_features: inputs of the statistics network, 2 * C (fixed channels + moving channels).
        hidden: widths of its hidden layers.
        levels: pyramid levels (one moving average each).
        bias_correction: MINE's moving-average gradient correction; ``ma_rate`` is its rate.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], levels: int, bias_correction: bool = False,
                 ma_rate: float = 0.01):
        super().__init__()
        self._own(MineNetwork(in_features, hidden), (int(levels),), bias_correction, ma_rate)

    def _own(self, network: nn.Module, ma_shape, bias_correction: bool, ma_rate: float) -> None:
        """The network and the moving-average state (one average per level, ``ma_shape``)."""
        self.network = network
        self.bias_correction, self.ma_rate = bool(bias_correction), float(ma_rate)
        self.register_buffer("log_ma", torch.zeros(ma_shape))
        self.register_buffer("ma_initialised", torch.tensor(False))

    def forward(self, fixed, moving, permutation, weights=None):
        b = permutation.shape[-1]
        w_joint = w_marginal = None
        if weights is not None:
            w_joint = weights  # [N x] L x B: validity of the warped point
            w_marginal = torch.gather(w_joint, -1, permutation)  # the marginal pairs fixed i with moving perm[i]
        joint, marginal = shuffled_pairs(fixed, moving, permutation)  # [N x] L x B x 2C each
        scores = self.network(torch.cat([joint, marginal], -2))  # [N x] L x 2B
        t_joint, t_marginal = scores[..., :b], scores[..., b:]
        mi = donsker_varadhan(t_joint, t_marginal, w_joint, w_marginal)  # [N x] L
        objective = mi
        if self.bias_correction:
            log_ma = update_log_moving_average(self.log_ma, t_marginal, self.ma_rate, bool(self.ma_initialised),
                                               w_marginal)
            self.log_ma.copy_(log_ma)
            self.ma_initialised.fill_(True)
            surrogate = bias_corrected_surrogate(t_joint, t_marginal, log_ma, w_joint, w_marginal)
            objective = mi.detach() + (surrogate - surrogate.detach())
        return mi, objective


class StackedMineEstimator(MineEstimator):
    """:class:`MineEstimator` for ``N`` pairs at once: each pair its own statistics network
    (:class:`~drmime_pl.core.mine.StackedMineNetwork`) and its own moving average; every tensor carries a leading
    pair dimension (``fixed``, ``moving``: ``N x L x B x C``; ``permutation``, ``weights``: ``N x L x B``; returns
    ``N x L`` each). Pair ``n`` gets what a :class:`MineEstimator` given only its inputs would.

    Args:
        networks: one :class:`~drmime_pl.core.mine.MineNetwork` per pair (their initial weights are taken).
        channels: channels per image of the stacked inputs (pairs with fewer are zero-padded by the caller).
        levels: pyramid levels (the most of any pair).
    """

    def __init__(self, networks, channels: int, levels: int, bias_correction: bool = False, ma_rate: float = 0.01):
        MutualInformationEstimator.__init__(self)
        self._own(StackedMineNetwork(networks, channels), (len(networks), int(levels)), bias_correction, ma_rate)
