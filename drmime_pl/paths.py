"""Where things are found and where they land (issue 11, part 6).

* Configs by name: ``--config fire`` (or ``fire.yaml``) is the packaged ``drmime_pl/configs/fire.yaml`` when no
  file of that name exists in the working directory (:func:`find_config`). The repository's ``configs/`` folder
  holds the same files (``tests/test_paths.py`` checks that they are identical), so ``--config configs/fire.yaml``
  from the repository root keeps working.
* Bundled samples: an image path in a config *file* (``data.fixed``, ``data.moving``, ``data.fixed_mask``) is
  relative to the working directory; when it does not exist there but does relative to the drmime_pl checkout
  (``samples/fire/A01_1.jpg``), that file is used (:func:`resolve_bundled_paths`). Paths given as ``key=value``
  overrides are never changed.
* Logs: with ``output.dir`` set, a relative ``logging.log_dir`` (default ``logs``) is taken inside ``output.dir``,
  so TensorBoard events and checkpoints land in ``<output.dir>/logs/<logging.name>/version_N/`` instead of under
  the working directory (:func:`log_root`). An absolute ``logging.log_dir`` is used as it is.
* Resuming: ``fit.ckpt_path=<run>/checkpoints/last.ckpt`` continues in ``<run>``, the same TensorBoard run
  (:func:`resume_run_dir`).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from .errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
#: The packaged configs (package data): ``default.yaml``, ``fire.yaml``, ``anhir.yaml``.
CONFIGS_DIR = PACKAGE_DIR / "configs"
#: The folder that holds the ``drmime_pl`` package: the repository root in a checkout or an editable install.
CHECKOUT_DIR = PACKAGE_DIR.parent

#: Config keys holding image paths that :func:`resolve_bundled_paths` may resolve.
DATA_PATH_KEYS = ("fixed", "moving", "fixed_mask")


def packaged_configs() -> List[str]:
    """Names of the packaged configs (``["anhir", "default", "fire"]``)."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def find_config(name) -> Path:
    """The config file for ``--config name``: an existing file as given, else, for a bare name (no folder part),
    ``drmime_pl/configs/<name>`` or ``<name>.yaml`` there. Raises :class:`ConfigError` (``... config file not
    found``) naming the packaged configs."""
    path = Path(name)
    if path.is_file():
        return path
    text = str(name)
    if text and "/" not in text and "\\" not in text and path.name == text:
        for candidate in (CONFIGS_DIR / text, CONFIGS_DIR / f"{text}.yaml", CONFIGS_DIR / f"{text}.yml"):
            if candidate.is_file():
                return candidate
    names = ", ".join(packaged_configs())
    raise ConfigError(f"{name}: config file not found" + (f" (packaged configs, usable by name: {names})"
                                                            if names else ""))


def resolve_bundled_paths(data_section) -> None:
    """Replace, in place, each relative image path of the config's ``data`` section that does not exist from the
    working directory but exists relative to the drmime_pl checkout (the bundled ``samples/``) by that absolute
    path. Other values (absolute paths, missing files, interpolations) are left as they are."""
    for key in DATA_PATH_KEYS:
        value = data_section.get(key) if hasattr(data_section, "get") else None
        if not isinstance(value, str) or not value or "${" in value:
            continue
        path = Path(value).expanduser()
        if path.is_absolute() or path.exists():
            continue
        bundled = CHECKOUT_DIR / path
        if bundled.is_file():
            data_section[key] = str(bundled)


def log_root(log_dir, output_dir=None) -> Path:
    """The folder that holds ``<logging.name>/version_N``: ``logging.log_dir``, inside ``output.dir`` when that is
    set and ``log_dir`` is relative."""
    root = Path(log_dir).expanduser()
    if output_dir and not root.is_absolute():
        return Path(output_dir).expanduser() / root
    return root


def resume_run_dir(ckpt_path) -> Optional[Path]:
    """The run folder a checkpoint belongs to: ``<run>`` for ``<run>/checkpoints/<file>.ckpt``; ``None`` for a
    checkpoint stored anywhere else (the resumed run then gets a new ``version_N`` folder)."""
    if not ckpt_path:
        return None
    path = Path(ckpt_path).expanduser().absolute()
    if path.parent.name != "checkpoints":
        return None
    run = path.parent.parent
    return run if run.is_dir() and run != run.parent else None
