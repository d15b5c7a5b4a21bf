"""The HAL on the model backend: URLs, errors, the link's recovery (fast, no simulator)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from orbithil import hal
from orbithil.hal.icd import REG, NakReason


def test_unknown_scheme_says_what_is_valid():
    with pytest.raises(
        hal.HalError, match=r"unknown URL scheme 'ftp'; registered: fault, loop.*in 'ftp://example'"
    ):
        hal.open("ftp://example")


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(
        hal.HalError, match=r"unknown option 'hardened'.*valid options: clks_per_bit, fec, harden"
    ):
        hal.open("model://?hardened=1")
    with pytest.raises(hal.HalError, match=r"option harden='yes'.*use one of 0, 1"):
        hal.open("model://?harden=yes")


def test_fault_probabilities_are_checked():
    with pytest.raises(hal.HalError, match=r"drop='1.5'.*use a finite float >= 0 and <= 1"):
        hal.open("fault://model://?drop=1.5")


def test_a_missing_serial_device_is_a_hal_error():
    with pytest.raises(hal.HalError, match="cannot open serial port '/dev/ttyNOPE9'"):
        hal.open("/dev/ttyNOPE9")


def test_no_chip_on_the_line_is_a_link_timeout_with_the_attempts():
    with (
        hal.open("loop://", timeout=0.05, retries=2) as chip,  # hears only its own echo
        pytest.raises(hal.LinkTimeout, match="after 3 attempts") as info,
    ):
        chip.identify()
    assert info.value.attempts == 3 and info.value.cmd == 0x01


def test_model_identifies_and_computes():
    with hal.open("model://?harden=1") as chip:
        ident = chip.identify()
        assert ident.harden and ident.mem_words == 2048
        rng = np.random.default_rng(3)
        w = rng.integers(-128, 128, (64, 64)).astype(np.int8)
        x = rng.integers(-128, 128, 64).astype(np.int8)
        assert np.array_equal(chip.run_matvec(w, x), w.astype(np.int32) @ x.astype(np.int32))


def test_refusals_are_nak_errors_with_the_reason():
    with hal.open("model://") as chip:
        with pytest.raises(hal.NakError, match="BAD_ARG") as info:
            chip.write_reg(REG["ID"].addr, 5)
        assert info.value.reason == NakReason.BAD_ARG
        with pytest.raises(hal.NakError, match="NOT_ARMED"):
            chip.inject("mem", 0, 0)
        with pytest.raises(ValueError, match="no register 'NOPE'"):
            chip.read_reg("NOPE")
        with pytest.raises(ValueError, match=r"outside the chip's 0\.\.2047"):
            chip.read_mem(2040, 10)


def test_uncorrectable_operand_is_a_chip_fault():
    with hal.open("model://?harden=1") as chip:
        chip.arm_injection()
        chip.write_mem(0, np.arange(16, dtype=np.uint32))
        chip.inject("mem", 1, 3)
        chip.inject("mem", 1, 9)  # two flips in one word: uncorrectable
        with pytest.raises(hal.NakError, match=r"MEM_UNCORRECTABLE.*word 1"):
            chip.read_mem(0, 4)
        with pytest.raises(hal.ChipFault, match="uncorrectable operand"):
            chip.run_job(1, 8, 12, 1, 4)  # W is word 1, the damaged one
        assert chip.telemetry().uncorrectable_seen


@pytest.mark.parametrize("fec", ["off", "auto"])
def test_a_thousand_commands_over_a_corrupting_link_all_come_back_right(fec):
    """1% of bytes corrupted each way: retries with the same sequence number recover every
    command, and the chip's de-duplication means nothing ran twice; with FEC (auto) most
    damaged frames are repaired instead of resent."""
    rng = np.random.default_rng(11)
    url = "fault://model://?harden=1?flip=0.01&seed=7"
    with hal.open(url, timeout=0.05, retries=12, fec=fec) as chip:
        expected = {}
        for _ in range(1000):
            op = rng.integers(0, 3)
            if op == 0:
                value = int(rng.integers(0, 2**32))
                assert chip.write_reg("SCRATCH0", value) == value
                expected["SCRATCH0"] = value
            elif op == 1:
                words = rng.integers(0, 2**32, 8, dtype=np.uint64).astype(np.uint32)
                addr = int(rng.integers(0, 2040))
                chip.write_mem(addr, words)
                assert np.array_equal(chip.read_mem(addr, 8), words)
            else:
                assert chip.read_reg("SCRATCH0") == expected.get("SCRATCH0", 0)
        stats = chip.link.stats
        assert stats.retries > 0  # the faults were real and recovered from
        assert chip.link.port.corrupted > 0
        if fec == "off":
            assert stats.fec_requests == 0 and chip.link.deframer.frames_fec == 0
        else:
            assert stats.fec_requests > 0 and chip.link.deframer.bytes_corrected > 0
            assert chip.link.fec_capable is True


def test_fec_auto_stays_off_on_a_clean_line():
    with hal.open("model://?harden=1") as chip:
        for i in range(50):
            chip.write_reg("SCRATCH0", i)
        assert chip.link.stats.fec_requests == 0 and chip.link.fec_capable is None


def test_fec_on_sends_version2_frames_and_the_answers_are_version2():
    with hal.open("model://?harden=1", fec="on") as chip:
        assert chip.write_reg("SCRATCH0", 5) == 5
        assert chip.link.stats.fec_requests == 1  # the PING that asked went as version 1
        assert chip.link.deframer.frames_fec == 1


def test_fec_needs_a_chip_that_takes_it():
    """A chip built without FEC (a bench bitstream with injection): fec='on' is refused
    with a clear error, and auto keeps to version 1 on a noisy line."""
    with hal.open("model://?fec=0", fec="on") as chip:
        with pytest.raises(hal.HalError, match=r"built without link FEC.*fec='auto'"):
            chip.read_reg("ID")
        assert not chip.identity.fec
    url = "fault://model://?fec=0?flip=0.02&seed=3"
    with hal.open(url, timeout=0.05, retries=20) as chip:
        for i in range(100):
            assert chip.write_reg("SCRATCH0", i) == i
        assert chip.link.stats.retries > 0 and chip.link.stats.fec_requests == 0
        assert chip.link.fec_capable is False


def test_fec_mode_must_be_known():
    with pytest.raises(hal.HalError, match="auto, on, off"):
        hal.open("model://", fec="yes")


def test_socket_ports_send_at_once():
    """pyserial's socket:// leaves Nagle's algorithm on: a resend written before the chip
    answered would wait ~40 ms for the peer's delayed ACK. hal turns it off."""
    import socket

    from orbithil.hal.backends import open_port

    with socket.create_server(("127.0.0.1", 0)) as server:
        port, _ = open_port(f"socket://127.0.0.1:{server.getsockname()[1]}")
        try:
            assert port._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        finally:
            port.close()


def test_the_per_frame_link_rule_is_one_pure_function():
    from orbithil.hal.codec import Frame
    from orbithil.hal.icd import ACK_FLAG, NAK, Cmd, NakReason
    from orbithil.hal.link import Verdict, judge

    ack = Cmd.PING | ACK_FLAG
    assert judge(Frame(7, ack, b""), 7) is Verdict.ANSWER
    assert judge(Frame(6, ack, b""), 7) is Verdict.SKIP  # an answer to an earlier request
    assert judge(Frame(7, Cmd.PING, b""), 7) is Verdict.SKIP  # an echo of the request
    assert judge(Frame(7, NAK, bytes([NakReason.OVERRUN])), 7) is Verdict.WAIT
    assert judge(Frame(6, NAK, bytes([NakReason.BAD_CRC])), 7) is Verdict.SKIP  # stale NAK
    for reason in (NakReason.BAD_CRC, NakReason.COBS, NakReason.BAD_LENGTH):
        assert judge(Frame(7, NAK, bytes([reason])), 7) is Verdict.RESEND
    assert judge(Frame(7, NAK, bytes([NakReason.BAD_ARG])), 7) is Verdict.ANSWER
    assert judge(Frame(7, NAK, b""), 7) is Verdict.ANSWER
    # A frame NAK for a number not used lately: a garbled request, likely ours
    cobs = bytes([NakReason.COBS, 0])
    assert judge(Frame(2, NAK, cobs), 7, recent=(0, 5, 6)) is Verdict.UNCLAIMED
    assert judge(Frame(6, NAK, cobs), 7, recent=(0, 5, 6)) is Verdict.SKIP  # stale
    assert judge(Frame(0, NAK, cobs), 7, recent=(0, 5, 6)) is Verdict.SKIP  # a tiny run
    assert judge(Frame(2, NAK, bytes([NakReason.BAD_ARG])), 7, recent=(0,)) is Verdict.SKIP
    assert judge(Frame(2, ack, b""), 7, recent=(0,)) is Verdict.SKIP
    assert judge(Frame(2, NAK, cobs), 7) is Verdict.SKIP  # no ``recent``: the engine's rule


def test_the_engine_retries_as_often_as_the_hal():
    from orbithil.hal.link import DEFAULT_RETRIES
    from orbithil.sim import engine

    assert engine.ATTEMPTS == DEFAULT_RETRIES + 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout=0: use a finite"),
        ({"timeout": float("nan")}, "timeout=nan"),
        ({"timeout": float("inf")}, "timeout=inf"),
        ({"retries": -1}, "retries=-1: use a whole number from 0"),
        ({"fec": "maybe"}, "maybe"),
    ],
)
def test_open_checks_its_arguments(kwargs, message):
    with pytest.raises(hal.HalError, match=message):
        hal.open("model://", **kwargs)


def test_a_new_session_on_a_running_chip_is_never_answered_from_the_last_one():
    from orbithil.hal.chip import Chip
    from orbithil.hal.link import FrameLink
    from orbithil.hal.model import ChipModel, ModelPort

    port = ModelPort(ChipModel())  # one chip that keeps running, as a board does
    first = Chip(FrameLink(port, timeout_s=1.0))
    assert first.write_reg("SCRATCH0", 5) == 5
    second = Chip(FrameLink(port, timeout_s=1.0))  # numbers from 1 again
    assert second.write_reg("SCRATCH0", 9) == 9  # executed, not the stored answer
    assert second.read_reg("SCRATCH0") == 9


def test_a_failed_synchronisation_is_tried_again_before_the_next_request():
    from orbithil.hal.chip import Chip
    from orbithil.hal.fault import FaultPort
    from orbithil.hal.link import FrameLink
    from orbithil.hal.model import ChipModel, ModelPort

    model_port = ModelPort(ChipModel())
    first = Chip(FrameLink(model_port, timeout_s=1.0))
    first.write_reg("SCRATCH0", 111)  # seq 2 after the sync PING: the chip stores its answer
    port = FaultPort(model_port, drop=1.0)
    second = Chip(FrameLink(port, timeout_s=0.05, retries=0))
    with pytest.raises(hal.LinkTimeout):
        second.read_reg("SCRATCH0")  # the sync PING is lost
    port.drop = 0.0
    assert second.write_reg("SCRATCH0", 222) == 222  # synchronised first, so executed
    assert first.read_reg("SCRATCH0") == 222


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.inject("mem", 10**6, 99), r"inject memory word 1000000 .* use 0\.\.2047"),
        (lambda c: c.inject("mem", 5, 99), r"inject bit of a memory word 99 .* use 0\.\.38"),
        (lambda c: c.inject("reg", "SCRATCH0", 32), r"inject bit of a register 32 .* 0\.\.31"),
        (lambda c: c.inject("reg", "SCRATCH0", 1, 3), r"inject TMR copy 3 .* use 0\.\.2"),
        (lambda c: c.inject("reg", 300, 1), r"register address 300 .* use 0\.\.255"),
        (lambda c: c.inject("flop", 1, 1), r"inject kind must be 'reg' or 'mem', got 'flop'"),
        (lambda c: c.inject("mem", 1.5, 1), r"inject memory word 1\.5 is not an integer"),
        (lambda c: c.scrub(-1), r"scrub period .* -1 is out of range; use 0\.\.4294967295"),
        (lambda c: c.scrub(2**40), r"scrub period .* use 0\.\.4294967295"),
        (lambda c: c.write_reg("SCRATCH0", -1), r"register value -1 .* 0\.\.4294967295"),
        (lambda c: c.read_reg(256), r"register address 256 is out of range"),
        (lambda c: c.read_mem(-1, 2), r"word address -1 is out of range; use 0\.\.2047"),
        (lambda c: c.run_job(70000, 0, 0, 1, 4), r"run_job w_addr 70000 .* use 0\.\.65535"),
        (lambda c: c.run_job(0, 0, 0, 300, 4), r"run_job rows 300 .* use 0\.\.255"),
    ],
)
def test_chip_arguments_out_of_range_are_hal_errors_saying_what_is_valid(call, message):
    with hal.open("model://") as chip:
        chip.arm_injection()
        with pytest.raises(hal.ArgumentError, match=message) as info:
            call(chip)
        assert isinstance(info.value, hal.HalError) and isinstance(info.value, ValueError)
        assert chip.telemetry()["STATUS"] >> 5 & 1  # nothing was sent: still armed


# --- the link's waits, against a scripted line (no chip: exact timings) -------------------
class ScriptedLine:
    """A pyserial-like port: each write gets the next scripted answer, a list of (seconds
    after the write, bytes) pieces that become readable then. Like socket://, in_waiting
    says 1 however many bytes are waiting."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.writes = []
        self.timeout = 1.0
        self.reads = 0
        self._due = []  # (monotonic time, bytes), in order
        self._buffer = b""

    def write(self, data):
        self.writes.append(bytes(data))
        now = time.monotonic()
        if self.answers:
            self._due += [(now + after, piece) for after, piece in self.answers.pop(0)]
        return len(data)

    def _arrived(self):
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            self._buffer += self._due.pop(0)[1]
        return self._buffer

    def read(self, size=1):
        self.reads += 1
        deadline = time.monotonic() + (self.timeout or 0)
        while not self._arrived() and time.monotonic() < deadline:
            time.sleep(0.0005)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    @property
    def in_waiting(self):
        return 1 if self._arrived() else 0


def _noisy_link(answers, **kwargs):
    from orbithil.hal import codec
    from orbithil.hal.link import FrameLink, RttEstimator

    line = ScriptedLine(answers)
    link = FrameLink(line, timeout_s=5.0, retries=3, fec="off", **kwargs)
    link._synchronised = True  # no PING first: the script answers the request itself
    link._since_damage = 0  # a noisy line: the estimate is used
    est = link.rtt.setdefault(link._rtt_class(2, b"\x00", codec.FRAME_VERSION), RttEstimator())
    for _ in range(5):
        est.update(0.005)  # the chip starts answering in ~5 ms: an early give-up at ~5 ms
    return link, line


def _answer(seq, value=b"\x01\x02\x03\x04"):
    from orbithil.hal import codec
    from orbithil.hal.icd import ACK_FLAG, Cmd

    return codec.frame_encode(seq, Cmd.READ_REG | ACK_FLAG, value)


def test_an_answer_whose_closing_delimiter_was_damaged_is_taken_without_a_resend():
    """The answer came whole but its last delimiter arrived damaged (0x00 -> 0x40) and
    nothing follows: the run is longer than its header says, and cut there it is the
    answer, taken at once (before: dropped and asked for again, a second round trip)."""
    damaged = _answer(1)[:-1] + b"\x40"
    link, line = _noisy_link([[(0.001, damaged)], [(0.001, _answer(1))]], gap_s=2.0)
    started = time.monotonic()
    frame = link.transact(2, b"\x00")
    assert frame.payload == b"\x01\x02\x03\x04"
    assert len(line.writes) == 1 and link.stats.retries == 0
    assert link.deframer.frames_salvaged == 1
    assert time.monotonic() - started < 1.5  # not gap_s (2 s), not the timeout (5 s)


def test_an_answer_run_past_its_delimiter_that_is_no_frame_is_asked_for_again_at_once():
    """The closing delimiter and a byte of the answer damaged: cut where the header says,
    the run fails its CRC. The link drops it and resends at once, instead of waiting out a
    timeout or gap_s of silence."""
    damaged = bytearray(_answer(1)[:-1] + b"\x40")
    damaged[7] ^= 0x10
    link, line = _noisy_link([[(0.001, bytes(damaged))], [(0.001, _answer(1))]], gap_s=2.0)
    started = time.monotonic()
    frame = link.transact(2, b"\x00")
    assert frame.payload == b"\x01\x02\x03\x04"
    assert link.stats.lost_delimiters == 1 and link.stats.retries == 1
    assert link.stats.timeouts == 0 and link.stats.stalled_answers == 0
    assert time.monotonic() - started < 1.5  # not gap_s (2 s), not the timeout (5 s)
    assert line.writes[0] == line.writes[1]  # the same request, the same sequence number


def test_an_answer_split_by_a_byte_damaged_into_a_delimiter_is_taken_without_a_resend():
    """A version-2 answer whose version byte (0x02) arrived as 0x00: two runs, neither a
    frame. Put back together, the FEC repairs the byte: no second round trip."""
    from orbithil.hal import codec
    from orbithil.hal.icd import ACK_FLAG, Cmd

    good = codec.frame_encode(1, Cmd.READ_REG | ACK_FLAG, b"\x19\x01\x02\x03\x04", version=2)
    split = good[:2] + b"\x00" + good[3:]
    link, line = _noisy_link([[(0.001, split)], [(0.001, good)]])
    assert link.transact(2, b"\x00").payload == b"\x19\x01\x02\x03\x04"
    assert len(line.writes) == 1 and link.stats.damaged_answers == 0


def test_an_answer_already_arriving_is_waited_for_not_resent():
    """A tight estimate (~5 ms) and an answer that trickles in over ~40 ms, its first byte
    within the estimate: the link waits for its delimiter and resends nothing (a resend
    would make the chip send the same answer twice, delaying the next request)."""
    wire = _answer(1)
    pieces = [(0.002 + 0.004 * i, wire[i : i + 1]) for i in range(len(wire))]
    link, line = _noisy_link([pieces], gap_s=0.05)
    frame = link.transact(2, b"\x00")
    assert frame.payload == b"\x01\x02\x03\x04"
    assert len(line.writes) == 1 and link.stats.retries == 0 and link.stats.timeouts == 0


def test_an_answer_whose_opening_delimiter_has_come_is_waited_for_not_resent():
    """A simulator's bridge sends the delimiter that opens the chip's answer at once and
    the rest when it is whole; a slow moment (here ~40 ms against a ~5 ms estimate) must
    not make the link resend (the chip would send its answer twice, and the next request
    wait for the second copy)."""
    wire = _answer(1)
    link, line = _noisy_link([[(0.002, wire[:1]), (0.040, wire[1:])]], gap_s=0.5)
    assert link.transact(2, b"\x00").payload == b"\x01\x02\x03\x04"
    assert len(line.writes) == 1 and link.stats.timeouts == 0


def test_an_opening_delimiter_then_silence_is_resent_after_gap_s():
    link, line = _noisy_link([[(0.001, b"\x00")], [(0.001, _answer(1))]], gap_s=0.3)
    started = time.monotonic()
    assert link.transact(2, b"\x00").payload == b"\x01\x02\x03\x04"
    assert link.stats.timeouts == 1 and len(line.writes) == 2
    assert 0.3 <= time.monotonic() - started < 2.5  # gap_s, not the estimate nor the timeout


def test_on_a_clean_line_an_opening_delimiter_does_not_shorten_the_wait():
    """A slow simulator (Icarus on a busy machine) may take longer than gap_s to send the
    rest of a frame it has opened: a clean line waits the whole timeout, as before."""
    wire = _answer(1)
    link, line = _noisy_link([[(0.001, wire[:1]), (0.15, wire[1:])]], gap_s=0.03)
    link._since_damage = 1000  # a clean line for a long time
    assert link.transact(2, b"\x00").payload == b"\x01\x02\x03\x04"
    assert len(line.writes) == 1 and link.stats.retries == 0


def test_nothing_coming_back_is_resent_after_the_estimate_not_the_timeout():
    link, line = _noisy_link([[], [(0.001, _answer(1))]])
    started = time.monotonic()
    assert link.transact(2, b"\x00").payload == b"\x01\x02\x03\x04"
    assert link.stats.timeouts == 1 and len(line.writes) == 2
    assert time.monotonic() - started < 2.5  # ~5 ms + 4 x variation, not the timeout (5 s)


def test_half_an_answer_then_silence_is_resent_after_gap_s():
    wire = _answer(1)
    link, line = _noisy_link([[(0.001, wire[:6])], [(0.001, wire)]], gap_s=0.03)
    assert link.transact(2, b"\x00").payload == b"\x01\x02\x03\x04"
    assert link.stats.stalled_answers == 1 and len(line.writes) == 2


def test_whatever_has_arrived_is_taken_in_one_read_on_a_socket():
    """socket:// says in_waiting == 1 for any number of bytes: the link reads what has
    come without waiting instead of two bytes per call."""
    link, line = _noisy_link([[(0.001, _answer(1))]])
    link.transact(2, b"\x00")
    assert line.reads <= 4


def test_a_nak_for_a_number_nobody_sent_is_answered_with_a_resend_at_once():
    """The request's leading delimiter arrived damaged: the chip got one run of garbage
    and our frame, and NAKs it with whatever its second byte decoded to. The link resends
    at once instead of waiting out its estimate."""
    from orbithil.hal import codec
    from orbithil.hal.icd import NAK, NakReason

    garbled = codec.frame_encode(2, NAK, bytes([NakReason.COBS, 1]))
    link, line = _noisy_link([[(0.001, garbled)], [(0.001, _answer(1))]])
    link._recent.extend([250, 251])
    assert link.transact(2, b"\x00").payload == b"\x01\x02\x03\x04"
    assert link.stats.unclaimed_naks == 1 and link.stats.timeouts == 0
    assert len(line.writes) == 2


def test_a_noisy_line_gets_a_second_closing_delimiter_and_a_clean_one_does_not():
    link, line = _noisy_link([[(0.001, _answer(1))], [(0.001, _answer(2))]])
    link.transact(2, b"\x00")
    assert line.writes[0].endswith(b"\x00\x00") and line.writes[0].startswith(b"\x00")
    link._since_damage = 1000  # a clean line for a long time
    link.transact(2, b"\x00")
    assert line.writes[1].endswith(b"\x00") and not line.writes[1].endswith(b"\x00\x00")
