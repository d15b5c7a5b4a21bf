"""The ground link with several grounds: a reply goes to whoever sent the command, every
authenticated ground hears housekeeping, consoles share one sequence counter per key (so
they interleave, and restart, without replay refusals), a TCP client that never reads is
dropped without stalling anything, and nobody hears telemetry before authenticating; the
console's (``orbithil ground``) mends and the timed-out waits that say what they saw."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from orbithil.flight import ccsds
from orbithil.flight.dictionary import (
    APID_HK,
    APID_VERIFY,
    CHANNEL_BY_NAME,
    CHANNELS,
    COMMAND_BY_NAME,
    DICT_HASH32,
    MODES,
    export_json,
)
from orbithil.flight.ground import (
    Ground,
    MemorySequence,
    SequenceFile,
    canonical_args,
    fresh_sequence_start,
    show_value,
)
from orbithil.tools import cli

MODEL = "model://?harden=1"


def _console(fs, sequence) -> Ground:
    """Another ground console with the stack's key (id 1)."""
    return Ground(fs.stack.link.udp_address, key_id=1, key=fs.ground.key, sequence=sequence)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


# --- several grounds over UDP ---------------------------------------------------------------
def test_two_ground_sessions_in_a_row_both_get_their_replies(flight_stack, tmp_path):
    fs = flight_stack(MODEL, hk_period_ms=20)
    counter = tmp_path / "tc-sequence-1"
    for mode in ("NOMINAL", "SAFE"):  # the second session used to time out
        with _console(fs, SequenceFile(counter)) as g:
            assert g.command("SET_MODE", mode=mode, timeout=5) is ccsds.Stage.COMPLETED
            g.wait_telemetry("MODE", lambda v, m=mode: v == MODES.index(m), timeout=5)


def test_replies_go_to_their_sender_and_housekeeping_to_every_ground(flight_stack, tmp_path):
    fs = flight_stack(MODEL, hk_period_ms=20)
    fs.stack.link.ground = None  # no configured ground: authentication alone decides
    counter = tmp_path / "tc-sequence-1"
    with _console(fs, SequenceFile(counter)) as a, _console(fs, SequenceFile(counter)) as b:
        time.sleep(0.2)  # ten housekeeping periods: none reaches a ground that never sent
        assert a.packets["hk"] == b.packets["hk"] == 0
        seq_a = a.send("SET_MODE", mode="NOMINAL")
        seq_b = b.send("NOOP")
        assert a.wait_verification(seq_a, timeout=5)[0] is ccsds.Stage.COMPLETED
        assert b.wait_verification(seq_b, timeout=5)[0] is ccsds.Stage.COMPLETED
        a.wait_telemetry("MODE", lambda v: v == 1, timeout=5)
        b.wait_telemetry("MODE", lambda v: v == 1, timeout=5)
        b.wait_telemetry("GROUND_ENDPOINTS", lambda v: v == 2, timeout=5)
        # each heard its own verification only (the other's never reached it)
        assert set(a.verify) == {seq_a} and a.packets["verify_other"] == 0
        assert set(b.verify) == {seq_b} and b.packets["verify_other"] == 0
    assert sorted(e.split()[0] for e in fs.stack.link.endpoints()) == ["udp", "udp"]


def test_two_consoles_interleave_commands_without_replay_refusals(
    flight_stack, tmp_path, monkeypatch
):
    monkeypatch.setenv("ORBITHIL_STATE_DIR", str(tmp_path))
    fs = flight_stack(MODEL, hk_period_ms=20)
    address, key = fs.stack.link.udp_address, fs.ground.key
    older = Ground(address, key_id=1, key=key)  # the per-key counter file (default)
    time.sleep(0.1)  # started more than 64 ms apart: clock-based numbers locked them out
    newer = Ground(address, key_id=1, key=key)
    try:
        for _ in range(5):
            newer.command("NOOP", timeout=5)
            older.command("NOOP", timeout=5)
        older.close()
        older = Ground(address, key_id=1, key=key)  # a restarted console continues
        older.command("NOOP", timeout=5)
        newer.command("NOOP", timeout=5)
    finally:
        older.close()
        newer.close()
    fs.ground.wait_telemetry("CMD_COMPLETED", lambda v: v == 12, timeout=5)
    assert fs.ground.telemetry["TC_REJECTED_REPLAY"] == 0
    assert (tmp_path / "ground" / "tc-sequence-1").read_text().strip().isdigit()


def test_consoles_never_take_the_same_sequence_number(tmp_path):
    path = tmp_path / "tc-sequence-3"
    taken: list[int] = []
    lock = threading.Lock()

    def console() -> None:  # its own file description: flock works between them
        counter = SequenceFile(path)
        try:
            numbers = [counter.take() for _ in range(200)]
        finally:
            counter.close()
        with lock:
            taken.extend(numbers)

    threads = [threading.Thread(target=console) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    first = min(taken)
    assert sorted(taken) == list(range(first, first + 800))
    assert first >= fresh_sequence_start() - 60 * 4  # a fresh key starts from the clock
    assert int(path.read_text()) == first + 800
    path.write_text("garbage\n")
    with pytest.raises(ValueError, match="not a number; delete it"):
        SequenceFile(path).take()


# --- TCP clients ----------------------------------------------------------------------------
def _telecommand(fs, name: str = "NOOP", **args) -> tuple[int, bytes]:
    command = COMMAND_BY_NAME[name]
    seq = fs.ground.next_sequence()  # the fixture console's counter: never a replay
    return seq, ccsds.telecommand(1, fs.ground.key, seq, command.opcode,
                                  command.encode_args(**args))  # fmt: skip


class TcpReader:
    """A TCP ground that reads everything, counting packets by APID in a thread."""

    def __init__(self, address) -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.sock.settimeout(0.1)
        self.counts: Counter = Counter()
        self.verified: list[tuple[int, ccsds.Stage]] = []
        self.closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                return
            buffer += chunk
            while (n := ccsds.packet_length(buffer)) is not None and len(buffer) >= n:
                header, data = ccsds.unpack(buffer[:n])
                buffer = buffer[n:]
                self.counts[header.apid] += 1
                if header.apid == APID_VERIFY:
                    _, seq, _, stage, _ = ccsds.parse_verify(data)
                    self.verified.append((seq, stage))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _heard_nothing(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0.1)
    return not readable


def _closed_by_the_stack(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the stack has closed the connection (whatever was still buffered read)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def test_a_tcp_client_that_never_reads_is_dropped_and_stalls_nothing(flight_stack):
    fs = flight_stack(MODEL, hk_period_ms=20, tcp_port=0)
    link = fs.stack.link
    link.client_queue_bytes = 64 << 10
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.settimeout(5)
    stalled.connect(link.tcp_address)
    reader = TcpReader(link.tcp_address)
    try:
        stalled.sendall(_telecommand(fs)[1])
        reader.sock.sendall(_telecommand(fs)[1])
        # the configured ground and both TCP clients
        fs.ground.wait_telemetry("GROUND_ENDPOINTS", lambda v: v == 3, timeout=5)
        # a telemetry burst (paced, as a busy stack makes it): the stalled client's buffers
        # fill, its queue passes the limit and it is dropped; no send ever waits for it
        data = ccsds.hk_data(0, DICT_HASH32, [(c.id, 1.0) for c in CHANNELS])
        longest = 0.0
        for _ in range(400):
            for _ in range(20):
                start = time.perf_counter()
                link.send(APID_HK, data)
                longest = max(longest, time.perf_counter() - start)
            if link.clients_dropped:
                break
            time.sleep(0.005)
        assert link.clients_dropped == 1 and longest < 1.0, (link.clients_dropped, longest)
        event = fs.ground.wait_event("TM_CLIENT_DROPPED", timeout=5)
        assert "not reading" in event.text
        fs.ground.wait_telemetry("TM_CLIENTS_DROPPED", lambda v: v == 1, timeout=5)
        # telecommands are still handled, and the reading client still hears telemetry
        assert fs.ground.command("NOOP", timeout=5) is ccsds.Stage.COMPLETED
        heard = reader.counts[APID_HK]
        _wait(lambda: reader.counts[APID_HK] >= heard + 5, 5, "housekeeping to the reader")
        assert not reader.closed
        assert _closed_by_the_stack(stalled)
    finally:
        stalled.close()
        reader.close()


def test_tcp_clients_hear_telemetry_only_after_an_authenticated_telecommand(flight_stack):
    fs = flight_stack(MODEL, hk_period_ms=20, tcp_port=0)
    address = fs.stack.link.tcp_address
    first = socket.create_connection(address, timeout=5)
    second = TcpReader(address)
    try:
        forged = ccsds.telecommand(1, b"\x00" * 32, 7, COMMAND_BY_NAME["NOOP"].opcode, b"")
        first.sendall(forged)
        fs.ground.wait_telemetry("TC_REJECTED_AUTH", lambda v: v == 1, timeout=5)
        heard = fs.ground.packets["hk"]
        _wait(lambda: fs.ground.packets["hk"] >= heard + 5, 5, "housekeeping periods")
        assert _heard_nothing(first) and sum(second.counts.values()) == 0
        # the second authenticates: it hears its reply and housekeeping; the first is
        # still connected (a newcomer no longer disconnects it) and still hears nothing
        seq, noop = _telecommand(fs)
        second.sock.sendall(noop)
        _wait(lambda: (seq, ccsds.Stage.COMPLETED) in second.verified, 5, "verification")
        _wait(lambda: second.counts[APID_HK] >= 3, 5, "housekeeping to the second")
        assert _heard_nothing(first)
        first.sendall(_telecommand(fs)[1])
        first.settimeout(5)
        assert first.recv(65536)  # now it hears
        assert not second.closed
    finally:
        first.close()
        second.close()


def test_unauthenticated_tcp_clients_make_way_and_time_out(flight_stack):
    fs = flight_stack(MODEL, hk_period_ms=20, tcp_port=0)
    link = fs.stack.link
    link.max_clients = 2
    idle = socket.create_connection(link.tcp_address, timeout=5)
    member = TcpReader(link.tcp_address)
    try:
        member.sock.sendall(_telecommand(fs)[1])
        _wait(lambda: member.counts[APID_HK] >= 1, 5, "housekeeping to the member")
        # every slot taken: a newcomer replaces the idle unauthenticated client (long before
        # its 10 s to authenticate are up), never the authenticated one
        newcomer = socket.create_connection(link.tcp_address, timeout=5)
        try:
            assert _closed_by_the_stack(idle, timeout=5)
            link.auth_timeout_s = 0.5  # left unauthenticated, the newcomer is closed
            assert _closed_by_the_stack(newcomer, timeout=5)
        finally:
            newcomer.close()
        heard = member.counts[APID_HK]
        _wait(lambda: member.counts[APID_HK] >= heard + 3, 5, "housekeeping to the member")
        assert not member.closed
    finally:
        idle.close()
        member.close()


# --- the console: orbithil ground -----------------------------------------------------------
@pytest.fixture
def console(flight_stack, tmp_path, monkeypatch, capsys):
    """Run ``orbithil ground`` (in this process) against a stack; returns (exit code,
    stdout, stderr). Sequence numbers go to a counter file under tmp_path."""
    monkeypatch.setenv("ORBITHIL_STATE_DIR", str(tmp_path / "state"))
    fs = flight_stack(MODEL, hk_period_ms=20)
    keys = tmp_path / "keys"
    keys.write_text(f"1 {fs.ground.key.hex()}\n")
    host, port = fs.stack.link.udp_address

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli.main(["ground", "--stack", f"{host}:{port}", "--keys", str(keys), *args])
        out, err = capsys.readouterr()
        return code, out, err

    run.stack = fs
    return run


def test_console_takes_enum_values_in_any_case_and_shows_their_names(console):
    code, out, err = console("--send", "set_mode mode=nominal", "--send",
                             "SET_POLICY policy=RERUN", "--watch", "0.3")  # fmt: skip
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line[:2] == "  "}
    assert rows["MODE"][0] == "NOMINAL" and rows["POLICY"][0] == "rerun"
    assert rows["CHIP0_STATE"][0] == "healthy"
    assert rows["ENERGY"][1:] == ["cycles", "x", "EPC"]


def test_console_messages_name_the_command_once_and_quit_stops(console):
    sends = ["SET_MODE mode=COMPUTE", "NOOP timeout=3", "FLY_TO_MARS", "quit", "NOOP"]
    code, out, err = console(*(arg for line in sends for arg in ("--send", line)))
    assert code == 1
    lines = err.splitlines()
    assert lines == [
        "SET_MODE: failed: mode SAFE -> COMPUTE is not allowed",
        "NOOP: refused: unknown argument timeout (it takes no arguments)",
        "FLY_TO_MARS: refused: no command of that name; HELP lists the commands",
    ], lines  # and nothing after quit
    code, out, err = console("--send", "EXIT", "--send", "NOOP", "--json")
    assert code == 0 and json.loads(out)["commands"] == []
    code, out, err = console("--send", "SET_MODE", "--json")
    [record] = json.loads(out)["commands"]
    assert record["reason"] == "missing argument mode (arguments: mode=SAFE|NOMINAL|COMPUTE)"
    console.stack.ground.wait_telemetry("CMD_FAILED", lambda v: v == 1, timeout=5)
    assert console.stack.ground.telemetry["TC_REJECTED_REPLAY"] == 0


def test_console_help_shows_enum_values_and_ranges(console):
    code, out, _ = console("--send", "HELP")
    assert code == 0
    assert "  SET_MODE mode=SAFE|NOMINAL|COMPUTE  -- " in out
    assert "SET_POLICY policy=none|rerun|dmr|tmr" in out
    assert "SET_SCRUB period=0..65535" in out and "SUBMIT_JOB first=0..65535 count=1..256" in out
    assert "CHIP_INJECT kind=reg|mem index=0..2047 bit=0..38 copy=0..2 [chip=0..7]" in out
    assert "QUIT or EXIT" in out


def test_interactive_console_quits_on_quit(console, monkeypatch):
    lines = iter(["noop", "quit"])

    def typed(prompt: str) -> str:
        return next(lines)  # a third read would raise StopIteration

    monkeypatch.setattr("builtins.input", typed)
    code, out, err = console()
    assert code == 0 and "NOOP: completed" in out, err


# --- the ground client and the dictionary -----------------------------------------------------
def test_a_timed_out_wait_says_the_last_value_it_saw(flight_stack):
    fs = flight_stack(MODEL, hk_period_ms=20)
    g = fs.ground
    g.command("SET_MODE", mode="NOMINAL", timeout=5)
    g.wait_telemetry("MODE", lambda v: v == 1, timeout=5)
    with pytest.raises(TimeoutError, match=r"telemetry MODE .* last value NOMINAL \(1\), "):
        g.wait_telemetry("MODE", lambda v: v == 2, timeout=0.2)
    g.wait_event("MODE_CHANGED", timeout=5)
    with pytest.raises(TimeoutError, match="1 MODE_CHANGED seen, none meeting the predicate; "
                       "last: 'mode SAFE -> NOMINAL'"):  # fmt: skip
        g.wait_event("MODE_CHANGED", lambda e: "COMPUTE" in e.text, timeout=0.2)
    with _console(fs, MemorySequence(10**6)) as silent:  # has sent nothing: hears nothing
        with pytest.raises(TimeoutError, match="no value of MODE received"):
            silent.wait_telemetry("MODE", timeout=0.2)
        with pytest.raises(TimeoutError, match="no event seen"):
            silent.wait_event("JOB_DONE", timeout=0.1)


def test_enumerated_channels_carry_their_value_names_in_the_dictionary():
    channels = {c["name"]: c for c in json.loads(export_json())["channels"]}
    assert channels["MODE"]["values"] == list(MODES)
    assert channels["POLICY"]["values"] == ["none", "rerun", "dmr", "tmr"]
    assert channels["CHIP7_STATE"]["values"] == ["healthy", "fenced", "out", "throttled"]
    assert channels["ENERGY"]["units"] not in ("", "units")
    assert {"TM_CLIENTS_DROPPED", "GROUND_ENDPOINTS"} <= set(channels)
    assert show_value("MODE", 2.0) == "COMPUTE" and show_value("CHIP0_STATE", 3) == "throttled"
    assert show_value("MODE", 7) == "7" and show_value("SOC", 0.5) == "0.5"
    assert CHANNEL_BY_NAME["UPTIME_S"].value_name(1) is None
    set_mode, policy = COMMAND_BY_NAME["SET_MODE"], COMMAND_BY_NAME["SET_POLICY"]
    assert canonical_args(set_mode, {"mode": "compute"}) == {"mode": "COMPUTE"}
    assert canonical_args(policy, {"policy": "TMR"}) == {"policy": "tmr"}


def test_the_flight_stack_fixture_is_documented_for_pytest_fixtures(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    text = done.stdout
    assert "flight_stack" in text, done.stderr
    doc = text[text.index("flight_stack") :]
    for name in ("command", "wait_telemetry", "wait_event", "CommandRejected"):
        assert name in doc
