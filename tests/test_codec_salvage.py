"""Frames whose framing was damaged on the line (a delimiter, a COBS code byte, a byte
damaged into 0x00) are salvaged by a host's deframer (``codec.new_deframer(salvage=True)``,
``hal.codec.salvage``), exactly, and never taken wrongly."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from orbithil.hal import codec
from orbithil.hal.codec import FEC_VERSION, Frame, FrameStatus
from orbithil.hal.codec.salvage import code_byte_candidates, encoded_len

PAYLOAD = bytes(range(1, 68))  # a READ_MEM answer's size (16 words), no zero in it
FRAME = Frame(7, 0x84, PAYLOAD, FEC_VERSION)


def wire(frame: Frame = FRAME) -> bytes:
    return codec.frame_encode(frame.seq, frame.cmd, frame.payload, version=frame.version)


def both(data: bytes):
    """(frames a plain deframer takes, the salvaging deframer's result and the deframer)."""
    plain = codec.new_deframer().feed(data).frames
    deframer = codec.new_deframer(salvage=True)
    return plain, deframer.feed(data), deframer


def test_a_damaged_closing_delimiter_is_cut_where_the_header_says_at_once():
    data = wire()[:-1] + b"\x40"  # 00 E 40, then nothing: the delimiter arrived as 0x40
    plain, result, deframer = both(data)
    assert plain == [] and result.frames == [FRAME] and result.discarded == []
    assert deframer.frames_salvaged == 1 and not deframer.overdue and deframer.pending == b""
    # the damaged delimiter is not a frame; the next delimiter ends nothing, the next frame
    # arrives as usual
    later = deframer.feed(b"\x00" + wire(Frame(8, 0x82, b"\x19\x01\x02\x03\x04", 1)))
    assert later.discarded == [] and [f.seq for f in later.frames] == [8]


def test_bytes_after_a_damaged_closing_delimiter_are_reported_when_the_next_one_comes():
    deframer = codec.new_deframer(salvage=True)
    assert deframer.feed(wire()[:-1] + b"\x40\x05\x06").frames == [FRAME]
    result = deframer.feed(b"\x00")
    assert [(d.length, d.reason) for d in result.discarded] == [(2, FrameStatus.COBS)]


def test_a_version1_frame_with_a_damaged_closing_delimiter_is_cut_too():
    frame = Frame(3, 0x82, b"\x19\x01\x02\x03\x04", 1)
    plain, result, _ = both(wire(frame)[:-1] + b"\x04")
    assert plain == [] and result.frames == [frame]


def test_a_damaged_leading_delimiter_leaves_one_byte_too_many_in_front():
    data = b"\x00" + b"\x10" + wire()[1:]  # 00 | 10 E 00
    plain, result, _ = both(data)
    assert plain == [] and result.frames == [FRAME] and result.discarded == []


def test_a_byte_damaged_into_a_delimiter_splits_the_frame_and_is_put_back():
    """The header's version byte (0x02) lost its one set bit: two runs, neither a frame;
    the byte goes back between them and the FEC corrects it."""
    good = wire()
    assert good[2] == FEC_VERSION  # 00, the first code byte, then the version byte
    data = good[:2] + b"\x00" + good[3:]
    plain, result, deframer = both(data)
    assert plain == [] and result.frames == [FRAME]
    assert result.discarded == [] and deframer.discards.get(FrameStatus.COBS, 0) == 0


def test_a_damaged_code_byte_is_searched_for_on_the_runs_chain():
    good = wire()
    for flip in (0x01, 0x20, 0x80):
        data = good[:1] + bytes((good[1] ^ flip,)) + good[2:]
        plain, result, _ = both(data)
        assert plain == [] and result.frames == [FRAME], flip


def test_a_damaged_code_byte_inside_the_frame_is_found_too():
    payload = PAYLOAD[:30] + b"\x00" + PAYLOAD[31:]  # a zero in the body: a code byte
    frame = Frame(7, 0x84, payload, FEC_VERSION)
    good = wire(frame)
    code = 1 + good[1]  # the second code byte of the chain
    data = good[:code] + bytes((good[code] ^ 0x04,)) + good[code + 1 :]
    plain, result, _ = both(data)
    assert plain == [] and result.frames == [frame]


def test_a_version1_frame_is_never_searched_for():
    """A guess at a code byte is taken only as an undamaged version-2 frame (48 bits of
    check); a version-1 frame has its 16-bit CRC alone."""
    frame = Frame(7, 0x84, PAYLOAD, 1)
    good = wire(frame)
    data = good[:1] + bytes((good[1] ^ 0x01,)) + good[2:]
    assert both(data)[1].frames == []


def test_a_damaged_code_byte_and_a_damaged_data_byte_are_not_guessed_at():
    good = bytearray(wire())
    good[1] ^= 0x01
    good[40] ^= 0x01
    plain, result, _ = both(bytes(good))
    assert plain == [] and result.frames == []


def test_encoded_len_walks_the_code_bytes():
    run = wire()[1:-1]
    assert encoded_len(run + b"\x33\x44", len(PAYLOAD) + 10) == len(run)
    assert encoded_len(run[:-1], len(PAYLOAD) + 10) is None


def test_code_byte_candidates_keep_the_run_but_for_one_code_byte():
    run = wire()[1:-1]
    damaged = bytes((run[0] ^ 0x01,)) + run[1:]
    candidates = list(code_byte_candidates(damaged))
    assert run in candidates
    assert all(len(c) == len(run) and c[1:] == run[1:] for c in candidates if c[0] != run[0])


frames_v2 = st.builds(
    Frame,
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=80),
    st.sampled_from([1, FEC_VERSION]),
)


@given(frame=frames_v2, seed=st.integers(0, 2**32 - 1))
def test_damage_anywhere_never_gives_a_wrong_frame(frame, seed):
    """One to four bytes of the wire damaged (a delimiter, a code byte, a byte turned 0x00,
    anything): the salvaging deframer gives the frame that was sent or nothing, and
    whatever a plain deframer takes it takes too."""
    rng = random.Random(seed)
    data = bytearray(wire(frame))
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] ^= (
            1 << rng.randrange(8) if rng.random() < 0.7 else (rng.randint(1, 255))
        )
    data = bytes(data) + b"\x00"
    plain, result, _ = both(data)
    assert all(f == frame for f in result.frames)
    assert set(plain) <= set(result.frames)
