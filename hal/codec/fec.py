"""Forward error correction for the host link: frame format version 2 (fpga/ICD.md, "Forward
error correction").

A version-2 frame is a version-1 body (header, payload, CRC) followed by ``FEC_PARITY``
Reed-Solomon parity bytes, all COBS-encoded between delimiters as usual:

    00 | COBS( 2 | seq | cmd | length | payload | crc_hi | crc_lo | parity[4] ) | 00

The code is RS(n, n-4) over GF(2^8) (primitive polynomial 0x11D, generator 2, first
consecutive root alpha^0), shortened to the body's length: it corrects any two damaged
bytes of the decoded body. The CRC stays the integrity check: a corrected body is accepted
only when its CRC, version and length field are right, so a miscorrection is caught as
surely as damage on a version-1 frame.

A receiver tries the repair on every frame that fails the version-1 checks for a reason
other than framing (COBS, OVERSIZE): a good version-2 frame fails them by design (its
length field leaves out the parity), a damaged one may be corrected. The chip does the
same in ``fpga/rtl/frame_rx.v`` and answers a version-2 request in version 2.

The arithmetic is ``reedsolo``'s (a well-kept pure-Python Reed-Solomon codec): a frame is
encoded in ~50 us and a damaged one repaired in ~200 us, small beside the line time of the
bytes they protect. The RTL decoder (Peterson's direct solution for two errors, Chien
search, Forney) corrects exactly the patterns reedsolo corrects: any of at most two bytes.
"""

from __future__ import annotations

import reedsolo

from hal.errors import CobsError

from . import _args
from .frame_format import (
    CRC16_INIT,
    FEC_PARITY,
    FEC_VERSION,
    HEADER_LEN,
    MAX_PAYLOAD_FEC,
    MIN_BODY_FEC,
    RS_MAX_CODEWORD,
    RS_PRIMITIVE,
    Frame,
)

_RS = reedsolo.RSCodec(FEC_PARITY, nsize=RS_MAX_CODEWORD, fcr=0, prim=RS_PRIMITIVE, generator=2)


def generator_poly() -> list[int]:
    """Coefficients of the RS generator polynomial, highest degree first (leading 1)."""
    return list(_RS.gen[FEC_PARITY])


def parity(body: bytes) -> bytes:
    """The ``FEC_PARITY`` parity bytes of ``body`` (a version-2 frame's header..CRC)."""
    if len(body) + FEC_PARITY > RS_MAX_CODEWORD:
        raise ValueError(
            f"a version-2 body is at most {RS_MAX_CODEWORD - FEC_PARITY} bytes, got "
            f"{len(body)}; a version-2 frame carries at most {MAX_PAYLOAD_FEC} payload bytes"
        )
    return bytes(_RS.encode(bytes(body))[len(body) :])


def correct(codeword: bytes) -> tuple[bytes, int] | None:
    """(the corrected body without parity, bytes corrected) of a version-2 body with its
    parity, or None when the damage is beyond two bytes (as far as the code can tell)."""
    try:
        _, corrected, positions = _RS.decode(bytes(codeword))
    except reedsolo.ReedSolomonError:
        return None
    return bytes(corrected[:-FEC_PARITY]), len(positions)


def repair(encoded: bytes, cobs_decode, crc16) -> tuple[Frame, int] | None:
    """The version-2 frame in ``encoded`` (the bytes between two delimiters) and how many
    bytes were corrected, or None when it is not one (or is damaged beyond repair).
    ``cobs_decode`` and ``crc16(data, init)`` are the codec backend's."""
    try:
        codeword = cobs_decode(encoded)
    except CobsError:
        return None
    if not MIN_BODY_FEC <= len(codeword) <= RS_MAX_CODEWORD:
        return None
    fixed = correct(codeword)
    if fixed is None:
        return None
    body, count = fixed
    if crc16(body, CRC16_INIT) != 0 or body[0] != FEC_VERSION or body[3] != len(body) - HEADER_LEN - 2:
        return None
    return Frame(body[1], body[2], body[HEADER_LEN:-2], FEC_VERSION), count


def check_payload(payload: bytes) -> bytes:
    payload = _args.as_bytes(payload, "payload")
    if len(payload) > MAX_PAYLOAD_FEC:
        raise ValueError(
            f"payload is {len(payload)} bytes; a version-2 (FEC) frame carries at most "
            f"{MAX_PAYLOAD_FEC} — send it as version 1 or split it over several commands"
        )
    return payload
