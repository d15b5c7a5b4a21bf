"""The ground server's core: the link to the flight stack, the archive writer, the live
state the console shows, and signing telecommands for logged-in operators.

Threads: the link's receive thread stamps each packet with its arrival time and queues it;
the writer thread takes everything queued (one packet when idle, thousands under a burst:
a group commit), decodes it once (tools/ground/archive.py), publishes it to the live state
and the WebSocket subscribers, then commits it. The HTTP server (tools/ground/api.py) runs
on its own asyncio loop and reads the live state and the archive.

Telemetry reaches the server when the stack sends it here: either the stack's config names
this address (``ground_host``/``ground_port`` in the flight config and ``--downlink`` here),
or the stack answers the last authenticated telecommand's sender, and then the server claims
the downlink with a NOOP at start and whenever telemetry has been quiet for a while.

Tenants (``--tenants``: the same ``[[tenants]]`` tables as the stack's): a tenant user's
commands are signed with its tenant's key (one of the server's ``--keys``), so the stack
charges the tenant; all the server's keys take their numbers from one shared sequence
(``flight.ground.SharedSequence``), so a verification's number names one command. The
ledger the stack reports in events is booked in the archive (tools/ground/ledger.py) and
served per tenant; a tenant sees only its own (``visible``). Events the server never got
(sent before it claimed the downlink, such as the holds a restarting stack releases, or
lost on the way) are asked for again: the stack reports its ledger's id and transaction
count (LEDGER_ID, LEDGER_TXNS), and a transaction it reported a check ago that the archive
still lacks is requested with LEDGER_RESEND (``_repair_ledger``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from orbithil.flight import ccsds
from orbithil.flight.dictionary import (
    CHANNELS,
    COMMAND_BY_NAME,
    EVENT_BY_NAME,
    LEDGER_RESEND_MAX,
    Severity,
    as_dict,
    dictionary_hash,
)
from orbithil.flight.ground import Ground, SharedSequence, canonical_args
from orbithil.flight.ledger import Tenant
from orbithil.tools.ground import ledger as ground_ledger
from orbithil.tools.ground.archive import (
    US,
    Archive,
    Decoded,
    channel_name,
    decode_batch,
    now_us,
)
from orbithil.tools.ground.auth import Users

log = logging.getLogger(__name__)

RECEIVE_BUFFER = 32 << 20  # bytes of packets the kernel holds for the link
MAX_BATCH = 20_000  # packets per transaction at most (a burst commits in pieces)
RETENTION_EVERY_S = 3600.0
STALE_TLE_DAYS = 14.0  # an older TLE gives the geometry, not times to point an antenna by
QUEUE_DEPTH = 1000  # WebSocket messages held per subscriber before the oldest are dropped
# what a tenant user sees of the payload besides its own TENANT<n>_* channels
TENANT_PUBLIC_CHANNELS = frozenset({"MODE", "POLICY", "POOL_CHIPS", "POOL_HEALTHY",
                                    "JOBS_QUEUED", "JOBS_DEFERRED", "LINK_UP", "SUNLIT",
                                    "DICT_HASH", "UPTIME_S"})  # fmt: skip


def channel_enums() -> dict[str, tuple[str, ...]]:
    """Value names of the enumerated channels (the dictionary's ``values``: MODE 1 is
    NOMINAL)."""
    return {c.name: tuple(c.values) for c in CHANNELS if getattr(c, "values", ())}


def dictionary_document() -> dict:
    """The dictionary as the API serves it: flight/dictionary.py's export, its hash, and
    the value names of enumerated channels."""
    return {"hash": dictionary_hash(), **as_dict(), "channel_enums": channel_enums()}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN


class ServerLink(Ground):
    """``flight.ground.Ground`` (signing, sequence numbers, argument checking, the socket),
    with each received packet handed on raw with its arrival time: the server decodes and
    archives it once, in its writer thread."""

    def __init__(
        self,
        stack: tuple[str, int],
        *,
        key_id: int,
        key: bytes,
        bind: tuple[str, int],
        on_packet,
        sequence=None,
    ) -> None:
        self.on_packet = on_packet  # set before Ground starts the receive thread
        super().__init__(stack, key_id=key_id, key=key, bind=bind, sequence=sequence)
        # a deeper receive buffer rides out a burst while the writer commits; the kernel
        # caps SO_RCVBUF at net.core.rmem_max, which SO_RCVBUFFORCE may pass (as root)
        with contextlib.suppress(AttributeError, OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUFFORCE, RECEIVE_BUFFER)

    def _rx(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.sock.recv(ccsds.MAX_PACKET)
            except (TimeoutError, OSError):
                continue
            self.on_packet(time.time_ns() // 1000, raw)


class Hub:
    """WebSocket subscribers on the HTTP server's asyncio loop. Each has a bounded queue;
    a subscriber that does not keep up loses its oldest messages (counted), never slows
    the writer."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.subscribers: set[asyncio.Queue] = set()
        self.dropped = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def publish_threadsafe(self, messages: list[dict]) -> None:
        loop = self.loop
        if loop is not None and self.subscribers:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._publish, messages)

    def _publish(self, messages: list[dict]) -> None:
        for q in list(self.subscribers):
            for message in messages:
                if q.full():
                    q.get_nowait()
                    self.dropped += 1
                q.put_nowait(message)

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_DEPTH)
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.subscribers.discard(q)


@dataclass
class ServerConfig:
    """What ``orbithil ground serve`` is told (validated by the CLI)."""

    stack: tuple[str, int]
    keys: dict[int, bytes]
    archive: Path
    key_id: int | None = None  # None: the lowest
    downlink: tuple[str, int] = ("127.0.0.1", 0)  # where telemetry is received
    retention_days: float = 30.0
    session_hours: float = 8.0
    claim_after_s: float = 5.0  # telemetry quiet this long: send a NOOP to claim it
    keepalive_s: float = 600.0  # and a NOOP at least this often (the stack's lease: 1 h)
    claim: bool = True
    sequence: object = None  # flight.ground's SequenceCounter; None: the key's counter file
    orbit: object = None  # payload.orbit.Orbit of the spacecraft; None: Orbit.default() (ISS)
    stations: tuple = ()  # payload.passes.Station network; empty: passes.DEFAULT_STATIONS
    tle: str = ""  # where the TLE came from (shown by /api/passes); "": the bundled one
    tenants: tuple[Tenant, ...] = ()  # the stack's tenants (flight.ledger.tenants_from_data)
    ledger_check_s: float = 15.0  # how often the archive's ledger is checked for gaps


@dataclass
class CommandRecord:
    seq: int
    name: str
    args: dict
    user: str
    sent_us: int
    stages: list[dict] = field(default_factory=list)
    key_id: int | None = None  # the key that signed it

    @property
    def state(self) -> str:
        for stage in reversed(self.stages):
            if stage["stage"] in ("COMPLETED", "FAILED"):
                return stage["stage"]
        return self.stages[-1]["stage"] if self.stages else "SENT"

    @property
    def result(self) -> dict | None:
        """The fields of its completion text (SUBMIT_JOB: the job and its hold; QUOTE_JOB:
        the quote), by the dictionary's ``result`` format; None before or without one."""
        command = COMMAND_BY_NAME.get(self.name)
        for stage in reversed(self.stages):
            if stage["stage"] == "COMPLETED" and command is not None:
                return command.parse_result(stage["reason"])
        return None

    def as_json(self) -> dict:
        return {
            "seq": self.seq,
            "name": self.name,
            "args": self.args,
            "user": self.user,
            "sent_us": self.sent_us,
            "state": self.state,
            "stages": self.stages,
            "key_id": self.key_id,
            "result": self.result,
        }


class GroundServer:
    """Link, archive and live state; ``start``/``stop`` (or a ``with`` block)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.key_id = config.key_id if config.key_id is not None else min(config.keys)
        self.tenants = {t.name: t for t in config.tenants}
        self.archive = Archive(config.archive)
        self.users = Users(self.archive)
        self.hub = Hub()
        self.latest: dict[str, tuple[int, int, float]] = {}  # name -> rx us, on-board us, value
        self.commands: collections.OrderedDict[int, CommandRecord] = collections.OrderedDict()
        self.stats: collections.Counter = collections.Counter()
        self.last_rx_us = 0
        self.last_commit_s: float | None = None  # wall time (time.time()) of the last commit
        self.last_fdir: dict | None = None
        self.dict_mismatch = False
        self.link: ServerLink | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._writer = threading.Thread(target=self._write, name="ground-archive", daemon=True)
        self._stopping = threading.Event()
        self._claim_interval = config.claim_after_s
        self._last_claim = -math.inf
        self._last_sent = -math.inf
        self._last_retention = -math.inf
        self._last_ledger_check = -math.inf
        self._ledger_seen: tuple[str, int] | None = None  # (ledger, count) a check ago
        self._reconcile_seen: tuple[str, int] | None = None  # the same, for reconciling
        self._mismatches: set[tuple] = set()  # LEDGER_MISMATCH events raised
        self._orbit = None
        self._passes_cache: dict = {}
        self._restore()

    def _restore(self) -> None:
        """What the console showed before a restart, from the archive: the last commands
        with their verification stages, and the last FDIR trigger."""
        for row in self.archive.commands(limit=100):
            record = CommandRecord(row["seq"], row["name"], json.loads(row["args"]), row["user"],
                                   row["sent_us"], key_id=row["key_id"])  # fmt: skip
            record.stages = [
                {"stage": v["stage"], "reason": v["reason"], "rx_us": v["rx_us"]}
                for v in self.archive.verifications(row["seq"])
                if v["rx_us"] >= row["sent_us"] - US  # not an older command's number
            ]
            self.commands[record.seq] = record
        fdir = [e for e in self.archive.events(0, limit=1000) if e["name"] == "FDIR_TRIGGERED"]
        if fdir:
            self.last_fdir = {"type": "event", **fdir[-1]}

    # --- lifecycle ---
    def start(self) -> None:
        sequence = self.config.sequence
        signing = {self.key_id} | {
            k for t in self.tenants.values() for k in t.key_ids if k in self.config.keys
        }
        if sequence is None and len(signing) > 1:
            sequence = SharedSequence.for_keys(signing)
        self.link = ServerLink(
            self.config.stack,
            key_id=self.key_id,
            key=self.config.keys[self.key_id],
            bind=self.config.downlink,
            on_packet=self._received,
            sequence=sequence,
        )
        self._writer.start()
        log.info(
            "ground server: stack %s:%d, downlink %s, archive %s",
            *self.config.stack,
            self.downlink_address,
            self.config.archive,
        )

    def stop(self) -> None:
        self._stopping.set()
        if self.link is not None:
            self.link.close()
        self._queue.put(None)
        self._writer.join(10)

    def __enter__(self) -> GroundServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def downlink_address(self) -> tuple[str, int]:
        return self.link.sock.getsockname() if self.link else self.config.downlink

    # --- packets in ---
    def _received(self, rx_us: int, raw: bytes) -> None:
        self._queue.put((rx_us, raw))

    def _write(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.25)
            except queue.Empty:
                first = ()
            self._maintain()
            if first is None:
                break
            if first == ():
                continue
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                decoded = decode_batch(batch)
                self._publish(decoded)
                self.archive.store(decoded)
            except Exception:  # a full disk, a locked file: say so and keep the link up
                log.exception("archiving %d packets failed", len(batch))
                self.stats["archive_errors"] += 1
            else:
                self.stats["archived"] += len(decoded.packets)
                self.stats["batches"] += 1
                self.last_commit_s = time.time()
            if stop:
                break
        self.archive.close()

    def _maintain(self) -> None:
        """Claim the downlink when telemetry is quiet (backing off while the stack does not
        answer) and keep the stack's lease on this address; retention now and then."""
        now = time.monotonic()
        if self.config.claim and not self._stopping.is_set():
            quiet = (now_us() - self.last_rx_us) / 1e6 if self.last_rx_us else math.inf
            waited = now - self._last_claim
            claim = quiet > self.config.claim_after_s and waited > self._claim_interval
            if claim:
                self._claim_interval = min(self._claim_interval * 2, 60.0)  # reset by a packet
            if claim or now - self._last_sent > self.config.keepalive_s:
                self._last_claim = now
                try:
                    self.send_command("(server)", "NOOP", {})
                    self.stats["claims"] += 1
                except OSError as exc:
                    log.debug("claiming the downlink: %s", exc)
        if now - self._last_ledger_check > self.config.ledger_check_s:
            self._last_ledger_check = now
            if self.config.claim:
                try:
                    self._repair_ledger()
                except OSError as exc:
                    log.debug("asking for ledger transactions: %s", exc)
            self._reconcile_ledger()
        if self.config.retention_days and now - self._last_retention > RETENTION_EVERY_S:
            self._last_retention = now
            deleted = self.archive.retain(self.config.retention_days)
            if any(deleted.values()):
                log.info("retention (%g days) deleted %s", self.config.retention_days, deleted)

    def _repair_ledger(self) -> None:
        """Ask the stack again for the first run of ledger transactions the archive lacks
        among those its telemetry counted a check ago (what was counted since may still be
        on its way)."""
        with self._state_lock:
            ident, count = self.latest.get("LEDGER_ID"), self.latest.get("LEDGER_TXNS")
        if ident is None or count is None:
            return
        book, counted = f"{int(ident[2]):08x}", int(count[2])
        seen, self._ledger_seen = self._ledger_seen, (book, counted)
        if seen is None or seen[0] != book:
            return
        gap = ground_ledger.first_gap(self.archive.connect(), book, seen[1])
        if gap is not None:
            first, last = gap
            count = min(LEDGER_RESEND_MAX, last - first + 1)
            self.send_command("(server)", "LEDGER_RESEND", {"first": first, "count": count})
            self.stats["ledger_resends"] += 1

    def _reconcile_ledger(self) -> None:
        """Compare each tenant's available tokens as the stack reports them (its
        TENANT<n>_AVAILABLE telemetry, and the balance each transaction's event carries)
        with the archive's sum of postings, once the archive holds every transaction the
        stack counted and the count stood still since the last check. A difference is a
        LEDGER_MISMATCH event (archived, on the stream), once per difference; the archive's
        books are never corrected."""
        with self._state_lock:
            ident, count = self.latest.get("LEDGER_ID"), self.latest.get("LEDGER_TXNS")
            if ident is None or count is None:
                return
            onboard = {name: self.latest.get(f"TENANT{t.index}_AVAILABLE")
                       for name, t in self.tenants.items()}  # fmt: skip
        book, counted = f"{int(ident[2]):08x}", int(count[2])
        seen, self._reconcile_seen = self._reconcile_seen, (book, counted)
        if seen != (book, counted):  # transactions under way: compare when it is quiet
            return
        self.stats["ledger_reconciled"] += 1
        db = self.archive.connect()
        booked, highest = db.execute(
            "SELECT COUNT(*), COALESCE(MAX(txn), 0) FROM ledger_txns WHERE book = ?", (book,)
        ).fetchone()
        if booked != counted or highest != counted:  # a gap: LEDGER_RESEND's to fill
            return
        accounts = ground_ledger.accounts(db, book, list(self.tenants))
        for name, account in accounts.items():
            differences = []
            sample = onboard.get(name)
            told = int(sample[2]) if sample is not None and sample[1] >= count[1] else None
            if told is not None and told != account["available"]:
                differences.append(f"its telemetry says {told}")
            if not account["agrees"]:
                differences.append(f"its last transaction says {account['onboard_available']}")
            for difference in differences:
                key = (book, name, difference, account["available"])
                if key in self._mismatches:
                    continue
                self._mismatches.add(key)
                text = (f"book {book} tenant {name}: the ground's sum is {account['available']} "
                        f"available, {difference}; not corrected: run `orbithil ledger check` "
                        "on the archive and the stack's store")  # fmt: skip
                self.raise_event("LEDGER_MISMATCH", int(Severity.WARNING), text)
                self.stats["ledger_mismatches"] += 1

    def raise_event(self, name: str, severity: int, text: str) -> None:
        """An event of the ground's own: archived with the stack's and sent on the stream."""
        rx = self.archive.record_event(name=name, severity=severity, text=text)
        log.warning("%s: %s", name, text)
        event = {"type": "event", "rx_us": rx, "onboard_us": rx, "name": name,
                 "severity": severity, "text": text}  # fmt: skip
        self.hub.publish_threadsafe([event])

    def _publish(self, d: Decoded) -> None:
        messages: list[dict] = []
        self.stats["packets"] += len(d.packets)
        self.stats["malformed"] += len(d.malformed)
        self.stats["dict_mismatch"] += d.dict_mismatch
        if d.dict_mismatch:
            self.dict_mismatch = True
        with self._state_lock:
            if d.packets:
                self.last_rx_us = max(p[0] for p in d.packets)
                self._claim_interval = self.config.claim_after_s
            if d.samples:
                values, rx_last = {}, 0
                for channel_id, (rx, onboard, value) in d.samples.items():
                    name = channel_name(channel_id)
                    v = float(value[-1])
                    self.latest[name] = (int(rx[-1]), int(onboard[-1]), v)
                    values[name] = _finite(v)
                    rx_last = max(rx_last, int(rx[-1]))
                self.stats["housekeeping"] += len(next(iter(d.samples.values()))[0])
                messages.append({"type": "telemetry", "rx_us": rx_last, "values": values})
            for rx_us, onboard_us, _event_id, name, severity, text in d.events:
                event = {
                    "type": "event",
                    "rx_us": rx_us,
                    "onboard_us": onboard_us,
                    "name": name,
                    "severity": severity,
                    "text": text,
                }
                if name == "FDIR_TRIGGERED":
                    self.last_fdir = event
                messages.append(event)
            self.stats["events"] += len(d.events)
            for rx_us, _onboard_us, seq, opcode, stage, reason in d.verifications:
                stage_name = ccsds.Stage(stage).name
                record = self.commands.get(seq)
                entry = {"stage": stage_name, "reason": reason, "rx_us": rx_us}
                if record is not None:
                    record.stages.append(entry)
                messages.append(
                    {
                        "type": "verification",
                        "seq": seq,
                        "opcode": opcode,
                        "command": record.name if record else None,
                        **entry,
                    }
                )
            self.stats["verifications"] += len(d.verifications)
        if messages:
            self.hub.publish_threadsafe(messages)

    # --- telecommands out ---
    def tenant_key(self, tenant: str) -> int:
        """The key the server signs ``tenant``'s commands with; PermissionError saying why
        there is none."""
        known = self.tenants.get(tenant)
        if known is None:
            raise PermissionError(
                f"tenant {tenant} is not one of this server's tenants "
                f"({', '.join(self.tenants) or 'none'}: orbithil ground serve --tenants)"
            )
        for key_id in known.key_ids:
            if key_id in self.config.keys:
                return key_id
        raise PermissionError(
            f"the server holds no key of tenant {tenant} (key ids {list(known.key_ids)}): "
            "add it to the server's --keys"
        )

    def send_command(self, user: str, name: str, args: dict, *,
                     tenant: str | None = None) -> CommandRecord:  # fmt: skip
        """Check a command against the dictionary, sign it with the server's key (a
        tenant's command: with the tenant's, if a tenant may send it) and send it.
        ValueError says what is wrong with the command, PermissionError why a tenant may
        not send it; OSError if it cannot be sent."""
        command = COMMAND_BY_NAME.get(str(name).strip().upper())
        if command is None:
            raise ValueError(f"no command {name!r}; commands: {', '.join(COMMAND_BY_NAME)}")
        key_id = self.key_id
        if tenant is not None:
            if not command.tenants:
                allowed = ", ".join(c.name for c in COMMAND_BY_NAME.values() if c.tenants)
                raise PermissionError(f"{command.name} is the operators'; a tenant sends {allowed}")
            key_id = self.tenant_key(tenant)
        # what the stack will decode: enum names in the dictionary's spelling, defaults
        # filled in, numbers as numbers (ValueError says what the dictionary refuses)
        values = command.decode_args(command.encode_args(**canonical_args(command, args)))
        # sent under the state lock: the stack may answer before send() returns, and its
        # verification must find the record (the writer publishes under the same lock)
        with self._send_lock, self._state_lock:
            if self.link is None:
                raise OSError("the server is not connected to a stack")
            seq = self.link.send_signed(key_id, self.config.keys[key_id], command.name, values)
            self._last_sent = time.monotonic()
            record = CommandRecord(seq, command.name, values, user, now_us(), key_id=key_id)
            self.commands[seq] = record
            while len(self.commands) > 1000:
                self.commands.popitem(last=False)
        self.stats["commands"] += 1
        self.archive.record_command(
            user=user, key_id=key_id, seq=seq, name=command.name, args=json.dumps(values)
        )
        self.hub.publish_threadsafe([{"type": "command", **record.as_json()}])
        return record

    # --- station passes ---
    def passes_json(
        self, hours: float = 24.0, *, now: float | None = None, start: float | None = None
    ) -> dict:
        """Every station's passes and the merged contact windows over ``hours`` from
        ``start`` (Unix seconds; default ``now``, itself by default the wall clock), from
        the spacecraft's TLE.
        Times are seconds since the TLE epoch (``*_s``) and UTC (``*_utc``); ``now_s`` is
        now on that clock. ``tle_age_days`` says how old the element set is: SGP4 still
        propagates an old one, but its positions drift by kilometres per day of age, so a
        ``stale`` plan (more than 14 days) shows the geometry, not when to point an antenna.
        A plan is cached for a minute per ``hours``."""
        from orbithil.payload import passes as passes_mod
        from orbithil.payload.orbit import Orbit

        if self._orbit is None:
            self._orbit = self.config.orbit or Orbit.default()
        orbit = self._orbit
        stations = tuple(self.config.stations) or passes_mod.DEFAULT_STATIONS
        now = time.time() if now is None else now
        epoch = orbit.epoch.timestamp()
        start = now if start is None else start
        key = (round(float(hours), 6), int(start // 60))
        with self._state_lock:
            cached = self._passes_cache.get(key)
        if cached is None:
            start_s = math.floor(start / 60) * 60 - epoch  # minute-aligned: cacheable
            plan = passes_mod.pass_plan(orbit, stations, start_s, hours)
            cached = {
                "satellite": orbit.name,
                "tle": self.config.tle or "bundled (Orbit.default(): the ISS)",
                "epoch_utc": passes_mod.utc(orbit, [0.0])[0],
                "start_s": plan.start_s,
                "end_s": plan.end_s,
                "start_utc": passes_mod.utc(orbit, [plan.start_s])[0],
                "end_utc": passes_mod.utc(orbit, [plan.end_s])[0],
                "hours": float(hours),
                "stations": [
                    {**s.as_dict(), "passes": [p.as_dict(orbit) for p in plan.passes[s.name]]}
                    for s in plan.stations
                ],
                "windows": [w.as_dict(orbit) for w in plan.windows],
                "contact_s": round(plan.contact_s, 3),
                "longest_gap_s": round(plan.longest_gap_s, 3),
            }
            with self._state_lock:
                self._passes_cache = {key: cached}
        now_s = now - epoch
        age_days = now_s / 86400.0
        upcoming = [w for w in cached["windows"] if w["end_s"] > now_s]
        following = upcoming[0] if upcoming else None
        return {
            **cached,
            "now_s": round(now_s, 3),
            "now_utc": _iso_utc(now),
            "tle_age_days": round(age_days, 3),
            "stale": abs(age_days) > STALE_TLE_DAYS,
            "in_contact": bool(following and following["start_s"] <= now_s),
            "next_window": following,
            "next_in_s": (
                None if following is None else round(max(0.0, following["start_s"] - now_s), 3)
            ),
        }

    # --- what the console shows ---
    def command_records(self, limit: int = 50, *, user: str | None = None) -> list[dict]:
        """The last telecommands this server sent (newest last), with their stages (only
        ``user``'s, if given)."""
        with self._state_lock:
            records = [r for r in self.commands.values() if user is None or r.user == user]
            return [r.as_json() for r in records[-limit:]]

    def command_record(self, seq: int) -> dict | None:
        with self._state_lock:
            record = self.commands.get(seq)
            return record.as_json() if record is not None else None

    # --- tenants and the ledger ---
    def tenants_json(self, only: str | None = None) -> list[dict]:
        """The tenants (or ``only`` one): whether the server can sign for each, its account
        in the ledger the stack reported last (tools/ground/ledger.py), and its latest
        TENANT<n>_* telemetry."""
        db = self.archive.connect()
        book = ground_ledger.current_book(db)
        names = [only] if only is not None else list(self.tenants)
        accounts = ground_ledger.accounts(db, book, names) if book else {}
        out = []
        for name in names:
            tenant = self.tenants.get(name)
            telemetry = {}
            if tenant is not None:
                prefix = f"TENANT{tenant.index}_"
                with self._state_lock:
                    latest = [(k, v[2]) for k, v in self.latest.items() if k.startswith(prefix)]
                telemetry = {k[len(prefix) :].lower(): _finite(v) for k, v in latest}
            out.append(
                {
                    "name": name,
                    "index": tenant.index if tenant else None,
                    "key_ids": list(tenant.key_ids) if tenant else [],
                    "signing": tenant is not None
                    and any(k in self.config.keys for k in tenant.key_ids),
                    "book": book,
                    "account": accounts.get(name),
                    "telemetry": telemetry,
                }
            )
        return out

    def ledger_json(self, *, tenant: str | None = None, book: str | None = None,
                    limit: int = 100) -> dict:  # fmt: skip
        """A ledger's transactions (of one tenant), the accounts, and every ledger heard of
        with what is missing from it."""
        db = self.archive.connect()
        book = book or ground_ledger.current_book(db)
        books = ground_ledger.books(db)
        if tenant is not None:  # a tenant learns nothing of the others from the books
            books = [{k: v for k, v in b.items() if k in ("book", "last_rx_us")} for b in books]
        if book is None:
            return {"book": None, "books": books, "accounts": {}, "transactions": []}
        accounts = ground_ledger.accounts(db, book, [tenant] if tenant else self.tenants)
        if tenant is not None:
            accounts = {tenant: accounts[tenant]}
        return {
            "book": book,
            "books": books,
            "accounts": accounts,
            "transactions": ground_ledger.statement(db, book, tenant=tenant, limit=limit),
        }

    def statement_json(
        self, tenant: str, *, book: str | None = None, since_us: int | None = None,
        until_us: int | None = None,
    ) -> dict | None:  # fmt: skip
        """``tenant``'s statement over a period in a ledger (default the latest), or None
        when the archive has no such ledger (tools/ground/ledger.py ``period_statement``)."""
        db = self.archive.connect()
        book = book or ground_ledger.current_book(db)
        if book is None or book not in {b["book"] for b in ground_ledger.books(db)}:
            return None
        return ground_ledger.period_statement(db, book, tenant, since_us=since_us,
                                              until_us=until_us)  # fmt: skip

    def visible(self, message: dict, *, user: str, tenant: str) -> dict | None:
        """What a tenant user may see of a stream message (None: nothing): its own
        commands and their stages, events naming its tenant, the payload's public channels
        and its own TENANT<n>_* channels."""
        kind = message.get("type")
        if kind == "telemetry":
            values = {k: v for k, v in message["values"].items() if self.tenant_sees(k, tenant)}
            return {**message, "values": values} if values else None
        if kind == "event":
            known = EVENT_BY_NAME.get(message.get("name", ""))
            fields = known.parse(message.get("text", "")) if known else None
            return message if fields is not None and fields.get("tenant") == tenant else None
        if kind == "command":
            return message if message.get("user") == user else None
        if kind == "verification":
            with self._state_lock:
                record = self.commands.get(message.get("seq"))
            return message if record is not None and record.user == user else None
        return None

    def tenant_sees(self, channel: str, tenant: str) -> bool:
        """Whether a tenant user sees a telemetry channel: the public ones, and its own."""
        known = self.tenants.get(tenant)
        own = known is not None and channel.startswith(f"TENANT{known.index}_")
        return own or channel in TENANT_PUBLIC_CHANNELS

    def latest_json(self, *, tenant: str | None = None) -> dict:
        """The latest value of every channel (of those ``tenant`` sees, if given)."""
        with self._state_lock:
            return {
                name: {"rx_us": rx, "onboard_us": onboard, "value": _finite(value)}
                for name, (rx, onboard, value) in sorted(self.latest.items())
                if tenant is None or self.tenant_sees(name, tenant)
            }

    def status_json(self) -> dict:
        with self._state_lock:
            mode = self.latest.get("MODE")
            fdir_actions = self.latest.get("FDIR_ACTIONS")
            return {
                "stack": "{}:{}".format(*self.config.stack),
                "downlink": "{}:{}".format(*self.downlink_address),
                "key_id": self.key_id,
                "archive": str(self.config.archive),
                "last_rx_us": self.last_rx_us or None,
                "now_us": now_us(),
                "dict_mismatch": self.dict_mismatch,
                "mode": _enum_name("MODE", mode[2]) if mode else None,
                "fdir": {
                    "actions": int(fdir_actions[2]) if fdir_actions else None,
                    "last": self.last_fdir,
                },
                "stats": dict(self.stats),
                "websocket_dropped": self.hub.dropped,
                "backlog": self._queue.qsize(),
            }


def _iso_utc(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _enum_name(channel: str, value: float) -> str:
    names = channel_enums().get(channel, ())
    index = int(value)
    return names[index] if 0 <= index < len(names) else str(index)


__all__ = ["GroundServer", "ServerConfig", "ServerLink", "dictionary_document"]
