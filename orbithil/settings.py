"""Every user-facing ORBITHIL_* environment variable, parsed in this one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orbithil.errors import ConfigError

CODEC_CHOICES = ("auto", "c", "python")


def default_cache_dir() -> Path:
    """The user's cache directory for orbithil (``platformdirs``: ~/.cache/orbithil on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("orbithil", appauthor=False))


def default_state_dir() -> Path:
    """The user's state directory for orbithil (``platformdirs``: ~/.local/state/orbithil on
    Linux): what must survive a restart, such as the ground's telecommand sequence numbers."""
    import platformdirs

    return Path(platformdirs.user_state_dir("orbithil", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Settings from the environment.

    ORBITHIL_CODEC      auto (default: C when built, else Python with a warning) | c | python
    ORBITHIL_BOARD      serial device of a real board for board tests, e.g. /dev/ttyUSB1
    ORBITHIL_CACHE_DIR  where simulator builds, netlists, golden runs and the C codec go
                        (default: the user cache directory, e.g. ~/.cache/orbithil)
    ORBITHIL_STATE_DIR  where the ground consoles keep their telecommand sequence numbers
                        (default: the user state directory, e.g. ~/.local/state/orbithil)
    """

    codec: str = "auto"
    board: str | None = None
    cache_dir: Path | None = None
    state_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        codec = env.get("ORBITHIL_CODEC", "auto").strip().lower() or "auto"
        if codec not in CODEC_CHOICES:
            raise ConfigError(
                f"ORBITHIL_CODEC={codec!r} is not valid; use one of {', '.join(CODEC_CHOICES)}"
            )
        cache = env.get("ORBITHIL_CACHE_DIR", "").strip()
        state = env.get("ORBITHIL_STATE_DIR", "").strip()
        return cls(
            codec=codec,
            board=env.get("ORBITHIL_BOARD") or None,
            cache_dir=Path(cache).expanduser().resolve() if cache else None,
            state_dir=Path(state).expanduser().resolve() if state else None,
        )


def cache_dir(*parts: str) -> Path:
    """A directory under orbithil's cache (created): builds and caches go here, never into
    the installed package or the current directory."""
    base = Settings.from_env().cache_dir or default_cache_dir()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_dir(*parts: str) -> Path:
    """A directory under orbithil's state directory (created): small files that must
    survive restarts, never caches."""
    base = Settings.from_env().state_dir or default_state_dir()
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
