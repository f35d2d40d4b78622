"""MINE against analytic mutual information, and the numerics of the bound."""
import math

import pytest
import torch

from drmime_pl.core.mine import (
    MineNetwork,
    bias_corrected_surrogate,
    donsker_varadhan,
    log_mean_exp,
    shuffled_pairs,
    update_log_moving_average,
)


def gaussian_pairs(n, rho, generator):
    a = torch.randn(n, 1, generator=generator)
    b = rho * a + math.sqrt(1 - rho**2) * torch.randn(n, 1, generator=generator)
    return a, b


def train_mine(rho, steps=1500, batch=512, bias_correction=False, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = MineNetwork(2, [64, 64])
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    log_ma, initialised = torch.zeros(1), False
    for _ in range(steps):
        a, b = gaussian_pairs(batch, rho, g)
        joint, marginal = shuffled_pairs(a, b, torch.randperm(batch, generator=g))
        t_j, t_m = net(joint).unsqueeze(0), net(marginal).unsqueeze(0)
        if bias_correction:
            log_ma = update_log_moving_average(log_ma, t_m, 0.01, initialised)
            initialised = True
            objective = bias_corrected_surrogate(t_j, t_m, log_ma)
        else:
            objective = donsker_varadhan(t_j, t_m)
        opt.zero_grad()
        (-objective.mean()).backward()
        opt.step()
    with torch.no_grad():
        a, b = gaussian_pairs(50_000, rho, g)
        joint, marginal = shuffled_pairs(a, b, torch.randperm(50_000, generator=g))
        return float(donsker_varadhan(net(joint), net(marginal)))


@pytest.mark.parametrize("rho", [0.5, 0.8, 0.9])
def test_mine_approaches_analytic_gaussian_mi(rho):
    analytic = -0.5 * math.log(1 - rho**2)  # 0.144, 0.511, 0.830 nats
    estimate = train_mine(rho)
    # DV is a lower bound: the estimate sits a little below the truth, never far above it.
    assert analytic - 0.08 < estimate < analytic + 0.03, (estimate, analytic)


def test_mine_bias_corrected_also_converges():
    analytic = -0.5 * math.log(1 - 0.8**2)
    estimate = train_mine(0.8, bias_correction=True)
    assert analytic - 0.08 < estimate < analytic + 0.03


def test_independent_variables_give_near_zero_mi():
    assert abs(train_mine(0.0, steps=600)) < 0.03


def test_log_mean_exp_is_stable_for_large_scores():
    x = torch.tensor([[1000.0, 1000.0, 1000.0]])
    assert torch.allclose(log_mean_exp(x), torch.tensor([1000.0]))
    # the naive formula overflows
    assert torch.isinf(torch.log(torch.exp(x).mean(-1))).all()
    assert torch.isfinite(donsker_varadhan(x, x)).all()


def test_weights_select_samples():
    g = torch.Generator().manual_seed(0)
    t_j, t_m = torch.randn(2, 100, generator=g), torch.randn(2, 100, generator=g)
    w = torch.zeros(2, 100)
    w[:, :40] = 1.0
    weighted = donsker_varadhan(t_j, t_m, w, w)
    subset = donsker_varadhan(t_j[:, :40], t_m[:, :40])
    assert torch.allclose(weighted, subset, atol=1e-6)


def test_bias_corrected_surrogate_gradient_uses_moving_average():
    t_m = torch.randn(1, 64, requires_grad=True)
    t_j = torch.randn(1, 64)
    log_ma = torch.tensor([0.7])
    bias_corrected_surrogate(t_j, t_m, log_ma).sum().backward()
    expected = -torch.exp(t_m.detach()) / 64 / math.exp(0.7)  # d/dT of -mean(exp T) / ma
    assert torch.allclose(t_m.grad, expected, atol=1e-6)
