"""A pyserial-like port that wraps another and forwards what it does not change."""

from __future__ import annotations


class PortWrapper:
    """Forwards ``timeout``, ``in_waiting``, ``read``, ``write`` and ``close`` to ``inner``;
    subclasses override what they change (the fault wrapper, the simulator's socket)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    @property
    def timeout(self):
        return self.inner.timeout

    @timeout.setter
    def timeout(self, value) -> None:
        self.inner.timeout = value

    @property
    def in_waiting(self) -> int:
        return self.inner.in_waiting

    def read(self, size: int = 1) -> bytes:
        return self.inner.read(size)

    def write(self, data: bytes) -> int:
        return self.inner.write(data)

    def close(self) -> None:
        self.inner.close()
