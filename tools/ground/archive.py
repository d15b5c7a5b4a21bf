"""The ground archive: every downlinked packet, raw, and what it decodes to, in SQLite.

One file holds it all (WAL journal, so the console and ``orbithil ground query`` read while
the server writes):

| table | what | index |
|---|---|---|
| ``packets`` | each packet as received: reception time (us since the epoch), APID, bytes | time |
| ``samples`` | housekeeping values in segments (below) | channel + time |
| ``events`` | each event: times, id, name, severity, text | time |
| ``verifications`` | each verification stage of a telecommand | sequence, time |
| ``commands`` | each telecommand the server signed: who, what, its sequence number | time |
| ``users``, ``sessions`` | console operators (tools/ground/auth.py) | |
| ``ledger_txns``, ``ledger_postings`` | the on-board ledger, from events; never deleted | number |

Housekeeping is stored in segments, not a row per value: a segment holds up to
``SEGMENT_SAMPLES`` samples of one channel (reception times, on-board times and values as
packed little-endian arrays). One packet carries ~60 channels,
so a row per value would be over a million rows a second at the ingest target (20,000
packets/s). A batch of packets becomes one segment per channel; small segments (the live
server commits a batch every few hundred milliseconds) are merged into full ones once a
channel has ``SEGMENT_SAMPLES`` of them, so a day at 1 Hz is ~170 rows per channel to read.
A batch is one transaction: its packets, samples, events and verifications (and the ledger
transactions its events report) commit together or not at all, so a killed server loses at
most the batch it was writing.

Schema 2 added tenant users (``users.tenant``) and the ledger tables; an archive of schema 1
is upgraded in place when opened.
"""

from __future__ import annotations

import datetime
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orbithil.errors import ConfigError
from orbithil.flight import ccsds
from orbithil.flight.dictionary import (
    APID_EVENT,
    APID_HK,
    APID_VERIFY,
    CHANNEL_BY_ID,
    CHANNEL_BY_NAME,
    COMMAND_BY_OPCODE,
    DICT_HASH32,
    EVENT_BY_ID,
)
from orbithil.flight.ledger_store import SCHEMA as LEDGER_SCHEMA  # one layout for both
from orbithil.tools.ground import ledger as ground_ledger

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
GROUND_EVENT_ID = -1  # an event the ground raised (events.event_id), not the stack
SEGMENT_SAMPLES = 512
US = 1_000_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS packets (
    id INTEGER PRIMARY KEY, rx_us INTEGER NOT NULL, apid INTEGER NOT NULL,
    seq INTEGER NOT NULL, raw BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS packets_time ON packets (rx_us);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY, channel INTEGER NOT NULL, t0 INTEGER NOT NULL,
    t1 INTEGER NOT NULL, n INTEGER NOT NULL,
    rx BLOB NOT NULL, onboard BLOB NOT NULL, value BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS samples_channel_time ON samples (channel, t1, t0);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, rx_us INTEGER NOT NULL, onboard_us INTEGER NOT NULL,
    event_id INTEGER NOT NULL, name TEXT NOT NULL, severity INTEGER NOT NULL,
    text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_time ON events (rx_us);
CREATE TABLE IF NOT EXISTS verifications (
    id INTEGER PRIMARY KEY, rx_us INTEGER NOT NULL, onboard_us INTEGER NOT NULL,
    seq INTEGER NOT NULL, opcode INTEGER NOT NULL, stage INTEGER NOT NULL,
    reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS verifications_seq ON verifications (seq);
CREATE INDEX IF NOT EXISTS verifications_time ON verifications (rx_us);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY, sent_us INTEGER NOT NULL, user TEXT NOT NULL,
    key_id INTEGER NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, args TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS commands_time ON commands (sent_us);
CREATE INDEX IF NOT EXISTS commands_seq ON commands (seq);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
    kdf TEXT NOT NULL, created_us INTEGER NOT NULL, tenant TEXT);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash BLOB PRIMARY KEY, user TEXT NOT NULL, role TEXT NOT NULL,
    created_us INTEGER NOT NULL, expires_us INTEGER NOT NULL);
"""

# Housekeeping layout (flight/ccsds.py): a fixed head, then n x (channel u16, value f64),
# big-endian. The vectorised decoder below reads a batch of packets of one layout at once;
# it is checked against ccsds.parse_hk (tests/test_ground_server.py).
_HK_HEAD_DTYPE = np.dtype([("time", ">u8"), ("hash", ">u4"), ("n", ">u2")])
_HK_ITEM_DTYPE = np.dtype([("id", ">u2"), ("value", ">f8")])
if _HK_HEAD_DTYPE.itemsize != ccsds.HK_HEAD.size or _HK_ITEM_DTYPE.itemsize != ccsds.HK_ITEM.size:
    raise ImportError("flight/ccsds.py changed the housekeeping layout; update tools/ground")


def now_us() -> int:
    return time.time_ns() // 1000


class ArchiveError(ConfigError):
    """An archive file that cannot be used; the message says why and what to do."""


@dataclass
class Decoded:
    """What a batch of raw packets decodes to, and what could not be decoded."""

    packets: list[tuple[int, int, int, bytes]] = field(default_factory=list)  # rx, apid, seq, raw
    # channel id -> (rx us, on-board us, value) arrays
    samples: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    events: list[tuple[int, int, int, str, int, str]] = field(default_factory=list)
    verifications: list[tuple[int, int, int, int, int, str]] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (index in batch, why)
    dict_mismatch: int = 0  # housekeeping packets made with another dictionary


def decode_batch(batch: Iterable[tuple[int, bytes]]) -> Decoded:
    """Decode raw packets ``(reception time us, bytes)`` against the dictionary (flight/ccsds.py
    parses each kind). Malformed packets are listed with the reason, never dropped silently;
    they are still archived raw if they have a readable header."""
    out = Decoded()
    hk: dict[int, list[tuple[int, bytes]]] = {}  # data length -> packets of that layout
    for index, (rx_us, raw) in enumerate(batch):
        try:
            header, data = ccsds.unpack(raw)
        except ccsds.PacketError as exc:
            out.malformed.append((index, str(exc)))
            continue
        out.packets.append((rx_us, header.apid, header.seq_count, raw))
        try:
            if header.apid == APID_HK:
                if len(data) < ccsds.HK_HEAD.size:
                    raise ccsds.PacketError(f"housekeeping packet of {len(data)} bytes")
                hk.setdefault(len(data), []).append((rx_us, data))
            elif header.apid == APID_EVENT:
                t, event_id, severity, text = ccsds.parse_event(data)
                known = EVENT_BY_ID.get(event_id)
                name = known.name if known else f"EVENT_{event_id}"
                out.events.append((rx_us, t, event_id, name, severity, text))
            elif header.apid == APID_VERIFY:
                t, seq, opcode, stage, reason = ccsds.parse_verify(data)
                out.verifications.append((rx_us, t, seq, opcode, int(stage), reason))
            else:
                out.malformed.append((index, f"APID 0x{header.apid:03X} is not telemetry"))
        except (ccsds.PacketError, ValueError, UnicodeError) as exc:  # struct.error is one
            out.malformed.append((index, str(exc)))
    columns: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for packets in hk.values():
        for channel, arrays in _decode_hk_group(packets, out).items():
            columns.setdefault(channel, []).append(arrays)
    for channel, parts in columns.items():
        if len(parts) == 1:
            out.samples[channel] = parts[0]
        else:
            rx, onboard, value = (np.concatenate(p) for p in zip(*parts, strict=True))
            order = np.argsort(rx, kind="stable")
            out.samples[channel] = (rx[order], onboard[order], value[order])
    return out


def _decode_hk_group(packets: list[tuple[int, bytes]], out: Decoded) -> dict:
    """Housekeeping packets of one data length, decoded at once when they share one channel
    list (the stack's usual case), else one by one with ccsds.parse_hk."""
    size = len(packets[0][1])
    n, rest = divmod(size - ccsds.HK_HEAD.size, ccsds.HK_ITEM.size)
    rx = np.fromiter((p[0] for p in packets), dtype=np.int64, count=len(packets))
    heads = np.frombuffer(b"".join(p[1][: ccsds.HK_HEAD.size] for p in packets), _HK_HEAD_DTYPE)
    if rest == 0 and n > 0 and (heads["n"] == n).all():
        items = np.frombuffer(
            b"".join(p[1][ccsds.HK_HEAD.size :] for p in packets), _HK_ITEM_DTYPE
        ).reshape(len(packets), n)
        ids = items["id"]
        if (ids == ids[0]).all():
            out.dict_mismatch += int((heads["hash"] != DICT_HASH32).sum())
            onboard = heads["time"].astype(np.int64)
            values = items["value"].astype(np.float64)
            return {int(c): (rx, onboard, values[:, j].copy()) for j, c in enumerate(ids[0])}
    # mixed layouts (or a malformed packet): the reference parser, packet by packet
    per_channel: dict[int, list[tuple[int, int, float]]] = {}
    for rx_us, data in packets:
        try:
            t, dict_hash, values = ccsds.parse_hk(data)
        except (ccsds.PacketError, ValueError) as exc:
            out.malformed.append((-1, f"housekeeping: {exc}"))
            continue
        out.dict_mismatch += dict_hash != DICT_HASH32
        for channel, value in values.items():
            per_channel.setdefault(channel, []).append((rx_us, t, value))
    return {
        c: (
            np.array([r[0] for r in rows], np.int64),
            np.array([r[1] for r in rows], np.int64),
            np.array([r[2] for r in rows], np.float64),
        )
        for c, rows in per_channel.items()
    }


@dataclass(frozen=True)
class Series:
    """Samples of one channel: reception times (us since the epoch), on-board times (us,
    the stack's clock) and values, in reception order."""

    channel: str
    rx_us: np.ndarray
    onboard_us: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


class Archive:
    """The archive file. One writer (``ingest``, ``retain``, the server's writer thread);
    any number of readers, each thread with its own connection."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise ArchiveError(
                f"archive {self.path} does not exist; `orbithil ground serve --archive "
                f"{self.path}` creates it"
            )
        self._local = threading.local()
        self._write_lock = threading.Lock()
        db = self.connect()
        try:
            with db:
                db.executescript(_SCHEMA + LEDGER_SCHEMA)
                row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) == 1:  # schema 2 added tenant users and the ledger tables
                    db.execute("ALTER TABLE users ADD COLUMN tenant TEXT")
                    db.execute("UPDATE meta SET value = ? WHERE key = 'schema'",
                               (str(SCHEMA_VERSION),))  # fmt: skip
                    log.info("archive %s upgraded to schema %d", self.path, SCHEMA_VERSION)
                elif int(row[0]) != SCHEMA_VERSION:
                    raise ArchiveError(
                        f"archive {self.path} has schema {row[0]}; this orbithil reads "
                        f"schema {SCHEMA_VERSION}: use a new --archive file"
                    )
        except sqlite3.DatabaseError as exc:
            raise ArchiveError(
                f"archive {self.path} is not a usable SQLite file ({exc}): give another "
                "--archive path, or move this file away"
            ) from None
        self._small: dict[int, int] | None = None  # channel -> samples in small segments

    # --- connections ---
    def connect(self) -> sqlite3.Connection:
        """This thread's connection (WAL, NORMAL sync: a killed process loses nothing
        committed; a power cut may lose the last transactions but never corrupts)."""
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = sqlite3.connect(self.path, timeout=10, check_same_thread=True)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA busy_timeout=10000")
            except sqlite3.DatabaseError as exc:
                raise ArchiveError(
                    f"archive {self.path} is not a usable SQLite file ({exc}): give another "
                    "--archive path, or move this file away"
                ) from None
            self._local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # --- writing ---
    def ingest(self, batch: list[tuple[int, bytes]]) -> Decoded:
        """Decode and store a batch of raw packets in one transaction; what it decoded to."""
        decoded = decode_batch(batch)
        self.store(decoded)
        return decoded

    def store(self, decoded: Decoded) -> None:
        """Store decoded packets in one transaction."""
        with self._write_lock:
            db = self.connect()
            if self._small is None:
                self._small = dict(
                    db.execute(
                        "SELECT channel, SUM(n) FROM samples WHERE n < ? GROUP BY channel",
                        (SEGMENT_SAMPLES,),
                    ).fetchall()
                )
            with db:
                db.executemany(
                    "INSERT INTO packets (rx_us, apid, seq, raw) VALUES (?, ?, ?, ?)",
                    decoded.packets,
                )
                if decoded.events:
                    db.executemany(
                        "INSERT INTO events (rx_us, onboard_us, event_id, name, severity, text)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        decoded.events,
                    )
                    ground_ledger.book_events(db, decoded.events)
                if decoded.verifications:
                    db.executemany(
                        "INSERT INTO verifications (rx_us, onboard_us, seq, opcode, stage, "
                        "reason) VALUES (?, ?, ?, ?, ?, ?)",
                        decoded.verifications,
                    )
                rows = []
                for channel, (rx, onboard, value) in decoded.samples.items():
                    for start in range(0, len(value), SEGMENT_SAMPLES):
                        end = min(start + SEGMENT_SAMPLES, len(value))
                        rows.append(
                            _segment(channel, rx[start:end], onboard[start:end], value[start:end])
                        )
                        if end - start < SEGMENT_SAMPLES:
                            self._small[channel] = self._small.get(channel, 0) + end - start
                db.executemany(
                    "INSERT INTO samples (channel, t0, t1, n, rx, onboard, value) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                for channel, small in list(self._small.items()):
                    if small >= SEGMENT_SAMPLES:
                        self._small[channel] = self._merge_small(db, channel)

    def _merge_small(self, db: sqlite3.Connection, channel: int) -> int:
        """Merge a channel's small segments into full ones; samples left in small ones."""
        rows = db.execute(
            "SELECT id, rx, onboard, value FROM samples WHERE channel = ? AND n < ? ORDER BY id",
            (channel, SEGMENT_SAMPLES),
        ).fetchall()
        rx, onboard, value = _join(rows)
        order = np.argsort(rx, kind="stable")
        rx, onboard, value = rx[order], onboard[order], value[order]
        db.executemany("DELETE FROM samples WHERE id = ?", [(r[0],) for r in rows])
        merged = [
            _segment(
                channel,
                rx[s : s + SEGMENT_SAMPLES],
                onboard[s : s + SEGMENT_SAMPLES],
                value[s : s + SEGMENT_SAMPLES],
            )
            for s in range(0, len(value), SEGMENT_SAMPLES)
        ]
        db.executemany(
            "INSERT INTO samples (channel, t0, t1, n, rx, onboard, value) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            merged,
        )
        return len(value) % SEGMENT_SAMPLES

    def record_command(self, *, user: str, key_id: int, seq: int, name: str, args: str) -> None:
        """Note a telecommand the server signed and sent (who, what, its sequence)."""
        db = self.connect()
        with db:
            db.execute(
                "INSERT INTO commands (sent_us, user, key_id, seq, name, args) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (now_us(), user, key_id, seq, name, args),
            )

    def record_event(self, *, name: str, severity: int, text: str) -> int:
        """Archive an event the ground itself raised (``GROUND_EVENT_ID``: not the stack's
        dictionary's), such as a ledger mismatch; its receive time (us)."""
        rx = now_us()
        with self._write_lock:
            db = self.connect()
            with db:
                db.execute(
                    "INSERT INTO events (rx_us, onboard_us, event_id, name, severity, text) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (rx, rx, GROUND_EVENT_ID, name, severity, text),
                )
        return rx

    def retain(self, days: float, *, now: int | None = None) -> dict[str, int]:
        """Delete what was received more than ``days`` ago; rows deleted per table."""
        cutoff = (now if now is not None else now_us()) - int(days * 86400 * US)
        deleted = {}
        with self._write_lock:
            db = self.connect()
            with db:
                channels = [r[0] for r in db.execute("SELECT DISTINCT channel FROM samples")]
                n = 0
                for channel in channels:
                    n += db.execute(
                        "DELETE FROM samples WHERE channel = ? AND t1 < ?", (channel, cutoff)
                    ).rowcount
                deleted["samples"] = n
                for table, column in (
                    ("packets", "rx_us"),
                    ("events", "rx_us"),
                    ("verifications", "rx_us"),
                    ("commands", "sent_us"),
                ):
                    deleted[table] = db.execute(
                        f"DELETE FROM {table} WHERE {column} < ?", (cutoff,)
                    ).rowcount
            self._small = None  # recount from the file
        return deleted

    # --- reading ---
    def query(
        self, channel: str, since_us: int | None = None, until_us: int | None = None
    ) -> Series:
        """A channel's samples received in [since, until] (us since the epoch)."""
        known = CHANNEL_BY_NAME.get(channel)
        if known is None:
            raise ArchiveError(_unknown_channel(channel))
        since = since_us if since_us is not None else -(2**62)
        until = until_us if until_us is not None else 2**62
        rows = (
            self.connect()
            .execute(
                "SELECT NULL, rx, onboard, value FROM samples "
                "WHERE channel = ? AND t1 >= ? AND t0 <= ? ORDER BY t0, id",
                (known.id, since, until),
            )
            .fetchall()
        )
        rx, onboard, value = _join(rows)
        if len(rx) and not (np.diff(rx) >= 0).all():
            order = np.argsort(rx, kind="stable")
            rx, onboard, value = rx[order], onboard[order], value[order]
        keep = (rx >= since) & (rx <= until)
        if not keep.all():
            rx, onboard, value = rx[keep], onboard[keep], value[keep]
        return Series(channel, rx, onboard, value)

    def events(self, since_us: int = 0, *, limit: int = 1000) -> list[dict]:
        """Events received since ``since_us``, newest last (at most ``limit``, the newest)."""
        rows = (
            self.connect()
            .execute(
                "SELECT id, rx_us, onboard_us, name, severity, text FROM events WHERE rx_us >= ? "
                "ORDER BY rx_us DESC, id DESC LIMIT ?",
                (since_us, limit),
            )
            .fetchall()
        )
        return [
            {
                "id": r[0],
                "rx_us": r[1],
                "onboard_us": r[2],
                "name": r[3],
                "severity": r[4],
                "text": r[5],
            }
            for r in reversed(rows)
        ]

    def verifications(self, seq: int) -> list[dict]:
        """Verification stages received for telecommand sequence ``seq``."""
        rows = (
            self.connect()
            .execute(
                "SELECT rx_us, onboard_us, opcode, stage, reason FROM verifications WHERE seq = ? "
                "ORDER BY id",
                (seq,),
            )
            .fetchall()
        )
        return [
            {
                "rx_us": r[0],
                "onboard_us": r[1],
                "command": _command_name(r[2]),
                "stage": ccsds.Stage(r[3]).name,
                "reason": r[4],
            }
            for r in rows
        ]

    def commands(self, *, limit: int = 100) -> list[dict]:
        """The last telecommands the server sent, newest last."""
        rows = (
            self.connect()
            .execute(
                "SELECT sent_us, user, key_id, seq, name, args FROM commands "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [
            {"sent_us": r[0], "user": r[1], "key_id": r[2], "seq": r[3], "name": r[4], "args": r[5]}
            for r in reversed(rows)
        ]

    def counts(self) -> dict[str, int]:
        """Rows per table, and housekeeping samples."""
        db = self.connect()
        out = {
            t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("packets", "events", "verifications", "commands")
        }
        out["samples"] = db.execute("SELECT COALESCE(SUM(n), 0) FROM samples").fetchone()[0]
        out["segments"] = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        return out

    def integrity_check(self) -> str:
        return self.connect().execute("PRAGMA integrity_check").fetchone()[0]

    def raw_packets(self, since_us: int = 0, until_us: int = 2**62) -> Iterator[tuple[int, bytes]]:
        """Raw packets as received, oldest first (to re-decode or replay them)."""
        yield from self.connect().execute(
            "SELECT rx_us, raw FROM packets WHERE rx_us BETWEEN ? AND ? ORDER BY id",
            (since_us, until_us),
        )


def _segment(channel: int, rx: np.ndarray, onboard: np.ndarray, value: np.ndarray) -> tuple:
    return (
        channel,
        int(rx.min()),
        int(rx.max()),
        len(value),
        rx.astype("<i8").tobytes(),
        onboard.astype("<i8").tobytes(),
        value.astype("<f8").tobytes(),
    )


def _join(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.frombuffer(b"".join(r[1] for r in rows), "<i8"),
        np.frombuffer(b"".join(r[2] for r in rows), "<i8"),
        np.frombuffer(b"".join(r[3] for r in rows), "<f8"),
    )


def _command_name(opcode: int) -> str:
    known = COMMAND_BY_OPCODE.get(opcode)
    return known.name if known else f"opcode 0x{opcode:02X}"


def _unknown_channel(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name.upper(), list(CHANNEL_BY_NAME), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `orbithil dict export` lists them"
    return f"no telemetry channel {name!r}{hint}"


def channel_name(channel_id: int) -> str:
    known = CHANNEL_BY_ID.get(channel_id)
    return known.name if known else f"CHANNEL_{channel_id}"


_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | int | float, *, now: int | None = None) -> int:
    """A time as us since the epoch from: ``now``; an age (``90s``, ``10m``, ``2h``, ``1d``,
    ``-1d``: that long ago); an ISO 8601 date/time (UTC unless it names a zone); or epoch
    seconds. Errors say which forms are understood."""
    now = now if now is not None else now_us()
    if isinstance(text, int | float):
        return int(text * US)
    value = text.strip()
    if value.lower() == "now":
        return now
    match = _RELATIVE.match(value.lower())
    if match:
        return now - int(float(match.group(1)) * _UNIT_S[match.group(2)] * US)
    try:
        return int(float(value) * US)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ArchiveError(
            f"time {text!r}: give an age (30s, 10m, 2h, 1d), an ISO date/time "
            "(2025-06-01T12:00:00, UTC unless a zone is given), epoch seconds, or 'now'"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * US)


def iso(us: int) -> str:
    """Reception time as ISO 8601 UTC with microseconds."""
    return datetime.datetime.fromtimestamp(us / US, datetime.UTC).isoformat(timespec="microseconds")
