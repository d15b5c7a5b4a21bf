"""The generated SECDED Verilog against hal.codec: codewords, every single-bit error of
random words, random double-bit errors (run by tests/test_chip_sim.py)."""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import Timer

from orbithil.hal import codec
from orbithil.hal.codec import SecdedStatus
from orbithil.sim.tb_link import seed


async def check(dut, word: int, flip: int) -> tuple[int, int, int]:
    dut.data.value = word
    dut.flip.value = flip
    await Timer(1, "ns")
    return int(dut.codeword.value), int(dut.decoded.value), int(dut.status.value)


@cocotb.test()
async def rtl_secded_equals_hal_codec(dut):
    rng = np.random.default_rng(seed())
    words = [0, 0xFFFF_FFFF, *(int(w) for w in rng.integers(0, 2**32, 200, dtype=np.uint64))]
    for word in words:
        expected_cw = codec.secded_encode(word)
        codeword, decoded, status = await check(dut, word, 0)
        assert codeword == expected_cw, f"codeword of {word:#x}"
        assert (decoded, status) == (word, SecdedStatus.OK)
        for bit in range(39):
            _, decoded, status = await check(dut, word, 1 << bit)
            assert (decoded, status) == (word, SecdedStatus.CORRECTED), (word, bit)
    for _ in range(400):
        word = int(rng.integers(0, 2**32))
        a, b = rng.choice(39, 2, replace=False)
        flip = (1 << int(a)) | (1 << int(b))
        _, decoded, status = await check(dut, word, flip)
        assert status == SecdedStatus.UNCORRECTABLE
        assert (decoded, status) == codec.secded_decode(codec.secded_encode(word) ^ flip)
