"""Salvage a frame whose framing was damaged on the line: a delimiter or a COBS code byte.

Forward error correction (``hal.codec.fec``) repairs bytes of the decoded body, but COBS
is undone before it: a damaged delimiter or code byte changes where the body's bytes and
zeros go, and the whole frame is lost (at 1 % of bytes damaged, about one answer in 30).
The receiver can often tell what happened, because each of these faults leaves one byte
to guess at a place the run shows:

- the frame's leading delimiter was damaged: its run starts with one byte too many
  (``run[1:]``);
- its closing delimiter was damaged: the run goes on past the length its header announces
  (cut it there; a run still waiting for its delimiter is ``overdue``);
- a byte was damaged into 0x00: the frame arrives as two runs with one delimiter between
  them, and the lost byte goes back between them;
- a COBS code byte was damaged: it is one of the code bytes the run's chain passes through.

A candidate that only drops or cuts bytes, or puts any byte back where the run shows one is
missing, is decoded as a frame off the line is, with the same checks (version 1: CRC;
version 2: at most one byte corrected in each codeword, then the CRC): it holds the bytes
the line delivered, so it is as likely to be right as any frame. Where a missing byte's
value is searched for (a code byte, up to 255 candidates), only an undamaged version-2
frame is taken: both Reed-Solomon syndromes of both codewords and the CRC must be zero,
48 bits of check against at most a few hundred candidates. A version-1 frame, with its
16-bit CRC alone, is never searched for.

Pure functions; the streaming state (which run came before) is ``Deframer``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .frame_format import (
    MAX_BODY,
    MIN_BODY,
    Frame,
    body_len_from_header,
    cobs_max_encoded_len,
)

# the bytes between two delimiters -> (frame, bytes corrected), or None
RunDecoder = Callable[[bytes], tuple[Frame, int] | None]
# the same, taking only an undamaged version-2 frame (every check zero)
StrictDecoder = Callable[[bytes], Frame | None]

_FILL = 0x01  # a stand-in for a byte the line damaged into 0x00 (the code corrects it)


def encoded_len(encoded: bytes, body_len: int) -> int | None:
    """How many bytes at the start of ``encoded`` (a run after a delimiter) COBS-encode
    ``body_len`` decoded bytes, or None when the run is shorter or ends a group elsewhere."""
    out = i = 0
    n = len(encoded)
    while out < body_len:
        if i >= n:
            return None
        code = encoded[i]
        end = i + code
        if code == 0 or end > n:
            return None
        out += code - 1
        i = end
        if out < body_len and code != 0xFF:
            out += 1  # the group ends at a zero
    return i if out == body_len else None


def _cut(run: bytes) -> bytes | None:
    """``run`` cut where its header says the frame ends (the rest came after a damaged
    closing delimiter), or None when it is not longer than that."""
    body = body_len_from_header(run)
    if body is None or len(run) <= cobs_max_encoded_len(body):
        return None
    end = encoded_len(run, body)
    return run[:end] if end is not None and end < len(run) else None


def _chain_ends(run: bytes) -> tuple[list[bool], list[int]]:
    """For each offset i of ``run``: whether a chain of code bytes starting there ends
    exactly at the run's end, and how many bytes it decodes to."""
    n = len(run)
    ends = [False] * (n + 1)
    decoded = [0] * (n + 1)
    ends[n] = True
    for i in range(n - 1, -1, -1):
        code = run[i]
        j = i + code
        if code and j <= n and ends[j]:
            ends[i] = True
            decoded[i] = code - 1 + (code != 0xFF and j < n) + decoded[j]
    return ends, decoded


def code_byte_candidates(run: bytes, positions: Iterator[int] | None = None) -> Iterator[bytes]:
    """``run`` with one code byte of its chain replaced by each value that makes a whole
    chain decoding to a frame's length (a version-2 body and parity). ``positions``: the
    offsets to try (default: every code byte the run's own chain passes through, where a
    damaged one must be, as the bytes before it are undamaged)."""
    n = len(run)
    ends, decoded = _chain_ends(run)
    if positions is None:
        positions = _chain(run)
    low, high = MIN_BODY, MAX_BODY
    for p, before in _with_prefix(run, positions):
        for value in range(1, min(255, n - p) + 1):
            j = p + value
            if value == run[p] or not ends[j]:
                continue
            total = before + value - 1 + (value != 0xFF and j < n) + decoded[j]
            if low <= total <= high:
                yield run[:p] + bytes((value,)) + run[p + 1 :]


def _chain(run: bytes) -> Iterator[int]:
    i = 0
    while i < len(run):
        yield i
        if run[i] == 0:
            return
        i += run[i]


def _with_prefix(run: bytes, positions: Iterator[int]) -> Iterator[tuple[int, int]]:
    """(offset, bytes decoded before it) for each of ``positions`` on the run's chain."""
    wanted = set(positions)
    i = out = 0
    while i < len(run):
        if i in wanted:
            yield i, out
        code = run[i]
        if code == 0:
            return
        out += code - 1 + (code != 0xFF)
        i += code


def salvage(
    run: bytes, previous: bytes | None, decode: RunDecoder, strict: StrictDecoder
) -> tuple[Frame, int, bool] | None:
    """The frame in ``run`` (the bytes between two delimiters, which did not decode), and
    bytes corrected, and whether ``previous`` is part of it; or None.

    ``previous``: the run just before this one, with one delimiter between them, when it
    did not decode either (b"" for an empty run: two delimiters in a row); a frame split
    by a byte damaged into 0x00 is these two runs. ``decode`` takes a frame as one off the
    line is taken; ``strict`` only an undamaged version-2 frame."""
    for candidate in (run[1:], _cut(run), _cut(run[1:])):
        if candidate and (found := decode(candidate)) is not None:
            return found[0], found[1], False
    if previous is not None:
        joined = previous + bytes((_FILL,)) + run
        if (found := decode(joined)) is not None:
            return found[0], found[1], True
        for candidate in code_byte_candidates(joined, iter((len(previous),))):
            if (frame := strict(candidate)) is not None:
                return frame, 1, True
    for candidate in code_byte_candidates(run):
        if (frame := strict(candidate)) is not None:
            return frame, 1, False
    return None


def salvage_overdue(pending: bytes, decode: RunDecoder) -> tuple[Frame, int, int] | None:
    """The frame at the start of a run still waiting for its delimiter that is already
    longer than its header announces (its closing delimiter was damaged), the bytes
    corrected and how many bytes of the run it took; or None."""
    for skip in (0, 1):
        body = body_len_from_header(pending[skip:])
        if body is None:
            continue
        end = encoded_len(pending[skip:], body)
        if end is not None and (found := decode(pending[skip : skip + end])) is not None:
            return found[0], found[1], skip + end
    return None


@dataclass(frozen=True)
class Salvager:
    """``salvage`` and ``salvage_overdue`` with a codec backend's decoders, for ``Deframer``."""

    decode: RunDecoder
    strict: StrictDecoder

    def run(self, run: bytes, previous: bytes | None) -> tuple[Frame, int, bool] | None:
        return salvage(run, previous, self.decode, self.strict)

    def overdue(self, pending: bytes) -> tuple[Frame, int, int] | None:
        return salvage_overdue(pending, self.decode)
