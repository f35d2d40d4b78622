"""The configuration schema, loading and validation.

Each section maps to one part: ``data`` -> images, pyramid and sampler; ``model`` -> transform and MINE;
``optim`` -> optimiser; ``fit`` -> Trainer; ``logging`` -> TensorBoard and checkpoints; ``output`` -> result files.
``configs/default.yaml`` documents every key; ``tests/test_config.py`` checks that it matches this schema.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .core.geometry import TRANSFORM_DOFS


@dataclass
class DataConfig:
    fixed: Optional[str] = None
    moving: Optional[str] = None
    fixed_mask: Optional[str] = None
    auto_mask: bool = True
    mask_threshold: float = 0.08
    mask_margin: float = 0.03
    channels: str = "auto"
    sampling: str = "uniform"
    levels: int = 6
    min_level_size: int = 32
    blur_sigma: float = 1.0
    highpass_sigma: float = 0.0
    batch_size: int = 1024
    max_pixels: int = 400_000_000


@dataclass
class ModelConfig:
    transform: str = "affine"
    init: str = "search"
    init_matrix: Optional[str] = None
    keep_best: bool = True
    polish: bool = True
    second_opinion: bool = True
    rigid_opinion: bool = True
    candidate_opinion: bool = True
    intensity_opinion: bool = True
    mine_hidden: List[int] = field(default_factory=lambda: [32, 32])
    bias_correction: bool = False
    ma_rate: float = 0.01


@dataclass
class OptimConfig:
    lr_mine: float = 3e-3
    lr_shared: float = 3e-3
    lr_fine: float = 1e-4
    amsgrad: bool = True
    lr_final_factor: float = 0.05
    warmup_steps: int = 50


@dataclass
class FitConfig:
    max_steps: int = 100
    min_steps: int = 50
    converge_every: int = 25
    converge_tol: float = 0.002
    converge_patience: int = 2
    seed: int = 0
    accelerator: str = "cpu"
    devices: int = 1
    precision: str = "32"
    threads: int = 1
    workers: int = 0
    ckpt_path: Optional[str] = None
    debug: bool = False


@dataclass
class LoggingConfig:
    enabled: bool = True
    log_dir: str = "logs"
    name: str = "drmime"
    every_n_steps: int = 10
    image_every_n_steps: int = 100
    preview_size: int = 384
    checkpoint_every_n_steps: int = 50
    progress_bar: bool = True


@dataclass
class OutputConfig:
    dir: Optional[str] = None
    warped: bool = True
    overlay: bool = True
    itk: bool = True
    elastix: bool = True


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


PRECISIONS = ("32", "64", "bf16-mixed", "16-mixed")


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Schema defaults <- YAML file <- ``key=value`` overrides, then :func:`validate`.

    Raises:
        ConfigError: missing or non-YAML file, unknown key, value of the wrong type, or a value out of range.
    """
    cfg = OmegaConf.structured(Config)
    try:
        if path is not None:
            from .paths import find_config, resolve_bundled_paths

            p = find_config(path)  # a file, or a packaged config by name: --config fire (issue 11)
            try:
                loaded = OmegaConf.load(p)
            except Exception as exc:  # noqa: BLE001 - yaml's own errors
                raise ConfigError(f"{path}: not valid YAML ({_one_line(exc)})") from None
            if not isinstance(loaded, DictConfig):
                raise ConfigError(f"{path}: expected a YAML mapping of sections, got {type(loaded).__name__}")
            cfg = OmegaConf.merge(cfg, loaded)
            resolve_bundled_paths(cfg.data)  # samples/... of a shipped config, from any working directory
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected key=value")
        for item in overrides:  # one at a time, so that an error names its override
            try:
                cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
            except OmegaConfBaseException as exc:  # an unknown key, a wrong type: named, without the config file's
                raise ConfigError(_describe_omegaconf_error(exc, None)) from None  # path (the mistake is not there)
            except (TypeError, ValueError, KeyError, IndexError) as exc:  # e.g. model.mine_hidden.5=3
                key = item.split("=", 1)[0].strip()
                raise ConfigError(
                    f"config key {key!r}: cannot be set this way ({_one_line(exc)}); set the whole value, e.g. "
                    f"{key.rsplit('.', 1)[0]}=[...]" if "." in key else f"config key {key!r}: {_one_line(exc)}"
                ) from None
        # Interpolations (${oc.env:...}, ${data.fixed}) are resolved now: an unresolvable one is a one-line error,
        # and the config written with the results is the one that ran.
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe_omegaconf_error(exc, path)) from None
    validate(cfg)
    return cfg


def _describe_omegaconf_error(exc: OmegaConfBaseException, path) -> str:
    key = getattr(exc, "full_key", None) or ""
    msg = _one_line(exc)
    where = f"{path}: " if path else ""
    if "Key" in msg and "not in" in msg:
        hint = closest_key(key)
        return f"{where}unknown config key {key!r}" + (f"; did you mean {hint}?" if hint else "")
    if "Value" in msg and ("type" in msg or "convert" in msg or "could not" in msg.lower()):
        return f"{where}config key {key!r}: {msg}"
    return f"{where}config key {key!r}: {msg}" if key else f"{where}{msg}"


def all_keys() -> List[str]:
    """Every ``section.key`` of the schema, in order."""
    cfg = OmegaConf.structured(Config)
    return [f"{section}.{key}" for section in cfg for key in cfg[section]]


def closest_key(key: str) -> Optional[str]:
    """The schema key closest to a mistyped one (``data.fixd`` -> ``data.fixed``, ``fixed`` -> ``data.fixed``)."""
    import difflib

    keys = all_keys()
    match = difflib.get_close_matches(key, keys + list(OmegaConf.structured(Config)), n=1, cutoff=0.6)
    if match:
        return match[0]
    names = {k.split(".", 1)[1]: k for k in keys}
    match = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(names), n=1, cutoff=0.75)
    return names[match[0]] if match else None


def key_defaults():
    """``(section, key, default as YAML writes it)`` for every key of the schema."""
    cfg = OmegaConf.structured(Config)
    for section in cfg:
        for key, value in cfg[section].items():
            if value is None or isinstance(value, bool):
                shown = {None: "null", True: "true", False: "false"}[value]
            else:
                shown = str(list(value)) if OmegaConf.is_list(value) else str(value)
            yield section, key, shown


def keys_help() -> str:
    """``section.key = default`` for every key (``--help``)."""
    return "\n".join(f"  {section}.{key} = {shown}" for section, key, shown in key_defaults())


def step_memory_bytes(levels: int, batch_size: int, hidden: Sequence[int], channels: int = 3) -> int:
    """A generous estimate of one training step's memory: per level and sampled pixel, the coordinates, fixed and
    moving values, the joint and shuffled pairs, and MINE's activations and gradients for both pairs."""
    per_sample = 4 * (2 + 2 * channels + 4 * 2 * channels + 6 * int(sum(hidden))) + 8 * 3
    return int(levels) * int(batch_size) * per_sample


def _physical_memory_bytes() -> Optional[int]:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _check_step_memory(cfg: DictConfig) -> None:
    d, hidden = cfg.data, list(cfg.model.mine_hidden)
    need_bytes = step_memory_bytes(d.levels, d.batch_size, hidden)
    have = _physical_memory_bytes()
    if have is not None and need_bytes > have:
        per_batch = max(1, need_bytes // max(1, int(d.batch_size)))
        raise ConfigError(
            f"config key 'data.batch_size': {d.batch_size} pixels per level would need about "
            f"{need_bytes / 1e9:.0f} GB of memory per step ({d.levels} levels x {d.batch_size} x "
            f"~{per_batch // max(1, int(d.levels))} bytes), more than this machine's {have / 1e9:.0f} GB; "
            f"use at most {have // 2 // per_batch}"
        )


def validate(cfg: DictConfig) -> None:
    """Range checks that the schema's types cannot express. Raises :class:`ConfigError` naming the key."""

    def need(ok: bool, key: str, what: str):
        if not ok:
            raise ConfigError(f"config key {key!r}: {what} (got {OmegaConf.select(cfg, key)!r})")

    d, m, o, f, lg = cfg.data, cfg.model, cfg.optim, cfg.fit, cfg.logging
    need(d.sampling in ("uniform", "edges"), "data.sampling", "must be uniform or edges")
    need(d.levels >= 1, "data.levels", "must be at least 1")
    need(d.min_level_size >= 4, "data.min_level_size", "must be at least 4")
    need(d.batch_size >= 16, "data.batch_size", "must be at least 16")
    need(d.max_pixels >= 1024, "data.max_pixels", "must be at least 1024")
    _check_step_memory(cfg)
    need(d.highpass_sigma >= 0, "data.highpass_sigma", "must be >= 0 (0: off)")
    need(d.blur_sigma >= 0, "data.blur_sigma", "must be >= 0")
    need(-0.25 <= d.mask_margin <= 0.25, "data.mask_margin", "must be in [-0.25, 0.25]")
    need(0 <= d.mask_threshold < 1, "data.mask_threshold", "must be in [0, 1)")
    need(d.channels in ("auto", "gray", "rgb") or d.channels.isdigit() or (d.channels.strip() != "" and not d.channels.lstrip("-").isdigit()),
         "data.channels", "must be auto, gray, rgb, a channel index 0, 1, 2, ... or an OME channel name")
    need(m.transform in TRANSFORM_DOFS, "model.transform", f"must be one of {', '.join(TRANSFORM_DOFS)}")
    need(m.init in ("identity", "moments", "search"), "model.init", "must be identity, moments or search")
    need(len(m.mine_hidden) >= 1 and all(h >= 1 for h in m.mine_hidden), "model.mine_hidden",
         "must list at least one positive layer width")
    need(0 < m.ma_rate < 1, "model.ma_rate", "must be in (0, 1)")
    for key in ("lr_mine", "lr_shared", "lr_fine"):
        need(o[key] > 0, f"optim.{key}", "must be > 0")
    need(o.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
    need(0 < o.lr_final_factor <= 1, "optim.lr_final_factor", "must be in (0, 1]")
    need(f.max_steps >= 1, "fit.max_steps", "must be at least 1")
    need(f.min_steps >= 0, "fit.min_steps", "must be >= 0")
    need(f.converge_every >= 0, "fit.converge_every", "must be >= 0 (0 disables the stopping rule)")
    need(0 < f.converge_tol < 1, "fit.converge_tol", "must be in (0, 1): a fraction of the moving image's diagonal")
    need(f.converge_patience >= 1, "fit.converge_patience", "must be at least 1")
    need(f.devices == 1, "fit.devices", "must be 1: a registration runs on one device (run pairs in parallel "
                                        "processes to use more)")
    need(f.threads >= 0, "fit.threads", "must be >= 0 (0 keeps torch's default)")
    need(f.workers >= 0, "fit.workers", "must be >= 0 (0: one per CPU core)")
    need(0 <= f.seed <= 2**32 - 1, "fit.seed", "must be in [0, 4294967295]")
    need(f.precision in PRECISIONS, "fit.precision", f"must be one of {', '.join(PRECISIONS)}")
    need(f.accelerator in ("cpu", "gpu", "cuda", "mps", "auto"), "fit.accelerator", "must be cpu, gpu, cuda, mps or auto")
    need(lg.every_n_steps >= 1, "logging.every_n_steps", "must be at least 1")
    need(lg.image_every_n_steps >= 0, "logging.image_every_n_steps", "must be >= 0 (0: no preview images)")
    need(lg.preview_size >= 16, "logging.preview_size", "must be at least 16")
    need(lg.checkpoint_every_n_steps >= 1, "logging.checkpoint_every_n_steps", "must be at least 1")
