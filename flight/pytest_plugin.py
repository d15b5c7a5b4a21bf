"""A pytest plug-in (entry point ``pytest11``): the ``flight_stack`` fixture starts a flight
stack on any HAL backend with a ground client, and stops both after the test.

    def test_mode(flight_stack):
        fs = flight_stack("model://?harden=1")
        fs.ground.command("SET_MODE", mode="NOMINAL")
        fs.ground.wait_telemetry("MODE", lambda v: v == 1, timeout=5)

    def test_pool(flight_stack):  # a payload pool: a list of URLs
        fs = flight_stack(["model://?harden=1", "model://?harden=0"], policy="dmr")

    def test_tenant(flight_stack):  # tenants: a ground on each tenant's key
        fs = flight_stack(tenants=[{"name": "acme", "key_ids": [2]}])
        fs.ground.command("GRANT_TOKENS", tenant=0, tokens=500)
        acme = fs.ground_for(2)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import pytest


@dataclass
class RunningStack:
    """What ``flight_stack(...)`` returns: the running ``stack`` (flight.stack.FlightStack),
    its ``ground`` client (flight.ground.Ground, on the operators' key 1), the first
    ``chip`` and all ``chips``, and the telecommand ``keys`` by id (key 1 and every key id of
    the config's ``tenants``)."""

    chip: object  # the first chip
    stack: object
    ground: object
    chips: list = field(default_factory=list)
    keys: dict = field(default_factory=dict)
    grounds: list = field(default_factory=list)  # every ground client made (closed after)

    def ground_for(self, key_id: int):
        """Another ground client, signing with key ``key_id`` (a tenant's): it hears
        telemetry after its first command, and its own commands' verification."""
        from orbithil.flight.ground import Ground, MemorySequence

        ground = Ground(self.stack.link.udp_address, key_id=key_id, key=self.keys[key_id],
                        sequence=MemorySequence())  # fmt: skip
        self.grounds.append(ground)
        return ground


@pytest.fixture
def flight_stack():
    """A flight stack with a ground client: ``fs = flight_stack("model://", **config)``, then
    ``fs.ground.command("SET_MODE", mode="NOMINAL")`` (waits for completion; raises
    ``CommandRejected`` if it failed, ``TimeoutError`` if none came),
    ``fs.ground.wait_telemetry("MODE", lambda v: v == 1, timeout=5)`` and
    ``fs.ground.wait_event("JOB_DONE", timeout=30)``. ``pytest --fixtures -v``: all of it.

    ``flight_stack(chip_url="model://?harden=1", **config)`` returns a RunningStack with
    ``.stack``, ``.ground``, ``.chip``, ``.chips``. ``chip_url`` is a HAL URL
    (``model://``, ``sim://verilator?harden=0``, a serial device) or a list of them (a
    payload pool); ``config`` sets ``flight.stack.Config`` fields (``hk_period_ms=50``,
    ``policy="dmr"``, ``tcp_port=0``, ...). The stack listens on a free port with a fresh
    key (id 1); its telemetry goes to the ground client from the start. With
    ``tenants=[{"name": "acme", "key_ids": [2]}]`` each tenant key id gets a fresh key too,
    and ``fs.ground_for(2)`` is a ground client signing with it. Everything started is
    stopped after the test. The ground client (``flight.ground.Ground``):

    - ``fs.ground.command("SET_MODE", mode="NOMINAL", timeout=10)`` sends and waits for
      completion; raises ``flight.ground.CommandRejected`` (``.reason``) if the stack ran
      it and it failed, ``TimeoutError`` if no completion came in time;
    - ``fs.ground.wait_telemetry("MODE", lambda v: v == 1, timeout=5)`` returns the first
      value meeting the predicate; ``fs.ground.telemetry`` holds the latest values;
    - ``fs.ground.wait_event("JOB_DONE", lambda e: "job 1" in e.text, timeout=30,
      since=n)`` returns an ``EventRecord`` (``.name``, ``.text``, ...); ``fs.ground.events``
      holds them all.

    A wait that times out says the last value (or event) it saw.
    """
    from orbithil import hal
    from orbithil.flight.ground import Ground, MemorySequence
    from orbithil.flight.stack import Config, FlightStack

    running: list[RunningStack] = []

    def start(chip_url: str | list[str] = "model://?harden=1", **config) -> RunningStack:
        key = secrets.token_bytes(32)
        keys = {1: key}
        for tenant in config.get("tenants", ()):
            for key_id in tenant.get("key_ids", [tenant.get("key_id")]):
                if isinstance(key_id, int):
                    keys.setdefault(key_id, secrets.token_bytes(32))
        urls = [chip_url] if isinstance(chip_url, str) else list(chip_url)
        chips: list = []
        try:
            for url in urls:
                chips.append((url, hal.open(url)))
            stack = FlightStack(chips, Config(**{"udp_port": 0, **config}), keys)
            stack.start()
        except BaseException:
            for _, chip in chips:
                chip.close()
            raise
        # a fresh key no other console has: numbers from 1, nothing written to disk
        ground = Ground(stack.link.udp_address, key_id=1, key=key, sequence=MemorySequence())
        stack.link.ground = ground.sock.getsockname()  # telemetry flows before any command
        handle = RunningStack(chips[0][1], stack, ground, [chip for _, chip in chips], keys)
        running.append(handle)
        return handle

    yield start
    for handle in reversed(running):
        for other in handle.grounds:
            other.close()
        handle.ground.close()
        handle.stack.stop()
        for chip in handle.chips:
            chip.close()
