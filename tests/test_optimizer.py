"""The training's Adam (training/module.py: without_cpu_accelerator_check): Adam's updates exactly, without
torch's per-step accelerator check for CPU parameters."""
import pytest
import torch

from drmime_pl.training.module import without_cpu_accelerator_check


def _checkless_adam(*args, **kwargs):
    return without_cpu_accelerator_check(torch.optim.Adam(*args, **kwargs))


def _run(make_optimizer, steps=5):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    coefficients = torch.nn.Parameter(torch.zeros(6))
    opt = make_optimizer([{"params": net.parameters(), "lr": 3e-3}, {"params": [coefficients], "lr": 1e-2}],
                          amsgrad=True)
    x = torch.randn(32, 4)
    for _ in range(steps):
        opt.zero_grad()
        loss = (net(x) ** 2).mean() + ((coefficients - 1) ** 2).sum()
        loss.backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()] + [coefficients.detach().clone()]


def test_checkless_adam_updates_exactly_as_adam():
    for ours, theirs in zip(_run(_checkless_adam), _run(torch.optim.Adam)):
        assert torch.equal(ours, theirs)


def test_checkless_adam_skips_the_accelerator_check_for_cpu_parameters(monkeypatch):
    def no_accelerator_query(*args, **kwargs):
        raise AssertionError("queried the accelerator")

    monkeypatch.setattr(torch.accelerator, "current_accelerator", no_accelerator_query)
    try:
        _run(torch.optim.Adam, steps=1)
    except AssertionError:
        pass  # the premise: torch's Adam asks on every step
    else:
        pytest.skip("this torch's Adam does not query the accelerator: the skip is not needed")
    _run(_checkless_adam, steps=2)  # must not ask
