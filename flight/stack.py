"""The flight stack assembled: core, services, the chip manager and the ground link.

    stack = FlightStack(chip, Config(udp_port=0), keys)
    stack.start(); ...; stack.stop()

``orbithil fly --chip URL [--config F]`` (tools/flight_cli.py) runs one; the pytest plug-in
starts one per test.
"""

from __future__ import annotations

import logging
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from orbithil.errors import ConfigError
from orbithil.flight import ccsds
from orbithil.flight.core import Bus, ChipClock, RateGroup, Scheduler, WallClock
from orbithil.flight.dictionary import APID_EVENT, APID_HK, APID_VERIFY, CHANNELS, DICT_HASH32
from orbithil.flight.link import ContactPlan, GroundLink
from orbithil.flight.services import (
    DEFAULT_RULES,
    ChipManager,
    CommandFailed,
    Dispatcher,
    EventLog,
    Fdir,
    ModeManager,
    Telemetry,
)

log = logging.getLogger(__name__)


@dataclass
class Config:
    host: str = "127.0.0.1"
    udp_port: int = 47001
    tcp_port: int | None = None
    ground_host: str = ""  # telemetry destination; "" = where commands come from
    ground_port: int = 0
    hk_period_ms: int = 1000
    chip_poll_ms: int = 100
    scrub_period: int = 256  # cycles, set when leaving SAFE
    clock: str = "wall"  # or "chip": the chip's uptime (simulation time on a simulator)
    chip_clock_hz: float = 100e6
    contact_passes: list = field(default_factory=list)  # [[start_s, end_s], ...]
    contact_period_s: float = 0.0
    store_depth: int = 2000
    keys_file: str = ""  # "" = ORBITHIL_TC_KEYS

    @classmethod
    def load(cls, path: str | Path) -> Config:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"flight config {path} does not exist") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"flight config {path} is not readable TOML: {exc}") from None
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


class FlightStack:
    def __init__(self, chip, config: Config | None = None,
                 keys: dict[int, bytes] | None = None) -> None:  # fmt: skip
        self.config = config = config or Config()
        if keys is None:
            keys = ccsds.load_keys(config.keys_file or None)
        self.chip = chip
        self.bus = Bus()
        self.tm = Telemetry()
        self.manager: ChipManager | None = None
        wall = WallClock()
        self.clock = wall
        if config.clock == "chip":
            self.clock = ChipClock(lambda: self.manager and self.manager.uptime_cycles,
                                   config.chip_clock_hz)  # fmt: skip
        elif config.clock != "wall":
            raise ValueError(f"clock {config.clock!r}: use 'wall' or 'chip'")
        self.events = EventLog(self.bus, self.clock, self.tm)
        self.modes = ModeManager(self.events, self.tm)
        self.dispatcher = Dispatcher(self.bus, self.clock, self.tm, self.events, self.modes)
        self.manager = ChipManager(chip, self.tm, self.events, poll_s=config.chip_poll_ms / 1e3)
        self.fdir = Fdir(DEFAULT_RULES, self.tm, self.events, {
            "raise_scrub": self._raise_scrub, "reset_chip_safe": self._reset_safe})  # fmt: skip
        ground = (config.ground_host, config.ground_port) if config.ground_host else None
        self.link = GroundLink(
            ccsds.Authenticator(keys), self.clock, self.tm, self.events,
            on_telecommand=self.dispatcher.dispatch, host=config.host,
            udp_port=config.udp_port, tcp_port=config.tcp_port, ground=ground,
            contacts=ContactPlan(tuple(map(tuple, config.contact_passes)),
                                 config.contact_period_s),
            store_depth=config.store_depth,
        )  # fmt: skip
        self._events = self.bus.subscribe("tm/event", depth=256)
        self.dispatcher.downlink = self._send_verification
        self.hk_period = config.hk_period_ms / 1e3
        self._last_hk = -1e9
        self.scheduler = Scheduler([
            RateGroup(100, [self._downlink, self.link.service]),
            RateGroup(10, [self.fdir.check, self._status]),
            RateGroup(1, []),
        ])  # fmt: skip
        self.modes.listeners.append(self._on_mode)
        self._register_commands()

    # --- lifecycle ---
    # Python hands the interpreter between threads every 5 ms by default, so a rate group
    # waking while another thread computes could start up to 5 ms late. The stack asks for
    # 100 us switches (a little more overhead, far less start jitter).
    SWITCH_INTERVAL_S = 1e-4

    def start(self) -> None:
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(self.SWITCH_INTERVAL_S)
        self.manager.start()
        self.link.start()
        self.scheduler.start()
        self.events.emit("STACK_STARTED", chip=getattr(self.chip, "url", "?"),
                         dict_hash=f"{DICT_HASH32:08x}")  # fmt: skip

    def stop(self) -> None:
        self.scheduler.stop()
        self.link.stop()
        self.manager.stop()
        sys.setswitchinterval(getattr(self, "_switch", 0.005))

    def __enter__(self) -> FlightStack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- rate group members ---
    def _us(self) -> int:
        return int(self.clock.now() * 1e6)

    def _downlink(self) -> None:
        for t, event_id, severity, text in self._events.drain():
            self.link.send(APID_EVENT, ccsds.event_data(int(t * 1e6), event_id, severity, text))
        now = self.clock.now()
        if now - self._last_hk >= self.hk_period:
            self._last_hk = now
            self.send_housekeeping()

    def _send_verification(self, message: tuple) -> None:
        t, seq, opcode, stage, reason = message
        self.link.send(APID_VERIFY, ccsds.verify_data(int(t * 1e6), seq, opcode, stage, reason))

    def send_housekeeping(self) -> None:
        values = self.tm.snapshot()
        self.tm.set("UPTIME_S", self.clock.now())
        items = [(c.id, values.get(c.name, 0.0)) for c in CHANNELS]
        self.link.send(APID_HK, ccsds.hk_data(self._us(), DICT_HASH32, items))

    def _status(self) -> None:
        p50, p99 = self.scheduler.jitter()
        self.tm.set("RG_JITTER_P50_US", p50)
        self.tm.set("RG_JITTER_P99_US", p99)
        self.tm.set("RG_SLIPS", self.scheduler.slips)
        self.tm.set("BUS_DROPS", self.bus.dropped)

    # --- modes and FDIR actions ---
    def _on_mode(self, old: str, new: str) -> None:
        if old == "SAFE" and new != "SAFE":
            period = self.config.scrub_period
            self.manager.submit(lambda: self.manager.set_scrub(period, f"entering {new}"))

    def _raise_scrub(self, rule: str) -> None:
        period = max(4, int(self.tm.get("SCRUB_PERIOD") or self.config.scrub_period) // 4)
        self.manager.submit(lambda: self.manager.set_scrub(period, f"FDIR {rule}"))

    def _reset_safe(self, rule: str) -> None:
        self.modes.request("SAFE")
        self.manager.submit(lambda: self.manager.reset_chip(f"FDIR {rule}"))

    # --- commands ---
    def _register_commands(self) -> None:
        d, m = self.dispatcher, self.manager

        def set_mode(args: dict) -> None:
            if not self.modes.request(args["mode"]):
                raise CommandFailed(f"mode {self.modes.mode} -> {args['mode']} is not allowed")

        def chip_inject(args: dict) -> None:
            self.chip.arm_injection()
            self.chip.inject(args["kind"], args["index"], args["bit"], args["copy"])
            self.chip.write_reg("INJ_ARM", 0)

        def hk_period(args: dict) -> None:
            self.hk_period = args["ms"] / 1e3

        d.register("NOOP", lambda args: None)
        d.register("SET_MODE", set_mode)
        d.register("SET_HK_PERIOD", hk_period)
        d.register("RUN_INFERENCE", lambda a: m.inference(a["index"]), runner=m.submit)
        d.register("SET_SCRUB", lambda a: m.set_scrub(a["period"], "commanded"), runner=m.submit)
        d.register("CHIP_RESET", lambda a: m.reset_chip("commanded"), runner=m.submit)
        d.register("CHIP_INJECT", chip_inject, runner=m.submit)
