"""The chip on a real board over its serial port (ORBITHIL_BOARD=/dev/ttyUSB1), through the
HAL exactly as users drive it. Skipped without a board; the conformance suite
(tests/test_hal_conformance.py) also runs on the board when it is set."""

from __future__ import annotations

import numpy as np
import pytest
from orbithil.hal.icd import CHIP_ID

from orbithil import hal
from orbithil.settings import Settings

pytestmark = pytest.mark.board


@pytest.fixture(scope="module")
def chip():
    device = Settings.from_env().board
    if not device:
        pytest.skip("no board: set ORBITHIL_BOARD=/dev/ttyUSBx to run board tests")
    with hal.open(device, timeout=2.0) as opened:
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
