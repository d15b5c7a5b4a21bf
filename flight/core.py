"""The flight core: a time source, a software bus and a rate-group scheduler."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


# --- time ----------------------------------------------------------------------------------
class WallClock:
    """Monotonic time since the stack started."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._start


class ChipClock:
    """Time as the chip counts it: its UPTIME register (cycles) over its clock rate, as
    last polled by the payload pool (chip 0). For a simulated chip this is simulation time."""

    def __init__(self, uptime_cycles: Callable[[], int | None], clock_hz: float) -> None:
        self._uptime = uptime_cycles
        self.clock_hz = clock_hz
        self._wall = WallClock()
        self._wraps = 0
        self._last = 0

    def now(self) -> float:
        cycles = self._uptime()
        if cycles is None:
            return self._wall.now()
        if cycles < self._last:
            self._wraps += 1
        self._last = cycles
        return (self._wraps * 2**32 + cycles) / self.clock_hz


# --- software bus -----------------------------------------------------------------------------
class Subscription:
    """A bounded queue of one subscriber; when full the oldest message is dropped and
    counted, so a slow subscriber never makes the bus grow."""

    def __init__(self, topic: str, depth: int) -> None:
        self.topic = topic
        self._queue: collections.deque = collections.deque(maxlen=depth)
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, message) -> None:
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(message)
            self._cond.notify()

    def get(self, timeout: float | None = 0.0):
        """The next message, or None if none came within ``timeout`` seconds."""
        with self._cond:
            if not self._queue and timeout:
                self._cond.wait(timeout)
            return self._queue.popleft() if self._queue else None

    def drain(self) -> list:
        with self._cond:
            items = list(self._queue)
            self._queue.clear()
            return items


class Bus:
    def __init__(self) -> None:
        self._subs: dict[str, list[Subscription]] = collections.defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, topic: str, depth: int = 64) -> Subscription:
        sub = Subscription(topic, depth)
        with self._lock:
            self._subs[topic].append(sub)
        return sub

    def publish(self, topic: str, message) -> None:
        with self._lock:
            subs = list(self._subs.get(topic, ()))
        for sub in subs:
            sub.put(message)

    @property
    def dropped(self) -> int:
        with self._lock:
            return sum(s.dropped for subs in self._subs.values() for s in subs)


# --- rate groups ------------------------------------------------------------------------------
@dataclass
class RateGroup:
    hz: float
    members: list[Callable[[], None]] = field(default_factory=list)


class Scheduler:
    """Runs rate groups from one thread on absolute deadlines (no drift).

    The base tick is the fastest group's period; a group at hz runs every base/hz ticks.
    Start jitter is how late each tick starts against its deadline; a slip is a tick that
    started after the next one was due (its work overran), and then the schedule skips
    ahead instead of bursting to catch up.
    """

    def __init__(self, groups: list[RateGroup], *, window: int = 2000) -> None:
        if not groups:
            raise ValueError("the scheduler needs at least one rate group")
        self.groups = sorted(groups, key=lambda g: -g.hz)
        self.base_hz = self.groups[0].hz
        for g in self.groups:
            ratio = self.base_hz / g.hz
            if abs(ratio - round(ratio)) > 1e-9:
                raise ValueError(f"rate group {g.hz} Hz does not divide {self.base_hz} Hz")
        self._every = [round(self.base_hz / g.hz) for g in self.groups]
        self.jitter_us: collections.deque = collections.deque(maxlen=window)
        self.slips = 0
        self.ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rate-groups", daemon=True)
        self._thread.start()

    @property
    def native_id(self) -> int | None:
        """The rate-group thread's id in the OS (None before ``start``)."""
        return self._thread.native_id if self._thread is not None else None

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def jitter(self) -> tuple[float, float]:
        """(p50, p99) start jitter in microseconds over the recent window."""
        if not self.jitter_us:
            return 0.0, 0.0
        data = np.fromiter(self.jitter_us, dtype=float)
        return float(np.percentile(data, 50)), float(np.percentile(data, 99))

    def _run(self) -> None:
        period = 1.0 / self.base_hz
        next_due = time.perf_counter() + period
        while not self._stop.is_set():
            delay = next_due - time.perf_counter()
            if delay > 0.002:
                time.sleep(delay - 0.0015)  # sleep most of it, then wait the rest precisely
            while time.perf_counter() < next_due:
                pass
            started = time.perf_counter()
            self.jitter_us.append((started - next_due) * 1e6)
            for group, every in zip(self.groups, self._every, strict=True):
                if self.ticks % every == 0:
                    for member in group.members:
                        try:
                            member()
                        except Exception:  # one failing member must not stop the others
                            log.exception("rate group %s Hz member %r failed", group.hz, member)
            self.ticks += 1
            next_due += period
            now = time.perf_counter()
            if now > next_due:  # overran into the next tick: count it, skip ahead
                missed = int((now - next_due) / period) + 1
                self.slips += missed
                next_due += missed * period
