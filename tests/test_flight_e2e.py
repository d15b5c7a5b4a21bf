"""End to end: ``orbithil fly`` on the simulated chip (Verilator), commanded from the ground
over UDP with authenticated telecommands; the chip is made to misbehave through injection
and FDIR takes it to SAFE; the ground brings it back."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
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


WDT_CYCLES = 50_000_000  # the flight stack's watchdog timeout (Config.wdt_cycles)


def test_fly_a_pool_of_three_serves_300_tmr_inferences_through_a_hung_chip(tmp_path):
    """``orbithil fly`` with three chips, the simulated one unhardened; 300 inferences under
    TMR from the authenticated ground; mid-run, upsets in the simulated chip's watchdog
    register (no TMR on it in HARDEN=0) shorten its timeout to 4,096 cycles: the watchdog
    now fires (and resets the chip's engines) every 4,096 cycles, less than its longest MAC
    job (a 64x64 tile), cutting jobs and frames: the chip hangs. The pool fences it, re-runs
    its work elsewhere, resets it (a short SOFT_RESET frame that fits between two firings
    restores the register defaults), self-tests and re-admits it, and every job completes
    once with the model's classes."""
    from orbithil.payload.model import default_model

    key = secrets.token_hex(32)
    keys = tmp_path / "keys"
    keys.write_text(f"2 {key}\n")
    config = tmp_path / "fly.toml"
    config.write_text(f"hk_period_ms = 100\nchip_poll_ms = 200\nwdt_cycles = {WDT_CYCLES}\n")
    port = _free_udp_port()
    chips = ["sim://verilator?harden=0", "model://?harden=1", "model://?harden=0"]
    fly = subprocess.Popen(
        [sys.executable, "-m", "orbithil.tools.cli", "fly", "--config", str(config),
         "--port", str(port), "--keys", str(keys), "--json",
         *(arg for url in chips for arg in ("--chip", url))],
        cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    model = default_model()
    xs, labels = model.test_split()
    try:
        line = fly.stdout.readline()
        assert line.startswith("{"), line
        assert json.loads(line)["chips"] == chips
        with Ground(("127.0.0.1", port), key_id=2, key=bytes.fromhex(key)) as g:
            g.command("NOOP", timeout=20)
            assert g.wait_telemetry("POOL_HEALTHY", lambda v: v == 3, timeout=20) == 3
            g.command("SET_MODE", mode="NOMINAL", timeout=20)
            g.command("SET_MODE", mode="COMPUTE", timeout=20)
            g.command("SET_POLICY", policy="tmr", timeout=20)
            jobs = {}
            for first in range(0, 300, 10):
                since = len(g.events)
                g.command("SUBMIT_JOB", first=first, count=10, timeout=20)
                event = g.wait_event("JOB_SUBMITTED", timeout=20, since=since)
                jobs[int(event.text.split(":")[0].split()[1])] = first
            # mid-run: a few jobs done, most still queued
            g.wait_event("JOB_DONE", timeout=120)
            assert g.telemetry.get("JOBS_DONE", 0) < 20
            runs_before = g.telemetry["CHIP0_RUNS"]
            for bit in range(32):  # 50,000,000 -> 4,096: every set bit but bit 12 flipped
                if WDT_CYCLES >> bit & 1 and bit != 12:
                    g.command("CHIP_INJECT", kind="reg", index=0x12, bit=bit, copy=0, chip=0,
                              timeout=60)  # fmt: skip
            fenced = g.wait_event("CHIP_FENCED", timeout=60)
            # the watchdog keeps resetting the chip's engines: the command in flight is
            # stopped (a job ending in status "watchdog") or never answered, or a health
            # poll between two runs sees the expiry count rise, whichever comes first
            assert fenced.text.startswith("chip 0 fenced"), fenced.text
            assert re.search(r"LinkTimeout|watchdog|WDT_EXPIRIES rose", fenced.text), fenced.text
            g.wait_event("CHIP_RESET", lambda e: e.text.startswith("chip 0 reset"), timeout=60)
            g.wait_event("CHIP_READMITTED", lambda e: e.text.startswith("chip 0 "), timeout=60)
            done = {}
            for job, first in jobs.items():
                event = g.wait_event("JOB_DONE", lambda e, j=job: e.text.startswith(f"job {j} "),
                                     timeout=300)  # fmt: skip
                done[job] = event
                expected = "".join(
                    str(int(np.argmax(model.forward(xs[first + i])))) for i in range(10)
                )
                assert "10/10 completed" in event.text and "policy tmr" in event.text
                assert event.text.endswith(f"classes {expected}"), (event.text, expected)
            assert sum(e.name == "JOB_DONE" for e in g.events) == 30  # none twice
            g.wait_telemetry("ITEMS_DONE", lambda v: v == 300, timeout=10)
            assert g.telemetry["ITEMS_FAILED"] == 0
            assert g.telemetry["FENCES"] >= 1 and g.telemetry["READMISSIONS"] >= 1
            assert g.telemetry["CHIP0_RUNS"] > runs_before  # it served again after re-admission
            assert g.telemetry["CHIP0_FAULTS"] >= 1
            assert g.telemetry["TC_REJECTED_AUTH"] == 0
            correct = sum(int(np.argmax(model.forward(xs[i]))) == labels[i] for i in range(300))
            assert g.telemetry["INFERENCES_CORRECT"] == correct
    finally:
        fly.terminate()
        try:
            fly.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(fly.pid, 9)
            fly.wait()
    assert fly.returncode == 0, fly.stdout.read()
