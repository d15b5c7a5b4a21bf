"""Flight services: telemetry store, event log, mode manager, command dispatcher and FDIR
(the chips are the payload's: flight/payload.py). Each publishes what the ground sees on
the software bus:

- ``tm/event``: (time, event id, severity, text)
- ``tm/verify``: (time, auth sequence, opcode, stage, reason)
The housekeeping service reads the telemetry store at its own period.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from orbithil.flight.ccsds import Stage, Telecommand
from orbithil.flight.core import Bus
from orbithil.flight.dictionary import (
    CHANNEL_BY_NAME,
    COMMAND_BY_OPCODE,
    COMMANDS,
    DICT_HASH32,
    EVENT_BY_NAME,
    MODES,
    Command,
)
from orbithil.flight.ledger import Tenant

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


TENANT_COMMANDS = tuple(c.name for c in COMMANDS if c.tenants)


class Dispatcher:
    """Decodes telecommands by the dictionary and runs their handlers, reporting each
    stage (accepted, started, completed, or failed with a reason) on ``tm/verify``.
    Handlers registered with a runner (the payload's) run on that runner's thread.

    A handler returns None or the text of its completion (the COMPLETED stage's reason,
    e.g. the job a SUBMIT_JOB made). A key of a tenant (``tenant_of``: flight/ledger.py)
    may send only the commands the dictionary marks for tenants; a handler registered
    with ``sender=True`` is also given the tenant (None: an operator's key)."""

    def __init__(self, bus: Bus, clock, telemetry: Telemetry, events: EventLog,
                 modes: ModeManager, tenant_of: Callable[[int], Tenant | None] | None = None,
                 ) -> None:  # fmt: skip
        self.bus = bus
        self.clock = clock
        self.tm = telemetry
        self.events = events
        self.modes = modes
        self.tenant_of = tenant_of or (lambda key_id: None)
        self.handlers: dict[str, Callable[..., str | None]] = {}
        self.with_sender: set[str] = set()
        self.downlink: Callable[[tuple], None] | None = None
        self.deferred: dict[str, Callable[[Callable[[], None]], None]] = {}

    def register(self, name: str, handler: Callable[..., str | None], *, runner=None,
                 sender: bool = False) -> None:  # fmt: skip
        self.handlers[name] = handler
        if runner is not None:
            self.deferred[name] = runner
        if sender:
            self.with_sender.add(name)

    def _verify(self, tc: Telecommand, stage: Stage, reason: str = "") -> None:
        message = (self.clock.now(), tc.auth_seq, tc.opcode, stage, reason)
        self.bus.publish("tm/verify", message)
        if self.downlink is not None:  # verification goes down at once, not at the next tick
            self.downlink(message)

    def dispatch(self, tc: Telecommand) -> None:
        command: Command | None = COMMAND_BY_OPCODE.get(tc.opcode)
        tenant = self.tenant_of(tc.key_id)
        try:
            if command is None:
                raise CommandFailed(f"unknown opcode 0x{tc.opcode:02X}")
            if tenant is not None and not command.tenants:
                raise CommandFailed(
                    f"key {tc.key_id} is tenant {tenant.name}'s: a tenant may send "
                    f"{', '.join(TENANT_COMMANDS)}; {command.name} is the operators'"
                )
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
                text = handler(args, tenant) if command.name in self.with_sender else handler(args)
            except Exception as exc:  # a failed command is reported, never fatal
                # a refusal says why; anything else also names what went wrong
                why = str(exc) if isinstance(exc, CommandFailed) else f"{type(exc).__name__}: {exc}"
                self._fail(tc, command, why)
                return
            self.tm.add("CMD_COMPLETED")
            self._verify(tc, Stage.COMPLETED, text or "")

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


def default_rules(power=None, thermal=None) -> tuple[FdirRule, ...]:
    """The stack's rules; the battery and temperature limits come from the payload's power
    and thermal configs (``payload.power``). A chip that hangs or whose watchdog expires
    is the pool's to fence and recover; these act on the system."""
    from orbithil.payload.power import PowerConfig, ThermalConfig

    power = power or PowerConfig()
    thermal = thermal or ThermalConfig()
    return (
        FdirRule("ecc-corrections-climbing", "ECC_CORRECTED_RATE", ">", 5.0, 3, "raise_scrub"),
        FdirRule("uncorrectable-memory", "ECC_UNCORRECTABLE", ">", 0, 1, "reset_chip_safe"),
        # 3 s without a healthy chip: recovery keeps failing, or every chip is out
        FdirRule("payload-down", "POOL_HEALTHY", "<", 1, 30, "safe"),
        FdirRule("battery-low", "SOC", "<", power.soc_floor, 1, "safe"),
        FdirRule("over-temperature", "TEMP_MAX_C", ">=", thermal.critical_c, 1, "safe"),
    )


DEFAULT_RULES = default_rules()

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
