"""The flight stack assembled: core, services, the payload (a pool of chips under a power
budget) and the ground link.

    chips = [("model://", chip_a), ("sim://verilator", chip_b)]
    stack = FlightStack(chips, Config(udp_port=0), keys)
    stack.start(); ...; stack.stop()

``orbithil fly --chip URL [--chip URL ...] [--config F]`` (tools/flight_cli.py) runs one; the
pytest plug-in starts one per test. A single chip may be given as itself.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from orbithil.config import read_toml
from orbithil.errors import ConfigError
from orbithil.flight import ccsds, realtime
from orbithil.flight.core import Bus, ChipClock, RateGroup, Scheduler, WallClock
from orbithil.flight.dictionary import (
    APID_EVENT,
    APID_HK,
    APID_VERIFY,
    CHANNELS,
    DICT_HASH32,
    MAX_CHIPS,
    MAX_TENANTS,
    POLICIES,
)
from orbithil.flight.ledger import (
    Ledger,
    LedgerConfig,
    Tariff,
    check_tenant_keys,
    tenants_from_data,
)
from orbithil.flight.link import ContactPlan, GroundLink
from orbithil.flight.payload import Payload, PayloadRefused
from orbithil.flight.services import (
    CommandFailed,
    Dispatcher,
    EventLog,
    Fdir,
    ModeManager,
    Telemetry,
    default_rules,
)

log = logging.getLogger(__name__)
# What the stacks flying in one process share: the interpreter's switch interval and the
# frozen heap. The first to start sets them, the last to stop puts them back, in whatever
# order the stacks stop.
_PROCESS_LOCK = threading.Lock()
_FLYING: set[int] = set()  # id() of each stack started and not yet stopped
_BEFORE: dict[str, float] = {}  # "switch": the interval before the first stack started


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
    # "wall"; "chip": chip 0's uptime (simulation time on a simulator); "orbit": the
    # payload's simulated orbit time (seconds since the TLE epoch, time_factor x real time)
    clock: str = "wall"
    chip_clock_hz: float = 100e6
    contact_passes: list = field(default_factory=list)  # [[start_s, end_s], ...]
    contact_period_s: float = 0.0
    # ground stations ([[stations]]: name, lat, lon, alt_m, min_elevation_deg): contact
    # windows from their passes over the orbit replace contact_passes ("default": a
    # network of four real stations, payload.passes.DEFAULT_STATIONS)
    stations: list | str = field(default_factory=list)
    contact_hours: float = 48.0  # orbit time the pass plan covers; no contact after it
    store_depth: int = 2000
    keys_file: str = ""  # "" = ORBITHIL_TC_KEYS
    # the payload
    policy: str = "none"  # reliability policy of new jobs: none, rerun, dmr, tmr
    pipeline: bool = False  # each chip runs one layer (chip i: layer i mod layers)
    wdt_cycles: int = 50_000_000  # each chip's watchdog, kicked every chip_poll_ms
    time_factor: float = 1.0  # the orbit's simulated time runs this much faster
    orbit_start_s: float = 0.0  # where in the orbit the stack starts (s since the TLE epoch)
    tle: list = field(default_factory=list)  # two lines (or name + two); [] = the ISS
    power: dict = field(default_factory=dict)  # payload.power.PowerConfig fields
    thermal: dict = field(default_factory=dict)  # payload.power.ThermalConfig fields
    # the compute-token ledger (flight/ledger.py): [[tenants]] tables (name, key_ids), and
    # [ledger] (store: the SQLite file that keeps the book; cycles_per_token: the tariff)
    tenants: list = field(default_factory=list)
    ledger: dict = field(default_factory=dict)
    # real-time priority for the stack's threads (flight/realtime.py): "off"; "auto" (if
    # the system allows it, else without and an event says why); "on" (refuse to start
    # without it)
    realtime: str = "off"

    @classmethod
    def load(cls, path: str | Path) -> Config:
        data = read_toml(path, "flight config")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def __post_init__(self) -> None:
        """Every setting is checked once, here (at load, or when a test or the pytest
        plug-in builds one): a bad value is refused with what is allowed, instead of
        failing in a rate group over and over once the stack runs."""
        for name, (check, allowed) in _CHECKS.items():
            value = getattr(self, name)
            if not check(value):
                raise ConfigError(f"{name} = {value!r} is not allowed; use {allowed}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _int_range(low: int, high: int):
    return lambda v: _is_int(v) and low <= v <= high


def _is_pass(p) -> bool:
    return isinstance(p, list | tuple) and len(p) == 2 and all(map(_is_num, p)) and p[0] <= p[1]


# setting -> (check, what is allowed)
_CHECKS = {
    "host": (lambda v: isinstance(v, str) and v != "", "an address to bind, e.g. 127.0.0.1"),
    "udp_port": (_int_range(0, 65535), "a port 0..65535 (0: any free port)"),
    "tcp_port": (lambda v: v is None or _int_range(0, 65535)(v), "a port 0..65535"),
    "ground_host": (lambda v: isinstance(v, str), 'a host name or address, or ""'),
    "ground_port": (_int_range(0, 65535), "a port 0..65535 (0: none)"),
    "hk_period_ms": (_int_range(1, 60_000), "an integer 1..60000 (milliseconds)"),
    "chip_poll_ms": (_int_range(1, 60_000), "an integer 1..60000 (milliseconds)"),
    "scrub_period": (_int_range(0, 0xFFFF_FFFF), "cycles 0..4294967295 (0: off)"),
    "clock": (lambda v: v in ("wall", "chip", "orbit"), '"wall", "chip" or "orbit"'),
    "chip_clock_hz": (lambda v: _is_num(v) and v > 0, "a number of hertz > 0"),
    "contact_passes": (
        lambda v: isinstance(v, list | tuple) and all(map(_is_pass, v)),
        "a list of [start_s, end_s] pairs of numbers with start_s <= end_s",
    ),
    "contact_period_s": (lambda v: _is_num(v) and v >= 0, "seconds >= 0 (0: no repeat)"),
    "stations": (
        lambda v: v == "default" or (isinstance(v, list) and all(isinstance(t, dict) for t in v)),
        '[[stations]] tables (name, lat, lon, alt_m, min_elevation_deg) or "default"',
    ),
    "contact_hours": (lambda v: _is_num(v) and 0 < v <= 24 * 366, "hours in (0, 8784]"),
    "store_depth": (_int_range(1, 10_000_000), "packets 1..10000000"),
    "keys_file": (lambda v: isinstance(v, str), 'a path, or "" for ORBITHIL_TC_KEYS'),
    "policy": (lambda v: v in POLICIES, " | ".join(POLICIES)),
    "pipeline": (lambda v: isinstance(v, bool), "true or false"),
    "realtime": (lambda v: v in realtime.MODES, '"off", "auto" or "on"'),
    "wdt_cycles": (_int_range(1, 0xFFFF_FFFF), "cycles 1..4294967295"),
    "time_factor": (lambda v: _is_num(v) and 0 < v <= 1e6, "a factor in (0, 1000000]"),
    "orbit_start_s": (_is_num, "seconds since the TLE epoch (a finite number)"),
    "tle": (
        lambda v: isinstance(v, list) and all(isinstance(t, str) for t in v),
        "the TLE's lines (two, or a name and two) as strings",
    ),
    "power": (lambda v: isinstance(v, dict), "a [power] table"),
    "thermal": (lambda v: isinstance(v, dict), "a [thermal] table"),
    "tenants": (
        lambda v: isinstance(v, list) and all(isinstance(t, dict) for t in v),
        "[[tenants]] tables (name, key_ids)",
    ),
    "ledger": (
        lambda v: isinstance(v, dict),
        "a [ledger] table (store, cycles_per_token, tokens_per_joule, eclipse_multiplier, prices)",
    ),
}


def orbit_parts(config: Config):
    """The payload's clock, power and thermal configs and sunlight timeline from ``config``."""
    from orbithil.payload.orbit import Orbit
    from orbithil.payload.power import PowerConfig, SimClock, ThermalConfig

    if not isinstance(config.power, dict) or not isinstance(config.thermal, dict):
        raise ConfigError("power and thermal are tables of settings ([power], [thermal])")
    power = PowerConfig.from_mapping(config.power)
    known = {f.name for f in fields(ThermalConfig)}
    unknown = sorted(set(config.thermal) - known)
    if unknown:
        raise ConfigError(f"unknown thermal setting(s) {', '.join(unknown)}; valid: "
                          f"{', '.join(sorted(known))}")  # fmt: skip
    thermal = ThermalConfig(**config.thermal)
    if config.tle:
        if not isinstance(config.tle, list) or not all(isinstance(t, str) for t in config.tle):
            raise ConfigError("tle is a list of the TLE's lines (two, or a name and two)")
        orbit = Orbit.from_text("\n".join(config.tle))
    else:
        orbit = Orbit.default()
    clock = SimClock(config.time_factor, start=config.orbit_start_s)
    span = max(3 * orbit.period_s, config.orbit_start_s + 2 * orbit.period_s)
    return clock, power, thermal, orbit.timeline(span_s=span), orbit


def contact_plan(config: Config, orbit) -> ContactPlan:
    """The link's contact plan: from the stations' passes over the orbit when stations are
    configured, else the hand-written ``contact_passes``."""
    if not config.stations:
        return ContactPlan(tuple(map(tuple, config.contact_passes)), config.contact_period_s)
    from orbithil.payload.passes import DEFAULT_STATIONS, contact_windows, stations_from_data

    if config.contact_passes:
        raise ConfigError("give either stations or contact_passes, not both")
    if config.stations == "default":
        stations = DEFAULT_STATIONS
    elif isinstance(config.stations, list):
        stations = stations_from_data(config.stations)
    else:
        raise ConfigError(f"stations = {config.stations!r}: give [[stations]] tables or "
                          '"default"')  # fmt: skip
    if config.clock not in ("orbit", "wall"):
        raise ConfigError("contact windows from passes need clock = 'orbit' or 'wall'")
    windows = contact_windows(orbit, stations, config.orbit_start_s, config.contact_hours)
    if config.clock == "wall":  # the wall clock starts at 0 with the orbit at its start
        start, factor = config.orbit_start_s, config.time_factor
        windows = [((a - start) / factor, (b - start) / factor) for a, b in windows]
    if not windows:  # the network never sees the spacecraft (an empty plan: always up)
        log.warning("no station sees the spacecraft in %g h: the link stays down",
                    config.contact_hours)  # fmt: skip
        windows = [(0.0, 0.0)]
    return ContactPlan(tuple(windows), 0.0)


def open_ledger(config: Config, keys) -> tuple[Ledger, Tariff]:
    """The book of the config's tenants (each tenant's key ids among ``keys``), kept in the
    ``[ledger]`` store, and the tariff."""
    tenants = tenants_from_data(config.tenants)
    check_tenant_keys(tenants, keys)
    settings = LedgerConfig.from_mapping(config.ledger)
    if tenants and not settings.store:
        log.warning("%d tenant(s) and no [ledger] store: the book is kept in memory and "
                    "starts empty at every start", len(tenants))  # fmt: skip
    return Ledger(tenants, store=settings.store or None), settings.tariff


def _as_chips(chips) -> list[tuple[str, object]]:
    if isinstance(chips, list | tuple):
        return [(str(url), chip) for url, chip in chips]
    return [(getattr(chips, "url", "chip"), chips)]  # one chip, given as itself


class FlightStack:
    def __init__(self, chips, config: Config | None = None,
                 keys: dict[int, bytes] | None = None) -> None:  # fmt: skip
        self.config = config = config or Config()
        if keys is None:
            keys = ccsds.load_keys(config.keys_file or None)
        self.chips = _as_chips(chips)
        self.chip = self.chips[0][1]
        self.bus = Bus()
        self.tm = Telemetry()
        self.payload: Payload | None = None
        orbit_clock, power, thermal, timeline, orbit = orbit_parts(config)
        self.clock = WallClock()
        if config.clock == "chip":
            self.clock = ChipClock(lambda: self.payload and self.payload.uptime_cycles,
                                   config.chip_clock_hz)  # fmt: skip
        elif config.clock == "orbit":
            self.clock = orbit_clock
        elif config.clock != "wall":
            raise ConfigError(f"clock {config.clock!r}: use 'wall', 'chip' or 'orbit'")
        self.events = EventLog(self.bus, self.clock, self.tm)
        self.modes = ModeManager(self.events, self.tm)
        self.ledger, tariff = open_ledger(config, keys)
        try:
            self._build(config, keys, tariff, power, thermal, timeline, orbit, orbit_clock)
        except BaseException:
            self.ledger.close()
            raise

    def _build(self, config, keys, tariff, power, thermal, timeline, orbit, orbit_clock) -> None:
        self.dispatcher = Dispatcher(self.bus, self.clock, self.tm, self.events, self.modes,
                                     tenant_of=self.ledger.by_key.get)  # fmt: skip
        self.orbit_clock = orbit_clock
        self.payload = Payload(
            self.chips, telemetry=self.tm, events=self.events, modes=self.modes,
            clock=orbit_clock, power_config=power, thermal_config=thermal, timeline=timeline,
            policy=config.policy, health_s=config.chip_poll_ms / 1e3,
            scrub_period=config.scrub_period, wdt_cycles=config.wdt_cycles,
            pipeline=config.pipeline, ledger=self.ledger, tariff=tariff,
        )  # fmt: skip
        self.fdir = Fdir(default_rules(power, thermal), self.tm, self.events, {
            "raise_scrub": self._raise_scrub, "reset_chip_safe": self._reset_safe,
            "safe": self._safe})  # fmt: skip
        ground = (config.ground_host, config.ground_port) if config.ground_host else None
        self.link = GroundLink(
            ccsds.Authenticator(keys), self.clock, self.tm, self.events,
            on_telecommand=self.dispatcher.dispatch, host=config.host,
            udp_port=config.udp_port, tcp_port=config.tcp_port, ground=ground,
            contacts=contact_plan(config, orbit),
            store_depth=config.store_depth,
        )  # fmt: skip
        self._events = self.bus.subscribe("tm/event", depth=256)
        self.dispatcher.downlink = self._send_verification
        self.hk_period = config.hk_period_ms / 1e3
        absent = tuple(f"CHIP{n}_" for n in range(len(self.chips), MAX_CHIPS)) + tuple(
            f"TENANT{n}_" for n in range(len(self.ledger.tenants), MAX_TENANTS)
        )
        self._hk_channels = [c for c in CHANNELS if not c.name.startswith(absent)]
        self._last_hk = -1e9
        self.realtime = realtime.Realtime(config.realtime)
        self._stopped = True  # not started
        self.scheduler = Scheduler([
            RateGroup(100, [self._downlink, self.link.service]),
            RateGroup(10, [self.payload.tick, self.fdir.check, self._status]),
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
        with _PROCESS_LOCK:
            if not _FLYING:
                _BEFORE["switch"] = sys.getswitchinterval()
                sys.setswitchinterval(self.SWITCH_INTERVAL_S)
            _FLYING.add(id(self))
        self._stopped = False
        try:
            self.payload.start()
            self.orbit_clock.restart()  # the orbit begins at orbit_start_s now
            self.link.start()
            self._freeze_heap()
            self.scheduler.start()
            self.events.emit("STACK_STARTED", chip=", ".join(url for url, _ in self.chips),
                             dict_hash=f"{DICT_HASH32:08x}")  # fmt: skip
            self._go_realtime()
            for txn in self.ledger.restart_releases:  # holds of jobs the last stop cut short
                self.payload.report(txn)
        except BaseException:
            self.stop()  # what did start stops, and the process's settings go back
            raise

    def _go_realtime(self) -> None:
        """Every thread of the process at a real-time priority, the rate groups above them,
        when the config asks for it (``realtime.Realtime``); an event says which."""
        if self.realtime.mode == "off":
            return
        active = self.realtime.apply(self.scheduler.native_id)  # start() stops on a refusal
        why = "" if active else f": {self.realtime.why_not}"
        self.events.emit("REALTIME", state="on" if active else "off",
                         mode=self.realtime.mode, why=why)  # fmt: skip
        if not active:
            log.warning("running without real-time priority%s", why)

    def _freeze_heap(self) -> None:
        """Move every object made so far (the imported libraries, the model, the
        dictionary: some 10^6 of them) out of the garbage collector's reach. A full
        collection walks them all, 70-90 ms on this stack, and the collector starts one on
        its own every so often: in flight that was a run of slipped ticks. Frozen, a full
        collection walks only what was made since (gc.freeze; the last stack of the process
        to stop unfreezes)."""
        with _PROCESS_LOCK:
            gc.collect(1)  # the young garbage; a full collection here costs the 70-90 ms
            gc.freeze()

    def stop(self) -> None:
        """Stop what runs (each part once, also after a start that failed half-way) and,
        for the last stack of the process, put the interpreter's settings back."""
        if getattr(self, "_stopped", True):
            return
        self._stopped = True
        try:
            self.realtime.restore()
            self.scheduler.stop()
            self.link.stop()
            self.payload.stop()
            self.ledger.close()
        finally:
            with _PROCESS_LOCK:
                _FLYING.discard(id(self))
                if not _FLYING:
                    gc.unfreeze()
                    sys.setswitchinterval(_BEFORE.pop("switch", sys.getswitchinterval()))

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
        now = time.monotonic()  # the housekeeping rate is the link's, in real time
        if self.hk_due(now):
            self._last_hk = now
            self.send_housekeeping()

    def hk_due(self, now: float) -> bool:
        """Whether a housekeeping packet is due at ``now`` (monotonic seconds). Ticks fall
        on a fixed grid, so the time since the last packet is a whole number of ticks give
        or take their start jitter: half a tick of slack keeps a tick that started a little
        early from waiting for the next one (at 10 ms, that made 62 packets/s of 100)."""
        return now - self._last_hk >= self.hk_period - 0.5 / self.scheduler.base_hz

    def _send_verification(self, message: tuple) -> None:
        t, seq, opcode, stage, reason = message
        self.link.send(APID_VERIFY, ccsds.verify_data(int(t * 1e6), seq, opcode, stage, reason))

    def send_housekeeping(self) -> None:
        values = self.tm.snapshot()
        self.tm.set("UPTIME_S", self.clock.now())
        items = [(c.id, values.get(c.name, 0.0)) for c in self._hk_channels]
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
            self.payload.submit_op(lambda: self.payload.set_scrub(period, f"entering {new}"))

    def _raise_scrub(self, rule: str) -> None:
        period = max(4, int(self.tm.get("SCRUB_PERIOD") or self.config.scrub_period) // 4)
        self.payload.submit_op(lambda: self.payload.set_scrub(period, f"FDIR {rule}"))

    def _reset_safe(self, rule: str) -> None:
        """SAFE, and every chip reporting uncorrectable memory fenced (reset, scrubbed,
        self-tested and re-admitted by the pool)."""
        self.modes.request("SAFE")
        self.payload.fence_reporting("ECC_UNCORRECTABLE", f"FDIR {rule}")

    def _safe(self, rule: str) -> None:
        self.modes.request("SAFE")

    # --- commands ---
    def _register_commands(self) -> None:
        d, p = self.dispatcher, self.payload

        def set_mode(args: dict) -> None:
            if not self.modes.request(args["mode"]):
                raise CommandFailed(f"mode {self.modes.mode} -> {args['mode']} is not allowed")

        def hk_period(args: dict) -> None:
            self.hk_period = args["ms"] / 1e3

        def refusing(handler):
            def run(*args) -> str | None:
                try:
                    return handler(*args)
                except PayloadRefused as exc:
                    raise CommandFailed(str(exc)) from None

            return run

        def set_policy(args: dict) -> None:
            from orbithil.payload.pool import CHIPS_NEEDED, Policy

            need, width = CHIPS_NEEDED[Policy(args["policy"])], p.pool.width()
            if need > width:
                stage = " per pipeline stage" if p.pool.pipeline else ""
                raise CommandFailed(f"policy {args['policy']} needs {need} chips{stage}; the "
                                    f"pool has {width}{stage}")  # fmt: skip
            p.set_policy(args["policy"])

        def inject(a: dict) -> None:
            p.inject(a["chip"], a["kind"], a["index"], a["bit"], a["copy"])

        d.register("NOOP", lambda args: None)
        d.register("SET_MODE", set_mode)
        d.register("SET_HK_PERIOD", hk_period)
        d.register(
            "RUN_INFERENCE",
            refusing(lambda a, t: p.submit(a["index"], 1, single=True, tenant=t)),
            sender=True,
        )
        d.register(
            "SUBMIT_JOB",
            refusing(lambda a, t: p.submit(a["first"], a["count"], policy=a["policy"], tenant=t)),
            sender=True,
        )
        d.register(
            "QUOTE_JOB",
            refusing(lambda a, t: p.quote_text(a["count"], a["policy"], t)),
            sender=True,
        )
        d.register("GRANT_TOKENS", refusing(lambda a: p.grant(a["tenant"], a["tokens"])))
        d.register("LEDGER_RESEND", refusing(lambda a: p.resend(a["first"], a["count"])))
        d.register("SET_POLICY", set_policy)
        d.register("SET_SCRUB", lambda a: p.set_scrub(a["period"], "commanded"),
                   runner=p.submit_op)  # fmt: skip
        d.register("CHIP_RESET", refusing(lambda a: p.reset(a["chip"], "commanded")))
        d.register("CHIP_INJECT", refusing(inject), runner=p.submit_op)
        d.register("CHIP_OUT", refusing(lambda a: p.take_out(a["chip"])))
        d.register("CHIP_IN", refusing(lambda a: p.put_back(a["chip"])))
        d.register("POOL_STATUS", lambda a: p.report_status())
