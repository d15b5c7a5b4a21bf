"""The space-ground link: telecommands in and telemetry out as CCSDS Space Packets over
UDP (and TCP), bound to loopback unless configured, following a contact plan.

Who gets what. Authentication, not arrival, decides: an address or a connection gets
nothing until it has sent an authenticated telecommand (a good MAC under a known key and
a fresh sequence number, ``ccsds.Authenticator``); from then on it is a *ground*.

- The verification of a telecommand (accepted, started, completed or failed) goes to the
  ground that sent it, found by the telecommand's sequence number and opcode (what a
  verification packet names).
- Housekeeping and events go to every ground: each UDP address that sent an authenticated
  telecommand within the last ``lease_s`` seconds (at most ``max_udp_grounds``; the one
  heard from least recently makes way), and each TCP connection that sent one, while it
  stays open. A console that has sent nothing for ``lease_s`` hears telemetry again after
  its next command (a NOOP does).
- The configured ground address (``Config.ground_host``/``ground_port``, ``self.ground``)
  gets everything, whether or not it ever sends: a fixed station or archive.

TCP: up to ``max_clients`` connections at once. A connection that has not authenticated
within ``auth_timeout_s`` is closed, and a newcomer finding every slot taken replaces the
oldest unauthenticated connection (an authenticated one is never pushed out by it). Every
socket is non-blocking: nothing the link sends ever waits for a ground. What a client's
kernel buffer does not take waits in a queue of its own; a client whose queue passes
``client_queue_bytes`` is dropped, counted in TM_CLIENTS_DROPPED and reported in a
TM_CLIENT_DROPPED event. GROUND_ENDPOINTS counts the grounds being sent to.

Telemetry made while the link is down goes to a bounded on-board store and is sent, oldest
first, when the link comes back; what the store could not hold is counted in TM_LOST.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from spacepackets.ccsds.spacepacket import PacketType

from orbithil.flight import ccsds
from orbithil.flight.ccsds import Authenticator, TcRejected
from orbithil.flight.dictionary import APID_VERIFY

log = logging.getLogger(__name__)

SENDERS_REMEMBERED = 4096  # telecommands whose sender is kept for routing verification


@dataclass(frozen=True)
class ContactPlan:
    """Passes (start, end) in seconds, repeating every ``period`` seconds (0: once).
    No passes means always in contact."""

    passes: tuple[tuple[float, float], ...] = ()
    period: float = 0.0

    def up(self, t: float) -> bool:
        if not self.passes:
            return True
        if self.period:
            t %= self.period
        return any(start <= t < end for start, end in self.passes)


@dataclass(eq=False)
class _Client:
    """One TCP connection: its receive buffer, its send queue and who authenticated it."""

    sock: socket.socket
    peer: str
    since: float  # time.monotonic() of the connection
    rx: bytearray = field(default_factory=bytearray)
    out: collections.deque = field(default_factory=collections.deque)
    queued: int = 0  # bytes in ``out``
    key_id: int | None = None  # the key of its first authenticated telecommand
    dead: bool = False


class GroundLink:
    """The stack's end of the ground link (see the module docstring for who gets what)."""

    def __init__(self, auth: Authenticator, clock, telemetry, events, *,
                 on_telecommand: Callable[[ccsds.Telecommand], None],
                 host: str = "127.0.0.1", udp_port: int = 0, tcp_port: int | None = None,
                 ground: tuple[str, int] | None = None, contacts: ContactPlan | None = None,
                 store_depth: int = 2000, lease_s: float = 3600.0, max_udp_grounds: int = 8,
                 max_clients: int = 8, auth_timeout_s: float = 10.0,
                 client_queue_bytes: int = 4 << 20) -> None:  # fmt: skip
        self.auth = auth
        self.clock = clock
        self.tm = telemetry
        self.events = events
        self.on_telecommand = on_telecommand
        self.contacts = contacts or ContactPlan()
        self.ground = ground  # the fixed ground address: gets everything
        self.lease_s = lease_s
        self.max_udp_grounds = max_udp_grounds
        self.max_clients = max_clients
        self.auth_timeout_s = auth_timeout_s
        self.client_queue_bytes = client_queue_bytes
        self.store: collections.deque[tuple[bytes, tuple | None]] = collections.deque()
        self.store_depth = store_depth
        self.lost = 0
        self.clients_dropped = 0
        self._seq = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # UDP grounds: address -> time.monotonic() of its last authenticated telecommand
        self._udp_grounds: collections.OrderedDict[tuple, float] = collections.OrderedDict()
        self._clients: list[_Client] = []
        self._closing: list[socket.socket] = []  # shut down; closed by the receive thread
        # (auth sequence, opcode) -> the grounds that sent it: where verification goes
        self._senders: collections.OrderedDict[tuple[int, int], tuple] = collections.OrderedDict()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, udp_port))
        self.udp.setblocking(False)
        self.tcp = None
        if tcp_port is not None:
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind((host, tcp_port))
            self.tcp.listen(16)
            self.tcp.setblocking(False)
        self._thread = threading.Thread(target=self._rx, name="ground-link", daemon=True)

    @property
    def udp_address(self) -> tuple[str, int]:
        return self.udp.getsockname()

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self.tcp.getsockname() if self.tcp else None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started (a stack that failed to start stops too)
            self._thread.join(2)
        with self._lock:
            sockets = [c.sock for c in self._clients] + self._closing
            self._clients, self._closing = [], []
        for sock in (self.udp, self.tcp, *sockets):
            if sock is not None:
                sock.close()

    def endpoints(self) -> list[str]:
        """The grounds telemetry goes to now, e.g. ``udp 127.0.0.1:5000``,
        ``tcp 127.0.0.1:6000 key 1``."""
        now = time.monotonic()
        with self._lock:
            found = [f"udp {a[0]}:{a[1]} (configured)" for a in (self.ground,) if a]
            found += [f"udp {a[0]}:{a[1]}" for a, t in self._udp_grounds.items()
                      if now - t < self.lease_s and a != self.ground]  # fmt: skip
            found += [f"tcp {c.peer} key {c.key_id}" for c in self._clients if c.key_id is not None]
        return found

    # --- telemetry out ---
    def send(self, apid: int, data: bytes) -> None:
        """Send (or store, while out of contact) one telemetry packet; never waits for a
        ground. Verification goes to the sender of its telecommand, the rest to all."""
        with self._lock:
            seq = self._seq[apid]
            self._seq[apid] = (seq + 1) & 0x3FFF
            packet = ccsds.pack(PacketType.TM, apid, seq, data)
            route = self._verification_route_locked(data) if apid == APID_VERIFY else None
            if not self.contacts.up(self.clock.now()):
                if len(self.store) >= self.store_depth:
                    self.store.popleft()
                    self.lost += 1
                    self.tm.set("TM_LOST", self.lost)
                self.store.append((packet, route))
                self.tm.set("TM_STORED", len(self.store))
                return
            self._flush_locked()
            self._transmit_locked(packet, route)

    def service(self) -> None:
        """Called by a rate group: report the link state; once up, send the stored packets."""
        up = self.contacts.up(self.clock.now())
        self.tm.set("LINK_UP", int(up))
        now = time.monotonic()
        with self._lock:
            for address, heard in list(self._udp_grounds.items()):
                if now - heard >= self.lease_s:
                    del self._udp_grounds[address]
            grounds = set(self._udp_grounds) | ({tuple(self.ground)} if self.ground else set())
            tcp = sum(c.key_id is not None for c in self._clients)
            if up and self.store:
                self._flush_locked()
        self.tm.set("GROUND_ENDPOINTS", len(grounds) + tcp)

    def _flush_locked(self) -> None:
        while self.store:
            self._transmit_locked(*self.store.popleft())
        self.tm.set("TM_STORED", 0)

    def _verification_route_locked(self, data: bytes) -> tuple | None:
        try:
            _, auth_seq, opcode, _ = ccsds.VF_HEAD.unpack_from(data)
        except struct.error:
            return None
        return self._senders.get((auth_seq, opcode))  # unknown (forgotten): every ground

    def _transmit_locked(self, packet: bytes, route: tuple | None) -> None:
        if route is None:
            now = time.monotonic()
            addresses = [a for a, t in self._udp_grounds.items() if now - t < self.lease_s]
            clients = [c for c in self._clients if c.key_id is not None]
        else:
            addresses = [d for d in route if isinstance(d, tuple)]
            clients = [d for d in route if isinstance(d, _Client) and not d.dead]
        if self.ground is not None:
            addresses.insert(0, tuple(self.ground))
        for address in dict.fromkeys(addresses):
            try:
                self.udp.sendto(packet, address)
            except OSError as exc:  # a full socket buffer or an unreachable ground
                log.debug("telemetry to %s dropped: %s", address, exc)
        for client in clients:
            self._queue_locked(client, packet)

    def _queue_locked(self, client: _Client, packet: bytes) -> None:
        if not client.out:
            try:
                sent = client.sock.send(packet)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._drop_locked(client, f"send failed: {exc}")
                return
            if sent == len(packet):
                return
            packet = packet[sent:]
        client.out.append(packet)
        client.queued += len(packet)
        if client.queued > self.client_queue_bytes:
            self._drop_locked(client, f"not reading: {client.queued} bytes of telemetry "
                              f"queued (limit {self.client_queue_bytes})", slow=True)  # fmt: skip

    def _flush_client_locked(self, client: _Client) -> None:
        while client.out and not client.dead:
            head = client.out[0]
            try:
                sent = client.sock.send(head)
            except BlockingIOError:
                return
            except OSError as exc:
                self._drop_locked(client, f"send failed: {exc}")
                return
            client.queued -= sent
            if sent == len(head):
                client.out.popleft()
            else:
                client.out[0] = head[sent:]
                return

    def _drop_locked(self, client: _Client, why: str, *, slow: bool = False) -> None:
        """Forget a client; its socket is shut down now and closed by the receive thread
        (never while that thread may be waiting on it)."""
        if client.dead:
            return
        client.dead = True
        client.out.clear()
        client.queued = 0
        self._clients.remove(client)
        with contextlib.suppress(OSError):
            client.sock.shutdown(socket.SHUT_RDWR)
        self._closing.append(client.sock)
        if slow:
            self.clients_dropped += 1
            self.tm.set("TM_CLIENTS_DROPPED", self.clients_dropped)
            self.events.emit("TM_CLIENT_DROPPED", client=client.peer, why=why)
        else:
            log.info("ground client %s closed: %s", client.peer, why)

    # --- telecommands in ---
    def _rx(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                for client in list(self._clients):
                    if client.key_id is None and now - client.since >= self.auth_timeout_s:
                        self._drop_locked(client, f"no authenticated telecommand within "
                                          f"{self.auth_timeout_s:g} s")  # fmt: skip
                closing, self._closing = self._closing, []
                clients = list(self._clients)
                writers = [c.sock for c in clients if c.out]
            for sock in closing:
                sock.close()
            readers = [self.udp, *([self.tcp] if self.tcp else []), *(c.sock for c in clients)]
            try:
                readable, writable, _ = select.select(readers, writers, [], 0.05)
            except (OSError, ValueError):  # a socket went away meanwhile: look again
                continue
            by_sock = {c.sock: c for c in clients}
            for sock in writable:
                with self._lock:
                    self._flush_client_locked(by_sock[sock])
            for sock in readable:
                if sock is self.udp:
                    self._read_udp()
                elif sock is self.tcp:
                    self._accept()
                else:
                    self._read_client(by_sock[sock])

    def _read_udp(self) -> None:
        for _ in range(64):  # a burst, without starving the other sockets
            try:
                raw, source = self.udp.recvfrom(ccsds.MAX_PACKET)
            except OSError:
                return
            self._handle(raw, source)

    def _accept(self) -> None:
        try:
            sock, (host, port, *_) = self.tcp.accept()
        except OSError:
            return
        sock.setblocking(False)
        # packets go out as made, not held back to coalesce (Nagle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = _Client(sock, f"{host}:{port}", time.monotonic())
        with self._lock:
            if len(self._clients) >= self.max_clients:
                waiting = [c for c in self._clients if c.key_id is None]
                if not waiting:
                    log.warning("ground client %s refused: %d authenticated clients "
                                "connected (the most)", client.peer, self.max_clients)  # fmt: skip
                    sock.close()
                    return
                self._drop_locked(waiting[0], f"replaced by {client.peer} before it "
                                  "authenticated")  # fmt: skip
            self._clients.append(client)

    def _read_client(self, client: _Client) -> None:
        try:
            chunk = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            if client.rx:  # a telecommand cut short by the close: refused and counted
                n = ccsds.packet_length(client.rx)
                self._refuse(f"malformed: truncated: {len(client.rx)} bytes of a "
                             f"{n or '?'}-byte packet when the connection closed",
                             "malformed", client)  # fmt: skip
            with self._lock:
                self._drop_locked(client, "disconnected")
            return
        client.rx += chunk
        while (n := ccsds.packet_length(client.rx)) is not None:
            if n > ccsds.MAX_TC:  # refused unread; the stream cannot be followed past it
                longest = ccsds.MAX_TC
                self._refuse(f"malformed: a {n}-byte packet is longer than the longest "
                             f"telecommand ({longest} bytes)", "malformed", client)  # fmt: skip
                with self._lock:
                    self._drop_locked(client, "sent an oversized packet")
                return
            if len(client.rx) < n:
                break
            raw = bytes(client.rx[:n])
            del client.rx[:n]
            self._handle(raw, client)

    def _refuse(self, reason: str, kind: str, source: tuple | _Client) -> None:
        """A refused telecommand: counted by kind and logged as an event."""
        self.tm.add({"auth": "TC_REJECTED_AUTH", "replay": "TC_REJECTED_REPLAY"}.get(
            kind, "TC_REJECTED_MALFORMED"))  # fmt: skip
        where = source.peer if isinstance(source, _Client) else f"{source[0]}:{source[1]}"
        self.events.emit("TC_REJECTED", reason=reason, source=where)

    def _handle(self, raw: bytes, source: tuple | _Client) -> None:
        try:
            tc = self.auth.check(raw)
        except TcRejected as exc:
            self._refuse(str(exc), exc.kind, source)
            return
        with self._lock:
            if isinstance(source, _Client):  # (a dropped client's last command still runs)
                if source.key_id is None and not source.dead:
                    log.info("ground client %s authenticated (key %d)", source.peer, tc.key_id)
                source.key_id = tc.key_id
            else:
                self._udp_grounds[source] = time.monotonic()
                self._udp_grounds.move_to_end(source)
                while len(self._udp_grounds) > self.max_udp_grounds:
                    self._udp_grounds.popitem(last=False)
            key = (tc.auth_seq, tc.opcode)
            earlier = tuple(s for s in self._senders.pop(key, ()) if s != source)
            self._senders[key] = (*earlier, source)  # two keys' commands may share a number
            while len(self._senders) > SENDERS_REMEMBERED:
                self._senders.popitem(last=False)
        self.on_telecommand(tc)  # outside the lock: verification comes back through send()
