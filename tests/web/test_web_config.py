"""Server settings: defaults < PEX_CONFIG file < PEX_* variables < create_app's argument; bad values are refused."""

from __future__ import annotations

import pytest

from pex.errors import PexError
from pex.services.settings import DEFAULTS, load_config


def test_precedence(tmp_path):
    assert load_config(environ={}) == DEFAULTS
    config = tmp_path / "pex.toml"
    config.write_text("refresh_seconds = 3\nmax_batch = 500\nflush_seconds = 0.25\n")
    env = {"PEX_CONFIG": str(config), "PEX_MAX_BATCH": "700", "PEX_HOME": "/srv/pex"}
    values = load_config({"FLUSH_SECONDS": 0.75}, environ=env)
    assert (values["REFRESH_SECONDS"], values["MAX_BATCH"], values["FLUSH_SECONDS"], values["HOME"]) == (3.0, 700, 0.75, "/srv/pex")


@pytest.mark.parametrize(("text", "env", "words"), [
    ("refresh = 3\n", {}, "unknown setting 'refresh'"),
    ("refresh_seconds = [\n", {}, "not valid TOML"),
    ("", {"PEX_MAX_BATCH": "many"}, "must be int"),
    ("", {"PEX_FLUSH_SECONDS": "2"}, "flush_seconds must be above 0 and at most 1"),
    ("max_batch = 0\n", {}, "max_batch must be at least 1"),
])
def test_bad_settings_are_refused_with_the_setting_named(tmp_path, text, env, words):
    config = tmp_path / "pex.toml"
    config.write_text(text)
    with pytest.raises(PexError, match=words.replace("[", r"\[")):
        load_config(environ={"PEX_CONFIG": str(config), **env})


def test_a_missing_config_file_is_refused(tmp_path):
    with pytest.raises(PexError, match="cannot read the server config file"):
        load_config(environ={"PEX_CONFIG": str(tmp_path / "absent.toml")})
