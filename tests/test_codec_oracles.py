"""The codec against oracles that do not come from it: SECDED codewords derived from the
documented Hsiao construction written out here (and literal codewords worked out from
it), and frames as literal bytes. C, Python and the Verilog are all generated from
``hal/codec/hmatrix.py`` and compared with each other elsewhere; these catch a change
to the one source they share."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from orbithil.hal import codec
from orbithil.hal.codec import SECDED_39_32, SECDED_72_64, SecdedStatus
from orbithil.hal.codec.frame_format import Frame

# fpga/ICD.md, "SECDED": Hsiao (M. Y. Hsiao, IBM J. R&D 14(4), 1970). (39,32): the weight-3
# columns of 7 check bits, in lexicographic order of their bit positions, less the three
# {0,1,2}, {0,1,6}, {3,4,5} (rows of 13,13,14,14,14,14,14 ones). (72,64): all 56 weight-3
# columns of 8 bits in the same order, then the 8 rotations of 0b00011111.
COLUMNS_39 = [sum(1 << b for b in c) for c in combinations(range(7), 3)
              if c not in {(0, 1, 2), (0, 1, 6), (3, 4, 5)}]  # fmt: skip
COLUMNS_72 = [sum(1 << b for b in c) for c in combinations(range(8), 3)] + [
    (0x1F << r | 0x1F >> (8 - r)) & 0xFF for r in range(8)
]


def textbook_encode(word: int, columns: list[int], k: int) -> int:
    """Check bit j = XOR of the data bits whose column has bit j; above the data."""
    check = 0
    for i, column in enumerate(columns):
        if word >> i & 1:
            check ^= column
    return check << k | word


# (data, codeword) worked out from the construction above (by hand for the first rows:
# one data bit gives its own column as check bits; all ones give the parity of each row's
# weight: 13,13 odd and the rest even -> 0b0000011; every (72,64) row has 26 ones -> 0)
VECTORS_39 = [
    (0x0000_0000, 0x00_0000_0000),
    (0x0000_0001, 0x0B_0000_0001),  # column 0 = {0,1,3}
    (0x8000_0000, 0x70_8000_0000),  # column 31 = {4,5,6}
    (0xFFFF_FFFF, 0x03_FFFF_FFFF),
    (0x1234_5678, 0x15_1234_5678),
    (0xDEAD_BEEF, 0x17_DEAD_BEEF),
]
VECTORS_72 = [
    (0x0000_0000_0000_0000, 0x00_0000_0000_0000_0000),
    (0x0000_0000_0000_0001, 0x07_0000_0000_0000_0001),  # column 0 = {0,1,2}
    (0xFFFF_FFFF_FFFF_FFFF, 0x00_FFFF_FFFF_FFFF_FFFF),
    (0x0123_4567_89AB_CDEF, 0x24_0123_4567_89AB_CDEF),
]


def test_the_vectors_follow_from_the_documented_construction():
    assert len(COLUMNS_39) == 32 and len(COLUMNS_72) == 64
    for (word, codeword), (k, columns) in [
        *((v, (32, COLUMNS_39)) for v in VECTORS_39),
        *((v, (64, COLUMNS_72)) for v in VECTORS_72),
    ]:
        assert textbook_encode(word, columns, k) == codeword, hex(word)


@pytest.mark.parametrize(
    ("code", "vectors", "columns"),
    [(SECDED_39_32, VECTORS_39, COLUMNS_39), (SECDED_72_64, VECTORS_72, COLUMNS_72)],
    ids=["39_32", "72_64"],
)
def test_secded_gives_the_literal_codewords(codec_backend, code, vectors, columns):
    assert list(code.data_columns) == columns  # the matrix is the documented one
    for word, codeword in vectors:
        assert codec_backend.secded_encode(code, word) == codeword, hex(word)
        assert codec_backend.secded_decode(code, codeword) == (word, SecdedStatus.OK)
        for bit in range(code.n):  # any one flipped bit, data or check, is corrected
            got = codec_backend.secded_decode(code, codeword ^ 1 << bit)
            assert got == (word, SecdedStatus.CORRECTED), (hex(word), bit)
    words = np.array([w for w, _ in vectors], dtype=np.uint32 if code.k == 32 else np.uint64)
    checks = codec_backend.secded_encode_array(code, words)
    assert [int(c) for c in checks] == [cw >> code.k for _, cw in vectors]


# Frames as literal wire bytes: 00 | COBS(version seq cmd length payload crc_hi crc_lo) | 00,
# the CRC-16/CCITT-FALSE and the COBS worked out independently of the codec.
FRAMES = [
    # PING, seq 5: body 01 05 01 00 | crc 2a b5; COBS: 04 01 05 01 | 03 2a b5
    (Frame(5, 0x01, b""), "00 04 01 05 01 03 2a b5 00"),
    # seq 0x2a, cmd 3, payload 00 10 04: body 01 2a 03 03 00 10 04 | cc 5c
    (Frame(0x2A, 0x03, bytes.fromhex("001004")), "00 05 01 2a 03 03 05 10 04 cc 5c 00"),
    # four zero bytes of payload: a COBS code byte for each
    (Frame(0xFF, 0x81, bytes(4)), "00 05 01 ff 81 04 01 01 01 03 cb 1a 00"),
    (Frame(7, 0x02, bytes.fromhex("11deadbeef")), "00 0c 01 07 02 05 11 de ad be ef 7d f7 00"),
]


@pytest.mark.parametrize(("frame", "wire"), FRAMES, ids=[f"seq{f.seq}" for f, _ in FRAMES])
def test_frames_are_the_literal_wire_bytes(codec_backend, frame, wire):
    expected = bytes.fromhex(wire)
    assert codec_backend.frame_encode(1, frame.seq, frame.cmd, frame.payload) == expected
    assert codec.frame_decode(expected) == frame
    assert codec.deframe(expected * 2).frames == [frame, frame]
