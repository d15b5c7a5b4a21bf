"""The chip on a real board over its serial port (ORBITHIL_BOARD=/dev/ttyUSB1).

Skipped without a board. Uses pyserial directly with the codec and protocol; the HAL's
serial backend will carry the same checks once it exists.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import serial

import hal.codec
from hal import protocol as p
from hal.icd import CHIP_ID, REG
from hal.settings import Settings

pytestmark = pytest.mark.board


@pytest.fixture(scope="module")
def port():
    device = Settings.from_env().board
    if not device:
        pytest.skip("no board: set ORBITHIL_BOARD=/dev/ttyUSBx to run board tests")
    with serial.serial_for_url(device, 115200, timeout=0.05) as link:
        link.reset_input_buffer()
        yield link


class Board:
    def __init__(self, link) -> None:
        self.link = link
        self.seq = 0
        self.deframer = hal.codec.new_deframer()

    def call(self, request, payload_len=None, *, deadline_s: float = 2.0) -> bytes:
        cmd, payload = request
        self.seq = (self.seq + 1) & 0xFF
        self.link.write(hal.codec.frame_encode(self.seq, cmd, payload))
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            for frame in self.deframer.feed(self.link.read(512)).frames:
                if frame.seq == self.seq:
                    return p.check_response(cmd, frame, payload_len)
        raise TimeoutError(f"no answer to command 0x{cmd:02X} within {deadline_s} s")


def test_board_identifies_and_computes(port):
    board = Board(port)
    assert p.parse_identity(board.call(p.ping(), 8)).chip_id == CHIP_ID
    board.call(p.write_reg(REG["SCRATCH0"].addr, 0xC0FFEE), 5)
    assert p.parse_reg(board.call(p.read_reg(REG["SCRATCH0"].addr), 5))[1] == 0xC0FFEE
    rng = np.random.default_rng(5)
    weights = rng.integers(-128, 128, (8, 16), dtype=np.int8)
    x = rng.integers(-128, 128, 16, dtype=np.int8)
    board.call(p.write_mem(0, p.pack_int8(weights)), 3)
    board.call(p.write_mem(32, p.pack_int8(x)), 3)
    status, _ = p.parse_job(board.call(p.run_job(0, 32, 40, 8, 16), 5))
    _, y = p.parse_mem(board.call(p.read_mem(40, 8)))
    assert status == 0
    assert np.array_equal(p.unpack_int32(y), weights.astype(np.int32) @ x.astype(np.int32))
