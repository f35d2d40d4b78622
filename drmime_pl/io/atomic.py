"""Writing files atomically: to a temporary name in the same folder, renamed over the target when complete.

A reader (or a later run) sees either the previous file or the whole new one, never a partial file, and no
temporary file is left behind when writing fails or is interrupted (except by SIGKILL).
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield ``.<name>.tmp<pid>`` beside ``path``; on leaving the block it replaces ``path``, or is removed when the
    block raised."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(data: bytes, path: PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(text: str, path: PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(data: dict, path: PathLike) -> None:
    write_text_atomic(json.dumps(data, indent=2) + "\n", path)
