"""The sim:// backend's lifecycle: ready handshake, a killed simulator, no orphans; and how
far its bridge may step the simulator while the chip sends a frame."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orbithil import hal
from orbithil.hal import codec
from orbithil.hal.codec.frame_format import CRC_LEN, FEC_PARITY, FEC_VERSION, HEADER_LEN
from orbithil.sim.bridge import ChipFrames

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


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_a_chip_nobody_talks_to_costs_a_small_share_of_a_core(simulator):
    """The bridge waits for the host between idle steps long enough that a step's CPU is
    about 5 % of the time: an idle Icarus chip took 80 % of a core (its 64-byte idle
    step is ~60 ms of CPU against a 20 ms wait). CPU time, not wall time: a busy machine
    only lowers the share."""
    with hal.open(f"sim://{simulator}?harden=0", timeout=30.0) as chip:
        chip.identify()
        proc = chip._backend.proc.pid
        time.sleep(1.0)  # the waits have grown
        before, start = _cpu_s(proc), time.monotonic()
        time.sleep(4.0)
        share = (_cpu_s(proc) - before) / (time.monotonic() - start)
        assert share < 0.25, f"an idle {simulator} chip used {share:.0%} of a core"
        assert chip.identify().harden == 0  # and it still answers at once


def _cpu_s(pid: int) -> float:
    """CPU seconds of the live processes in ``pid``'s process group (the simulator's
    session: its process and what it started), from /proc."""
    group, ticks = os.getpgid(pid), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[2]) == group:  # pgrp; utime and stime follow at 11 and 12
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def test_a_killed_parent_leaves_no_simulator_behind(tmp_path):
    """The parent dies with SIGKILL (no cleanup runs): its socket closes, the bridge ends."""
    script = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(os.getcwd())!r})
        from orbithil import hal
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


def test_a_thousand_commands_to_the_rtl_over_a_corrupting_link_all_come_back_right():
    """The issue's acceptance run: the simulated chip behind fault:// (1% of bytes
    corrupted each way), a seeded random sequence of 1,000 commands, every result checked."""
    import numpy as np

    rng = np.random.default_rng(2026)
    with hal.open(
        "fault://sim://verilator?harden=1?flip=0.01&seed=11", timeout=0.2, retries=20
    ) as chip:
        chip.reset()
        shadow_reg = 0
        shadow_mem: dict[int, int] = {}
        commands = 0
        while commands < 1000:
            op = int(rng.integers(0, 4))
            if op == 0:
                shadow_reg = int(rng.integers(0, 2**32))
                assert chip.write_reg("SCRATCH0", shadow_reg) == shadow_reg
                commands += 1
            elif op == 1:
                assert chip.read_reg("SCRATCH0") == shadow_reg
                commands += 1
            elif op == 2:
                addr = int(rng.integers(0, 2000))
                words = rng.integers(0, 2**32, 4, dtype=np.uint64).astype(np.uint32)
                chip.write_mem(addr, words)
                shadow_mem.update({addr + i: int(w) for i, w in enumerate(words)})
                commands += 1
            elif shadow_mem:
                addr = int(rng.choice(list(shadow_mem)))
                assert int(chip.read_mem(addr, 1)[0]) == shadow_mem[addr]
                commands += 1
        stats = chip.link.stats
        assert stats.requests >= 1000 and stats.retries > 0  # faults happened, were recovered
        assert chip.telemetry()["FRAMES_BAD"] > 0  # the chip saw damaged frames too
        # the link turned FEC on (auto): the chip took version-2 frames, the host repaired
        assert stats.fec_requests > 0 and chip.link.deframer.bytes_corrected > 0


@given(
    frames=st.lists(
        st.tuples(
            st.integers(0, 255),
            st.integers(0, 255),
            st.binary(max_size=251) | st.lists(st.sampled_from(b"\x00\x01\xff"), max_size=251),
            st.sampled_from([1, FEC_VERSION]),
        ),
        min_size=1,
        max_size=4,
    ),
    chunk=st.integers(1, 40),
)
def test_the_bridge_expects_no_more_of_a_chip_frame_than_is_left_to_come(frames, chunk):
    """The bridge moves the simulator on by the bytes of the chip's frame that are certain
    to come, in one step: never more than are left of it (at a frame's end, none), and all
    of them but COBS's extra code bytes once the frame's header has come."""
    wires = [
        codec.frame_encode(seq, cmd, bytes(payload), version=version)
        for seq, cmd, payload, version in frames
    ]
    stream = b"".join(wires)
    ends = [sum(len(w) for w in wires[: i + 1]) for i in range(len(wires))]
    sending = ChipFrames()
    for start in range(0, len(stream), chunk):
        sending.feed(stream[start : start + chunk])
        pos = min(start + chunk, len(stream))
        k = next(i for i, end in enumerate(ends) if end >= pos)
        left = ends[k] - pos
        assert 0 <= sending.certain <= left
        _, _, payload, version = frames[k]
        if pos - (ends[k] - len(wires[k])) > 1 + 2 * HEADER_LEN and left:  # its header came
            body = HEADER_LEN + len(payload) + CRC_LEN + (FEC_PARITY if version == 2 else 0)
            cobs_codes = len(wires[k]) - 2 - body
            assert sending.certain == left - (cobs_codes - 1)


# --- the build cache: one build per environment, one builder at a time ------------------
def test_a_build_is_keyed_by_the_cocotb_install_that_links_it(monkeypatch):
    from orbithil.sim import harness

    spec = harness.chip_build("icarus")
    here = spec.key()
    monkeypatch.setattr(harness, "_cocotb_install", lambda: "/another/venv/cocotb|2.0|/bin")
    assert spec.key() != here  # another checkout's venv gets its own build
    assert spec.key().rsplit("-", 1)[0] == here.rsplit("-", 1)[0]


def test_two_processes_asking_for_one_build_get_one_build(monkeypatch, tmp_path):
    import threading

    from orbithil.sim import harness

    monkeypatch.setenv("ORBITHIL_CACHE_DIR", str(tmp_path))
    spec = harness.Build("icarus", top="nothing_tb")
    built = []
    started = threading.Barrier(3)

    def slow_build(spec, runner):
        built.append(threading.get_ident())
        time.sleep(0.3)  # the others arrive meanwhile, wait for the lock, then reuse
        spec.build_dir.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(harness, "_build", slow_build)

    def ask():
        started.wait(timeout=10)
        harness.build(spec)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(built) == 1
    assert (spec.build_dir / ".orbithil-built").read_text() == spec.key()


def test_a_build_held_too_long_by_another_process_is_a_clear_error(monkeypatch, tmp_path):
    import fcntl

    from orbithil.sim import harness

    monkeypatch.setattr(harness, "BUILD_LOCK_WAIT_S", 0.3)
    build_dir = tmp_path / "sim_build" / "icarus-x"
    build_dir.parent.mkdir()
    with open(build_dir.parent / ".icarus-x.lock", "a") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        waiting = pytest.raises(TimeoutError, match=r"building .*icarus-x.*fuser .*\.lock")
        with waiting, harness._build_lock(build_dir):
            pass
