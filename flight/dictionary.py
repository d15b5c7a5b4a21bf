"""The command, telemetry and event dictionary: declared once, as data.

The flight stack dispatches by it, the ground console checks arguments against it, and
``orbithil dict export`` writes it as JSON. Its hash travels in every housekeeping packet,
so a ground tool holding another dictionary notices at once.
"""

from __future__ import annotations

import hashlib
import json
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


@dataclass(frozen=True)
class Command:
    opcode: int
    name: str
    args: tuple[Arg, ...] = ()
    doc: str = ""
    modes: tuple[str, ...] = ()  # modes it may run in; () = any

    @property
    def fmt(self) -> str:
        return ">" + "".join(a.fmt for a in self.args)

    def encode_args(self, **values) -> bytes:
        unknown = set(values) - {a.name for a in self.args}
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


@dataclass(frozen=True)
class Channel:
    id: int
    name: str
    type: str  # u32, i64, f64, bool
    units: str = ""
    low: float | None = None  # limits: outside is reported red on the ground
    high: float | None = None
    doc: str = ""


@dataclass(frozen=True)
class Event:
    id: int
    name: str
    severity: Severity
    format: str  # str.format with the event's arguments
    throttle: int = 10  # at most this many per throttle window, then counted, not sent


MODES = ("SAFE", "NOMINAL", "COMPUTE")

# fmt: off
COMMANDS: tuple[Command, ...] = (
    Command(0x01, "NOOP", doc="do nothing; proves the link and the dispatcher"),
    Command(0x02, "SET_MODE", (Arg("mode", "enum", values=MODES),),
            "change mode; only allowed transitions (see flight/services.py)"),
    Command(0x03, "RUN_INFERENCE", (Arg("index", "u16", 0, 65535,
                                         doc="image of the model's test split (modulo its size)"),),
            "classify a held-out digit with the on-board model on the chip",
            modes=("COMPUTE",)),
    Command(0x04, "SET_SCRUB", (Arg("period", "u16", 0, 65535, doc="cycles; 0 = off"),),
            "set the SRAM scrubber period"),
    Command(0x05, "CHIP_RESET", doc="soft-reset the chip and clear its SRAM"),
    Command(0x06, "CHIP_INJECT", (
        Arg("kind", "enum", values=("reg", "mem")), Arg("index", "u16", 0, 2047),
        Arg("bit", "u8", 0, 38), Arg("copy", "u8", 0, 2)),
        "debug SEU through the chip's INJECT command (test campaigns only)"),
    Command(0x07, "SET_HK_PERIOD", (Arg("ms", "u16", 10, 60000),),
            "housekeeping telemetry period"),
)

CHANNELS: tuple[Channel, ...] = (
    Channel(1, "MODE", "u32", doc="0 SAFE, 1 NOMINAL, 2 COMPUTE"),
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
    Channel(18, "ENERGY", "u32", "units"),
    Channel(19, "CHIP_POLL_FAILS", "u32", high=2),
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
)

EVENTS: tuple[Event, ...] = (
    Event(1, "MODE_CHANGED", Severity.INFO, "mode {old} -> {new}"),
    Event(2, "MODE_REFUSED", Severity.WARNING, "mode {old} -> {new} is not allowed"),
    Event(3, "COMMAND_FAILED", Severity.WARNING, "{command} failed: {reason}"),
    Event(4, "TC_REJECTED", Severity.WARNING, "telecommand rejected ({reason}) from {source}"),
    Event(5, "FDIR_TRIGGERED", Severity.CRITICAL,
          "FDIR rule {rule}: {channel}={value} -> {action}"),
    Event(6, "CHIP_RESET", Severity.WARNING, "chip reset ({why})"),
    Event(7, "CHIP_UNRESPONSIVE", Severity.CRITICAL, "chip does not answer: {error}"),
    Event(8, "INFERENCE_DONE", Severity.INFO,
          "inference of test image {index}: class {label} (true {truth})"),
    Event(9, "SCRUB_SET", Severity.INFO, "scrubber period {period} cycles ({why})"),
    Event(10, "STACK_STARTED", Severity.INFO,
          "flight stack up, chip {chip}, dictionary {dict_hash}"),
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
