"""A pytest plug-in (entry point ``pytest11``): the ``flight_stack`` fixture starts a flight
stack on any HAL backend with a ground client, and stops both after the test.

    def test_mode(flight_stack):
        fs = flight_stack("model://?harden=1")
        fs.ground.command("SET_MODE", mode="NOMINAL")
        fs.ground.wait_telemetry("MODE", lambda v: v == 1, timeout=5)

    def test_pool(flight_stack):  # a payload pool: a list of URLs
        fs = flight_stack(["model://?harden=1", "model://?harden=0"], policy="dmr")
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import pytest


@dataclass
class RunningStack:
    chip: object  # the first chip
    stack: object
    ground: object
    chips: list = field(default_factory=list)


@pytest.fixture
def flight_stack():
    from orbithil import hal
    from orbithil.flight.ground import Ground
    from orbithil.flight.stack import Config, FlightStack

    running: list[RunningStack] = []

    def start(chip_url: str | list[str] = "model://?harden=1", **config) -> RunningStack:
        key = secrets.token_bytes(32)
        urls = [chip_url] if isinstance(chip_url, str) else list(chip_url)
        chips: list = []
        try:
            for url in urls:
                chips.append((url, hal.open(url)))
            stack = FlightStack(chips, Config(**{"udp_port": 0, **config}), {1: key})
            stack.start()
        except BaseException:
            for _, chip in chips:
                chip.close()
            raise
        ground = Ground(stack.link.udp_address, key_id=1, key=key)
        stack.link.ground = ground.sock.getsockname()  # telemetry flows before any command
        handle = RunningStack(chips[0][1], stack, ground, [chip for _, chip in chips])
        running.append(handle)
        return handle

    yield start
    for handle in reversed(running):
        handle.ground.close()
        handle.stack.stop()
        for chip in handle.chips:
            chip.close()
