"""Faults the system survives, with real processes: a flood of random datagrams at a
running stack's ground link, the simulator killed under a running campaign, and a Dask
worker killed while it runs a chunk. Each says what was kept and what was lost (nothing).
docs/reliability.md ("Faults survived") gives the figures."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from orbithil.flight import ccsds
from orbithil.flight.dictionary import APID_TC
from orbithil.flight.ground import Ground, MemorySequence

FLOOD_SEED = 20261201
FLOOD_SIZE = 5000
BATCH = 50  # datagrams sent before waiting for the stack to count them (no kernel drops)
REJECTED = ("TC_REJECTED_MALFORMED", "TC_REJECTED_AUTH", "TC_REJECTED_REPLAY")
UDP_MAX = 65507  # the largest IPv4 UDP payload


def _random_datagram(rng: np.random.Generator) -> bytes:
    """Empty, short, random, oversize, or shaped like a telecommand (right header and
    length) with a random key id, sequence, opcode, arguments and MAC."""
    kind = rng.choice(["empty", "short", "random", "oversize", "tc-shaped"],
                      p=[0.02, 0.3, 0.3, 0.03, 0.35])  # fmt: skip
    if kind == "empty":
        return b""
    if kind == "short":
        return rng.bytes(int(rng.integers(1, ccsds.HEADER + ccsds.TC_FIXED.size + 1)))
    if kind == "random":
        return rng.bytes(int(rng.integers(1, 1025)))
    if kind == "oversize":
        return rng.bytes(int(rng.integers(ccsds.MAX_TC + 1, UDP_MAX + 1)))
    body = rng.bytes(ccsds.TC_FIXED.size + int(rng.integers(0, 9)) + ccsds.MAC_LEN)
    sequence = 0xC000 | int(rng.integers(0, 1 << 14))
    header = struct.pack(">HHH", 1 << 12 | APID_TC, sequence, len(body) - 1)  # a TC's header
    return header + body


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_a_flood_of_random_datagrams_is_refused_counted_and_the_stack_still_answers(tmp_path):
    key = secrets.token_bytes(32)
    keys = tmp_path / "keys"
    keys.write_text(f"1 {key.hex()}\n")
    (tmp_path / "fly.toml").write_text("hk_period_ms = 10\n")
    port = _free_udp_port()
    fly = subprocess.Popen(
        [sys.executable, "-m", "orbithil.tools.cli", "fly", "--chip", "model://?harden=1",
         "--config", "fly.toml", "--port", str(port), "--keys", str(keys)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    rng = np.random.default_rng(FLOOD_SEED)
    print(f"flood seed {FLOOD_SEED}")
    try:
        assert "flight stack up" in fly.stdout.readline()
        with (
            Ground(("127.0.0.1", port), key_id=1, key=key, sequence=MemorySequence(1)) as g,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood,
        ):
            g.command("NOOP", timeout=20)  # this ground now hears housekeeping
            g.wait_telemetry("CMD_COMPLETED", lambda v: v >= 1, timeout=20)
            sizes = []
            for start in range(0, FLOOD_SIZE, BATCH):
                for _ in range(BATCH):
                    datagram = _random_datagram(rng)
                    sizes.append(len(datagram))
                    flood.sendto(datagram, ("127.0.0.1", port))
                # every datagram so far refused and counted before the next batch
                sent = start + BATCH
                g.wait_telemetry("TC_REJECTED_MALFORMED",
                                 lambda v, s=sent: v + g.telemetry.get("TC_REJECTED_AUTH", 0)
                                 + g.telemetry.get("TC_REJECTED_REPLAY", 0) >= s,
                                 timeout=30)  # fmt: skip
            assert min(sizes) == 0 and max(sizes) > ccsds.MAX_TC  # empty and oversize sent
            # after the flood, an authenticated NOOP is answered
            g.command("NOOP", timeout=10)
            completed = g.wait_telemetry("CMD_COMPLETED", lambda v: v >= 2, timeout=10)
            counts = {name: g.telemetry[name] for name in REJECTED}
            print(f"flood of {FLOOD_SIZE} datagrams ({sum(sizes)} bytes, {sizes.count(0)} "
                  f"empty, {sum(n > ccsds.MAX_TC for n in sizes)} longer than the longest "
                  f"telecommand ({ccsds.MAX_TC} bytes), up to {max(sizes)}): {counts}, "
                  f"EVENTS_THROTTLED {g.telemetry['EVENTS_THROTTLED']:g}")  # fmt: skip
            assert sum(counts.values()) == FLOOD_SIZE, counts  # each one, none accepted
            assert counts["TC_REJECTED_MALFORMED"] > 0 and counts["TC_REJECTED_AUTH"] > 0
            assert counts["TC_REJECTED_REPLAY"] == 0  # no random packet got past the MAC
            assert completed == 2 and g.telemetry["CMD_FAILED"] == 0
            assert g.telemetry["EVENTS_THROTTLED"] > 0  # TC_REJECTED events throttled, counted
            assert fly.poll() is None  # nothing crashed
    finally:
        _stop(fly)
    out = fly.stdout.read()
    assert fly.returncode == 0, out
    assert "Traceback" not in out, out


# --- campaigns: the simulator and a Dask worker killed mid-run ----------------------------------
def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc (pid -> child pids)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def _argv(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _engines(root: int) -> list[int]:
    """Engine processes (``python -m orbithil.sim.process``) under ``root``."""
    return [p for p in _descendants(root) if "orbithil.sim.process" in _argv(p)]


def _simulators(root: int) -> list[int]:
    """Simulators under ``root``: the programs built in the cocotb build folder."""
    from orbithil.sim.paths import sim_build_dir

    builds = str(sim_build_dir())
    return [p for p in _descendants(root) if _argv(p)[0].startswith(builds)]


def _count_results(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM result").fetchone()[0]
    except sqlite3.OperationalError:  # the store is being made: no tables yet
        return 0
    finally:
        db.close()


def _store_check(path: Path) -> tuple[int, int, int, int]:
    """(planned, results, distinct plan ids among them, tool errors)."""
    db = sqlite3.connect(path)
    try:
        planned = db.execute("SELECT COUNT(*) FROM plan").fetchone()[0]
        results, distinct = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT plan_id) FROM result"
        ).fetchone()
        tool = db.execute("SELECT COUNT(*) FROM result WHERE outcome = 'tool_error'").fetchone()[0]
    finally:
        db.close()
    return planned, results, distinct, tool


def _spec(path: Path, n: int, *, chunk: int, executor: str = "local") -> Path:
    # stuck-at faults are always simulated (no def/use shortcut), so chunks take a while
    path.write_text(
        f'name = "faults"\nseed = 7\n[workload]\nname = "control"\n[chip]\nharden = [1]\n'
        f'simulator = "verilator"\n[fault]\nmodel = "stuck"\n[size]\ninjections = {n}\n'
        f'[run]\nworkers = 2\nchunk = {chunk}\nexecutor = "{executor}"\n'
    )
    return path


def _busy_workers(root: int) -> list[int]:
    """Dask worker processes under ``root`` running a chunk: parents of an engine process."""
    parents = []
    for engine in _engines(root):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{engine}/stat").read_text()
            parents.append(int(stat.rsplit(")", 1)[1].split()[1]))
    return [p for p in parents if p != root]


CAMPAIGN = [sys.executable, "-m", "orbithil.tools.cli", "campaign", "run"]


def _kill_when(proc: subprocess.Popen, store: Path, at: int, find, what: str) -> int:
    """SIGKILL the first process ``find(proc.pid)`` gives once the store holds ``at``
    results; its pid."""
    deadline = time.monotonic() + 900  # a first build of the chip takes minutes
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the campaign ended before the {what} was killed"
        if _count_results(store) >= at:
            found = find(proc.pid)
            if found:
                os.kill(found[0], signal.SIGKILL)
                return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {what} to kill within the deadline")


@pytest.mark.sim
def _run_killing(args: list[str], cwd: Path, store: Path, find, what: str, *, env=None):
    """``orbithil campaign run`` with ``args``, one ``what`` (found by ``find``) killed once
    3 results are stored; returns (exit code, stdout, stderr). The run's process group is
    killed if it outlives the test."""
    proc = subprocess.Popen([*CAMPAIGN, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        _kill_when(proc, store, 3, find, what)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def test_the_simulator_killed_under_a_campaign_is_retried_and_nothing_is_lost(tmp_path):
    spec = _spec(tmp_path / "c.toml", 40, chunk=20)
    store = tmp_path / "c.sqlite"
    code, _, err = _run_killing([str(spec), "--store", str(store)], tmp_path, store,
                                _simulators, "simulator")  # fmt: skip
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert "the engine process exited with code" in err  # said, and retried
    print(*(line for line in err.splitlines() if "engine process" in line), sep="\n")
    assert _store_check(store) == (40, 40, 40, 0)  # every injection once, none a tool error
    again = subprocess.run([*CAMPAIGN, "--store", str(store)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith("0 injections in")  # nothing left, nothing run twice
    assert _store_check(store) == (40, 40, 40, 0)


@pytest.mark.sim
@pytest.mark.slow
def test_a_dask_worker_killed_mid_chunk_is_rescheduled_and_nothing_is_lost(tmp_path):
    pytest.importorskip("distributed")
    spec = _spec(tmp_path / "c.toml", 12, chunk=3, executor="dask")
    store = tmp_path / "c.sqlite"
    code, out, err = _run_killing([str(spec), "--store", str(store), "--json"], tmp_path,
                                  store, _busy_workers, "Dask worker")  # fmt: skip
    assert code == 0, err[-3000:]
    assert json.loads(out)["done"] == 12
    print(err[-3000:])
    assert _store_check(store) == (12, 12, 12, 0)  # every injection once


@pytest.mark.sim
@pytest.mark.slow
def test_a_chunk_dask_gives_up_on_stops_with_a_clear_error_and_a_rerun_finishes(tmp_path):
    """With no failures allowed per task, a worker killed under a chunk fails it for good:
    the run stops saying so, the other chunks' results are kept, and a rerun does the rest
    (here on local workers: the same store, whichever executor)."""
    pytest.importorskip("distributed")
    spec = _spec(tmp_path / "c.toml", 12, chunk=3, executor="dask")
    store = tmp_path / "c.sqlite"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    code, _, err = _run_killing([str(spec), "--store", str(store)], tmp_path, store,
                                _busy_workers, "Dask worker", env=env)  # fmt: skip
    assert code == 2, err[-3000:]
    last = err.rstrip().splitlines()[-1]  # a clear error of ours, not a traceback
    assert last.startswith("orbithil: error: "), err[-3000:]
    # the chunk it ran (and one Dask had queued on it, if any) failed for good
    found = re.search(r"(\d) of 4 chunks failed on the Dask cluster \(first: KilledWorker", err)
    assert found and 1 <= int(found[1]) <= 2, err[-3000:]
    assert f"every other chunk's results are kept: `orbithil campaign run --store {store}` " in err
    print(last)
    lost = 3 * int(found[1])
    assert _store_check(store) == (12, 12 - lost, 12 - lost, 0)  # the other chunks kept
    again = subprocess.run([*CAMPAIGN, "--store", str(store), "--executor", "local"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith(f"{lost} injections in")  # only the failed chunks ran
    assert _store_check(store) == (12, 12, 12, 0)
