"""The chip on a board over its serial port, through the HAL exactly as users drive it: a
real board (ORBITHIL_BOARD=/dev/ttyUSB1), else the simulated chip behind a pseudo-terminal
(``orbithil sim serve --pty``; the ``board_device`` fixture). The conformance suite
(tests/test_hal_conformance.py) runs on the same device."""

from __future__ import annotations

import numpy as np
import pytest

from orbithil import hal
from orbithil.hal.icd import CHIP_ID

pytestmark = pytest.mark.board


@pytest.fixture(scope="module")
def chip(board_device):
    with hal.open(board_device, timeout=2.0) as opened:
        yield opened


def test_board_identifies_and_computes(chip):
    assert chip.identify().chip_id == CHIP_ID
    assert chip.write_reg("SCRATCH0", 0xC0FFEE) == 0xC0FFEE
    assert chip.read_reg("SCRATCH0") == 0xC0FFEE
    rng = np.random.default_rng(5)
    weights = rng.integers(-128, 128, (8, 16), dtype=np.int8)
    x = rng.integers(-128, 128, 16, dtype=np.int8)
    y = chip.run_matvec(weights, x)
    assert np.array_equal(y, weights.astype(np.int32) @ x.astype(np.int32))
