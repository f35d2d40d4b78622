"""Checkpoints written atomically: a run killed while saving keeps the previous, whole ``last.ckpt``."""
from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, but saved to a temporary file in the same folder and renamed."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
