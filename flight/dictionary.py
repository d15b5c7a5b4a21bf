"""The command, telemetry and event dictionary: declared once, as data.

The flight stack dispatches by it, the ground console checks arguments against it, and
``orbithil dict export`` writes it as JSON. Its hash travels in every housekeeping packet,
so a ground tool holding another dictionary notices at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import string
import struct
from dataclasses import asdict, dataclass
from enum import IntEnum


class Severity(IntEnum):
    DEBUG = 0
    INFO = 1
    WARNING = 2
    CRITICAL = 3


@dataclass(frozen=True)
class Arg:
    name: str
    type: str  # u8, u16, u32, or enum (values: names, encoded u8)
    min: int = 0
    max: int = 0
    values: tuple[str, ...] = ()
    doc: str = ""
    default: int | str | None = None  # used when the ground leaves the argument out

    @property
    def fmt(self) -> str:
        return {"u8": "B", "u16": "H", "u32": "I", "enum": "B"}[self.type]

    def encode(self, value) -> int:
        if self.type == "enum":
            if value in self.values:
                return self.values.index(value)
            raise ValueError(f"argument {self.name}={value!r}: use one of {', '.join(self.values)}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"argument {self.name}={value!r}: not an integer") from None
        if not self.min <= number <= self.max:
            raise ValueError(f"argument {self.name}={number}: allowed {self.min}..{self.max}")
        return number

    def decode(self, raw: int):
        if self.type == "enum":
            if raw >= len(self.values):
                raise ValueError(f"argument {self.name}: no value {raw}")
            return self.values[raw]
        if not self.min <= raw <= self.max:
            raise ValueError(f"argument {self.name}={raw}: allowed {self.min}..{self.max}")
        return raw


@functools.lru_cache(maxsize=256)
def _format_pattern(fmt: str) -> re.Pattern:
    """A regular expression matching what ``fmt.format(...)`` makes, one group per field."""
    parts, seen = [], set()
    for literal, name, _spec, _conv in string.Formatter().parse(fmt):
        parts.append(re.escape(literal))
        if name is not None:
            parts.append(f"(?P<{name}>.*?)" if name not in seen else ".*?")
            seen.add(name)
    return re.compile("".join(parts) + "$", re.DOTALL)


def parse_format(fmt: str, text: str) -> dict[str, str] | None:
    """The fields of ``text`` made by ``fmt.format(**fields)``, as strings, or None if it
    was not made by ``fmt`` (ground tools read events and completions back into fields)."""
    match = _format_pattern(fmt).match(text)
    return match.groupdict() if match else None


@dataclass(frozen=True)
class Command:
    opcode: int
    name: str
    args: tuple[Arg, ...] = ()
    doc: str = ""
    modes: tuple[str, ...] = ()  # modes it may run in; () = any
    tenants: bool = False  # a tenant's key may send it (flight/ledger.py); else operators only
    result: str = ""  # the format of its completion's text (the COMPLETED stage's reason)

    @property
    def fmt(self) -> str:
        return ">" + "".join(a.fmt for a in self.args)

    def encode_args(self, **values) -> bytes:
        unknown = set(values) - {a.name for a in self.args}
        values = {a.name: a.default for a in self.args if a.default is not None} | values
        missing = [a.name for a in self.args if a.name not in values]
        if unknown or missing:
            raise ValueError(
                f"{self.name} takes {', '.join(a.name for a in self.args) or 'no arguments'}"
                + (f"; unknown: {', '.join(sorted(unknown))}" if unknown else "")
                + (f"; missing: {', '.join(missing)}" if missing else "")
            )
        return struct.pack(self.fmt, *(a.encode(values[a.name]) for a in self.args))

    def decode_args(self, data: bytes) -> dict:
        if len(data) != struct.calcsize(self.fmt):
            raise ValueError(
                f"{self.name}: {len(data)} argument bytes, expected {struct.calcsize(self.fmt)}"
            )
        raw = struct.unpack(self.fmt, data)
        return {a.name: a.decode(r) for a, r in zip(self.args, raw, strict=True)}

    def parse_result(self, text: str) -> dict[str, str] | None:
        """The fields of this command's completion text (``result``), or None."""
        return parse_format(self.result, text) if self.result else None


@dataclass(frozen=True)
class Channel:
    id: int
    name: str
    type: str  # u32, i64, f64, bool
    units: str = ""
    low: float | None = None  # limits: outside is reported red on the ground
    high: float | None = None
    doc: str = ""
    values: tuple[str, ...] = ()  # an enumerated channel: the names of 0, 1, 2, ...

    def value_name(self, value: float) -> str | None:
        """The name of ``value`` on an enumerated channel (MODE 1: NOMINAL), else None."""
        if self.values and float(value).is_integer() and 0 <= value < len(self.values):
            return self.values[int(value)]
        return None


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    severity: Severity
    format: str  # str.format with the event's arguments
    throttle: int = 10  # at most this many per throttle window, then counted, not sent

    def parse(self, text: str) -> dict[str, str] | None:
        """The fields of an event's text (made by ``format``), as strings, or None."""
        return parse_format(self.format, text)


MODES = ("SAFE", "NOMINAL", "COMPUTE")
POLICIES = ("none", "rerun", "dmr", "tmr")  # payload.pool.Policy
CHIP_STATES = ("healthy", "fenced", "out")  # payload.pool.ChipState, by telemetry value
CHIP_STATE_VALUES = (*CHIP_STATES, "throttled")  # CHIP<n>_STATE (3: flight/payload.py)
MAX_CHIPS = 8  # chips of the payload pool with their own telemetry channels
MAX_JOB_ITEMS = 256  # inferences per SUBMIT_JOB (its JOB_DONE event lists each class)
MAX_TENANTS = 8  # tenants of the compute-token ledger with their own telemetry channels
LEDGER_RESEND_MAX = 200  # events per LEDGER_RESEND: within the event queue's depth (256)
_CHIP = Arg("chip", "u8", 0, MAX_CHIPS - 1, doc="chip of the pool, by its --chip order", default=0)
_JOB_POLICY = Arg(
    "policy",
    "enum",
    values=("current", *POLICIES),
    default="current",
    doc="reliability policy of this job; current: the one SET_POLICY set",
)
# completion texts (the COMPLETED stage's reason) of the job commands; ``account`` says what
# the tenant holds and has left, or that an operator's job is not charged
JOB_RESULT = "job {job}: {images} images under {policy}; {account}"
QUOTE_RESULT = (
    "quote: hold {hold} tokens (about {expected}) for {images} images under {policy}; {account}"
)

# fmt: off
COMMANDS: tuple[Command, ...] = (
    Command(0x01, "NOOP", doc="do nothing; proves the link and the dispatcher", tenants=True),
    Command(0x02, "SET_MODE", (Arg("mode", "enum", values=MODES),),
            "change mode; only allowed transitions (see flight/services.py)"),
    Command(0x03, "RUN_INFERENCE", (Arg("index", "u16", 0, 65535,
                                         doc="image of the model's test split (modulo its size)"),),
            "classify a held-out digit with the on-board model on the chip",
            modes=("COMPUTE",), tenants=True, result=JOB_RESULT),
    Command(0x04, "SET_SCRUB", (Arg("period", "u16", 0, 65535, doc="cycles; 0 = off"),),
            "set the SRAM scrubber period of every chip of the pool"),
    Command(0x05, "CHIP_RESET", (_CHIP,),
            "fence a chip: reset it, clear its SRAM, scrub, self-test and re-admit it"),
    Command(0x06, "CHIP_INJECT", (
        Arg("kind", "enum", values=("reg", "mem")), Arg("index", "u16", 0, 2047),
        Arg("bit", "u8", 0, 38), Arg("copy", "u8", 0, 2), _CHIP),
        "debug SEU through the chip's INJECT command (test campaigns only)"),
    Command(0x07, "SET_HK_PERIOD", (Arg("ms", "u16", 10, 60000),),
            "housekeeping telemetry period"),
    Command(0x08, "SUBMIT_JOB", (
        Arg("first", "u16", 0, 65535, doc="first image of the test split (modulo its size)"),
        Arg("count", "u16", 1, MAX_JOB_ITEMS, doc="images: first, first+1, ..."), _JOB_POLICY),
        "queue an inference job on the payload pool; a tenant's job holds its quote in "
        "tokens until JOB_DONE, then pays for the cycles it ran", modes=("COMPUTE",),
        tenants=True, result=JOB_RESULT),
    Command(0x09, "SET_POLICY", (Arg("policy", "enum", values=POLICIES),),
            "reliability policy of the jobs submitted from now on"),
    Command(0x0A, "CHIP_OUT", (_CHIP,), "take a chip of the pool out of service"),
    Command(0x0B, "CHIP_IN", (_CHIP,),
            "return a chip to service (after a reset and self-test)"),
    Command(0x0C, "POOL_STATUS", doc="one CHIP_STATUS event per chip of the pool"),
    Command(0x0D, "GRANT_TOKENS", (
        Arg("tenant", "u8", 0, MAX_TENANTS - 1, doc="tenant, by its [[tenants]] order"),
        Arg("tokens", "u32", 1, 2**32 - 1, doc="compute tokens to add to its account")),
        "give a tenant compute tokens to spend on jobs",
        result="{tenant}: {available} tokens available (txn {txn})"),
    Command(0x0E, "QUOTE_JOB", (
        Arg("count", "u16", 1, MAX_JOB_ITEMS, doc="images"), _JOB_POLICY),
        "what a job of count images would hold (its quote) and about what it would pay",
        tenants=True, result=QUOTE_RESULT),
    Command(0x0F, "LEDGER_RESEND", (
        Arg("first", "u32", 1, 2**32 - 1, doc="first transaction number"),
        Arg("count", "u16", 1, LEDGER_RESEND_MAX, doc="transactions")),
        "send the events of ledger transactions again (a ground fills what it missed)",
        result="resent {sent} transactions {first}..{last} of ledger {book}"),
)

CHANNELS: tuple[Channel, ...] = (
    Channel(1, "MODE", "u32", doc="0 SAFE, 1 NOMINAL, 2 COMPUTE", values=MODES),
    Channel(2, "DICT_HASH", "u32", doc="first 32 bits of the dictionary's SHA-256"),
    Channel(3, "UPTIME_S", "f64", "s"),
    Channel(10, "CHIP_HEALTHY", "bool"),
    Channel(11, "CHIP_UPTIME", "u32", "cycles"),
    Channel(12, "CHIP_STATUS", "u32"),
    Channel(13, "ECC_CORRECTED", "u32", "words", high=1000),
    Channel(14, "ECC_UNCORRECTABLE", "u32", "words", high=0),
    Channel(15, "TMR_MISMATCH", "u32", "cycles", high=1000),
    Channel(16, "WDT_EXPIRIES", "u32", high=0),
    Channel(17, "JOB_COUNT", "u32"),
    Channel(18, "ENERGY", "u32", "cycles x EPC",
            doc="the chips' ENERGY counters summed: MAC-engine cycles x ENERGY_PER_CYCLE "
                "(energy units per cycle, 1 in the default build; 32 bits per chip, "
                "wrapping); ENERGY_J is in joules"),
    Channel(20, "SCRUB_PERIOD", "u32", "cycles"),
    Channel(21, "ECC_CORRECTED_RATE", "f64", "words/s", high=5),
    Channel(22, "INFERENCE_CLASS", "i64"),
    Channel(30, "CMD_ACCEPTED", "u32"),
    Channel(31, "CMD_COMPLETED", "u32"),
    Channel(32, "CMD_FAILED", "u32"),
    Channel(33, "TC_REJECTED_AUTH", "u32", high=0),
    Channel(34, "TC_REJECTED_REPLAY", "u32", high=0),
    Channel(35, "TC_REJECTED_MALFORMED", "u32", high=0),
    Channel(40, "RG_JITTER_P50_US", "f64", "us"),
    Channel(41, "RG_JITTER_P99_US", "f64", "us", high=1000),
    Channel(42, "RG_SLIPS", "u32", high=0),
    Channel(43, "BUS_DROPS", "u32"),
    Channel(44, "TM_STORED", "u32", "packets"),
    Channel(45, "TM_LOST", "u32", "packets", high=0),
    Channel(46, "LINK_UP", "bool"),
    Channel(47, "EVENTS_THROTTLED", "u32"),
    Channel(48, "FDIR_ACTIONS", "u32"),
    Channel(49, "TM_CLIENTS_DROPPED", "u32", high=0,
            doc="TCP ground clients dropped for not reading their telemetry"),
    Channel(50, "GROUND_ENDPOINTS", "u32",
            doc="grounds receiving telemetry: the configured address, the UDP senders of "
                "authenticated telecommands within the lease, authenticated TCP clients"),
    # the payload pool
    Channel(60, "POOL_CHIPS", "u32", doc="chips in the pool"),
    Channel(61, "POOL_HEALTHY", "u32", low=1, doc="chips healthy and in service"),
    Channel(62, "POLICY", "u32", doc="policy of new jobs: 0 none, 1 rerun, 2 dmr, 3 tmr",
            values=POLICIES),
    Channel(63, "JOBS_QUEUED", "u32", "items", doc="inferences waiting for a chip"),
    Channel(64, "JOBS_DEFERRED", "u32", "items",
            doc="inferences waiting because the power budget (or the mode) holds them"),
    Channel(65, "JOBS_SUBMITTED", "u32"),
    Channel(66, "JOBS_DONE", "u32"),
    Channel(67, "ITEMS_DONE", "u32", "items"),
    Channel(68, "ITEMS_FAILED", "u32", "items", high=0),
    Channel(69, "DISAGREEMENTS", "u32", "runs", doc="runs out-voted by a policy"),
    Channel(70, "FENCES", "u32", doc="chips fenced by the pool or FDIR"),
    Channel(71, "READMISSIONS", "u32"),
    Channel(72, "INFERENCES_CORRECT", "u32", "items", doc="classes equal to the true label"),
    # power and heat through the orbit
    Channel(80, "ORBIT_TIME_S", "f64", "s", doc="simulated seconds since the TLE epoch"),
    Channel(81, "SUNLIT", "bool"),
    Channel(82, "SOC", "f64", "", low=0.3, doc="battery state of charge 0..1"),
    Channel(83, "BATTERY_WH", "f64", "Wh"),
    Channel(84, "POWER_IN_W", "f64", "W", doc="array power used (charging or serving loads)"),
    Channel(85, "POWER_OUT_W", "f64", "W", doc="loads served: bus and chips"),
    Channel(86, "SOC_MIN", "f64", "", low=0.3, doc="lowest state of charge so far"),
    Channel(87, "TEMP_MAX_C", "f64", "C", high=85, doc="hottest chip"),
    Channel(88, "ENERGY_J", "f64", "J", doc="compute energy of all jobs so far"),
    # the compute-token ledger (flight/ledger.py)
    Channel(90, "LEDGER_TXNS", "u32", doc="transactions in the book"),
    Channel(91, "TOKENS_ISSUED", "i64", "tokens", doc="granted to tenants, ever"),
    Channel(92, "TOKENS_HELD", "i64", "tokens", doc="held for running jobs, all tenants"),
    Channel(93, "TOKENS_EARNED", "i64", "tokens", doc="paid by settled jobs, all tenants"),
    Channel(94, "HOLDS_OPEN", "u32", doc="jobs holding tokens (not settled or released yet)"),
    Channel(95, "LEDGER_ID", "u32", doc="the ledger's id (its 8 hex digits as a number): a "
            "ground tells whose LEDGER_TXNS these are"),
    *(channel for n in range(MAX_CHIPS) for channel in (
        Channel(100 + 10 * n, f"CHIP{n}_STATE", "u32",
                doc=f"chip {n}: 0 healthy, 1 fenced, 2 out (operator), 3 throttled (heat)",
                values=CHIP_STATE_VALUES),
        Channel(101 + 10 * n, f"CHIP{n}_RUNS", "u32", "runs"),
        Channel(102 + 10 * n, f"CHIP{n}_FAULTS", "u32", high=0),
        Channel(103 + 10 * n, f"CHIP{n}_DISAGREEMENTS", "u32", "runs", high=0),
        Channel(104 + 10 * n, f"CHIP{n}_TEMP_C", "f64", "C", high=70),
        Channel(105 + 10 * n, f"CHIP{n}_POWER_W", "f64", "W"),
        Channel(106 + 10 * n, f"CHIP{n}_ECC_CORRECTED", "u32", "words"),
        Channel(107 + 10 * n, f"CHIP{n}_FEC_CORRECTED", "u32", "bytes",
                doc=f"chip {n}: link bytes its FEC decoder corrected"),
        Channel(108 + 10 * n, f"CHIP{n}_PARITY_ERRORS", "u32",
                doc=f"chip {n}: flips its frame buffers' parity found (hardened build)"),
    )),
    *(channel for n in range(MAX_TENANTS) for channel in (
        Channel(200 + 10 * n, f"TENANT{n}_AVAILABLE", "i64", "tokens",
                doc=f"tenant {n} (by [[tenants]] order): tokens it may spend"),
        Channel(201 + 10 * n, f"TENANT{n}_HELD", "i64", "tokens",
                doc=f"tenant {n}: held for its running jobs"),
        Channel(202 + 10 * n, f"TENANT{n}_SPENT", "i64", "tokens",
                doc=f"tenant {n}: paid by its settled jobs"),
        Channel(203 + 10 * n, f"TENANT{n}_CYCLES", "i64", "cycles",
                doc=f"tenant {n}: MAC-engine cycles its settled jobs were metered at"),
        Channel(204 + 10 * n, f"TENANT{n}_JOBS", "u32", doc=f"tenant {n}: jobs settled"),
    )),
)

EVENTS: tuple[Event, ...] = (
    Event(1, "MODE_CHANGED", Severity.INFO, "mode {old} -> {new}"),
    Event(2, "MODE_REFUSED", Severity.WARNING, "mode {old} -> {new} is not allowed"),
    Event(3, "COMMAND_FAILED", Severity.WARNING, "{command} failed: {reason}"),
    Event(4, "TC_REJECTED", Severity.WARNING, "telecommand rejected ({reason}) from {source}"),
    Event(5, "FDIR_TRIGGERED", Severity.CRITICAL,
          "FDIR rule {rule}: {channel}={value} -> {action}"),
    Event(6, "CHIP_RESET", Severity.WARNING, "chip {chip} reset ({why})", throttle=100),
    Event(7, "CHIP_UNRESPONSIVE", Severity.CRITICAL, "chip does not answer: {error}"),
    Event(8, "INFERENCE_DONE", Severity.INFO,
          "inference of test image {index}: class {label} (true {truth})"),
    Event(9, "SCRUB_SET", Severity.INFO, "scrubber period {period} cycles ({why})"),
    Event(10, "STACK_STARTED", Severity.INFO,
          "flight stack up, chip {chip}, dictionary {dict_hash}"),
    Event(11, "JOB_SUBMITTED", Severity.INFO,
          "job {job}: images {first}..{last}, policy {policy}, tenant {tenant}",
          throttle=10_000),
    Event(12, "JOB_DONE", Severity.INFO,
          "job {job} done: {completed}/{items} completed, {correct} correct, policy {policy}, "
          "tenant {tenant}, {runs} runs, {cycles} cycles, {joules:.3f} J, classes {classes}",
          throttle=10_000),
    Event(13, "CHIP_FENCED", Severity.WARNING, "chip {chip} fenced: {why}", throttle=100),
    Event(14, "CHIP_READMITTED", Severity.INFO,
          "chip {chip} re-admitted after {attempts} recovery attempt(s)", throttle=100),
    Event(15, "CHIP_RECOVERY_FAILED", Severity.CRITICAL,
          "chip {chip} out of service: recovery failed ({why})"),
    Event(16, "CHIP_OUT", Severity.INFO, "chip {chip} taken out of service"),
    Event(17, "RESULT_DISAGREED", Severity.WARNING,
          "chip {chip} disagreed on job {job} item {item} (policy {policy})", throttle=100),
    Event(18, "CHIP_STATUS", Severity.INFO,
          "chip {chip} {url}: {state}, runs {runs}, faults {faults}, disagreements "
          "{disagreements}, {temp:.1f} C", throttle=100),
    Event(19, "JOBS_DEFERRED", Severity.INFO, "compute deferred: {reason}"),
    Event(20, "JOBS_RESUMED", Severity.INFO, "compute resumed: {reason}"),
    Event(21, "POLICY_SET", Severity.INFO, "policy of new jobs: {policy}"),
    Event(22, "CHIP_THROTTLED", Severity.WARNING, "chip {chip} at {temp:.1f} C: throttled"),
    Event(23, "TM_CLIENT_DROPPED", Severity.WARNING, "ground client {client} dropped: {why}"),
    # the ledger's transactions, one event each (the ground books them: tools/ground)
    Event(24, "TOKENS_GRANTED", Severity.INFO,
          "ledger {book} txn {txn}: {tenant} granted {tokens} tokens, {available} available",
          throttle=10_000),
    Event(25, "TOKENS_RESERVED", Severity.INFO,
          "ledger {book} txn {txn}: {tenant} holds {tokens} tokens for job {job}, "
          "{available} available", throttle=10_000),
    Event(26, "JOB_SETTLED", Severity.INFO,
          "ledger {book} txn {txn}: job {job} of {tenant} settled hold {hold}: {charged} "
          "tokens for {cycles} cycles in {runs} runs, {released} released, {available} "
          "available", throttle=10_000),
    Event(27, "TOKENS_RELEASED", Severity.INFO,
          "ledger {book} txn {txn}: job {job} of {tenant} released hold {hold}: {tokens} "
          "tokens, {available} available ({why})", throttle=10_000),
    Event(28, "REALTIME", Severity.INFO,
          "rate groups at real-time priority: {state} (realtime = {mode}){why}"),
)
# fmt: on

COMMAND_BY_NAME = {c.name: c for c in COMMANDS}
COMMAND_BY_OPCODE = {c.opcode: c for c in COMMANDS}
CHANNEL_BY_NAME = {c.name: c for c in CHANNELS}
CHANNEL_BY_ID = {c.id: c for c in CHANNELS}
EVENT_BY_NAME = {e.name: e for e in EVENTS}
EVENT_BY_ID = {e.id: e for e in EVENTS}

# APIDs of the ground link
APID_HK, APID_EVENT, APID_VERIFY, APID_TC = 0x010, 0x011, 0x012, 0x020


def as_dict() -> dict:
    return {
        "commands": [
            {**asdict(c), "args": [asdict(a) for a in c.args]} for c in COMMANDS
        ],
        "channels": [asdict(c) for c in CHANNELS],
        "events": [{**asdict(e), "severity": e.severity.name} for e in EVENTS],
        "apids": {"housekeeping": APID_HK, "events": APID_EVENT, "verification": APID_VERIFY,
                  "telecommand": APID_TC},
    }  # fmt: skip


def dictionary_hash() -> str:
    return hashlib.sha256(json.dumps(as_dict(), sort_keys=True).encode()).hexdigest()


DICT_HASH32 = int(dictionary_hash()[:8], 16)


def export_json() -> str:
    return json.dumps({"hash": dictionary_hash(), **as_dict()}, indent=1)
