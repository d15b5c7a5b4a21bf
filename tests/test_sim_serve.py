"""`orbithil sim serve`: a chip behind a pseudo-terminal or a TCP port, reached through
pyserial's real serial code. The board tests run on the simulated chip this way (see the
``board_device`` fixture); these check the relay itself, on the model for speed."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

import numpy as np
import pytest
import serial

from orbithil import hal
from orbithil.hal.ports import SerialBackend


@pytest.fixture
def served(request, tmp_path):
    args = request.param
    proc = subprocess.Popen(
        [sys.executable, "-m", "orbithil.tools.cli", "sim", "serve", *args, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else b""
    assert line, proc.stderr.read1().decode() if proc.poll() is not None else "no ready line"
    yield json.loads(line), proc
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"stopped:" in err


@pytest.mark.parametrize("served", [["model://?harden=0", "--pty"]], indirect=True)
def test_a_pty_is_a_serial_port_that_reaches_the_chip(served, tmp_path):
    info, _ = served
    device = info["device"]
    assert device.startswith("/dev/pts/") and info["harden"] is False
    assert isinstance(hal.backends.backend_for(device), SerialBackend)
    for _ in range(2):  # a client may close the device and open it again
        with hal.open(device, timeout=2.0) as chip:
            assert isinstance(chip.link.port, serial.Serial)  # pyserial's own serial class
            rng = np.random.default_rng(3)
            w = rng.integers(-128, 128, (20, 32), dtype=np.int8)
            x = rng.integers(-128, 128, 32, dtype=np.int8)
            assert np.array_equal(chip.run_matvec(w, x), w.astype(np.int32) @ x.astype(np.int32))
    ports = subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", "ports", device, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    [row] = [r for r in json.loads(ports.stdout) if r["device"] == device]
    assert row["chip"].startswith("orbithil chip") and "HARDEN=0" in row["chip"]


@pytest.mark.parametrize("served", [["model://", "--tcp"]], indirect=True)
def test_tcp_serving_takes_one_client_after_another(served):
    info, _ = served
    assert info["device"].startswith("socket://127.0.0.1:")
    for value in (0x1234, 0xBEEF):
        with hal.open(info["device"], timeout=2.0) as chip:
            assert chip.write_reg("SCRATCH0", value) == value


def test_a_symlink_names_the_pty(tmp_path):
    link = tmp_path / "chip0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orbithil.tools.cli", "sim", "serve", "model://", "--pty",
         "--link", str(link), "--json", "--for", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        info = json.loads(proc.stdout.readline())
        assert info["device"] == str(link) and os.readlink(link).startswith("/dev/pts/")
        with hal.open(str(link), timeout=2.0) as chip:
            assert chip.identify().harden is True
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not link.exists()  # removed when the relay stops


def test_serving_a_bad_url_is_a_user_error():
    done = subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", "sim", "serve", "model://?harden=2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "harden='2'" in done.stderr and "Traceback" not in done.stderr
