"""Issue 11 (part 7): every key and its default are documented (README, --help); a typo suggests the key."""
from __future__ import annotations

import re

import pytest

from drmime_pl.config import closest_key, key_defaults, keys_help, load_config
from drmime_pl.errors import ConfigError

from .io_helpers import REPO


def test_readme_and_help_list_every_key_with_its_default():
    text = (REPO / "README.md").read_text()
    table = text[text.index("## Configuration"):text.index("## How it works")]
    help_text = keys_help()
    for section, key, shown in key_defaults():
        row = re.search(rf"^\| `{section}` \|(.*)$", table, re.M)
        assert row and f"`{key}={shown}`" in row.group(1), f"README lacks {section}.{key}={shown}"
        assert f"  {section}.{key} = {shown}" in help_text
    assert "level 0 is the finest" in table.lower()


@pytest.mark.parametrize("typo,expected", [("data.fixd", "data.fixed"), ("fixed", "data.fixed"),
                                           ("model.init_matrx", "model.init_matrix"), ("dat.fixed", "data")])
def test_unknown_key_suggests_the_closest(typo, expected):
    with pytest.raises(ConfigError, match=rf"did you mean {re.escape(expected)}\?"):
        load_config(None, [f"{typo}=x"])
    assert closest_key("zzzz.qqqq") is None


def test_an_unknown_override_is_not_blamed_on_the_config_file():
    config = REPO / "configs" / "default.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(str(config), ["fit.converge_tol_px=0.5"])  # the key renamed to fit.converge_tol
    message = str(err.value)
    assert "default.yaml" not in message and "'fit.converge_tol_px'" in message and "fit.converge_tol?" in message
