"""Reading a user's TOML files (the flight config, stations, tenants), with errors that say
which file and what is wrong with it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from orbithil.errors import ConfigError


def read_toml(path: str | Path, what: str) -> dict:
    """The tables of the TOML file ``path``; ConfigError naming it as ``what`` ("flight
    config", "stations file", ...) when it is missing or not readable TOML."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not readable TOML: {exc}") from None
