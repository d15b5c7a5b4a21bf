"""The space-ground link: telecommands in and telemetry out as CCSDS Space Packets over
UDP (and TCP), bound to loopback unless configured, following a contact plan.

Telemetry made while the link is down goes to a bounded on-board store and is sent, oldest
first, when the link comes back; what the store could not hold is counted in TM_LOST.
Telemetry goes to the configured ground address, or else to where the last authenticated
telecommand came from (UDP), and to a connected TCP client.
"""

from __future__ import annotations

import collections
import logging
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from spacepackets.ccsds.spacepacket import PacketType

from orbithil.flight import ccsds
from orbithil.flight.ccsds import Authenticator, TcRejected

log = logging.getLogger(__name__)


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


class GroundLink:
    def __init__(self, auth: Authenticator, clock, telemetry, events, *,
                 on_telecommand: Callable[[ccsds.Telecommand], None],
                 host: str = "127.0.0.1", udp_port: int = 0, tcp_port: int | None = None,
                 ground: tuple[str, int] | None = None, contacts: ContactPlan | None = None,
                 store_depth: int = 2000) -> None:  # fmt: skip
        self.auth = auth
        self.clock = clock
        self.tm = telemetry
        self.events = events
        self.on_telecommand = on_telecommand
        self.contacts = contacts or ContactPlan()
        self.ground = ground
        self.store: collections.deque[bytes] = collections.deque()
        self.store_depth = store_depth
        self.lost = 0
        self._seq = collections.Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, udp_port))
        self.udp.setblocking(False)
        self.tcp = None
        self._client: socket.socket | None = None
        if tcp_port is not None:
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind((host, tcp_port))
            self.tcp.listen(1)
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
        self._thread.join(2)
        for sock in (self.udp, self.tcp, self._client):
            if sock is not None:
                sock.close()

    # --- telemetry out ---
    def send(self, apid: int, data: bytes) -> None:
        with self._lock:
            seq = self._seq[apid]
            self._seq[apid] = (seq + 1) & 0x3FFF
            packet = ccsds.pack(PacketType.TM, apid, seq, data)
            if not self.contacts.up(self.clock.now()):
                if len(self.store) >= self.store_depth:
                    self.store.popleft()
                    self.lost += 1
                    self.tm.set("TM_LOST", self.lost)
                self.store.append(packet)
                self.tm.set("TM_STORED", len(self.store))
                return
            self._flush_locked()
            self._transmit(packet)

    def service(self) -> None:
        """Called by a rate group: report the link state; once up, send the stored packets."""
        up = self.contacts.up(self.clock.now())
        self.tm.set("LINK_UP", int(up))
        if up and self.store:
            with self._lock:
                self._flush_locked()

    def _flush_locked(self) -> None:
        while self.store:
            self._transmit(self.store.popleft())
        self.tm.set("TM_STORED", 0)

    def _transmit(self, packet: bytes) -> None:
        if self.ground is not None:
            try:
                self.udp.sendto(packet, self.ground)
            except (BlockingIOError, OSError) as exc:
                log.debug("telemetry to %s dropped: %s", self.ground, exc)
        if self._client is not None:
            try:
                self._client.sendall(packet)
            except OSError:
                self._client.close()
                self._client = None

    # --- telecommands in ---
    def _rx(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            socks = [self.udp] + [s for s in (self.tcp, self._client) if s is not None]
            try:
                readable, _, _ = select.select(socks, [], [], 0.1)
            except (OSError, ValueError):
                return
            for sock in readable:
                if sock is self.udp:
                    try:
                        raw, source = self.udp.recvfrom(ccsds.MAX_PACKET)
                    except OSError:
                        continue
                    self._handle(raw, source, udp=True)
                elif sock is self.tcp:
                    client, _ = self.tcp.accept()
                    # packets go out as made, not held back to coalesce (Nagle)
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if self._client is not None:
                        self._client.close()
                    self._client, buffer = client, b""
                else:
                    try:
                        chunk = sock.recv(65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        self._client.close()
                        self._client = None
                        continue
                    buffer += chunk
                    while (n := ccsds.packet_length(buffer)) is not None and len(buffer) >= n:
                        self._handle(buffer[:n], sock.getpeername(), udp=False)
                        buffer = buffer[n:]
                    if len(buffer) > ccsds.MAX_PACKET:
                        buffer = b""  # garbage that never makes a packet: start over

    def _handle(self, raw: bytes, source, *, udp: bool) -> None:
        try:
            tc = self.auth.check(raw)
        except TcRejected as exc:
            self.tm.add({"auth": "TC_REJECTED_AUTH", "replay": "TC_REJECTED_REPLAY"}.get(
                exc.kind, "TC_REJECTED_MALFORMED"))  # fmt: skip
            self.events.emit("TC_REJECTED", reason=str(exc), source=f"{source[0]}:{source[1]}")
            return
        if udp and self.ground is None:
            self.ground = source  # answer where authenticated commands come from
        self.on_telecommand(tc)
