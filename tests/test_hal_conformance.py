"""One conformance suite for every backend: the model, the RTL under Verilator and Icarus
(both builds), and a board: a real one when ORBITHIL_BOARD is set, else the simulated chip
behind a pseudo-terminal, through pyserial's serial code. Hypothesis-generated command
sequences must give identical results on the model and on the RTL; for HARDEN=1 every
frame goes as version 2 (link FEC on), for HARDEN=0 as version 1.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orbithil import hal
from orbithil.hal import protocol as p
from orbithil.hal.icd import INJECT_ARM_MAGIC, REG, NakReason

BACKENDS = [
    pytest.param("model://?harden=1", id="model-h1"),
    pytest.param("model://?harden=0", id="model-h0"),
    pytest.param("sim://verilator?harden=1", id="verilator-h1", marks=pytest.mark.sim),
    pytest.param("sim://verilator?harden=0", id="verilator-h0", marks=pytest.mark.sim),
    pytest.param("sim://icarus?harden=1", id="icarus-h1", marks=pytest.mark.sim),
    pytest.param("sim://icarus?harden=0", id="icarus-h0", marks=pytest.mark.sim),
    pytest.param("board", id="board", marks=pytest.mark.board),
]
# Timing is modelled, not cycle-exact, in the model: these counters are not compared.
TIMING = {"UPTIME", "JOB_CYCLES", "ENERGY"}


@pytest.fixture(scope="module", params=BACKENDS)
def chip(request):
    url = request.param
    if url == "board":  # a real board, else the simulated chip behind a pseudo-terminal
        url = request.getfixturevalue("board_device")
    with hal.open(url, timeout=5.0) as opened:
        yield opened


@pytest.fixture
def fresh(chip):
    """The chip after a soft reset (registers and counters cleared; SRAM kept)."""
    chip.reset()
    return chip


def test_identifies_itself(fresh):
    ident = fresh.identify()
    assert ident.chip_id == 0x4F48494C and ident.mem_words == 2048
    if "harden=" in fresh.url:  # a board's URL does not say; the others do
        assert ident.harden == ("harden=1" in fresh.url)


def test_registers_round_trip(fresh):
    for value in (0, 1, 0xFFFF_FFFF, 0x1234_5678):
        assert fresh.write_reg("SCRATCH1", value) == value
        assert fresh.read_reg("SCRATCH1") == value
    with pytest.raises(hal.NakError) as info:
        fresh.write_reg("UPTIME", 1)
    assert info.value.reason == NakReason.BAD_ARG


def test_memory_blocks_round_trip(fresh):
    words = np.random.default_rng(1).integers(0, 2**32, 200, dtype=np.uint64).astype(np.uint32)
    fresh.write_mem(1500, words)
    assert np.array_equal(fresh.read_mem(1500, 200), words)


def test_matvec_matches_numpy(fresh):
    rng = np.random.default_rng(2)
    w = rng.integers(-128, 128, (32, 48)).astype(np.int8)
    x = rng.integers(-128, 128, 48).astype(np.int8)
    assert np.array_equal(fresh.run_matvec(w, x), w.astype(np.int32) @ x.astype(np.int32))
    assert fresh.telemetry()["JOB_COUNT"] == 1


def _raw_exchange(chip, wire: bytes, answers: int) -> list:
    """Write ``wire`` as is and read frames until ``answers`` came (5 s at most), then read
    on 0.3 s more for anything extra."""
    from orbithil.hal import codec

    port, deframer, frames = chip.link.port, codec.new_deframer(), []
    port.write(wire)
    deadline = time.monotonic() + 5.0
    extra_until = None
    while time.monotonic() < (extra_until or deadline):
        port.timeout = 0.02
        frames += deframer.feed(port.read(4096)).frames
        if extra_until is None and len(frames) >= answers:
            extra_until = time.monotonic() + 0.3
    return frames


def _seqs(chip, n: int) -> list[int]:
    """``n`` sequence numbers after the link's, which then carries on after them."""
    if not chip.link._synchronised:
        chip.link.synchronise()
    first = chip.link.seq
    chip.link.seq = (first + n) & 0xFF
    return [(first + 1 + i) & 0xFF for i in range(n)]


def test_extra_delimiters_are_ignored_even_while_a_frame_is_corrected(fresh):
    """A sender may put more than one delimiter between frames (the HAL adds one on a noisy
    line). Right after a version-2 frame they arrive while the chip runs its correction;
    they carry nothing, so nothing answers them: one request, one answer."""
    from orbithil.hal import codec
    from orbithil.hal.icd import ACK_FLAG, Cmd

    version = codec.FEC_VERSION if fresh.identity.fec else codec.FRAME_VERSION
    (seq,) = _seqs(fresh, 1)
    words = np.arange(60, dtype=np.uint32) * 0x01000193  # a long frame: a long correction
    wire = codec.frame_encode(seq, *p.write_mem(300, words), version=version) + b"\x00" * 3
    frames = _raw_exchange(fresh, wire, 1)
    assert [(f.seq, f.cmd) for f in frames] == [(seq, Cmd.WRITE_MEM | ACK_FLAG)]
    assert np.array_equal(fresh.read_mem(300, 60), words)
    assert fresh.telemetry()["FRAMES_BAD"] == 0


def test_a_frame_arriving_while_the_chip_answers_is_taken(fresh):
    """Two requests back to back, the second arriving while the chip executes and sends
    the first's long answer: the second is received into the other buffer and answered
    after the first, in order; nothing is lost as OVERRUN."""
    from orbithil.hal import codec
    from orbithil.hal.icd import ACK_FLAG, Cmd

    words = np.arange(60, dtype=np.uint32) * 0x01010101
    fresh.write_mem(100, words)
    first, second = _seqs(fresh, 2)
    wire = codec.frame_encode(first, *p.read_mem(100, 60)) + codec.frame_encode(
        second, *p.read_reg(REG["SCRATCH0"].addr)
    )
    frames = _raw_exchange(fresh, wire, 2)
    assert [(f.seq, f.cmd) for f in frames] == [
        (first, Cmd.READ_MEM | ACK_FLAG),
        (second, Cmd.READ_REG | ACK_FLAG),
    ]
    assert np.array_equal(p.parse_mem(frames[0].payload)[1], words)
    assert fresh.telemetry()["FRAMES_BAD"] == 0


def test_memory_upset_behaviour_depends_on_the_build(fresh):
    fresh.write_mem(40, np.array([0xA5A5_A5A5, 7], dtype=np.uint32))
    fresh.arm_injection()
    fresh.inject("mem", 40, 9)
    got = fresh.read_mem(40, 2)
    if fresh.identity.harden:
        assert got[0] == 0xA5A5_A5A5 and fresh.telemetry()["ECC_CORRECTED"] == 1
    else:
        assert got[0] == 0xA5A5_A5A5 ^ (1 << 9)


def test_register_upset_behaviour_depends_on_the_build(fresh):
    fresh.write_reg("SCRATCH0", 0xF0F0)
    fresh.arm_injection()
    fresh.inject("reg", "SCRATCH0", 4, 0)
    value = fresh.read_reg("SCRATCH0")
    if fresh.identity.harden:
        assert value == 0xF0F0 and fresh.telemetry()["TMR_MISMATCH"] == 1
    else:
        assert value == 0xF0F0 ^ 0x10


# --- sequences: the model is the reference -------------------------------------------------
ops = st.one_of(
    st.tuples(st.just("write_reg"), st.sampled_from(["SCRATCH0", "SCRATCH1", "SCRUB_PERIOD"]),
              st.integers(0, 2**32 - 1)),
    st.tuples(st.just("read_reg"),
              st.sampled_from(["SCRATCH0", "SCRATCH1", "ID", "INJ_ARM", "FRAMES_BAD"])),
    st.tuples(st.just("mem"), st.integers(0, 1900), st.integers(1, 90), st.integers(0, 2**16)),
    st.tuples(st.just("matvec"), st.integers(1, 16), st.sampled_from([4, 8, 16]),
              st.integers(0, 2**16)),
    st.tuples(st.just("upset"), st.integers(0, 38), st.integers(0, 2**16)),
    st.tuples(st.just("bad"), st.sampled_from(["ID", "MEM_WORDS"]), st.integers(0, 9)),
)  # fmt: skip


def run_sequence(chip, sequence) -> list:
    """Apply a sequence of operations; return every observable result."""
    chip.reset()
    out = []
    for op in sequence:
        kind = op[0]
        if kind == "write_reg":
            value = op[2] & 0xFFFF if op[1] == "SCRUB_PERIOD" else op[2]
            out.append(chip.write_reg(op[1], value))
        elif kind == "read_reg":
            out.append(chip.read_reg(op[1]))
        elif kind == "mem":
            _, addr, count, seed = op
            words = (
                np.random.default_rng(seed)
                .integers(0, 2**32, count, dtype=np.uint64)
                .astype(np.uint32)
            )
            chip.write_mem(addr, words)
            out.append(chip.read_mem(addr, count).tolist())
        elif kind == "matvec":
            _, rows, cols, seed = op
            rng = np.random.default_rng(seed)
            w = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
            x = rng.integers(-128, 128, cols).astype(np.int8)
            out.append(chip.run_matvec(w, x, base=1900).tolist())
        elif kind == "upset":
            _, bit, seed = op
            word = 1990 + seed % 50
            chip.write_mem(word, np.array([seed * 7919 & 0xFFFF_FFFF], dtype=np.uint32))
            chip.write_reg("INJ_ARM", INJECT_ARM_MAGIC)
            chip.inject("mem", word, bit if chip.identity.harden else bit % 32)
            out.append(chip.read_mem(word, 1).tolist())
        elif kind == "bad":
            try:
                chip.write_reg(op[1], op[2])
                out.append("accepted")
            except hal.NakError as exc:
                out.append(("nak", exc.reason))
    telemetry = chip.telemetry().values
    out.append({k: v for k, v in telemetry.items() if k not in TIMING})
    return out


@pytest.mark.parametrize("harden", [1, 0])
@settings(max_examples=8, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(ops, min_size=1, max_size=8))
def test_sequences_match_the_model(request, sequence, harden):
    rtl_chips = request.getfixturevalue("rtl_pair")
    model = request.getfixturevalue("model_pair")[harden]
    reference = run_sequence(model, sequence)
    for chip in rtl_chips:
        retries = chip.link.stats.retries
        assert run_sequence(chip, sequence) == reference, chip.url
        assert chip.link.stats.retries == retries, f"{chip.url}: a clean link needed retries"
        assert (chip.link.stats.fec_requests > 0) == (FEC_FOR_HARDEN[harden] == "on")


FEC_FOR_HARDEN = {1: "on", 0: "off"}  # both frame formats, without doubling the runs


@pytest.fixture(scope="module")
def model_pair():
    chips = {h: hal.open(f"model://?harden={h}", fec=FEC_FOR_HARDEN[h]) for h in (0, 1)}
    yield chips
    for c in chips.values():
        c.close()


@pytest.fixture
def rtl_pair(harden):
    """The RTL on both simulators for one ``harden``, for one test (all its examples): a
    module-wide pair of each kept four simulated chips running their idle clocks through
    the rest of the module (~5 % of a core each, sim.bridge; an idle Icarus chip took
    80 % before the bridge held it to that)."""
    chips = [
        hal.open(f"sim://{s}?harden={harden}", timeout=5.0, fec=FEC_FOR_HARDEN[harden])
        for s in ("verilator", "icarus")
    ]
    yield chips
    for c in chips:
        c.close()


test_sequences_match_the_model = pytest.mark.sim(test_sequences_match_the_model)


@pytest.mark.parametrize(
    "url", ["model://?fec=0", pytest.param("sim://icarus?fec=0", marks=pytest.mark.sim)]
)
def test_a_chip_built_without_fec_says_so_and_refuses_version2_frames(url):
    """FEC=0, as a hardened bench bitstream: PING and BUILD[9] say so, a version-2
    frame gets its version-1 reason (the parity breaks its CRC), version 1 works."""
    with hal.open(url, timeout=5.0) as chip:
        assert not chip.identify().fec and not chip.read_reg("BUILD") >> 9 & 1
        before = chip.read_reg("FRAMES_BAD")
        chip.link.fec, chip.link.fec_capable = "on", True  # a host that ignored the flags
        with pytest.raises(hal.LinkTimeout):
            chip.read_reg("SCRATCH0")
        naks = chip.link.stats.frame_naks
        assert naks == chip.link.retries + 1  # every attempt NAKed at once, none executed
        chip.link.fec, chip.link.fec_capable = "off", False
        assert chip.read_reg("FRAMES_BAD") == before + naks
        assert chip.write_reg("SCRATCH0", 9) == 9


@pytest.mark.parametrize(
    "url",
    [
        "model://?inject=0",
        pytest.param("sim://icarus?inject=0", marks=pytest.mark.sim),
        pytest.param("sim://verilator?inject=0&quick=1", marks=pytest.mark.sim),
    ],
)
def test_a_chip_built_without_inject_says_so_and_refuses_inject(url):
    """INJECT=0, as the flight bitstream: PING and BUILD[10] say so, the HAL refuses
    inject() without sending, and the chip answers an INJECT frame NAK NOT_IN_BUILD,
    armed or not, and flips nothing."""
    with hal.open(url, timeout=5.0) as chip:
        ident = chip.identify()
        assert not ident.inject and ident.harden and ident.fec
        assert chip.read_reg("BUILD") >> 8 & 0b111 == 0b011  # [10] INJECT, [9] FEC, [8] HARDEN
        chip.arm_injection()
        chip.write_reg("SCRATCH0", 0)
        with pytest.raises(hal.NotInBuild, match="INJECT=0") as refused:
            chip.inject("reg", "SCRATCH0", 4, 0)
        assert refused.value.feature == "INJECT"
        for payload in (p.inject(0, 0x18, 4, 0), p.inject(1, 3, 1, 0)):
            with pytest.raises(hal.NakError) as info:  # a host that ignored the flags
                chip.call(payload, 5)
            assert info.value.reason == NakReason.NOT_IN_BUILD
        assert chip.read_reg("SCRATCH0") == 0 and chip.telemetry()["TMR_MISMATCH"] == 0
        chip.write_reg("INJ_ARM", 0)
        with pytest.raises(hal.NakError) as info:
            chip.call(p.inject(0, 0x18, 4, 0), 5)
        assert info.value.reason == NakReason.NOT_IN_BUILD


def test_a_chip_built_with_inject_says_so():
    with hal.open("model://", timeout=5.0) as chip:
        assert chip.identify().inject and chip.read_reg("BUILD") >> 10 & 1


@pytest.mark.sim
def test_the_sram_on_the_board_spram_path_behaves_as_the_block_ram():
    """MEM_SPRAM=1, the board builds' data SRAM (spram_words.v's model of SB_SPRAM256KA):
    cleared after configuration (requests wait meanwhile), same words, MAC results, SECDED
    corrections, write-back and uncorrectable words as the block-RAM array."""
    with hal.open("sim://icarus?spram=1", timeout=5.0) as chip:
        assert not chip.read_mem(2000, 48).any()  # the clear reached the last words
        words = np.random.default_rng(3).integers(0, 2**32, 90, dtype=np.uint64)
        chip.write_mem(100, words.astype(np.uint32))
        assert np.array_equal(chip.read_mem(100, 90), words.astype(np.uint32))
        rng = np.random.default_rng(4)
        w = rng.integers(-128, 128, (8, 16)).astype(np.int8)
        x = rng.integers(-128, 128, 16).astype(np.int8)
        assert np.array_equal(chip.run_matvec(w, x), w.astype(np.int32) @ x.astype(np.int32))
        chip.write_mem(40, np.array([0xA5A5_A5A5, 7], dtype=np.uint32))
        chip.arm_injection()
        chip.inject("mem", 40, 9)
        chip.inject("mem", 41, 35)  # a check bit
        assert list(chip.read_mem(40, 2)) == [0xA5A5_A5A5, 7]
        assert chip.telemetry()["ECC_CORRECTED"] == 2
        assert list(chip.read_mem(40, 2)) == [0xA5A5_A5A5, 7]  # written back: counted once
        assert chip.telemetry()["ECC_CORRECTED"] == 2
        chip.inject("mem", 41, 0)
        chip.inject("mem", 41, 1)
        with pytest.raises(hal.NakError) as info:
            chip.read_mem(40, 2)
        assert info.value.reason == NakReason.MEM_UNCORRECTABLE
