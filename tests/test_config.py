"""Every shipped config loads; configs/default.yaml documents exactly the schema; bad values are refused."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from drmime_pl.config import Config, load_config
from drmime_pl.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_loads(path):
    cfg = load_config(str(path))
    assert cfg.model.transform in ("translation", "rigid", "similarity", "affine", "perspective")
    if path.name != "default.yaml":
        assert Path(cfg.data.fixed).is_file() and Path(cfg.data.moving).is_file()


def test_default_yaml_matches_schema():
    default = OmegaConf.to_container(OmegaConf.load(CONFIGS[[p.name for p in CONFIGS].index("default.yaml")]))
    schema = OmegaConf.to_container(OmegaConf.structured(Config))
    assert default == schema


def test_overrides_and_errors():
    cfg = load_config(None, ["model.transform=affine", "fit.max_steps=7"])
    assert cfg.model.transform == "affine" and cfg.fit.max_steps == 7
    with pytest.raises(ConfigError, match="data.bogus"):
        load_config(None, ["data.bogus=1"])
    with pytest.raises(ConfigError, match="fit.max_steps"):
        load_config(None, ["fit.max_steps=many"])
    with pytest.raises(ConfigError, match="optim.lr_shared"):
        load_config(None, ["optim.lr_shared=-1"])
    with pytest.raises(ConfigError, match="model.transform"):
        load_config(None, ["model.transform=elastic"])
    with pytest.raises(ConfigError, match="fit.devices"):
        load_config(None, ["fit.devices=2"])
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such/file.yaml")
