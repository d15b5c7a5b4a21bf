"""A pytest plug-in (entry point ``pytest11``): the ``flight_stack`` fixture starts a flight
stack on any HAL backend with a ground client, and stops both after the test.

    def test_mode(flight_stack):
        fs = flight_stack("model://?harden=1")
        fs.ground.command("SET_MODE", mode="NOMINAL")
        fs.ground.wait_telemetry("MODE", lambda v: v == 1, timeout=5)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest


@dataclass
class RunningStack:
    chip: object
    stack: object
    ground: object


@pytest.fixture
def flight_stack():
    from orbithil import hal
    from orbithil.flight.ground import Ground
    from orbithil.flight.stack import Config, FlightStack

    running: list[RunningStack] = []

    def start(chip_url: str = "model://?harden=1", **config) -> RunningStack:
        key = secrets.token_bytes(32)
        chip = hal.open(chip_url)
        try:
            stack = FlightStack(chip, Config(**{"udp_port": 0, **config}), {1: key})
            stack.start()
        except BaseException:
            chip.close()
            raise
        ground = Ground(stack.link.udp_address, key_id=1, key=key)
        stack.link.ground = ground.sock.getsockname()  # telemetry flows before any command
        handle = RunningStack(chip, stack, ground)
        running.append(handle)
        return handle

    yield start
    for handle in reversed(running):
        handle.ground.close()
        handle.stack.stop()
        handle.chip.close()
