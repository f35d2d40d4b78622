"""The training's Adam (training/module.py): fused where torch offers it (fused_adam), and without
torch's per-step accelerator check for CPU parameters."""
import pytest
import torch

from drmime_pl.training.module import fused_adam, without_cpu_accelerator_check

#: torch has fused Adam for CPU parameters from 2.4 on.
FUSED_ON_CPU = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)


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
    _run(lambda groups, amsgrad: without_cpu_accelerator_check(_fused(groups, amsgrad)), steps=2)  # nor fused


def _fused(groups, amsgrad):
    return fused_adam(lambda: groups, amsgrad)


def test_fused_adam_is_fused_where_torch_offers_it():
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = fused_adam(lambda: [{"params": params, "lr": 1e-3}], amsgrad=True)
    assert bool(optimizer.defaults.get("fused")) == FUSED_ON_CPU
    assert optimizer.param_groups[0]["amsgrad"] is True


def test_fused_adam_updates_as_adam_does():
    """The same update rule as torch's loop over parameters, to float32 rounding, over 20 steps."""
    start = _run(torch.optim.Adam, steps=0)
    for ours, theirs, first in zip(_run(_fused, steps=20), _run(torch.optim.Adam, steps=20), start):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        assert not torch.equal(ours, first)  # the parameters did move


def test_fused_adam_falls_back_to_the_loop_with_new_groups(monkeypatch):
    """Where fused Adam is refused (CPU before torch 2.4) the loop is used, and no group keeps ``fused=True``
    from the refused try (torch's Adam writes its defaults into the group dicts before it refuses)."""
    real = torch.optim.Adam

    class Refuses(real):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            if kwargs.get("fused"):
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                                   "devices")

    monkeypatch.setattr(torch.optim, "Adam", Refuses)
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = fused_adam(lambda: [{"params": params, "lr": 1e-3}], amsgrad=True)
    assert not optimizer.defaults.get("fused") and not optimizer.param_groups[0].get("fused")
    params[0].grad = torch.ones(3)
    optimizer.step()
    assert torch.all(params[0] < 0)


def test_training_uses_fused_adam_with_the_schedule():
    from types import SimpleNamespace

    from drmime_pl.training.module import adam_with_schedule

    hp = SimpleNamespace(lr_mine=3e-3, lr_shared=3e-3, lr_fine=1e-4, amsgrad=True, lr_final_factor=0.05,
                         warmup_steps=5, max_steps=20)
    net = torch.nn.Linear(2, 1)
    shared, fine = torch.nn.Parameter(torch.zeros(6)), torch.nn.Parameter(torch.zeros(6))
    optimizer = adam_with_schedule(net.parameters(), shared, fine, hp)["optimizer"]
    assert [g["name"] for g in optimizer.param_groups] == ["mine", "shared", "fine"]
    assert len(optimizer.param_groups[0]["params"]) == 2  # weight and bias: the generator was read once
    assert bool(optimizer.defaults.get("fused")) == FUSED_ON_CPU
