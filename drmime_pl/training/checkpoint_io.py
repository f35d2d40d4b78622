"""Checkpoints written atomically and read safely.

Written: a run killed while saving keeps the previous, whole ``last.ckpt``; a failed write (a full disk) leaves no
temporary file and is reported as :class:`~drmime_pl.errors.CheckpointError`.

Read: with ``torch.load(weights_only=True)`` only, for ``fit.ckpt_path``'s identity check and for Lightning's resume
alike. A drmime_pl checkpoint holds only tensors, numbers, strings, lists, tuples and dicts, so no type needs to be
allow-listed; a checkpoint whose pickle would build any other object (and so could run code) is refused unread.
"""
from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..errors import CheckpointError
from ..io.atomic import atomic_path


def load_checkpoint_safely(path) -> dict:
    """``torch.load(path, weights_only=True)`` on the CPU. Raises :class:`CheckpointError` (one line) for a missing,
    unreadable or unsafe file (one whose pickle asks for a Python object other than plain data and tensors)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (fit.ckpt_path)")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors
        text = str(exc)
        if exc.__class__.__name__ == "UnpicklingError" and "weights_only" in text.lower():
            raise CheckpointError(
                f"{path}: refused: the file asks to build Python objects that a drmime_pl checkpoint never holds "
                f"(it could run code); not loaded"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a drmime_pl checkpoint (holds a {type(ckpt).__name__})")
    return ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but saved to a temporary file in the same folder and renamed, and loaded
    with ``weights_only=True`` (Lightning's own resume would unpickle arbitrary objects)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                super().save_checkpoint(checkpoint, tmp, storage_options)
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot write the checkpoint ({exc.strerror or exc})") from None

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint_safely(path)
