"""The configuration schema, loading and validation.

Each section maps to one part: ``data`` -> images, pyramid and sampler; ``model`` -> transform and MINE;
``optim`` -> optimiser; ``fit`` -> Trainer; ``logging`` -> TensorBoard and checkpoints; ``output`` -> result files.
``configs/default.yaml`` documents every key; ``tests/test_config.py`` checks that it matches this schema.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError
from .geometry import TRANSFORM_DOFS


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


@dataclass
class ModelConfig:
    transform: str = "perspective"
    init: str = "search"
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
    max_steps: int = 500
    min_steps: int = 150
    converge_every: int = 25
    converge_tol_px: float = 0.5
    converge_patience: int = 2
    seed: int = 0
    accelerator: str = "cpu"
    devices: int = 1
    precision: str = "32"
    threads: int = 0
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
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"{path}: config file not found")
            try:
                loaded = OmegaConf.load(p)
            except Exception as exc:  # noqa: BLE001 - yaml's own errors
                raise ConfigError(f"{path}: not valid YAML ({_one_line(exc)})") from None
            if not isinstance(loaded, DictConfig):
                raise ConfigError(f"{path}: expected a YAML mapping of sections, got {type(loaded).__name__}")
            cfg = OmegaConf.merge(cfg, loaded)
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected key=value")
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise ConfigError(_describe_omegaconf_error(exc, path)) from None
    validate(cfg)
    return cfg


def _describe_omegaconf_error(exc: OmegaConfBaseException, path) -> str:
    key = getattr(exc, "full_key", None) or ""
    msg = _one_line(exc)
    where = f"{path}: " if path else ""
    if "Key" in msg and "not in" in msg:
        return f"{where}unknown config key {key!r}"
    if "Value" in msg and ("type" in msg or "convert" in msg or "could not" in msg.lower()):
        return f"{where}config key {key!r}: {msg}"
    return f"{where}config key {key!r}: {msg}" if key else f"{where}{msg}"


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
    need(d.highpass_sigma >= 0, "data.highpass_sigma", "must be >= 0 (0: off)")
    need(d.blur_sigma >= 0, "data.blur_sigma", "must be >= 0")
    need(-0.25 <= d.mask_margin <= 0.25, "data.mask_margin", "must be in [-0.25, 0.25]")
    need(0 <= d.mask_threshold < 1, "data.mask_threshold", "must be in [0, 1)")
    need(d.channels in ("auto", "gray", "rgb", "0", "1", "2"), "data.channels", "must be auto, gray, rgb, 0, 1 or 2")
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
    need(f.converge_tol_px > 0, "fit.converge_tol_px", "must be > 0")
    need(f.converge_patience >= 1, "fit.converge_patience", "must be at least 1")
    need(f.devices == 1, "fit.devices", "must be 1: a registration runs on one device (run pairs in parallel "
                                        "processes to use more)")
    need(f.threads >= 0, "fit.threads", "must be >= 0 (0 keeps torch's default)")
    need(f.precision in PRECISIONS, "fit.precision", f"must be one of {', '.join(PRECISIONS)}")
    need(f.accelerator in ("cpu", "gpu", "cuda", "mps", "auto"), "fit.accelerator", "must be cpu, gpu, cuda, mps or auto")
    need(lg.every_n_steps >= 1, "logging.every_n_steps", "must be at least 1")
    need(lg.image_every_n_steps >= 0, "logging.image_every_n_steps", "must be >= 0 (0: no preview images)")
    need(lg.preview_size >= 16, "logging.preview_size", "must be at least 16")
    need(lg.checkpoint_every_n_steps >= 1, "logging.checkpoint_every_n_steps", "must be at least 1")
