"""Flight services: telemetry store, event log, mode manager, command dispatcher, FDIR and
the chip manager. Each publishes what the ground sees on the software bus:

- ``tm/event``: (time, event id, severity, text)
- ``tm/verify``: (time, auth sequence, opcode, stage, reason)
The housekeeping service reads the telemetry store at its own period.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from orbithil.flight.ccsds import Stage, Telecommand
from orbithil.flight.core import Bus
from orbithil.flight.dictionary import (
    CHANNEL_BY_NAME,
    COMMAND_BY_OPCODE,
    DICT_HASH32,
    EVENT_BY_NAME,
    MODES,
    Command,
)

log = logging.getLogger(__name__)


class Telemetry:
    """The latest value of every channel (thread-safe)."""

    def __init__(self) -> None:
        self._values: dict[str, float] = {"DICT_HASH": DICT_HASH32}
        self._lock = threading.Lock()

    def set(self, name: str, value) -> None:
        if name not in CHANNEL_BY_NAME:
            raise KeyError(f"no telemetry channel {name!r} in the dictionary")
        with self._lock:
            self._values[name] = float(value)

    def add(self, name: str, amount: float = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0.0) + amount

    def get(self, name: str, default: float = 0.0) -> float:
        with self._lock:
            return self._values.get(name, default)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)


class EventLog:
    """Events with severities; each event id sends at most ``throttle`` per window, the
    rest are counted in EVENTS_THROTTLED."""

    def __init__(self, bus: Bus, clock, telemetry: Telemetry, window_s: float = 10.0) -> None:
        self.bus = bus
        self.clock = clock
        self.tm = telemetry
        self.window_s = window_s
        self._sent: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def emit(self, name: str, **args) -> None:
        event = EVENT_BY_NAME[name]
        now = self.clock.now()
        with self._lock:
            recent = [t for t in self._sent.get(event.id, []) if now - t < self.window_s]
            if len(recent) >= event.throttle:
                self.tm.add("EVENTS_THROTTLED")
                self._sent[event.id] = recent
                return
            recent.append(now)
            self._sent[event.id] = recent
        text = event.format.format(**args)
        log.log(10 + 10 * int(event.severity), "event %s: %s", name, text)
        self.bus.publish("tm/event", (now, event.id, int(event.severity), text))


# allowed transitions: SAFE is reachable from anywhere; COMPUTE only from NOMINAL
TRANSITIONS = {("SAFE", "NOMINAL"), ("NOMINAL", "COMPUTE"), ("COMPUTE", "NOMINAL"),
               ("NOMINAL", "SAFE"), ("COMPUTE", "SAFE"), ("SAFE", "SAFE")}  # fmt: skip


class ModeManager:
    def __init__(self, events: EventLog, telemetry: Telemetry) -> None:
        self.mode = "SAFE"
        self.events = events
        self.tm = telemetry
        self.listeners: list[Callable[[str, str], None]] = []
        self._lock = threading.Lock()
        telemetry.set("MODE", 0)

    def request(self, new: str) -> bool:
        with self._lock:
            old = self.mode
            if (old, new) not in TRANSITIONS:
                self.events.emit("MODE_REFUSED", old=old, new=new)
                return False
            self.mode = new
            self.tm.set("MODE", MODES.index(new))
        if old != new:
            self.events.emit("MODE_CHANGED", old=old, new=new)
            for listener in self.listeners:
                listener(old, new)
        return True


class CommandFailed(Exception):
    pass


class Dispatcher:
    """Decodes telecommands by the dictionary and runs their handlers, reporting each
    stage (accepted, started, completed, or failed with a reason) on ``tm/verify``.
    Handlers that touch the chip run on the chip manager's thread."""

    def __init__(self, bus: Bus, clock, telemetry: Telemetry, events: EventLog,
                 modes: ModeManager) -> None:  # fmt: skip
        self.bus = bus
        self.clock = clock
        self.tm = telemetry
        self.events = events
        self.modes = modes
        self.handlers: dict[str, Callable[[dict], None]] = {}
        self.downlink: Callable[[tuple], None] | None = None
        self.deferred: dict[str, Callable[[Callable[[], None]], None]] = {}

    def register(self, name: str, handler: Callable[[dict], None], *, runner=None) -> None:
        self.handlers[name] = handler
        if runner is not None:
            self.deferred[name] = runner

    def _verify(self, tc: Telecommand, stage: Stage, reason: str = "") -> None:
        message = (self.clock.now(), tc.auth_seq, tc.opcode, stage, reason)
        self.bus.publish("tm/verify", message)
        if self.downlink is not None:  # verification goes down at once, not at the next tick
            self.downlink(message)

    def dispatch(self, tc: Telecommand) -> None:
        command: Command | None = COMMAND_BY_OPCODE.get(tc.opcode)
        try:
            if command is None:
                raise CommandFailed(f"unknown opcode 0x{tc.opcode:02X}")
            args = command.decode_args(tc.args)
            if command.modes and self.modes.mode not in command.modes:
                raise CommandFailed(
                    f"not allowed in {self.modes.mode} (allowed in {', '.join(command.modes)})"
                )
            handler = self.handlers[command.name]
        except (CommandFailed, ValueError, KeyError) as exc:
            self._fail(tc, command, str(exc))
            return
        self.tm.add("CMD_ACCEPTED")
        self._verify(tc, Stage.ACCEPTED)

        def run() -> None:
            self._verify(tc, Stage.STARTED)
            try:
                handler(args)
            except Exception as exc:  # a failed command is reported, never fatal
                self._fail(tc, command, f"{type(exc).__name__}: {exc}")
                return
            self.tm.add("CMD_COMPLETED")
            self._verify(tc, Stage.COMPLETED)

        runner = self.deferred.get(command.name)
        if runner is None:
            run()
        else:
            runner(run)

    def _fail(self, tc: Telecommand, command: Command | None, reason: str) -> None:
        self.tm.add("CMD_FAILED")
        self._verify(tc, Stage.FAILED, reason)
        name = command.name if command else f"opcode 0x{tc.opcode:02X}"
        self.events.emit("COMMAND_FAILED", command=name, reason=reason)


@dataclass(frozen=True)
class FdirRule:
    """Watch ``channel``; when ``op limit`` holds for ``persistence`` consecutive checks,
    run ``action`` (once, until the condition clears)."""

    name: str
    channel: str
    op: str  # ">", ">=", "<", "=="
    limit: float
    persistence: int
    action: str


DEFAULT_RULES = (
    FdirRule("ecc-corrections-climbing", "ECC_CORRECTED_RATE", ">", 5.0, 3, "raise_scrub"),
    FdirRule("uncorrectable-memory", "ECC_UNCORRECTABLE", ">", 0, 1, "reset_chip_safe"),
    FdirRule("chip-unresponsive", "CHIP_POLL_FAILS", ">=", 3, 1, "reset_chip_safe"),
    FdirRule("watchdog-expired", "WDT_EXPIRIES", ">", 0, 1, "reset_chip_safe"),
)

_OPS = {">": np.greater, ">=": np.greater_equal, "<": np.less, "==": np.equal}


class Fdir:
    def __init__(self, rules, telemetry: Telemetry, events: EventLog,
                 actions: dict[str, Callable[[str], None]]) -> None:  # fmt: skip
        for rule in rules:
            if rule.channel not in CHANNEL_BY_NAME or rule.op not in _OPS:
                raise ValueError(f"FDIR rule {rule.name}: unknown channel or operator")
            if rule.action not in actions:
                raise ValueError(f"FDIR rule {rule.name}: unknown action {rule.action!r}; "
                                 f"actions: {', '.join(actions)}")  # fmt: skip
        self.rules = list(rules)
        self.tm = telemetry
        self.events = events
        self.actions = actions
        self._count = dict.fromkeys((r.name for r in self.rules), 0)
        self._fired: set[str] = set()

    def check(self) -> None:
        for rule in self.rules:
            value = self.tm.get(rule.channel)
            if _OPS[rule.op](value, rule.limit):
                self._count[rule.name] += 1
                if self._count[rule.name] >= rule.persistence and rule.name not in self._fired:
                    self._fired.add(rule.name)
                    self.tm.add("FDIR_ACTIONS")
                    self.events.emit("FDIR_TRIGGERED", rule=rule.name, channel=rule.channel,
                                     value=value, action=rule.action)  # fmt: skip
                    self.actions[rule.action](rule.name)
            else:
                self._count[rule.name] = 0
                self._fired.discard(rule.name)


class ChipManager:
    """Owns the HAL chip: polls its telemetry, kicks its watchdog, runs chip commands
    (in order, on its own thread) and publishes chip telemetry."""

    WDT_TIMEOUT = 50_000_000  # cycles; kicked every poll

    def __init__(self, chip, telemetry: Telemetry, events: EventLog, *,
                 poll_s: float = 0.1) -> None:  # fmt: skip
        self.chip = chip
        self.tm = telemetry
        self.events = events
        self.poll_s = poll_s
        self.jobs: queue.Queue = queue.Queue(maxsize=64)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.uptime_cycles: int | None = None
        self._last_corrected: tuple[float, float] | None = None
        self.fails = 0
        self._runner = None  # the on-board model resident on the chip (payload.model)

    def start(self) -> None:
        from orbithil.payload.model import default_model

        default_model()  # trained once per machine (seconds), then read from the cache
        self._configure()
        self._thread = threading.Thread(target=self._run, name="chip-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def submit(self, job: Callable[[], None]) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise CommandFailed("the chip manager's queue is full") from None

    def _configure(self) -> None:
        self.chip.identify()
        self.chip.write_reg("WDT_TIMEOUT", self.WDT_TIMEOUT)
        self.tm.set("SCRUB_PERIOD", self.chip.read_reg("SCRUB_PERIOD"))

    def _run(self) -> None:
        next_poll = time.monotonic()
        while not self._stop.is_set():
            try:
                job = self.jobs.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                job = None
            if job is not None:
                try:
                    job()
                except Exception as exc:  # an FDIR action on a dead chip, say: report, go on
                    log.exception("chip manager job failed")
                    self.events.emit("CHIP_UNRESPONSIVE", error=f"{type(exc).__name__}: {exc}")
                continue
            next_poll = time.monotonic() + self.poll_s
            self.poll()

    def poll(self) -> None:
        from orbithil.hal.errors import HalError

        try:
            self.chip.kick()
            t = self.chip.telemetry()
        except HalError as exc:
            self.fails += 1
            self.tm.set("CHIP_POLL_FAILS", self.fails)
            self.tm.set("CHIP_HEALTHY", 0)
            if self.fails in (1, 3):
                self.events.emit("CHIP_UNRESPONSIVE", error=str(exc)[:200])
            return
        self.fails = 0
        self.uptime_cycles = t["UPTIME"]
        for name in ("ECC_CORRECTED", "ECC_UNCORRECTABLE", "TMR_MISMATCH", "WDT_EXPIRIES",
                     "JOB_COUNT", "ENERGY"):  # fmt: skip
            self.tm.set(name, t[name])
        self.tm.set("CHIP_UPTIME", t["UPTIME"])
        self.tm.set("CHIP_STATUS", t.status)
        self.tm.set("CHIP_POLL_FAILS", 0)
        self.tm.set("CHIP_HEALTHY", 1)
        now = time.monotonic()
        if self._last_corrected is not None:
            then, count = self._last_corrected
            if now > then:
                self.tm.set("ECC_CORRECTED_RATE", max(t["ECC_CORRECTED"] - count, 0) / (now - then))
        self._last_corrected = (now, t["ECC_CORRECTED"])

    # --- actions (run on this thread) ---
    def reset_chip(self, why: str) -> None:
        self.chip.reset(clear_memory=True)
        self._runner = None  # its weights went with the SRAM
        self._configure()
        self._last_corrected = None
        self.events.emit("CHIP_RESET", why=why)
        self.poll()

    def set_scrub(self, period: int, why: str) -> None:
        self.chip.scrub(period)
        self.tm.set("SCRUB_PERIOD", period)
        self.events.emit("SCRUB_SET", period=period, why=why)

    def inference(self, index: int) -> int:
        """Classify test image ``index`` (modulo the split) with the on-board model on the
        chip; its weights are loaded into the top of the chip's SRAM on first use and again
        after a reset cleared it."""
        from orbithil.payload.model import ChipRunner, default_model, plan_layout

        model = default_model()
        xs, labels = model.test_split()
        index %= len(xs)
        if self._runner is None:
            base = self.chip.identity.mem_words - plan_layout(model).words
            self._runner = ChipRunner(self.chip, model, base=base)
        label = int(np.argmax(self._runner.run(xs[index])))
        self.tm.set("INFERENCE_CLASS", label)
        self.events.emit("INFERENCE_DONE", index=index, label=label, truth=int(labels[index]))
        return label
