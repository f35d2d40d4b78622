"""Output and log folders: checked before any work, claimed atomically, and freed of a previous run's result.

* :func:`check_writable_dir`: ``output.dir`` and ``logging.log_dir`` are checked before the images are loaded, so
  an unusable folder is a one-line :class:`~drmime_pl.errors.ConfigError` at once, not after the optimisation.
* :func:`claim_run_dir`: ``version_N`` is created with ``os.mkdir`` (which fails when the folder exists), so two
  runs started at once get two folders; TensorBoard's own choice (the next free number) is not atomic.
* :func:`remove_stale_result`: a ``transform.json`` left in a reused ``output.dir`` by an earlier run is removed
  before this run writes anything, so "transform.json exists" always means "this run finished".
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError

_VERSION = re.compile(r"^version_(\d+)$")


def check_writable_dir(path, key: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` when ``path`` cannot be used as a folder to write into: it (or a
    parent) is a file, or the nearest existing folder is not writable. Creates nothing."""
    path = Path(path)
    probe = path
    while True:
        if probe.exists():
            if not probe.is_dir():
                what = "exists and is not a folder" if probe == path else f"cannot be created: {probe} is a file"
                raise ConfigError(f"config key {key!r}: {path} {what}")
            if not os.access(probe, os.W_OK | os.X_OK):
                what = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
                raise ConfigError(f"config key {key!r}: {path} {what}")
            return
        parent = probe.parent
        if parent == probe:  # a root that does not exist: nothing more to check
            return
        probe = parent


def claim_run_dir(log_dir, name: str) -> int:
    """Create ``<log_dir>/<name>/version_N`` for the smallest free N above the existing ones, atomically, and
    return N. Raises :class:`ConfigError` (``logging.log_dir``) when the folder cannot be created."""
    root = Path(log_dir) / name if name else Path(log_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        existing = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION.match(p.name))]
    except OSError as exc:
        raise ConfigError(f"config key 'logging.log_dir': cannot create {root} ({exc.strerror or exc})") from None
    version = max(existing) + 1 if existing else 0
    for _ in range(100000):
        try:
            os.mkdir(root / f"version_{version}")
            return version
        except FileExistsError:
            version += 1
        except OSError as exc:
            raise ConfigError(
                f"config key 'logging.log_dir': cannot create {root / f'version_{version}'} ({exc.strerror or exc})"
            ) from None
    raise ConfigError(f"config key 'logging.log_dir': no free version_N folder in {root}")


def remove_stale_result(out_dir) -> None:
    """Remove ``out_dir/transform.json`` (an earlier run's result) before this run writes anything."""
    stale = Path(out_dir) / "transform.json"
    try:
        if stale.is_file() or stale.is_symlink():
            stale.unlink()
    except OSError as exc:
        raise ConfigError(f"config key 'output.dir': cannot remove the earlier {stale} ({exc.strerror or exc})") from None
