"""Mini-batches for ``N`` pairs registered at once (issue 9): each pair's own
:class:`~drmime_pl.training.datamodule.PixelBatchSampler` (seeded as a one-pair run is, so pair ``n`` draws exactly
the pixels it would draw alone), stacked along a leading pair dimension.

Pairs differ in levels and channels: a pair with fewer levels gets placeholder levels (the module's ``level_valid``
False, their scores ignored), one with fewer channels zero channels (which its statistics network ignores,
:class:`~drmime_pl.core.mine.StackedMineNetwork`).
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from .datamodule import PixelBatchSampler


class StackedSampler:
    """``batch(step)`` -> ``fixed_norm`` ``N x L x B x 2``, ``fixed`` ``N x L x B x C``, ``permutation``
    ``N x L x B`` (``L``, ``C``: the most of any pair).

    Args:
        samplers: one per pair, all with the same ``batch_size``.
        channels: ``C``.
    """

    def __init__(self, samplers: Sequence[PixelBatchSampler], channels: int):
        if len({s.batch_size for s in samplers}) != 1:
            raise ValueError("StackedSampler: the samplers must draw the same number of pixels")
        self.samplers = list(samplers)
        self.channels = int(channels)
        self.batch_size = self.samplers[0].batch_size
        self.levels = max(s.levels for s in self.samplers)
        self.seed = self.samplers[0].seed

    def batch(self, step: int) -> Dict[str, torch.Tensor]:
        n, levels, b = len(self.samplers), self.levels, self.batch_size
        fixed_norm = torch.zeros(n, levels, b, 2)
        fixed = torch.zeros(n, levels, b, self.channels)
        permutation = torch.arange(b).expand(n, levels, b).clone()
        for i, sampler in enumerate(self.samplers):
            own = sampler.batch(step)
            k, c = own["fixed"].shape[0], own["fixed"].shape[-1]
            fixed_norm[i, :k] = own["fixed_norm"]
            fixed[i, :k, :, :c] = own["fixed"]
            permutation[i, :k] = own["permutation"]
        return {"fixed_norm": fixed_norm, "fixed": fixed, "permutation": permutation}
