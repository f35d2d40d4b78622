"""Issue 9's question: each pair of a batch its own MINE network (what drmime_pl does), or one network shared by the
batch's pairs with a learnt per-pair embedding (an offset of its first layer)? Runs ``python -m drmime_pl.evaluate``
in this process with the shared variant patched in; compare its pairs.csv with a run of the shipped code.

    PYTHONPATH=. python benchmarks/shared_mine_ab.py shared --pairs ../shared/data/real/jiang/pairs.csv \\
        --out /tmp/shared8 --batch-size 8
    PYTHONPATH=. python benchmarks/shared_mine_ab.py own --pairs ... --out /tmp/own8 --batch-size 8   # as shipped

Measured (benchmarks/results/batch/shared_mine_pairs.csv against run2_pairs.csv, ``--batch-size 8``): 59/82 pairs
at rTRE <= 1% shared, 57/82 own (the shared network gained cv_rgb_nir-vn_15 and vn_3, lost none), 258 s against
246 s. Not adopted: with a shared network a pair's result depends on the pairs it is batched with.
"""
import sys

import torch
from torch import nn

import drmime_pl.core.mine as mine


class SharedMineNetwork(nn.Module):
    """One statistics network for the ``N`` pairs (the widest pair's initial weights) plus a learnt ``N x 1 x H``
    offset of the first layer per pair; the same interface as :class:`drmime_pl.core.mine.StackedMineNetwork`."""

    def __init__(self, networks, channels):
        super().__init__()
        widest = max(networks, key=lambda n: [m for m in n.net if isinstance(m, nn.Linear)][0].in_features)
        linears = [m for m in widest.net if isinstance(m, nn.Linear)]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for i, linear in enumerate(linears):
            w = linear.weight.detach().t()
            if i == 0:  # the fixed channels, then the moving channels, of a `channels`-channel stack
                c = w.shape[0] // 2
                full = torch.zeros(2 * channels, w.shape[1])
                full[:c], full[channels:channels + c] = w[:c], w[c:]
                w = full
            self.weights.append(nn.Parameter(w[None].clone()))
            self.biases.append(nn.Parameter(linear.bias.detach()[None, None].clone()))
        self.embedding = nn.Parameter(torch.zeros(len(networks), 1, linears[0].out_features))

    def forward(self, x):
        n, last = x.shape[0], len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            bias = b + self.embedding if i == 0 else b.expand(n, -1, -1)
            x = torch.baddbmm(bias, x, w.expand(n, -1, -1))
            if i < last:
                x = torch.relu(x)
        return x.squeeze(-1)


if __name__ == "__main__":
    if sys.argv[1] not in ("own", "shared"):
        sys.exit("usage: shared_mine_ab.py own|shared EVALUATE-ARGUMENTS...")
    if sys.argv[1] == "shared":
        mine.StackedMineNetwork = SharedMineNetwork  # StackedMineEstimator looks it up when it is built
    from drmime_pl.cli import evaluate_main

    sys.exit(evaluate_main(sys.argv[2:]))
