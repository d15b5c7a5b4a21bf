"""Shared pytest setup: deterministic hypothesis, codec backends, the board device."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, settings

from orbithil.hal import codec
from orbithil.settings import Settings

# Deterministic property tests: the same examples on every run and every machine.
settings.register_profile(
    "orbithil",
    derandomize=True,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("orbithil")


@pytest.fixture(autouse=True, scope="session")
def _state_dir(tmp_path_factory):
    """The ground's telecommand sequence counters (orbithil.settings state_dir) of this
    run, in a temporary directory: tests never write into the user's state directory."""
    previous = os.environ.get("ORBITHIL_STATE_DIR")
    os.environ["ORBITHIL_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if previous is None:
        os.environ.pop("ORBITHIL_STATE_DIR", None)
    else:
        os.environ["ORBITHIL_STATE_DIR"] = previous


@pytest.fixture(params=["python", "c"])
def codec_backend(request):
    """Each codec backend. The C one must be built: `make setup` builds it, so a missing
    C backend is a failure, not a skip."""
    backends = codec.available_backends()
    if request.param not in backends:
        pytest.fail(f"the C codec is {codec.c_status()}")
    return backends[request.param]


SERVE_START_S = 600.0  # a first Verilator build of the chip, on a loaded 2-core machine


@pytest.fixture(scope="session")
def board_device(tmp_path_factory):
    """The serial device of the board tests: a real board (ORBITHIL_BOARD=/dev/ttyUSBx), or
    else the simulated chip (Verilator, HARDEN=1) behind a pseudo-terminal served by
    ``orbithil sim serve --pty``, so the board code path (a device path opened by
    pyserial's Serial, termios, chunked reads) runs in CI too."""
    device = Settings.from_env().board
    if device:
        yield device
        return
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orbithil.tools.cli", "sim", "serve", "--pty", "--json"],
            stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        ready, _, _ = select.select([proc.stdout], [], [], SERVE_START_S)
        line = proc.stdout.readline() if ready else b""
        if not line:
            pytest.fail(f"orbithil sim serve did not start:\n{log.read_text()[-3000:]}")
        yield json.loads(line)["device"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
