"""Frames and the streaming deframer."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orbithil.hal import codec as codec
from orbithil.hal.codec import Deframer, Frame, FrameError, FrameStatus
from orbithil.hal.codec.frame_format import MAX_ENCODED, MAX_PAYLOAD

frames = st.builds(
    Frame,
    seq=st.integers(0, 255),
    cmd=st.integers(0, 255),
    payload=st.binary(max_size=MAX_PAYLOAD),
    version=st.just(1),
)


def wire(frame: Frame, impl=None) -> bytes:
    impl = impl or codec.available_backends()["python"]
    return impl.frame_encode(frame.version, frame.seq, frame.cmd, frame.payload)


@given(frames)
def test_frame_round_trip_is_identical_on_both_backends(frame):
    impls = codec.available_backends()
    encoded = {name: wire(frame, impl) for name, impl in impls.items()}
    assert encoded["c"] == encoded["python"]
    data = encoded["c"]
    assert data[0] == 0 and data[-1] == 0 and 0 not in data[1:-1]
    for impl in impls.values():
        assert impl.frame_decode(data[1:-1]) == (FrameStatus.OK, frame)
    assert codec.frame_decode(data) == frame


def test_frame_layout_is_the_icd_one():
    # version 1, seq 7, cmd 0x01, no payload; CRC-16/CCITT-FALSE of 01 07 01 00.
    body = bytes([1, 7, 1, 0])
    crc = codec.crc16(body)
    assert (
        codec.frame_encode(7, 1)
        == b"\x00" + codec.cobs_encode(body + crc.to_bytes(2, "big")) + b"\x00"
    )


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), FrameStatus.BAD_CRC),
        (lambda b: b[:3], FrameStatus.BAD_LENGTH),
        (lambda b: b"\x09" + b[1:], FrameStatus.BAD_VERSION),
    ],
)
def test_each_rejection_reason(codec_backend, mutate, reason):
    body = bytes([1, 9, 2, 3, 0xA, 0xB, 0xC])
    body = mutate(body + codec.crc16(body).to_bytes(2, "big"))
    if reason is FrameStatus.BAD_VERSION:  # re-CRC so the version is the only fault
        body = body[:-2] + codec.crc16(body[:-2]).to_bytes(2, "big")
    status, frame = codec_backend.frame_decode(codec.cobs_encode(body))
    assert (status, frame) == (reason, None)


def test_length_byte_that_disagrees_is_bad_length(codec_backend):
    body = bytes([1, 9, 2, 5, 0xA])  # says 5 payload bytes, carries 1
    body += codec.crc16(body).to_bytes(2, "big")
    assert codec_backend.frame_decode(codec.cobs_encode(body))[0] is FrameStatus.BAD_LENGTH


def test_cobs_error_is_reported(codec_backend):
    assert codec_backend.frame_decode(b"\x09\x01")[0] is FrameStatus.COBS


def test_frame_decode_raises_with_reason_and_bytes():
    bad = codec.frame_encode(1, 2, b"abc")
    bad = bad[:3] + bytes([bad[3] ^ 0x40]) + bad[4:]
    with pytest.raises(FrameError, match="BAD_CRC") as info:
        codec.frame_decode(bad)
    assert info.value.reason is FrameStatus.BAD_CRC and info.value.data == bad


def test_frame_decode_refuses_two_frames_at_once():
    with pytest.raises(FrameError, match="use Deframer"):
        codec.frame_decode(codec.frame_encode(1, 1) + codec.frame_encode(2, 2))


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"seq": 256, "cmd": 1}, ValueError, r"seq must be in 0\.\.255, got 256"),
        ({"seq": -1, "cmd": 1}, ValueError, r"seq must be in 0\.\.255, got -1"),
        ({"seq": 1, "cmd": "x"}, TypeError, "cmd must be an int, got str"),
        ({"seq": True, "cmd": 1}, TypeError, "seq must be an int, got bool"),
        ({"seq": 1, "cmd": 1, "payload": bytes(256)}, ValueError, "at most 255"),
        ({"seq": 1, "cmd": 1, "payload": "hi"}, TypeError, "encode it first"),
        ({"seq": 1, "cmd": 1, "version": 300}, ValueError, "version must be in"),
    ],
)
def test_frame_encode_bad_arguments(kwargs, error, text):
    with pytest.raises(error, match=text):
        codec.frame_encode(**kwargs)


# --- deframer -------------------------------------------------------------------------
def feed_in_chunks(deframer: Deframer, data: bytes, rng: random.Random):
    got, discarded, i = [], [], 0
    while i < len(data):
        step = rng.randint(1, 64)
        result = deframer.feed(data[i : i + step])
        got += result.frames
        discarded += result.discarded
        i += step
    return got, discarded


def is_subsequence(needles, haystack) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


@given(st.lists(st.tuples(st.binary(max_size=80), frames), max_size=12), st.integers(0, 2**32))
def test_every_valid_frame_survives_interleaved_garbage(items, seed):
    stream = b"".join(garbage + wire(frame) for garbage, frame in items)
    sent = [frame for _, frame in items]
    for impl in codec.available_backends().values():
        got, discarded = feed_in_chunks(
            Deframer(impl.deframe_segments), stream, random.Random(seed)
        )
        # Garbage can, very rarely, itself be a valid frame; the sent ones all arrive in order.
        assert is_subsequence(sent, got)
        for d in discarded:
            assert 0 <= d.start <= d.end <= len(stream)
            assert 0 not in stream[d.start : d.end]


@given(st.binary(max_size=3000), st.integers(0, 2**32))
def test_deframer_never_raises_and_chunking_does_not_matter(data, seed):
    for impl in codec.available_backends().values():
        whole = Deframer(impl.deframe_segments).feed(data)
        chunked = feed_in_chunks(Deframer(impl.deframe_segments), data, random.Random(seed))
        assert (whole.frames, whole.discarded) == chunked


def test_discarded_ranges_name_the_bytes_and_the_reason():
    good = codec.frame_encode(3, 4, b"ok")
    stream = b"\x05\x01" + good
    result = codec.deframe(stream)
    assert result.frames == [Frame(3, 4, b"ok")]
    assert [(d.start, d.end, d.reason) for d in result.discarded] == [(0, 2, FrameStatus.COBS)]


def test_oversize_run_is_dropped_while_streaming_and_the_next_frame_arrives():
    deframer = codec.new_deframer()
    for _ in range(100):  # 100 kB without a delimiter: memory stays bounded
        assert deframer.feed(b"\x01" * 1000).frames == []
        assert len(deframer.pending) <= MAX_ENCODED
    result = deframer.feed(codec.frame_encode(9, 9, b"after"))
    assert result.frames == [Frame(9, 9, b"after")]
    assert [(d.start, d.end, d.reason) for d in result.discarded] == [
        (0, 100_000, FrameStatus.OVERSIZE)
    ]


def test_leftover_is_the_incomplete_frame():
    good = codec.frame_encode(1, 2, b"xyz")
    result = codec.new_deframer().feed(good[:-3])
    assert result.frames == [] and result.leftover == good[1:-3]


def test_counters_add_up():
    deframer = codec.new_deframer()
    deframer.feed(b"\x07\x00" + codec.frame_encode(1, 1) + b"\x01\x00")
    assert deframer.frames_ok == 1
    assert deframer.discards == {FrameStatus.COBS: 1, FrameStatus.BAD_LENGTH: 1}


@given(st.lists(st.binary(max_size=40) | frames.map(wire), max_size=40))
def test_deframe_segments_c_equals_python(pieces):
    buf = b"".join(pieces)
    impls = codec.available_backends()
    assert impls["c"].deframe_segments(buf, MAX_ENCODED) == impls["python"].deframe_segments(
        buf, MAX_ENCODED
    )


def test_deframe_segments_beyond_one_c_call():
    """More segments than one C call returns (1024) are all found, in order."""
    buf = b"".join(codec.frame_encode(i & 0xFF, 1, bytes([i & 0xFF])) for i in range(3000))
    buf += b"\x05\x05\x00\x07"
    impls = codec.available_backends()
    c_result = impls["c"].deframe_segments(buf, MAX_ENCODED)
    assert c_result == impls["python"].deframe_segments(buf, MAX_ENCODED)
    frames, discarded, consumed = c_result
    assert [f.seq for f in frames] == [i & 0xFF for i in range(3000)]
    assert [(d[0] - (len(buf) - 4), d[2]) for d in discarded] == [(0, FrameStatus.COBS)]
    assert consumed == len(buf) - 1


def test_deframer_rejects_text_with_a_clear_error():
    with pytest.raises(TypeError, match="encode it first"):
        codec.new_deframer().feed("not bytes")


def test_a_run_longer_than_its_header_announces_is_overdue():
    """READ_REG's answer (version 1, 4 payload bytes): body 10 bytes, COBS 11. Its run is
    not overdue until a 12th byte comes where the closing delimiter should have been."""
    from orbithil.hal.codec.frame_format import body_len_from_header, run_overdue

    run = codec.frame_encode(1, 0x82, b"\x01\x02\x03\x04")[1:-1]
    assert len(run) == 11 and body_len_from_header(run) == 10
    assert body_len_from_header(run[:2]) is None  # too little to tell
    assert not run_overdue(run[:5]) and not run_overdue(run)
    assert run_overdue(run + b"\x40")  # the delimiter arrived as 0x40
    fec = codec.frame_encode(1, 0x82, b"\x01\x02\x03\x04", version=2)[1:-1]
    assert body_len_from_header(fec) == 14 and not run_overdue(fec)
    assert run_overdue(fec + b"\x01")
    deframer = codec.new_deframer()
    deframer.feed(b"\x00" + run + b"\x40")
    assert deframer.overdue
    deframer.reset()
    assert not deframer.overdue


def test_a_delimiter_after_a_delimiter_opens_a_frame():
    """The chip starts each frame with a delimiter: one that ends an empty run means a
    frame has begun (``opened``), one that ends a frame does not."""
    deframer = codec.new_deframer()
    wire = codec.frame_encode(1, 2, b"xyz")
    deframer.feed(wire[:1])
    assert deframer.opened  # the stream's first byte: nothing came before it
    deframer.feed(wire[1:])
    assert not deframer.opened and deframer.pending == b""
    deframer.feed(b"\x00")
    assert deframer.opened
    deframer.feed(wire[1:3])
    assert not deframer.opened
    deframer.feed(wire[3:] + wire[:1])
    assert deframer.opened


def test_the_frame_sizes_are_the_icd_numbers():
    from orbithil.hal.codec import frame_format as ff

    # body 4 + 255 + 2 = 261 bytes; COBS adds one code byte per started 254: 263; and the
    # two delimiters: 265 on the wire
    assert (ff.MIN_BODY, ff.MAX_BODY, ff.MAX_ENCODED, ff.MAX_WIRE) == (6, 261, 263, 265)
    assert (ff.MAX_PAYLOAD_FEC, ff.MIN_BODY_FEC) == (251, 10)
    assert [ff.cobs_max_encoded_len(n) for n in (0, 253, 254, 508)] == [1, 254, 256, 511]


def test_a_frame_later_in_the_chunk_that_ends_an_oversize_run_arrives():
    deframer = codec.new_deframer()
    deframer.feed(b"\x01" * (MAX_ENCODED + 10))  # over-long: dropped while it streams
    good = codec.frame_encode(5, 6, b"next")
    result = deframer.feed(b"\x01\x01\x01" + good)  # the run's delimiter is the 4th byte
    assert result.frames == [Frame(5, 6, b"next")]
    assert [(d.start, d.end, d.reason) for d in result.discarded] == [
        (0, MAX_ENCODED + 13, FrameStatus.OVERSIZE)
    ]
    assert deframer.offset == MAX_ENCODED + 13 + len(good)
