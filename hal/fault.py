"""``fault://``: a port wrapper that drops, corrupts and delays bytes, seeded (for testing
that the link recovers: every command still completes once, with the right result)."""

from __future__ import annotations

import time

import numpy as np

from hal.portwrap import PortWrapper

FAULT_OPTIONS = {"drop": float, "flip": float, "delay": float, "seed": int}


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
