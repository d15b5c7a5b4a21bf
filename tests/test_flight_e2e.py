"""End to end: ``orbithil fly`` on the simulated chip (Verilator), commanded from the ground
over UDP with authenticated telecommands; the chip is made to misbehave through injection
and FDIR takes it to SAFE; the ground brings it back."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orbithil.flight.ground import Ground

pytestmark = pytest.mark.sim
ROOT = Path(__file__).resolve().parent.parent


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fly_on_the_simulated_chip_fdir_goes_safe_and_recovers(tmp_path):
    key = secrets.token_hex(32)
    keys = tmp_path / "keys"
    keys.write_text(f"4 {key}\n")
    config = tmp_path / "fly.toml"
    config.write_text("hk_period_ms = 100\nchip_poll_ms = 50\nscrub_period = 8\n")
    port = _free_udp_port()
    fly = subprocess.Popen(
        [sys.executable, "-m", "orbithil.tools.cli", "fly", "--chip", "sim://verilator?harden=1",
         "--config", str(config), "--port", str(port), "--keys", str(keys)],
        cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        line = fly.stdout.readline()  # printed once the stack is up (after the sim build)
        assert "flight stack up" in line, line
        with Ground(("127.0.0.1", port), key_id=4, key=bytes.fromhex(key)) as g:
            g.command("NOOP", timeout=20)  # the stack learns where to send telemetry
            assert g.wait_telemetry("CHIP_HEALTHY", lambda v: v == 1, timeout=20) == 1
            g.wait_telemetry("CHIP_UPTIME", lambda v: v > 0, timeout=10)
            assert not g.dict_mismatch
            g.command("SET_MODE", mode="NOMINAL", timeout=20)
            g.wait_telemetry("SCRUB_PERIOD", lambda v: v == 8, timeout=20)
            g.command("SET_MODE", mode="COMPUTE", timeout=20)
            g.command("RUN_INFERENCE", index=2, timeout=60)
            g.wait_event("INFERENCE_DONE", timeout=20)
            # misbehave: an uncorrectable word, made with the scrubber paused
            g.command("SET_SCRUB", period=0, timeout=20)
            for bit in (7, 9):
                g.command("CHIP_INJECT", kind="mem", index=300, bit=bit, copy=0, timeout=20)
            g.command("SET_SCRUB", period=8, timeout=20)
            fdir = g.wait_event("FDIR_TRIGGERED", timeout=60)
            assert "uncorrectable-memory" in fdir.text and "reset_chip_safe" in fdir.text
            g.wait_event("CHIP_RESET", timeout=60)
            g.wait_telemetry("MODE", lambda v: v == 0, timeout=20)
            g.wait_telemetry("ECC_UNCORRECTABLE", lambda v: v == 0, timeout=20)
            # recover
            g.command("SET_MODE", mode="NOMINAL", timeout=20)
            g.wait_telemetry("MODE", lambda v: v == 1, timeout=20)
            assert g.wait_telemetry("FDIR_ACTIONS", lambda v: v >= 1, timeout=10) >= 1
            assert g.telemetry["TC_REJECTED_AUTH"] == 0
    finally:
        fly.terminate()
        try:
            fly.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(fly.pid, 9)
            fly.wait()
    assert fly.returncode == 0, fly.stdout.read()
