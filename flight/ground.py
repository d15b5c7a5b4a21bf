"""The ground side: send telecommands by name with argument checking, receive telemetry,
events and command verification. Used by ``orbithil ground``, the pytest plug-in and the
benchmark.

    with Ground(("127.0.0.1", 47001), key_id=1, key=key) as g:
        g.command("SET_MODE", mode="NOMINAL")         # waits for COMPLETED (or raises)
        g.wait_telemetry("MODE", lambda v: v == 1, timeout=5)
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from orbithil.flight import ccsds
from orbithil.flight.ccsds import Stage
from orbithil.flight.dictionary import (
    APID_EVENT,
    APID_HK,
    APID_VERIFY,
    CHANNEL_BY_ID,
    COMMAND_BY_NAME,
    DICT_HASH32,
    EVENT_BY_ID,
)


class CommandRejected(Exception):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} failed: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class EventRecord:
    time_us: int
    name: str
    severity: int
    text: str


class Ground:
    def __init__(self, stack_address: tuple[str, int], *, key_id: int, key: bytes,
                 bind: tuple[str, int] = ("127.0.0.1", 0)) -> None:  # fmt: skip
        self.stack = stack_address
        self.key_id = key_id
        self.key = key
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # ride out bursts
        self.sock.bind(bind)
        self.sock.settimeout(0.1)
        # the stack refuses a sequence number it has seen: start from the clock, in ms
        self.auth_seq = int(time.time() * 1000) % 2**31
        self.telemetry: dict[str, float] = {}
        self.events: collections.deque[EventRecord] = collections.deque(maxlen=10_000)
        self.verify: dict[int, list[tuple[Stage, str]]] = collections.defaultdict(list)
        self.packets = collections.Counter()
        self.dict_mismatch = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._rx, name="ground-rx", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> Ground:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- uplink ---
    def send(self, name: str, **args) -> int:
        """Send a telecommand (arguments checked against the dictionary); its sequence."""
        try:
            command = COMMAND_BY_NAME[name]
        except KeyError:
            raise ValueError(
                f"no command {name!r}; commands: {', '.join(COMMAND_BY_NAME)}"
            ) from None
        data = command.encode_args(**args)
        self.auth_seq += 1
        self.send_raw(ccsds.telecommand(self.key_id, self.key, self.auth_seq, command.opcode, data,
                                        self.auth_seq))  # fmt: skip
        return self.auth_seq

    def send_raw(self, packet: bytes) -> None:
        self.sock.sendto(packet, self.stack)

    def command(self, name: str, *, timeout: float = 10.0, **args) -> Stage:
        """Send and wait for COMPLETED; CommandRejected on FAILED, TimeoutError if neither."""
        seq = self.send(name, **args)
        stage, reason = self.wait_verification(seq, timeout=timeout)
        if stage is Stage.FAILED:
            raise CommandRejected(name, reason)
        return stage

    # --- waiting, with deadlines ---
    def _wait(self, check: Callable[[], object], timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = check()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout} s")
                self._cond.wait(remaining)

    def wait_verification(self, seq: int, *, timeout: float = 10.0) -> tuple[Stage, str]:
        def done():
            for stage, reason in self.verify.get(seq, ()):
                if stage in (Stage.COMPLETED, Stage.FAILED):
                    return stage, reason
            return None

        return self._wait(done, timeout, f"completion of telecommand {seq}")

    def wait_telemetry(self, name: str, predicate: Callable[[float], bool] = lambda v: True, *,
                       timeout: float = 10.0) -> float:  # fmt: skip
        def check():
            value = self.telemetry.get(name)
            return (value,) if value is not None and predicate(value) else None

        return self._wait(check, timeout, f"telemetry {name} meeting the predicate")[0]

    def wait_event(self, name: str, predicate: Callable[[EventRecord], bool] = lambda e: True, *,
                   timeout: float = 10.0, since: int = 0) -> EventRecord:  # fmt: skip
        def check():
            for event in list(self.events)[since:]:
                if event.name == name and predicate(event):
                    return event
            return None

        return self._wait(check, timeout, f"event {name}")

    # --- downlink ---
    def _rx(self) -> None:
        while not self._stop.is_set():
            try:
                raw = self.sock.recv(ccsds.MAX_PACKET)
            except (TimeoutError, OSError):
                continue
            try:
                header, data = ccsds.unpack(raw)
                self._handle(header.apid, data)
            except (ccsds.PacketError, ValueError, KeyError):
                self.packets["malformed"] += 1

    def _handle(self, apid: int, data: bytes) -> None:
        with self._cond:
            if apid == APID_HK:
                _, dict_hash, values = ccsds.parse_hk(data)
                self.dict_mismatch = dict_hash != DICT_HASH32
                for channel_id, value in values.items():
                    channel = CHANNEL_BY_ID.get(channel_id)
                    if channel is not None:
                        self.telemetry[channel.name] = value
                self.packets["hk"] += 1
            elif apid == APID_EVENT:
                t, event_id, severity, text = ccsds.parse_event(data)
                name = EVENT_BY_ID[event_id].name if event_id in EVENT_BY_ID else str(event_id)
                self.events.append(EventRecord(t, name, severity, text))
                self.packets["event"] += 1
            elif apid == APID_VERIFY:
                _, seq, _, stage, reason = ccsds.parse_verify(data)
                self.verify[seq].append((stage, reason))
                self.packets["verify"] += 1
            self._cond.notify_all()
