"""Forward error correction for the host link: frame format version 2 (fpga/ICD.md, "Forward
error correction").

A version-2 frame is a version-1 body (header, payload, CRC; version byte 2) followed by
four Reed-Solomon parity bytes, all COBS-encoded between delimiters as usual:

    00 | COBS( 2 | seq | cmd | length | payload | crc_hi | crc_lo | parity[4] ) | 00

The decoded bytes (body and parity, n of them) are two interleaved codewords: byte i
belongs to codeword i mod 2. Each is RS(n_c, n_c - 2) over GF(2^8) (primitive polynomial
0x11D, generator 2, first consecutive root alpha^0) and its two parity bytes are its last
two bytes; so the parity bytes at m, m+1, m+2, m+3 (m = body length) are the first parity
byte of codeword m mod 2, of the other codeword, then the second of each. A receiver
corrects one damaged byte in each codeword: any two damaged bytes at an odd distance apart
(two adjacent ones, a burst, included) and one byte anywhere. The CRC stays the integrity
check: a corrected body is accepted only when its CRC, version and length field are right.

Why this code: one error per codeword is located from two syndromes by a search with a
constant multiplier (S1 = S0 * alpha^p), no division, so the chip's decoder is a few
registers and XORs (about 470 logic cells of the iCE40 UP5K). A two-error decoder over the
whole body (Peterson, Chien, Forney on a shared GF multiplier) corrects a little more but
cost twice that: the hardened build wanted 6,093 of the UP5K's 5,280 cells with it. At 1% of
bytes damaged, an 85-byte frame arrives whole 43% of the time and is correctable 87% of the
time with this code (95% with a two-error code).

A receiver tries the repair on every run that fails the version-1 checks for a reason
other than framing (COBS, OVERSIZE): a good version-2 frame fails them by design (its
length field leaves out the parity), a damaged one may be corrected. The chip does the
same in ``fpga/rtl/frame_rx.v`` and answers a version-2 request in version 2.

The arithmetic is done here with GF(2^8) tables: parity by a shift register over the
generator polynomial (``reedsolo``'s, a well-kept pure-Python Reed-Solomon codec that
the tests hold this one to), syndromes by Horner's rule, and a damaged byte's place from
S1 = S0 * alpha^p by one table look-up, as the chip does it: ~35 us to encode and ~20 us
to check a 16-word frame. ``reedsolo``'s own encoder and decoder took ~190 and ~150 us
(~600 us for a damaged frame), a tenth of a simulated round trip, on every frame.
"""

from __future__ import annotations

import reedsolo

from orbithil.hal.errors import CobsError

from . import _args
from .frame_format import (
    CRC16_INIT,
    CRC_LEN,
    FEC_INTERLEAVE,
    FEC_PARITY,
    FEC_VERSION,
    HEADER_LEN,
    MAX_BODY,
    MAX_PAYLOAD_FEC,
    MIN_BODY_FEC,
    RS_PARITY,
    RS_PRIMITIVE,
    Frame,
)

_RS = reedsolo.RSCodec(RS_PARITY, nsize=255, fcr=0, prim=RS_PRIMITIVE, generator=2)


def _times_table(factor: int) -> bytes:
    """``table[b]`` = b * factor in GF(2^8) (primitive polynomial RS_PRIMITIVE)."""
    table = bytearray(256)
    for b in range(256):
        product, x, y = 0, b, factor
        while y:
            if y & 1:
                product ^= x
            x <<= 1
            if x & 0x100:
                x ^= RS_PRIMITIVE
            y >>= 1
        table[b] = product
    return bytes(table)


# The generator polynomial x^2 + g1 x + g0, and multiplication by its coefficients and by
# alpha (2, for the second syndrome), as byte tables.
_, _G1, _G0 = _RS.gen[RS_PARITY]
_TIMES_G1, _TIMES_G0, _TIMES_ALPHA = _times_table(_G1), _times_table(_G0), _times_table(2)


def _codeword_parity(data: bytes) -> tuple[int, int]:
    """The two parity bytes of one codeword's data (the remainder of data(x) x^2 divided
    by the generator polynomial, highest degree first, as ``reedsolo`` encodes)."""
    high = low = 0
    times_g1, times_g0 = _TIMES_G1, _TIMES_G0
    for b in data:
        feedback = b ^ high
        high, low = low ^ times_g1[feedback], times_g0[feedback]
    return high, low


def _syndromes(word: bytes) -> tuple[int, int]:
    """The codeword polynomial (first byte highest degree) at alpha^0 and alpha^1: both
    zero for a codeword; for one damaged byte, its error value e and e * alpha^p, p its
    degree."""
    s0 = s1 = 0
    times_alpha = _TIMES_ALPHA
    for b in word:
        s0 ^= b
        s1 = times_alpha[s1] ^ b
    return s0, s1


def _is_codeword(word: bytes) -> bool:
    """Whether both syndromes of a codeword (data and parity) are zero: it is undamaged,
    or damaged beyond what the code can see."""
    return _syndromes(word) == (0, 0)


def _log_table() -> list[int]:
    """``log[b]``: the power of alpha that b is (b != 0)."""
    log, x = [0] * 256, 1
    for power in range(255):
        log[x] = power
        x = _TIMES_ALPHA[x]
    return log


_LOG = _log_table()


def _correct_codeword(word: bytearray) -> int | None:
    """Correct one damaged byte of a codeword in place: bytes corrected (0 or 1), or None
    when the syndromes are not those of one byte within the codeword's length."""
    s0, s1 = _syndromes(word)
    if s0 == 0 and s1 == 0:
        return 0
    if s0 == 0 or s1 == 0:
        return None
    degree = (_LOG[s1] - _LOG[s0]) % 255
    if degree >= len(word):
        return None
    word[len(word) - 1 - degree] ^= s0
    return 1


def generator_poly() -> list[int]:
    """Coefficients of each codeword's RS generator polynomial, highest degree first."""
    return list(_RS.gen[RS_PARITY])


def _parity_slots(m: int) -> list[tuple[int, int]]:
    """(codeword, its parity byte index) of the parity bytes at m, m+1, m+2, m+3."""
    return [((m + j) % FEC_INTERLEAVE, j // FEC_INTERLEAVE) for j in range(FEC_PARITY)]


def parity(body: bytes) -> bytes:
    """The ``FEC_PARITY`` parity bytes of ``body`` (a version-2 frame's header..CRC)."""
    m = len(body)
    if m > MAX_BODY - FEC_PARITY:
        raise ValueError(
            f"a version-2 body is at most {MAX_BODY - FEC_PARITY} bytes, got {m}; "
            f"a version-2 frame carries at most {MAX_PAYLOAD_FEC} payload bytes"
        )
    body = bytes(body)
    # Codeword c holds body[i] for i = c (mod 2); with its parity it ends in two bytes.
    checks = [_codeword_parity(body[c::FEC_INTERLEAVE]) for c in range(FEC_INTERLEAVE)]
    return bytes(checks[c][k] for c, k in _parity_slots(m))


def correct(codeword: bytes) -> tuple[bytes, int] | None:
    """(the corrected body without parity, bytes corrected) of a version-2 body with its
    parity, or None when a codeword has more damage than the code corrects (as far as
    the code can tell)."""
    full = bytearray(codeword)
    count = 0
    for c in range(FEC_INTERLEAVE):
        word = bytearray(full[c::FEC_INTERLEAVE])
        corrected = _correct_codeword(word)
        if corrected is None:
            return None
        if corrected:
            full[c::FEC_INTERLEAVE] = word
            count += corrected
    return bytes(full[:-FEC_PARITY]), count


def _codeword(encoded: bytes, cobs_decode) -> bytes | None:
    """The COBS-decoded bytes of ``encoded`` if they can be a version-2 codeword (a
    decodable run of a version-2 frame's length), else None."""
    try:
        codeword = cobs_decode(encoded)
    except CobsError:
        return None
    return codeword if MIN_BODY_FEC <= len(codeword) <= MAX_BODY else None


def repair(encoded: bytes, cobs_decode, crc16) -> tuple[Frame, int] | None:
    """The version-2 frame in ``encoded`` (the bytes between two delimiters) and how many
    bytes were corrected, or None when it is not one (or is damaged beyond repair).
    ``cobs_decode`` and ``crc16(data, init)`` are the codec backend's."""
    codeword = _codeword(encoded, cobs_decode)
    if codeword is None:
        return None
    fixed = correct(codeword)
    if fixed is None:
        return None
    body, count = fixed
    if (
        crc16(body, CRC16_INIT) != 0
        or body[0] != FEC_VERSION
        or body[3] != len(body) - HEADER_LEN - CRC_LEN
    ):
        return None
    return Frame(body[1], body[2], body[HEADER_LEN:-CRC_LEN], FEC_VERSION), count


def take_undamaged(encoded: bytes, cobs_decode, crc16) -> Frame | None:
    """The version-2 frame in ``encoded`` only if it arrived undamaged: its CRC and all
    four parity checks zero (48 bits of check, for a receiver that tries many guesses at
    a damaged delimiter or code byte: ``hal.codec.salvage``); else None."""
    codeword = _codeword(encoded, cobs_decode)
    if codeword is None:
        return None
    body = codeword[:-FEC_PARITY]
    if (
        body[0] != FEC_VERSION
        or body[3] != len(body) - HEADER_LEN - CRC_LEN
        or crc16(body, CRC16_INIT) != 0
        or not all(_is_codeword(codeword[c::FEC_INTERLEAVE]) for c in range(FEC_INTERLEAVE))
    ):
        return None
    return Frame(body[1], body[2], body[HEADER_LEN:-CRC_LEN], FEC_VERSION)


def check_payload(payload: bytes) -> bytes:
    payload = _args.as_bytes(payload, "payload")
    if len(payload) > MAX_PAYLOAD_FEC:
        raise ValueError(
            f"payload is {len(payload)} bytes; a version-2 (FEC) frame carries at most "
            f"{MAX_PAYLOAD_FEC} — send it as version 1 or split it over several commands"
        )
    return payload
