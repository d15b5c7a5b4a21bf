"""The sim:// backend's lifecycle: ready handshake, a killed simulator, no orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import hal

pytestmark = pytest.mark.sim


def test_a_simulator_killed_mid_command_raises_backend_error_with_its_log():
    chip = hal.open("sim://icarus?harden=1", timeout=5.0, retries=1)
    try:
        chip.identify()
        backend = chip._backend
        os.killpg(backend.proc.pid, signal.SIGKILL)  # the simulator and its runner die
        with pytest.raises(hal.BackendError) as info:
            chip.read_mem(0, 60)
        assert "sim://icarus" in str(info.value)
        assert "cocotb" in info.value.log_tail  # the tail of the simulator's own log
    finally:
        chip.close()


def test_closing_leaves_no_simulator_behind():
    chip = hal.open("sim://icarus?harden=0", timeout=5.0)
    pid = chip._backend.proc.pid
    chip.identify()
    chip.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_a_killed_parent_leaves_no_simulator_behind(tmp_path):
    """The parent dies with SIGKILL (no cleanup runs): its socket closes, the bridge ends."""
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(os.getcwd())!r})
        import hal
        chip = hal.open("sim://icarus?harden=0", timeout=5.0)
        chip.identify()
        print(chip._backend.proc.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(parent.stdout.readline())
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.killpg(pgid, signal.SIGKILL)
            pytest.fail("the simulator outlived its killed parent by 30 s")
    finally:
        parent.kill()
