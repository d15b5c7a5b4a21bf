"""Every ORBITHIL_* environment variable the HAL reads, parsed in this one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

CODEC_CHOICES = ("auto", "c", "python")


@dataclass(frozen=True)
class Settings:
    """HAL settings from the environment.

    ORBITHIL_CODEC  auto (default: C when built, else Python with a warning) | c | python
    ORBITHIL_BOARD  serial device of a real board for board tests, e.g. /dev/ttyUSB1
    """

    codec: str = "auto"
    board: str | None = None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        codec = env.get("ORBITHIL_CODEC", "auto").strip().lower() or "auto"
        if codec not in CODEC_CHOICES:
            raise ValueError(
                f"ORBITHIL_CODEC={codec!r} is not valid; use one of {', '.join(CODEC_CHOICES)}"
            )
        return cls(codec=codec, board=env.get("ORBITHIL_BOARD") or None)
