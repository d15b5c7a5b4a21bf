"""CCSDS Space Packets for the ground link, and telecommand authentication.

Headers are the ``spacepackets`` library's (CCSDS 133.0-B primary header). Data fields:

| APID | kind | data field |
|---|---|---|
| 0x010 | TM housekeeping | time u64 (us), dictionary hash u32, n u16, n x (channel u16, f64) |
| 0x011 | TM event | time u64, event id u16, severity u8, text (UTF-8) |
| 0x012 | TM verification | time u64, TC auth sequence u32, opcode u16, stage u8, reason (UTF-8) |
| 0x020 | TC | key id u8, auth sequence u32, opcode u16, arguments, HMAC-SHA256 (32 bytes) |

A telecommand's MAC covers its primary header and data field up to the MAC, under the
key named by the key id. The receiver keeps, per key, the highest sequence number seen
and a window of the last 64, so a replayed or reordered-too-far telecommand is refused.
Keys come from a file or the environment (``load_keys``), never from the code.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from spacepackets.ccsds.spacepacket import PacketType, SpacePacketHeader

from orbithil.errors import ConfigError
from orbithil.flight.dictionary import APID_EVENT, APID_HK, APID_TC, APID_VERIFY, COMMANDS

HEADER = 6
MAC_LEN = 32
TC_FIXED = struct.Struct(">BIH")  # key id, auth sequence, opcode
REPLAY_WINDOW = 64
MAX_PACKET = 65542
# The longest telecommand any command of the dictionary makes (arguments are fixed-size):
# anything longer is refused as malformed before its MAC is computed, and a TCP stream
# announcing one is not read on into a 64 KiB buffer.
MAX_TC = HEADER + TC_FIXED.size + max(struct.calcsize(c.fmt) for c in COMMANDS) + MAC_LEN


class Stage(IntEnum):
    ACCEPTED = 1
    STARTED = 2
    COMPLETED = 3
    FAILED = 4


class PacketError(ValueError):
    """A malformed packet; the message says what is wrong with it."""


_PRIMARY = struct.Struct(">HHH")


def pack(packet_type: PacketType, apid: int, seq: int, data: bytes) -> bytes:
    """One space packet (version 0, no secondary header, unsegmented). The six header
    bytes are packed here with struct: telemetry goes out at tens of thousands of packets
    a second and building a ``SpacePacketHeader`` object per packet costs several times
    more; tests check every kind decodes with ``spacepackets``."""
    if not data:
        raise PacketError("a space packet needs at least one data byte")
    if not 0 <= apid <= 0x7FF:
        raise PacketError(f"APID {apid} is outside 0..2047")
    return _PRIMARY.pack(int(packet_type) << 12 | apid, 0xC000 | (seq & 0x3FFF),
                         len(data) - 1) + data  # fmt: skip


@dataclass(frozen=True)
class Primary:
    """The primary header's fields (what ``SpacePacketHeader.unpack`` gives, fast)."""

    version: int
    packet_type: PacketType
    sec_header_flag: bool
    apid: int
    seq_flags: int
    seq_count: int
    data_len: int


def unpack(raw: bytes) -> tuple[Primary, bytes]:
    if len(raw) < HEADER + 1:
        raise PacketError(f"{len(raw)} bytes is shorter than a space packet (7)")
    ident, control, length = _PRIMARY.unpack_from(raw)
    header = Primary(ident >> 13, PacketType(ident >> 12 & 1), bool(ident >> 11 & 1),
                     ident & 0x7FF, control >> 14, control & 0x3FFF, length)  # fmt: skip
    total = HEADER + length + 1
    if len(raw) != total:
        raise PacketError(f"length field says {total} bytes, the packet has {len(raw)}")
    if header.version != 0:
        raise PacketError(f"packet version {header.version}; only version 0 (CCSDS) is known")
    return header, raw[HEADER:total]


def packet_length(buffer: bytes) -> int | None:
    """Bytes of the first packet in a stream buffer, or None if its header is incomplete."""
    if len(buffer) < HEADER:
        return None
    return HEADER + int.from_bytes(buffer[4:6], "big") + 1


# --- keys and telecommands --------------------------------------------------------------
class KeyFileError(ConfigError):
    """Telecommand keys that cannot be used; the message never contains key material."""


def load_keys(path: str | Path | None = None) -> dict[int, bytes]:
    """Keys by id from a file (lines ``id hexkey``; ``#`` starts a comment) or
    ``ORBITHIL_TC_KEYS`` (``id:hexkey,id:hexkey``). Keys must be 16..64 bytes. Errors say
    which line or entry is wrong and how, and never print a key."""
    if path is not None:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise KeyFileError(
                f"key file {path} does not exist; make one with "
                '`python -c "import secrets; print(1, secrets.token_hex(32))" > keys`'
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc}") from None
        where = f"key file {path}"
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if line:
                entries.append((f"line {number}", line.split()))
        form, make = "'id hexkey'", "print(1, secrets.token_hex(32))"
    else:
        env = os.environ.get("ORBITHIL_TC_KEYS", "")
        where = "ORBITHIL_TC_KEYS"
        entries = [
            (f"entry {number}", item.strip().split(":", 1))
            for number, item in enumerate(env.split(","), 1)
            if item.strip()
        ]
        form, make = "'id:hexkey' (several: comma-separated)", "print('1:' + secrets.token_hex(32))"
    keys: dict[int, bytes] = {}
    for label, entry in entries:
        if len(entry) != 2:
            raise KeyFileError(f"{where}, {label}: write each key as {form}")
        try:
            key_id = int(entry[0])
        except ValueError:
            raise KeyFileError(f"{where}, {label}: the key id is not a number 0..255") from None
        try:
            key = bytes.fromhex(entry[1].strip())
        except ValueError:
            raise KeyFileError(f"{where}, {label}: key {key_id} is not hexadecimal") from None
        if not 0 <= key_id <= 255:
            raise KeyFileError(f"{where}, {label}: key id {key_id} is not in 0..255")
        if not 16 <= len(key) <= 64:
            raise KeyFileError(
                f"{where}, {label}: key {key_id} has {len(key)} bytes; keys are 16..64 bytes"
            )
        if key_id in keys:
            raise KeyFileError(f"{where}, {label}: key id {key_id} is given twice")
        keys[key_id] = key
    if not keys:
        raise KeyFileError(
            f'no telecommand keys in {where}; make one with `python -c "import secrets; {make}"`'
            + ("" if path is not None else ", or pass --keys FILE")
        )
    return keys


def telecommand(key_id: int, key: bytes, auth_seq: int, opcode: int, args: bytes,
                packet_seq: int = 0) -> bytes:  # fmt: skip
    body = TC_FIXED.pack(key_id, auth_seq, opcode) + args
    header = bytes(SpacePacketHeader(PacketType.TC, APID_TC, packet_seq & 0x3FFF,
                                     len(body) + MAC_LEN - 1).pack())  # fmt: skip
    mac = hmac.new(key, header + body, hashlib.sha256).digest()
    return header + body + mac


@dataclass(frozen=True)
class Telecommand:
    key_id: int
    auth_seq: int
    opcode: int
    args: bytes


class TcRejected(Exception):
    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind  # "auth", "replay" or "malformed"


class Authenticator:
    """Checks a telecommand's MAC and sequence number (anti-replay window per key)."""

    def __init__(self, keys: dict[int, bytes]) -> None:
        self.keys = keys
        self._highest: dict[int, int] = {}
        self._seen: dict[int, int] = {}  # bitmask of the window below the highest

    def check(self, raw: bytes) -> Telecommand:
        if len(raw) > MAX_TC:
            raise TcRejected(f"malformed: {len(raw)} bytes is longer than the longest "
                             f"telecommand ({MAX_TC} bytes)", "malformed")  # fmt: skip
        try:
            header, data = unpack(raw)
        except (PacketError, ValueError) as exc:
            raise TcRejected(f"malformed: {exc}", "malformed") from None
        if header.packet_type != PacketType.TC or header.apid != APID_TC:
            raise TcRejected(f"malformed: not a telecommand (APID 0x{header.apid:03X})",
                             "malformed")  # fmt: skip
        if len(data) < TC_FIXED.size + MAC_LEN:
            raise TcRejected("malformed: too short for key id, sequence, opcode and MAC",
                             "malformed")  # fmt: skip
        key_id, auth_seq, opcode = TC_FIXED.unpack_from(data)
        key = self.keys.get(key_id)
        if key is None:
            raise TcRejected(f"unknown key id {key_id}", "auth")
        body, mac = data[:-MAC_LEN], data[-MAC_LEN:]
        expected = hmac.new(key, raw[:HEADER] + body, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise TcRejected("bad MAC (forged, or sent with another key)", "auth")
        self._accept_sequence(key_id, auth_seq)
        return Telecommand(key_id, auth_seq, opcode, body[TC_FIXED.size :])

    def _accept_sequence(self, key_id: int, seq: int) -> None:
        highest = self._highest.get(key_id)
        if highest is None or seq > highest:
            shift = REPLAY_WINDOW if highest is None else min(seq - highest, REPLAY_WINDOW)
            mask = (self._seen.get(key_id, 0) << shift) | 1
            self._seen[key_id] = mask & ((1 << REPLAY_WINDOW) - 1)
            self._highest[key_id] = seq
            return
        age = highest - seq
        if age >= REPLAY_WINDOW:
            raise TcRejected(f"sequence {seq} is older than the replay window", "replay")
        if self._seen[key_id] >> age & 1:
            raise TcRejected(f"sequence {seq} was already used (replay)", "replay")
        self._seen[key_id] |= 1 << age


# --- telemetry data fields ----------------------------------------------------------------
HK_HEAD = struct.Struct(">QIH")
HK_ITEM = struct.Struct(">Hd")
EV_HEAD = struct.Struct(">QHB")
VF_HEAD = struct.Struct(">QIHB")


def hk_data(time_us: int, dict_hash: int, values: list[tuple[int, float]]) -> bytes:
    return HK_HEAD.pack(time_us, dict_hash, len(values)) + b"".join(
        HK_ITEM.pack(i, float(v)) for i, v in values
    )


def _head(head: struct.Struct, data: bytes, kind: str) -> tuple:
    """The fixed head of a telemetry data field; PacketError if the field is shorter."""
    if len(data) < head.size:
        raise PacketError(f"{kind} packet of {len(data)} data bytes; its head needs {head.size}")
    return head.unpack_from(data)


def parse_hk(data: bytes) -> tuple[int, int, dict[int, float]]:
    time_us, dict_hash, n = _head(HK_HEAD, data, "housekeeping")
    if len(data) != HK_HEAD.size + n * HK_ITEM.size:
        raise PacketError(f"housekeeping packet says {n} channels, holds {len(data)} bytes")
    values = dict(HK_ITEM.iter_unpack(data[HK_HEAD.size :]))
    return time_us, dict_hash, values


def event_data(time_us: int, event_id: int, severity: int, text: str) -> bytes:
    return EV_HEAD.pack(time_us, event_id, severity) + text.encode()[:1000]


def parse_event(data: bytes) -> tuple[int, int, int, str]:
    time_us, event_id, severity = _head(EV_HEAD, data, "event")
    return time_us, event_id, severity, data[EV_HEAD.size :].decode(errors="replace")


def verify_data(time_us: int, auth_seq: int, opcode: int, stage: Stage, reason: str = "") -> bytes:
    return VF_HEAD.pack(time_us, auth_seq, opcode, stage) + reason.encode()[:500]


def parse_verify(data: bytes) -> tuple[int, int, int, Stage, str]:
    time_us, seq, opcode, stage = _head(VF_HEAD, data, "verification")
    if stage not in Stage._value2member_map_:
        raise PacketError(f"verification stage {stage} is not one of 1..4")
    return time_us, seq, opcode, Stage(stage), data[VF_HEAD.size :].decode(errors="replace")


__all__ = ["APID_EVENT", "APID_HK", "APID_TC", "APID_VERIFY", "Authenticator", "Stage"]
