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

from .mine import MineNetwork, bias_corrected_surrogate, donsker_varadhan, shuffled_pairs, update_log_moving_average


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
        self.network = MineNetwork(in_features, hidden)
        self.bias_correction, self.ma_rate = bool(bias_correction), float(ma_rate)
        self.register_buffer("log_ma", torch.zeros(int(levels)))
        self.register_buffer("ma_initialised", torch.tensor(False))

    def forward(self, fixed, moving, permutation, weights=None):
        levels, b = permutation.shape
        w_joint = w_marginal = None
        if weights is not None:
            w_joint = weights  # L x B: validity of the warped point
            w_marginal = torch.gather(w_joint, 1, permutation)  # the marginal pairs fixed i with moving perm[i]
        joint, marginal = shuffled_pairs(fixed, moving, permutation)  # L x B x 2C each
        scores = self.network(torch.cat([joint, marginal], 1).reshape(levels * 2 * b, -1)).reshape(levels, 2 * b)
        t_joint, t_marginal = scores[:, :b], scores[:, b:]
        mi = donsker_varadhan(t_joint, t_marginal, w_joint, w_marginal)  # L
        return mi, _objective(self, mi, t_joint, t_marginal, w_joint, w_marginal)


class StackedMineEstimator(MutualInformationEstimator):
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
        super().__init__()
        from .mine import StackedMineNetwork

        self.network = StackedMineNetwork(networks, channels)
        self.bias_correction, self.ma_rate = bool(bias_correction), float(ma_rate)
        self.register_buffer("log_ma", torch.zeros(len(networks), int(levels)))
        self.register_buffer("ma_initialised", torch.tensor(False))

    def forward(self, fixed, moving, permutation, weights=None):
        n, levels, b = permutation.shape
        w_joint = w_marginal = None
        if weights is not None:
            w_joint = weights
            w_marginal = torch.gather(w_joint, -1, permutation)
        joint, marginal = shuffled_pairs(fixed, moving, permutation)  # N x L x B x 2C each
        scores = self.network(torch.cat([joint, marginal], 2).reshape(n, levels * 2 * b, -1)).reshape(n, levels, 2 * b)
        t_joint, t_marginal = scores[..., :b], scores[..., b:]
        mi = donsker_varadhan(t_joint, t_marginal, w_joint, w_marginal)  # N x L
        return mi, _objective(self, mi, t_joint, t_marginal, w_joint, w_marginal)


def _objective(estimator, mi, t_joint, t_marginal, w_joint, w_marginal) -> torch.Tensor:
    """What a MINE estimator maximises: ``mi`` itself, or with ``estimator.bias_correction`` a value equal to ``mi``
    whose gradient is MINE's bias-corrected one (updating the estimator's moving average ``log_ma``)."""
    if not estimator.bias_correction:
        return mi
    log_ma = update_log_moving_average(estimator.log_ma, t_marginal, estimator.ma_rate,
                                       bool(estimator.ma_initialised), w_marginal)
    estimator.log_ma.copy_(log_ma)
    estimator.ma_initialised.fill_(True)
    surrogate = bias_corrected_surrogate(t_joint, t_marginal, log_ma, w_joint, w_marginal)
    return mi.detach() + (surrogate - surrogate.detach())
