"""The flight stack: dictionary, bus, scheduler, modes, FDIR, telecommand authentication
and the CCSDS link (on the model), contact windows, and the pytest plug-in's fixture."""

from __future__ import annotations

import json
import secrets
import socket
import struct
import time

import numpy as np
import pytest
from spacepackets.ccsds.spacepacket import (
    PacketId,
    PacketType,
    SpacePacketHeader,
    parse_space_packets,
)

from orbithil.flight import ccsds
from orbithil.flight.core import Bus, RateGroup, Scheduler
from orbithil.flight.dictionary import (
    APID_EVENT,
    APID_HK,
    APID_VERIFY,
    COMMAND_BY_NAME,
    DICT_HASH32,
    export_json,
)
from orbithil.flight.ground import CommandRejected
from orbithil.flight.link import ContactPlan, GroundLink
from orbithil.flight.services import Telemetry
from orbithil.payload.model import default_model


def test_dictionary_exports_json_with_its_hash():
    data = json.loads(export_json())
    assert int(data["hash"][:8], 16) == DICT_HASH32
    names = {c["name"] for c in data["commands"]}
    assert {"NOOP", "SET_MODE", "CHIP_INJECT"} <= names
    assert all({"units", "low", "high", "type"} <= set(c) for c in data["channels"])
    assert all(e["severity"] in ("DEBUG", "INFO", "WARNING", "CRITICAL") for e in data["events"])


def test_command_arguments_are_checked_against_the_dictionary():
    inject = COMMAND_BY_NAME["CHIP_INJECT"]
    raw = inject.encode_args(kind="mem", index=5, bit=38, copy=0)
    # chip left out: its default (0) is sent
    assert inject.decode_args(raw) == {"kind": "mem", "index": 5, "bit": 38, "copy": 0, "chip": 0}
    raw = inject.encode_args(kind="mem", index=5, bit=38, copy=0, chip=7)
    assert inject.decode_args(raw)["chip"] == 7
    with pytest.raises(ValueError, match=r"chip=8: allowed 0\.\.7"):
        inject.encode_args(kind="mem", index=5, bit=1, copy=0, chip=8)
    with pytest.raises(ValueError, match=r"bit=39: allowed 0\.\.38"):
        inject.encode_args(kind="mem", index=5, bit=39, copy=0)
    with pytest.raises(ValueError, match="kind='disk': use one of reg, mem"):
        inject.encode_args(kind="disk", index=5, bit=1, copy=0)
    with pytest.raises(ValueError, match="missing: copy"):
        inject.encode_args(kind="mem", index=5, bit=1)


def test_bus_queues_are_bounded_and_count_drops():
    bus = Bus()
    slow = bus.subscribe("t", depth=4)
    fast = bus.subscribe("t", depth=100)
    for i in range(10):
        bus.publish("t", i)
    assert slow.drain() == [6, 7, 8, 9] and slow.dropped == 6
    assert len(fast.drain()) == 10 and bus.dropped == 6


def test_scheduler_runs_groups_at_their_rates_and_counts_slips():
    ticks = {100: 0, 10: 0}
    slow_once = [True]

    def overrun():
        if slow_once[0] and ticks[100] == 20:
            slow_once[0] = False
            time.sleep(0.035)  # three and a half periods

    def fast():
        ticks[100] += 1
        overrun()

    sched = Scheduler([RateGroup(100, [fast]), RateGroup(10, [lambda: ticks.__setitem__(
        10, ticks[10] + 1)])])  # fmt: skip
    sched.start()
    time.sleep(0.6)
    sched.stop()
    # relations, not wall-clock counts (a loaded CI machine may run fewer ticks): the 10 Hz
    # group runs on every tenth tick, the overrun is counted as the 3-4 ticks it cost, and
    # ticks run plus ticks slipped never exceed the time that passed
    assert ticks[100] >= 21 and ticks[10] == (ticks[100] + 9) // 10, ticks
    assert sched.slips >= 3 and ticks[100] + sched.slips <= 62
    p50, p99 = sched.jitter()
    assert 0 <= p50 <= p99


def test_replay_window():
    key = secrets.token_bytes(32)
    auth = ccsds.Authenticator({7: key})
    for seq in (10, 12, 11, 70):  # out of order within the window is fine
        auth.check(ccsds.telecommand(7, key, seq, 1, b""))
    for seq, why in (
        (12, "already used"),
        (11, "already used"),
        (5, "older than the replay window"),
    ):
        with pytest.raises(ccsds.TcRejected, match=why):
            auth.check(ccsds.telecommand(7, key, seq, 1, b""))


def test_keys_come_from_a_file_or_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "keys"
    path.write_text(f"# ground keys\n3 {'ab' * 32}\n")
    assert ccsds.load_keys(path) == {3: bytes.fromhex("ab" * 32)}
    monkeypatch.setenv("ORBITHIL_TC_KEYS", f"1:{'cd' * 16},2:{'ef' * 16}")
    assert sorted(ccsds.load_keys()) == [1, 2]
    monkeypatch.setenv("ORBITHIL_TC_KEYS", "")
    with pytest.raises(ValueError, match="no telecommand keys"):
        ccsds.load_keys()
    path.write_text("1 abcd\n")
    with pytest.raises(ValueError, match=r"16\.\.64 bytes"):
        ccsds.load_keys(path)


def test_commands_modes_and_verification(flight_stack):
    fs = flight_stack("model://?harden=1", hk_period_ms=50)
    g = fs.ground
    assert g.wait_telemetry("MODE", lambda v: v == 0, timeout=5) == 0
    g.command("NOOP")
    with pytest.raises(CommandRejected, match="SAFE -> COMPUTE is not allowed"):
        g.command("SET_MODE", mode="COMPUTE")
    g.command("SET_MODE", mode="NOMINAL")
    with pytest.raises(CommandRejected, match="not allowed in NOMINAL"):
        g.command("RUN_INFERENCE", index=1)
    g.command("SET_MODE", mode="COMPUTE")
    g.command("RUN_INFERENCE", index=1)
    event = g.wait_event("INFERENCE_DONE", timeout=5)
    model = default_model()
    xs, labels = model.test_split()
    label = int(np.argmax(model.forward(xs[1])))
    assert f"class {label} (true {labels[1]})" in event.text
    g.wait_telemetry("INFERENCE_CLASS", lambda v: v == label, timeout=5)
    seq = g.send("SET_MODE", mode="SAFE")
    stages = [s for s, _ in g.verify[seq]] if g.wait_verification(seq) else []
    assert stages == [ccsds.Stage.ACCEPTED, ccsds.Stage.STARTED, ccsds.Stage.COMPLETED]
    assert g.telemetry["CMD_FAILED"] >= 0 and not g.dict_mismatch


def test_forged_replayed_and_malformed_telecommands_are_rejected_and_counted(flight_stack):
    fs = flight_stack("model://?harden=1", hk_period_ms=50)
    g = fs.ground
    g.wait_telemetry("MODE", timeout=5)
    forged = ccsds.telecommand(1, secrets.token_bytes(32), g.auth_seq + 1,
                               COMMAND_BY_NAME["SET_MODE"].opcode, b"\x01")  # fmt: skip
    g.send_raw(forged)
    unknown_key = ccsds.telecommand(9, secrets.token_bytes(32), 1, 1, b"")
    g.send_raw(unknown_key)
    # a good command, then the same bytes again (replay)
    seq = g.next_sequence()
    good = ccsds.telecommand(1, g.key, seq, COMMAND_BY_NAME["NOOP"].opcode, b"")
    g.send_raw(good)
    g.wait_verification(seq)
    g.send_raw(good)
    # malformed: garbage, a truncated packet, a telemetry APID, a bad length field
    g.send_raw(b"\x00\x01\x02")
    g.send_raw(good[:-5])
    g.send_raw(ccsds.pack(PacketType.TC, APID_HK, 0, b"x" * 40))
    g.send_raw(good[:4] + struct.pack(">H", 2000) + good[6:])
    g.wait_telemetry("TC_REJECTED_MALFORMED", lambda v: v == 4, timeout=5)
    g.wait_telemetry("TC_REJECTED_AUTH", lambda v: v == 2, timeout=5)
    g.wait_telemetry("TC_REJECTED_REPLAY", lambda v: v == 1, timeout=5)
    assert g.telemetry["MODE"] == 0  # the forged SET_MODE NOMINAL never ran
    assert g.telemetry["CMD_ACCEPTED"] == 1  # only the one good NOOP
    rejected = [e for e in g.events if e.name == "TC_REJECTED"]
    assert len(rejected) == 7 and all("rejected" in e.text for e in rejected)


def test_telemetry_packets_decode_with_spacepackets(flight_stack):
    fs = flight_stack("model://?harden=0", hk_period_ms=20)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    fs.stack.link.ground = listener.getsockname()
    raw = b"".join(listener.recv(65536) for _ in range(5))
    listener.close()
    ids = [PacketId(PacketType.TM, False, apid) for apid in (APID_HK, APID_EVENT, APID_VERIFY)]
    packets = parse_space_packets(bytearray(raw), ids)
    assert packets.scanned_bytes == len(raw) and not packets.skipped_ranges
    hk = [p for p in packets.tm_list if SpacePacketHeader.unpack(p).apid == APID_HK]
    assert hk, "no housekeeping packet parsed by spacepackets"
    header = SpacePacketHeader.unpack(hk[0])
    assert header.packet_type == PacketType.TM
    _, dict_hash, values = ccsds.parse_hk(bytes(hk[0][6:]))
    assert dict_hash == DICT_HASH32 and 1 in values


class ManualClock:
    """A clock the test moves: contact windows judged on it depend on no wall time."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def test_contact_windows_store_telemetry_send_it_oldest_first_and_count_losses():
    # in contact 0.0..0.4 s of every 1.2 s; the store holds 5 packets
    clock = ManualClock()
    tm = Telemetry()
    ground = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ground.bind(("127.0.0.1", 0))
    ground.settimeout(5)
    link = GroundLink(ccsds.Authenticator({1: bytes(32)}), clock, tm, events=None,
                      on_telecommand=lambda tc: None, ground=ground.getsockname(),
                      contacts=ContactPlan(((0.0, 0.4),), 1.2), store_depth=5)  # fmt: skip
    link.start()

    def hk(n: int) -> None:
        for _ in range(n):
            link.send(APID_HK, ccsds.hk_data(0, DICT_HASH32, [(1, 0.0)]))
        link.service()

    def received_until(last: int) -> list[int]:
        seen = []
        while not seen or seen[-1] != last:
            seen.append(ccsds.unpack(ground.recv(65536))[0].seq_count)
        return seen

    try:
        clock.t = 0.1  # up: sent at once
        hk(3)
        assert received_until(2) == [0, 1, 2] and tm.get("LINK_UP") == 1
        clock.t = 0.5  # down: 8 packets into a store of 5, the 3 oldest lost
        hk(8)
        assert tm.get("LINK_UP") == 0 and len(link.store) == 5
        assert link.lost == 3 and tm.get("TM_LOST") == 3 and tm.get("TM_STORED") == 5
        clock.t = 1.25  # the next pass: the store first, oldest first, then new packets
        hk(1)
        assert received_until(11) == [6, 7, 8, 9, 10, 11]  # nothing arrived while down
        assert len(link.store) == 0 and tm.get("TM_STORED") == 0
    finally:
        link.stop()
        ground.close()


def test_a_stack_out_of_contact_reports_its_losses_at_the_next_pass(flight_stack):
    fs = flight_stack("model://?harden=1", hk_period_ms=20, contact_passes=[[0.0, 0.4]],
                      contact_period_s=1.2, store_depth=5)  # fmt: skip
    g, link = fs.ground, fs.stack.link
    clock = link.clock = ManualClock(0.1)  # the link's contact plan follows the test
    g.wait_telemetry("LINK_UP", lambda v: v == 1, timeout=5)
    clock.t = 0.5
    deadline = time.monotonic() + 10
    while not (link.lost > 0 and len(link.store) == 5) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert link.lost > 0 and len(link.store) == 5
    clock.t = 1.25
    g.wait_telemetry("TM_LOST", lambda v: v > 0, timeout=5)
    g.wait_telemetry("TM_STORED", lambda v: v == 0, timeout=5)


def test_telecommands_and_telemetry_over_tcp(flight_stack):
    fs = flight_stack("model://?harden=1", hk_period_ms=20, tcp_port=0)
    conn = socket.create_connection(fs.stack.link.tcp_address, timeout=5)
    seq = fs.ground.next_sequence()
    set_mode = COMMAND_BY_NAME["SET_MODE"]
    args = set_mode.encode_args(mode="NOMINAL")
    conn.sendall(ccsds.telecommand(1, fs.ground.key, seq, set_mode.opcode, args))
    buffer, stages = b"", []
    deadline = time.monotonic() + 5
    while ccsds.Stage.COMPLETED not in stages and time.monotonic() < deadline:
        buffer += conn.recv(65536)
        while (n := ccsds.packet_length(buffer)) is not None and len(buffer) >= n:
            header, data = ccsds.unpack(buffer[:n])
            buffer = buffer[n:]
            if header.apid == APID_VERIFY:
                _, got_seq, _, stage, _ = ccsds.parse_verify(data)
                if got_seq == seq:
                    stages.append(stage)
    conn.close()
    assert stages == [ccsds.Stage.ACCEPTED, ccsds.Stage.STARTED, ccsds.Stage.COMPLETED]
    assert fs.stack.modes.mode == "NOMINAL"


def test_fdir_resets_a_chip_reporting_uncorrectable_memory_and_goes_safe(flight_stack):
    fs = flight_stack("model://?harden=1", hk_period_ms=50, scrub_period=4)
    g = fs.ground
    g.command("SET_MODE", mode="NOMINAL")
    g.wait_telemetry("SCRUB_PERIOD", lambda v: v == 4, timeout=5)
    # two bits of one SECDED word (with the scrubber paused, or it fixes the first before
    # the second lands); uncorrectable when the scrubber reads it again
    g.command("SET_SCRUB", period=0)
    for bit in (3, 4):
        g.command("CHIP_INJECT", kind="mem", index=77, bit=bit, copy=0)
    g.command("SET_SCRUB", period=4)
    # deadlines for a loaded machine: the recovery (reset, scrub, self-test, a health
    # poll) took over 5 s once while two test workers and a third job shared 2 cores
    g.wait_event("FDIR_TRIGGERED", lambda e: "uncorrectable-memory" in e.text, timeout=30)
    g.wait_event("CHIP_RESET", timeout=30)
    g.wait_telemetry("MODE", lambda v: v == 0, timeout=30)
    g.wait_telemetry("ECC_UNCORRECTABLE", lambda v: v == 0, timeout=30)
    g.command("SET_MODE", mode="NOMINAL")  # recovery
    g.wait_telemetry("MODE", lambda v: v == 1, timeout=30)


@pytest.mark.parametrize(
    ("parse", "data", "message"),
    [
        (ccsds.parse_hk, b"\x00" * 13, "housekeeping packet of 13 data bytes; its head needs 14"),
        (ccsds.parse_event, b"", "event packet of 0 data bytes"),
        (ccsds.parse_verify, b"\x00" * 14, "verification packet of 14 data bytes"),
        (ccsds.parse_verify, bytes(14) + b"\x09", "verification stage 9 is not one of 1..4"),
    ],
)
def test_a_short_or_bad_telemetry_field_is_a_packet_error(parse, data, message):
    # struct.error is no ValueError: it went past the grounds' `except ValueError` and
    # ended the console's receive thread
    with pytest.raises(ccsds.PacketError, match=message):
        parse(data)


def test_housekeeping_is_due_every_period_even_when_a_tick_starts_a_little_early(flight_stack):
    """The rate group ticks on a 10 ms grid with some start jitter: a packet every 10 ms is
    due at a tick 9.8 ms after the last one (it once waited for the next tick: 62 packets/s
    of 100), and a 1 s period still gives one packet a second, not one per 0.99 s."""
    stack = flight_stack("model://?harden=1", hk_period_ms=10).stack
    stack.scheduler.stop()  # nothing else moves the time of the last packet meanwhile
    stack._last_hk = 100.0
    assert stack.hk_due(100.0098) and stack.hk_due(100.010)
    assert not stack.hk_due(100.004)
    stack.hk_period = 1.0
    assert stack.hk_due(100.998) and not stack.hk_due(100.99)
