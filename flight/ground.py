"""The ground side: send telecommands by name with argument checking, receive telemetry,
events and command verification. Used by ``orbithil ground``, the pytest plug-in and the
benchmark.

    with Ground(("127.0.0.1", 47001), key_id=1, key=key) as g:
        g.command("SET_MODE", mode="NOMINAL")         # waits for COMPLETED (or raises)
        g.wait_telemetry("MODE", lambda v: v == 1, timeout=5)

The stack sends telemetry to a ground only after that ground sent it an authenticated
telecommand (flight/link.py); a new ground hears housekeeping after its first command.

Sequence numbers. The stack refuses a telecommand whose sequence number it has seen for
that key (or one more than 64 below the highest it has seen: the replay window is per key
id). So every console using a key takes its numbers from one counter per key id, a small
file in the user's state directory (``ORBITHIL_STATE_DIR``, default
~/.local/state/orbithil/ground/tc-sequence-<key id>), each number taken under an exclusive
lock: consoles started in any order, one after another or at once, and restarted ones,
never reuse a number and never fall behind each other. A key's first number is the time
in quarter seconds since 2024, so a lost counter file starts again above what the stack
has seen (unless that key sent more than four commands a second on average).
Limit: the counter is per machine and per user. Two machines (or users) sending with the
same key id lock each other out as soon as their counters drift more than 64 apart: give
each operator or machine its own key id (the stack takes several keys).
"""

from __future__ import annotations

import collections
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from orbithil.errors import ConfigError
from orbithil.flight import ccsds
from orbithil.flight.ccsds import Stage
from orbithil.flight.dictionary import (
    APID_EVENT,
    APID_HK,
    APID_VERIFY,
    CHANNEL_BY_ID,
    CHANNEL_BY_NAME,
    COMMAND_BY_NAME,
    COMMAND_BY_OPCODE,
    DICT_HASH32,
    EVENT_BY_ID,
    Arg,
    Command,
)

MAX_SEQUENCE = 0xFFFF_FFFF  # the auth sequence field is 32 bits
SEQUENCE_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z: a fresh key's counter starts here
SEQUENCE_TICKS_PER_S = 4


class CommandRejected(Exception):
    """The stack ran the command and it failed; ``reason`` is the stack's own words."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} failed: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True)
class EventRecord:
    time_us: int
    name: str
    severity: int
    text: str


# --- sequence numbers -------------------------------------------------------------------
class SequenceCounter(Protocol):
    """Where a ground takes its telecommand sequence numbers from."""

    def take(self) -> int: ...

    def close(self) -> None: ...


class MemorySequence:
    """Numbers from ``start`` up, in this process only: for a key no other console uses and
    a stack that has not seen it yet (a test's fresh key)."""

    def __init__(self, start: int = 1) -> None:
        self._next = start
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            number = self._next
            if number > MAX_SEQUENCE:
                raise ConfigError(_exhausted())
            self._next += 1
            return number

    def close(self) -> None:
        pass


def _exhausted() -> str:
    return (f"this key has used every telecommand sequence number (up to {MAX_SEQUENCE}); "
            "give the stack and the ground a new key id")  # fmt: skip


def fresh_sequence_start(now: float | None = None) -> int:
    """Where a key's counter starts when none is kept: quarter seconds since 2024."""
    now = time.time() if now is None else now
    return max(1, int((now - SEQUENCE_EPOCH) * SEQUENCE_TICKS_PER_S))


class SequenceFile:
    """The next sequence number of one key, kept in a file shared by every console of
    this user on this machine; each number is taken under an exclusive ``flock``, so no
    two consoles (threads or processes) ever take the same one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot keep telecommand sequence numbers in {self.path}: "
                f"{exc.strerror or exc}; set ORBITHIL_STATE_DIR to a writable directory"
            ) from None

    @classmethod
    def for_key(cls, key_id: int) -> SequenceFile:
        """The counter of ``key_id`` in the user's state directory."""
        from orbithil.settings import state_dir

        return cls(state_dir("ground") / f"tc-sequence-{key_id}")

    def take(self) -> int:
        if self._fd < 0:
            raise ValueError(f"sequence file {self.path} is closed")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            number = self.peek()
            if number > MAX_SEQUENCE:
                raise ConfigError(_exhausted())
            self.store(number + 1)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return number

    def peek(self) -> int:
        """The next number (under the caller's lock)."""
        if self._fd < 0:
            raise ValueError(f"sequence file {self.path} is closed")
        text = os.pread(self._fd, 64, 0).decode(errors="replace").strip()
        if not text:
            return fresh_sequence_start()
        if text.isdigit():
            return int(text)
        raise ConfigError(
            f"sequence file {self.path} holds {text[:20]!r}, not a number; delete it "
            "(the next command then starts from the clock)"
        )

    def store(self, number: int) -> None:
        """Make ``number`` the next (under the caller's lock)."""
        data = f"{number}\n".encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SharedSequence:
    """Numbers for several keys from their counter files at once: each number is above
    what every one of the counters has given and is written to all of them (under all
    their locks, taken in key order), so a ground signing with several keys (the ground
    server: its own and its tenants') never gives two of its commands one number, and
    each key's counter stays ahead of the stack's replay window for that key."""

    def __init__(self, counters: list[SequenceFile]) -> None:
        if not counters:
            raise ValueError("a shared sequence needs at least one counter")
        self.counters = sorted(counters, key=lambda c: str(c.path))

    @classmethod
    def for_keys(cls, key_ids) -> SharedSequence:
        return cls([SequenceFile.for_key(k) for k in sorted(set(key_ids))])

    def take(self) -> int:
        taken: list[SequenceFile] = []
        try:
            for counter in self.counters:
                fcntl.flock(counter._fd, fcntl.LOCK_EX)
                taken.append(counter)
            number = max(counter.peek() for counter in self.counters)
            if number > MAX_SEQUENCE:
                raise ConfigError(_exhausted())
            for counter in self.counters:
                counter.store(number + 1)
            return number
        finally:
            for counter in taken:
                fcntl.flock(counter._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for counter in self.counters:
            counter.close()


# --- arguments as an operator writes them -----------------------------------------------------
def arg_usage(arg: Arg) -> str:
    """``mode=SAFE|NOMINAL|COMPUTE``, ``period=0..65535``, ``[chip=0..7]`` (has a default)."""
    values = "|".join(arg.values) if arg.type == "enum" else f"{arg.min}..{arg.max}"
    text = f"{arg.name}={values}"
    return f"[{text}]" if arg.default is not None else text


def command_usage(command: Command) -> str:
    """A command with its arguments, e.g. ``SET_MODE mode=SAFE|NOMINAL|COMPUTE``."""
    return " ".join([command.name, *(arg_usage(a) for a in command.args)])


def canonical_args(command: Command, args: dict) -> dict:
    """Enumerated arguments in the dictionary's spelling, whatever their case
    (``mode=nominal`` -> ``NOMINAL``); everything else as given."""
    out = dict(args)
    for arg in command.args:
        value = out.get(arg.name)
        if arg.type == "enum" and isinstance(value, str):
            for name in arg.values:
                if name.lower() == value.lower():
                    out[arg.name] = name
                    break
    return out


def show_value(name: str, value: float) -> str:
    """A telemetry value as an operator reads it: an enumerated channel's name
    (MODE 1: NOMINAL), integers without a decimal point, the dictionary hash in hex."""
    channel = CHANNEL_BY_NAME.get(name)
    label = channel.value_name(value) if channel is not None else None
    if label is not None:
        return label
    if name == "DICT_HASH":
        return f"{int(value):08x}"
    return f"{int(value)}" if float(value).is_integer() else f"{value:.6g}"


class Ground:
    """A ground console over UDP: commands signed with ``key`` (id ``key_id``), numbered
    from ``sequence`` (default: this key's counter file, see the module docstring)."""

    def __init__(self, stack_address: tuple[str, int], *, key_id: int, key: bytes,
                 bind: tuple[str, int] = ("127.0.0.1", 0),
                 sequence: SequenceCounter | None = None) -> None:  # fmt: skip
        self.stack = stack_address
        self.key_id = key_id
        self.key = key
        self.sequence = sequence if sequence is not None else SequenceFile.for_key(key_id)
        self.auth_seq = 0  # the last sequence number sent
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)  # ride out bursts
        self.sock.bind(bind)
        self.sock.settimeout(0.1)
        self.telemetry: dict[str, float] = {}
        self.telemetry_at: dict[str, float] = {}  # time.monotonic() of each channel's value
        self.events: collections.deque[EventRecord] = collections.deque(maxlen=10_000)
        self.verify: dict[int, list[tuple[Stage, str]]] = collections.defaultdict(list)
        self.sent: dict[int, int] = {}  # sequence -> opcode of what this ground sent
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
        self.sequence.close()

    def __enter__(self) -> Ground:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- uplink ---
    def next_sequence(self) -> int:
        """Take the next sequence number (for a telecommand built by hand)."""
        self.auth_seq = self.sequence.take()
        return self.auth_seq

    def send(self, name: str, **args) -> int:
        """Send a telecommand (arguments checked against the dictionary; enumerated values
        in any case); its sequence number."""
        return self.send_signed(self.key_id, self.key, name, args)

    def send_signed(self, key_id: int, key: bytes, name: str, args: dict) -> int:
        """``send``, signed with another key (a ground server signs its tenants' commands
        with their keys); the number comes from this ground's sequence all the same."""
        try:
            command = COMMAND_BY_NAME[name]
        except KeyError:
            raise ValueError(
                f"no command {name!r}; commands: {', '.join(COMMAND_BY_NAME)}"
            ) from None
        data = command.encode_args(**canonical_args(command, args))
        seq = self.next_sequence()
        self.send_raw(ccsds.telecommand(key_id, key, seq, command.opcode, data, seq))
        return seq

    def send_raw(self, packet: bytes) -> None:
        """Send bytes as they are; a telecommand's sequence and opcode are noted, so its
        verification is recognised as this ground's."""
        if len(packet) >= ccsds.HEADER + ccsds.TC_FIXED.size:
            _, seq, opcode = ccsds.TC_FIXED.unpack_from(packet, ccsds.HEADER)
            with self._cond:
                self.sent[seq] = opcode
        self.sock.sendto(packet, self.stack)

    def command(self, name: str, *, timeout: float = 10.0, **args) -> Stage:
        """Send and wait for COMPLETED; CommandRejected on FAILED, TimeoutError if neither."""
        self.command_result(name, timeout=timeout, **args)
        return Stage.COMPLETED

    def command_result(self, name: str, *, timeout: float = 10.0, **args) -> str:
        """Send, wait for COMPLETED and return its text: what the command made or found
        (SUBMIT_JOB: its job and hold; QUOTE_JOB: the quote), "" for most commands.
        CommandRejected on FAILED, TimeoutError if neither came."""
        seq = self.send(name, **args)
        stage, reason = self.wait_verification(seq, timeout=timeout)
        if stage is Stage.FAILED:
            raise CommandRejected(name, reason)
        return reason

    # --- waiting, with deadlines ---
    def _wait(self, check: Callable[[], object], timeout: float, what: str,
              seen: Callable[[], str]):  # fmt: skip
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = check()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout:g} s; {seen()}")
                self._cond.wait(remaining)

    def wait_verification(self, seq: int, *, timeout: float = 10.0) -> tuple[Stage, str]:
        """The final stage (COMPLETED or FAILED) and reason of telecommand ``seq``."""

        def done():
            for stage, reason in self.verify.get(seq, ()):
                if stage in (Stage.COMPLETED, Stage.FAILED):
                    return stage, reason
            return None

        def seen() -> str:
            stages = [s.name for s, _ in self.verify.get(seq, ())]
            if stages:
                return f"stages seen: {', '.join(stages)}"
            return ("no verification of it seen (wrong key or key id, a sequence number the "
                    "stack refused, or the stack is not reachable)")  # fmt: skip

        opcode = self.sent.get(seq)
        name = COMMAND_BY_OPCODE[opcode].name if opcode in COMMAND_BY_OPCODE else "telecommand"
        return self._wait(done, timeout, f"completion of {name} {seq}", seen)

    def wait_telemetry(self, name: str, predicate: Callable[[float], bool] = lambda v: True, *,
                       timeout: float = 10.0) -> float:  # fmt: skip
        """The first value of channel ``name`` meeting ``predicate`` (the latest value may
        already do); TimeoutError saying the last value seen if none does in time."""
        if name not in CHANNEL_BY_NAME:
            raise ValueError(f"no telemetry channel {name!r} in the dictionary")

        def check():
            value = self.telemetry.get(name)
            return (value,) if value is not None and predicate(value) else None

        def seen() -> str:
            value = self.telemetry.get(name)
            if value is None:
                return (f"no value of {name} received ({self.packets['hk']} housekeeping "
                        "packets): the stack sends telemetry to a ground after its first "
                        "authenticated telecommand")  # fmt: skip
            shown = show_value(name, value)
            if shown != f"{value:g}" and not shown.isdigit():
                shown += f" ({value:g})"
            age = time.monotonic() - self.telemetry_at[name]
            return f"last value {shown}, {age:.1f} s ago"

        return self._wait(check, timeout, f"telemetry {name} meeting the predicate", seen)[0]

    def wait_event(self, name: str, predicate: Callable[[EventRecord], bool] = lambda e: True, *,
                   timeout: float = 10.0, since: int = 0) -> EventRecord:  # fmt: skip
        """The first event ``name`` from index ``since`` of ``events`` meeting
        ``predicate``; TimeoutError saying the last such event (or any event) seen."""

        def check():
            for event in list(self.events)[since:]:
                if event.name == name and predicate(event):
                    return event
            return None

        def seen() -> str:
            events = list(self.events)[since:]
            same = [e for e in events if e.name == name]
            if same:
                last = same[-1].text
                return f"{len(same)} {name} seen, none meeting the predicate; last: {last!r}"
            if events:
                return f"last event seen: {events[-1].name} {events[-1].text!r}"
            return "no event seen"

        return self._wait(check, timeout, f"event {name}", seen)

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
                now = time.monotonic()
                for channel_id, value in values.items():
                    channel = CHANNEL_BY_ID.get(channel_id)
                    if channel is not None:
                        self.telemetry[channel.name] = value
                        self.telemetry_at[channel.name] = now
                self.packets["hk"] += 1
            elif apid == APID_EVENT:
                t, event_id, severity, text = ccsds.parse_event(data)
                name = EVENT_BY_ID[event_id].name if event_id in EVENT_BY_ID else str(event_id)
                self.events.append(EventRecord(t, name, severity, text))
                self.packets["event"] += 1
            elif apid == APID_VERIFY:
                _, seq, opcode, stage, reason = ccsds.parse_verify(data)
                if self.sent.get(seq) != opcode:
                    # another ground's command (a configured ground hears every one)
                    self.packets["verify_other"] += 1
                    return
                self.verify[seq].append((stage, reason))
                self.packets["verify"] += 1
            self._cond.notify_all()
