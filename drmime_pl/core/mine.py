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
        """``... x in_features`` -> ``...``."""
        return self.net(x).squeeze(-1)


def log_mean_exp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log(mean(exp(x)))`` computed with logsumexp, so large scores do not overflow."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def weighted_mean(x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last dim, optionally weighted (``weights`` >= 0, same shape). ``... x N`` -> ``...``."""
    if weights is None:
        return x.mean(-1)
    return (x * weights).sum(-1) / weights.sum(-1).clamp_min(1e-12)


def weighted_log_mean_exp(x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """``log(sum w exp(x) / sum w)`` via logsumexp; zero weights drop samples. ``... x N`` -> ``...``."""
    if weights is None:
        return log_mean_exp(x, -1)
    return torch.logsumexp(x + torch.log(weights.clamp_min(1e-30)), -1) - torch.log(weights.sum(-1).clamp_min(1e-12))


def donsker_varadhan(t_joint: torch.Tensor, t_marginal: torch.Tensor, w_joint: torch.Tensor | None = None,
                     w_marginal: torch.Tensor | None = None) -> torch.Tensor:
    """DV bound per row: ``mean(t_joint) - log mean exp(t_marginal)``, optionally with sample weights.

    Args:
        t_joint, t_marginal: ``... x N`` network scores.
        w_joint, w_marginal: optional ``... x N`` non-negative weights (e.g. 0 for samples that fall outside the
            moving image's foreground); the means become weighted means.

    Returns:
        ``...`` MI estimates in nats.
    """
    return weighted_mean(t_joint.float(), w_joint) - weighted_log_mean_exp(t_marginal.float(), w_marginal)


def bias_corrected_surrogate(
    t_joint: torch.Tensor, t_marginal: torch.Tensor, log_moving_average: torch.Tensor,
    w_joint: torch.Tensor | None = None, w_marginal: torch.Tensor | None = None,
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
    ratio = torch.exp(weighted_log_mean_exp(t_marginal.float(), w_marginal) - log_moving_average.detach())
    return weighted_mean(t_joint.float(), w_joint) - ratio


def update_log_moving_average(
    log_ma: torch.Tensor, t_marginal: torch.Tensor, rate: float, initialised: bool,
    w_marginal: torch.Tensor | None = None,
) -> torch.Tensor:
    """``ma <- (1 - rate) ma + rate mean exp(t_marginal)``, in log space. ``L`` -> ``L``."""
    current = weighted_log_mean_exp(t_marginal.detach().float(), w_marginal)
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


class StackedMineNetwork(nn.Module):
    """``N`` independent statistics networks evaluated together, one batched matrix product per layer: network
    ``n`` sees only pair ``n``'s inputs and owns its own weights (registering ``N`` pairs at once, issue 9).

    Built from ``N`` :class:`MineNetwork` s of the same hidden widths, whose inputs may have fewer features than
    the stack's ``2 * channels`` (a grey pair beside colour pairs): network ``n``'s ``2 * C_n`` inputs (fixed
    channels, then moving channels) go to the rows of the first layer of fixed channel ``c`` and moving channel
    ``c``; the rows of channels a pair does not have are zero. Its inputs there are zero too (the callers pad with
    zeros), so those rows get no gradient and stay zero: each network computes exactly what its
    :class:`MineNetwork` would.

    Args:
        networks: the ``N`` networks whose initial weights the stack takes.
        channels: the stack's channels per image (the most of any pair).
    """

    def __init__(self, networks: Sequence[MineNetwork], channels: int):
        super().__init__()
        linears = [[m for m in net.net if isinstance(m, nn.Linear)] for net in networks]
        depth = len(linears[0])
        if any(len(layers) != depth for layers in linears):
            raise ValueError("StackedMineNetwork: the networks must have the same hidden widths")
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for i in range(depth):
            out_features = linears[0][i].out_features
            in_features = 2 * channels if i == 0 else linears[0][i].in_features
            weight = torch.zeros(len(networks), in_features, out_features)  # N x in x out (x @ W, not W @ x)
            for n, layers in enumerate(linears):
                w = layers[i].weight.detach().t()  # in_n x out
                if i == 0:
                    c = w.shape[0] // 2
                    weight[n, :c] = w[:c]  # fixed channels
                    weight[n, channels:channels + c] = w[c:]  # moving channels
                else:
                    weight[n] = w
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.stack([layers[i].bias.detach() for layers in linears])[:, None]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x ... x 2C`` -> ``N x ...``: network ``n`` on ``x[n]``."""
        shape = x.shape
        x = x.reshape(shape[0], -1, shape[-1])
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b.to(x.dtype), x, w.to(x.dtype))
            if i < last:
                x = torch.relu(x)
        return x.reshape(shape[:-1])
