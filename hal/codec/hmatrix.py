"""The SECDED parity-check matrices, written once as data.

Hsiao codes (M. Y. Hsiao, "A class of optimal minimum odd-weight-column SEC-DED codes",
IBM J. R&D 14(4), 1970): every column of H has odd weight, so a single-bit error gives a
syndrome of odd weight equal to its column and a double-bit error gives an even, non-zero
syndrome. Columns are listed per data bit (bit i of the data word -> ``DATA_COLUMNS[i]``,
bit j of the column = participates in check bit j). Check bit j's own column is ``1 << j``.

Codeword layout (the same in C, Python and the RTL): data in bits ``[k-1:0]``, check bits in
bits ``[k+r-1:k]``.

Row weights are balanced so the hardware XOR trees are equally deep:
(39,32) rows 13,13,14,14,14,14,14 of the 35 weight-3 columns less three; (72,64) all 56
weight-3 columns plus the 8 rotations of 0b00011111, 26 ones in every row.
The C tables (``hal/codec/build.py``) and the Verilog (the fpga work) are generated from this
module, and ``tests/test_codec_secded.py`` checks the properties above.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property

# fmt: off
H39_32_DATA_COLUMNS: tuple[int, ...] = (
    0x0B, 0x13, 0x23, 0x0D, 0x15, 0x25, 0x45, 0x19,
    0x29, 0x49, 0x31, 0x51, 0x61, 0x0E, 0x16, 0x26,
    0x46, 0x1A, 0x2A, 0x4A, 0x32, 0x52, 0x62, 0x1C,
    0x2C, 0x4C, 0x34, 0x54, 0x64, 0x58, 0x68, 0x70,
)

H72_64_DATA_COLUMNS: tuple[int, ...] = (
    0x07, 0x0B, 0x13, 0x23, 0x43, 0x83, 0x0D, 0x15,
    0x25, 0x45, 0x85, 0x19, 0x29, 0x49, 0x89, 0x31,
    0x51, 0x91, 0x61, 0xA1, 0xC1, 0x0E, 0x16, 0x26,
    0x46, 0x86, 0x1A, 0x2A, 0x4A, 0x8A, 0x32, 0x52,
    0x92, 0x62, 0xA2, 0xC2, 0x1C, 0x2C, 0x4C, 0x8C,
    0x34, 0x54, 0x94, 0x64, 0xA4, 0xC4, 0x38, 0x58,
    0x98, 0x68, 0xA8, 0xC8, 0x70, 0xB0, 0xD0, 0xE0,
    0x1F, 0x3E, 0x7C, 0xF8, 0xF1, 0xE3, 0xC7, 0x8F,
)
# fmt: on


class SecdedStatus(IntEnum):
    """Outcome of decoding one codeword (the numbers are shared with C and the RTL)."""

    OK = 0
    CORRECTED = 1
    UNCORRECTABLE = 2


# Entries of SecdedCode.syndrome_table besides a data-bit index 0..k-1:
SYNDROME_OK = 0xFF  # syndrome 0: nothing to do
SYNDROME_CHECK_BIT = 0xFE  # a check bit flipped: data is right, count a correction
SYNDROME_UNCORRECTABLE = 0xFD  # even weight or no matching column


@dataclass(frozen=True)
class SecdedCode:
    """One Hsiao SEC-DED code: ``k`` data bits protected by ``r`` check bits."""

    k: int
    r: int
    data_columns: tuple[int, ...]

    @property
    def n(self) -> int:
        """Codeword width in bits."""
        return self.k + self.r

    @cached_property
    def row_masks(self) -> tuple[int, ...]:
        """Check bit j = parity(data & row_masks[j])."""
        return tuple(
            sum(1 << i for i, col in enumerate(self.data_columns) if col >> j & 1)
            for j in range(self.r)
        )

    @cached_property
    def syndrome_table(self) -> tuple[int, ...]:
        """For each of the 2**r syndromes: the data bit to flip, or a SYNDROME_* code."""
        table = [SYNDROME_UNCORRECTABLE] * (1 << self.r)
        table[0] = SYNDROME_OK
        for j in range(self.r):
            table[1 << j] = SYNDROME_CHECK_BIT
        for i, col in enumerate(self.data_columns):
            table[col] = i
        return tuple(table)

    def byte_tables(self) -> list[list[int]]:
        """Per data byte b and value v: the check bits that v contributes (for table-driven C)."""
        tables = []
        for b in range(self.k // 8):
            row = []
            for v in range(256):
                acc = 0
                for bit in range(8):
                    if v >> bit & 1:
                        acc ^= self.data_columns[8 * b + bit]
                row.append(acc)
            tables.append(row)
        return tables


SECDED_39_32 = SecdedCode(k=32, r=7, data_columns=H39_32_DATA_COLUMNS)
SECDED_72_64 = SecdedCode(k=64, r=8, data_columns=H72_64_DATA_COLUMNS)
CODES: dict[int, SecdedCode] = {32: SECDED_39_32, 64: SECDED_72_64}


def code_for(k: int) -> SecdedCode:
    """The code protecting ``k`` data bits; a clear error for any other width."""
    try:
        return CODES[k]
    except (KeyError, TypeError):
        raise ValueError(
            f"SECDED data width k={k!r} is not supported; use k=32 (39,32) or k=64 (72,64)"
        ) from None
