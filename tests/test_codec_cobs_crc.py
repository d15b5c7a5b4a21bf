"""COBS and CRC-16: known values, round trips, and C == Python == the `cobs` package."""

from __future__ import annotations

import pytest
from cobs import cobs as cobs_pkg
from hypothesis import given
from hypothesis import strategies as st

from orbithil.hal import codec as codec
from orbithil.hal.codec import _reference
from orbithil.hal.errors import CobsError

ZERO_HEAVY = st.binary(max_size=1200) | st.lists(st.sampled_from([0, 1, 0xFF]), max_size=1200).map(
    bytes
)


def test_crc16_check_value_is_the_published_one():
    # CRC-16/CCITT-FALSE check value from the CRC catalogue.
    assert codec.crc16(b"123456789") == 0x29B1


def test_crc16_continues_across_chunks():
    assert codec.crc16(b"6789", codec.crc16(b"12345")) == 0x29B1


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    ],
)
def test_cobs_matches_the_papers_examples(codec_backend, raw, encoded):
    assert codec_backend.cobs_encode(raw) == encoded
    assert codec_backend.cobs_decode(encoded) == raw


@given(ZERO_HEAVY)
def test_cobs_round_trip_has_no_zero_and_matches_the_cobs_package(data):
    for impl in codec.available_backends().values():
        encoded = impl.cobs_encode(data)
        assert 0 not in encoded
        assert encoded == cobs_pkg.encode(data)
        assert impl.cobs_decode(encoded) == data
        assert len(encoded) <= len(data) + len(data) // 254 + 1


@given(st.binary(max_size=600))
def test_crc16_c_equals_python(data):
    c = codec.available_backends()["c"]
    assert c.crc16(data, 0xFFFF) == _reference.crc16(data, 0xFFFF)


@given(st.binary(max_size=600))
def test_cobs_decode_of_anything_returns_or_raises_cobs_error_alike(data):
    """Arbitrary bytes: both backends agree on the result or on the failing offset."""
    outcomes = []
    for impl in codec.available_backends().values():
        try:
            outcomes.append(("ok", impl.cobs_decode(data)))
        except CobsError as exc:
            outcomes.append(("error", exc.position))
    assert outcomes[0] == outcomes[1]


def test_cobs_decode_error_names_the_offset():
    with pytest.raises(CobsError, match="offset 2") as info:
        codec.cobs_decode(b"\x03\x11\x00")
    assert info.value.position == 2
    with pytest.raises(CobsError, match=r"runs past the end \(2 bytes\)"):
        _reference.cobs_decode(b"\x05\x11")


@pytest.mark.parametrize(
    ("value", "error", "text"),
    [
        ("abc", TypeError, "encode it first"),
        (123, TypeError, "must be bytes-like"),
        (None, TypeError, "got NoneType"),
        (memoryview(bytes(8)).cast("I"), TypeError, "contiguous buffer of bytes"),
    ],
)
def test_bad_input_gets_a_clear_error(value, error, text):
    for fn in (codec.cobs_encode, codec.cobs_decode, codec.crc16):
        with pytest.raises(error, match=text):
            fn(value)


def test_crc_seed_out_of_range_is_rejected():
    with pytest.raises(ValueError, match=r"crc must be in 0\.\.65535, got 70000"):
        codec.crc16(b"x", 70000)


def test_bytearray_and_memoryview_are_accepted():
    assert codec.cobs_encode(bytearray(b"\x00a")) == codec.cobs_encode(memoryview(b"\x00a"))
