"""orbithil hardware abstraction layer: one Chip API over a board, the simulated chip and
a behavioural model. ``hal.open(url)`` returns a Chip; every failure is a ``HalError``."""

from orbithil.hal.chip import Chip, Telemetry
from orbithil.hal.errors import (
    ArgumentError,
    BackendError,
    ChipFault,
    CobsError,
    FrameError,
    HalError,
    LinkTimeout,
    NakError,
    NotInBuild,
    ProtocolError,
)
from orbithil.hal.open import open

__all__ = [
    "ArgumentError",
    "BackendError",
    "Chip",
    "ChipFault",
    "CobsError",
    "FrameError",
    "HalError",
    "LinkTimeout",
    "NakError",
    "NotInBuild",
    "ProtocolError",
    "Telemetry",
    "open",
]
