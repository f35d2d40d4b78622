"""The transform as an ``nn.Module`` that owns its coefficients, behind a small interface.

:class:`Transform` is what the training loop, its callbacks and :func:`drmime_pl.training.fit.fit` use: the matrix
(per pyramid level), the coefficients as numbers, and a snapshot to restore. :class:`MatrixExpTransform` is
DRMIME's transform, ``H = expm(sum_i v_i B_i)``; another parametrisation drops in by implementing the interface.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from .geometry import TRANSFORM_DOFS, generator_basis, matrix_from_coefficients


class Transform(nn.Module):
    """The interface of a fixed -> moving transform in the normalised frame (:mod:`drmime_pl.core.geometry`)."""

    def matrix(self, finest: bool = True) -> torch.Tensor:
        """Normalised ``moving_norm_trans_fixed_norm``, ``3 x 3``: the finest level's (``finest``) or the one the
        coarser levels share. Differentiable."""
        raise NotImplementedError

    def level_matrices(self, levels: int) -> torch.Tensor:
        """``L x 3 x 3``: the matrix of every pyramid level, finest first. Differentiable."""
        raise NotImplementedError

    def coefficients(self) -> torch.Tensor:
        """The parameters as numbers (detached), one row per group: ``G x K``."""
        raise NotImplementedError

    def snapshot(self) -> Dict[str, torch.Tensor]:
        """A copy of the parameters (detached) that :meth:`restore` puts back."""
        raise NotImplementedError

    def restore(self, snapshot: Dict[str, torch.Tensor]) -> None:
        """Put the parameters of a :meth:`snapshot` back, in place (without recording gradients)."""
        raise NotImplementedError


class MatrixExpTransform(Transform):
    """``H = expm(sum_i v_i B_i)`` in the normalised frame, mapping fixed -> moving (see :mod:`drmime_pl.core.geometry`).

    As in DRMIME, ``shared`` coefficients act on every pyramid level and ``fine`` coefficients are added on the
    finest level only, to refine it.

    One pair (``init`` of ``K`` coefficients, or None) or ``N`` pairs at once (``init`` ``N x K``, issue 9): then
    ``shared`` and ``fine`` are ``N x K`` and every result has a leading pair dimension (``N x 3 x 3``,
    ``N x L x 3 x 3``, ``N x 2 x K``); the pairs share the transform model.

    Args:
        model: ``translation``, ``rigid``, ``similarity``, ``affine`` or ``perspective``.
        init: optional initial shared coefficients (e.g. from :func:`drmime_pl.core.init.moments_init`): ``K``, or
            ``N x K`` for ``N`` pairs.
    """

    def __init__(self, model: str, init: Optional[torch.Tensor] = None):
        super().__init__()
        if model not in TRANSFORM_DOFS:
            raise ValueError(f"model.transform: unknown value {model!r}; expected one of {', '.join(TRANSFORM_DOFS)}")
        self.model = model
        k = TRANSFORM_DOFS[model]
        self.register_buffer("basis", generator_basis(model).float(), persistent=False)  # K x 3 x 3
        start = torch.zeros(k) if init is None else torch.as_tensor(init, dtype=torch.float32)
        if not (start.dim() == 2 and start.shape[1] == k):  # one pair
            start = start.reshape(k)
        self.shared = nn.Parameter(start.clone())
        self.fine = nn.Parameter(torch.zeros_like(start))

    def forward(self, finest: bool = True) -> torch.Tensor:
        """Normalised ``moving_norm_trans_fixed_norm``: ``3 x 3`` (with the fine refinement when ``finest``)."""
        v = self.shared + self.fine if finest else self.shared
        return matrix_from_coefficients(v.to(self.basis.dtype), self.basis)

    def matrix(self, finest: bool = True) -> torch.Tensor:
        return self(finest=finest)

    def level_matrices(self, levels: int) -> torch.Tensor:
        """``[N x] L x 3 x 3``: level 0 gets shared + fine coefficients, levels 1.. the shared ones."""
        finest_and_shared = matrix_from_coefficients(
            torch.stack([self.shared + self.fine, self.shared], -2).to(self.basis.dtype), self.basis
        )  # ... x 2 x 3 x 3: one exponential per distinct vector
        rest = finest_and_shared[..., 1:, :, :].expand(*finest_and_shared.shape[:-3], levels - 1, 3, 3)
        return torch.cat([finest_and_shared[..., :1, :, :], rest], -3)

    def coefficients(self) -> torch.Tensor:
        """``[N x] 2 x K`` (detached): the shared coefficients, then the fine ones."""
        return torch.stack([self.shared.detach(), self.fine.detach()], -2)

    def snapshot(self) -> Dict[str, torch.Tensor]:
        return {"shared": self.shared.detach().clone(), "fine": self.fine.detach().clone()}

    @torch.no_grad()
    def restore(self, snapshot: Dict[str, torch.Tensor], pairs: Optional[torch.Tensor] = None) -> None:
        """Put a :meth:`snapshot` back: all of it, or (``N`` pairs) only the pairs where the ``N`` bool mask ``pairs``
        is True."""
        for name in ("shared", "fine"):
            current, saved = getattr(self, name), snapshot[name]
            current.copy_(saved if pairs is None else torch.where(pairs[:, None], saved, current))
