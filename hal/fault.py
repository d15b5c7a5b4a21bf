"""``fault://``: a port wrapper that drops, corrupts and delays bytes, seeded (for testing
that the link recovers: every command still completes once, with the right result).

``fault://<url>`` wraps any other backend; its options go in the same query as the inner
URL's: ``fault://sim://verilator?harden=1&flip=0.01&seed=3`` (the older form with a second
``?``, ``fault://sim://verilator?harden=1?flip=0.01``, means the same)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

import numpy as np

from orbithil.hal.backends import Opened, Option, open_port, parse_options
from orbithil.hal.errors import HalError
from orbithil.hal.portwrap import PortWrapper


def _fault_options() -> dict[str, Option]:
    return {
        "drop": Option(float, "probability that a byte is lost", min=0.0, max=1.0),
        "flip": Option(float, "probability that a byte gets one bit flipped", min=0.0, max=1.0),
        "delay": Option(float, "seconds added before each write", min=0.0, max=10.0),
        "seed": Option(int, "seed of the fault generator", min=0, max=2**63 - 1),
    }


FAULT_OPTIONS = _fault_options()


def split_fault_url(url: str) -> tuple[str, str]:
    """(inner URL, fault query) of ``fault://<inner>``; the fault options are taken out of
    the inner URL's query wherever they are, and the rest stays with the inner URL."""
    inner = url[len("fault://") :]
    if not inner:
        raise HalError(f"{url!r} wraps no URL; e.g. fault://model://?flip=0.01")
    base, _, query = inner.partition("?")
    query = query.replace("?", "&")  # the older fault://<url>?a=1?flip=.. form
    pairs = parse_qsl(query, keep_blank_values=True)
    ours = [(k, v) for k, v in pairs if k in FAULT_OPTIONS]
    theirs = [(k, v) for k, v in pairs if k not in FAULT_OPTIONS]
    if theirs:
        base = f"{base}?{urlencode(theirs)}"
    return base, urlencode(ours)


class FaultPort(PortWrapper):
    """Wraps a pyserial-like port; faults hit bytes in both directions independently.

    drop: probability a byte is lost; flip: probability a byte gets one random bit flipped;
    delay: seconds added before each write reaches the inner port; seed: the RNG's seed.
    """

    def __init__(
        self, inner, *, drop: float = 0.0, flip: float = 0.0, delay: float = 0.0, seed: int = 0
    ):
        for name, value in (("drop", drop), ("flip", flip)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"fault option {name}={value} must be a probability in 0..1")
        if delay < 0:
            raise ValueError(f"fault option delay={delay} must be >= 0 seconds")
        super().__init__(inner)
        self.drop, self.flip, self.delay = drop, flip, delay
        self.rng = np.random.default_rng(seed)
        self.corrupted = 0
        self.dropped = 0

    def _mangle(self, data: bytes) -> bytes:
        if not data or (self.drop == 0 and self.flip == 0):
            return data
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        flips = self.rng.random(len(arr)) < self.flip
        arr[flips] ^= (1 << self.rng.integers(0, 8, int(flips.sum()))).astype(np.uint8)
        keep = self.rng.random(len(arr)) >= self.drop
        self.corrupted += int(flips.sum())
        self.dropped += int((~keep).sum())
        return arr[keep].tobytes()

    def write(self, data: bytes) -> int:
        if self.delay:
            time.sleep(self.delay)
        self.inner.write(self._mangle(bytes(data)))
        return len(data)

    def read(self, size: int = 1) -> bytes:
        return self._mangle(self.inner.read(size))


@dataclass(frozen=True)
class FaultBackend:
    """``fault://<url>``: any backend behind a port that drops, corrupts and delays bytes."""

    scheme: str = "fault"
    description: str = "any URL behind a lossy link: fault://model://?flip=0.01&seed=1"
    options: dict = field(default_factory=_fault_options)

    def open(self, url: str) -> Opened:
        inner, query = split_fault_url(url)
        opts = parse_options(query, self.options, url)  # before the inner chip is started
        port, owner = open_port(inner)
        return Opened(FaultPort(port, **opts), owner)


BACKEND = FaultBackend()
