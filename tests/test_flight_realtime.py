"""Real-time priority for the flight stack's threads (``realtime`` in the flight config)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from orbithil.errors import ConfigError
from orbithil.flight import realtime
from orbithil.flight.stack import Config

NORMAL = os.SCHED_OTHER


def _policy(tid: int) -> tuple[int, int]:
    """(policy without the reset-on-fork flag, priority) of a thread."""
    return os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK, os.sched_getparam(
        tid
    ).sched_priority


def _allowed() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime.RATE_GROUP_PRIORITY))
    except PermissionError:
        return False
    os.sched_setscheduler(0, NORMAL, os.sched_param(0))
    return True


def test_a_realtime_mode_that_is_not_one_of_the_three_is_refused_at_load():
    with pytest.raises(ConfigError, match=r'realtime = .*"off", "auto" or "on"'):
        Config(realtime="yes")


@pytest.mark.skipif(not _allowed(), reason="this user may not set real-time priorities")
def test_auto_puts_the_rate_groups_above_the_stack_and_stop_gives_every_thread_back(
    flight_stack,
):
    tids = set(os.listdir("/proc/self/task"))
    before = {int(t): _policy(int(t)) for t in tids}
    fs = flight_stack("model://?harden=1", hk_period_ms=50, realtime="auto")
    event = fs.ground.wait_event("REALTIME", timeout=10)
    assert "real-time priority: on (realtime = auto)" in event.text
    assert fs.stack.realtime.active
    rate_groups = fs.stack.scheduler.native_id
    assert _policy(rate_groups) == (os.SCHED_FIFO, realtime.RATE_GROUP_PRIORITY)
    others = set(fs.stack.realtime.changed) - {rate_groups}
    assert threading.get_native_id() in others  # this thread too: it may hold the interpreter
    for tid in others:
        assert _policy(tid) == (os.SCHED_FIFO, realtime.STACK_PRIORITY)
    # a process the stack starts now (a simulator behind sim://) runs at normal priority
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert int(child.stdout) == NORMAL
    fs.stack.stop()
    assert not fs.stack.realtime.active
    for tid, policy in before.items():
        if os.path.exists(f"/proc/self/task/{tid}"):
            assert _policy(tid) == policy


def _refuse(*args):
    raise PermissionError(1, "Operation not permitted")


def test_auto_without_the_privilege_runs_at_normal_priority_and_says_why(flight_stack, monkeypatch):
    monkeypatch.setattr(os, "sched_setscheduler", _refuse)  # as for a user without rtprio
    fs = flight_stack("model://?harden=1", hk_period_ms=50, realtime="auto")
    event = fs.ground.wait_event("REALTIME", timeout=10)
    assert "real-time priority: off (realtime = auto)" in event.text
    assert "not allowed (Operation not permitted)" in event.text
    assert not fs.stack.realtime.active
    fs.ground.command("NOOP")  # the stack runs


def test_on_without_the_privilege_refuses_to_start_and_says_how_to_allow_it(
    flight_stack, monkeypatch
):
    monkeypatch.setattr(os, "sched_setscheduler", _refuse)
    with pytest.raises(realtime.RealtimeError) as refused:
        flight_stack("model://?harden=1", realtime="on")
    message = str(refused.value)
    assert "not allowed" in message and "CAP_SYS_NICE" in message and "ulimit -r" in message
    assert 'realtime = "auto"' in message


def test_flight_keeps_the_start_up_heap_out_of_the_collectors_way_until_the_last_stop():
    """A full collection walked the ~10^6 objects of the imports and the model (70-90 ms:
    a run of slipped ticks); the stack freezes them at start. The first stack of the
    process to start sets the interpreter's switch interval and the last to stop, in
    whichever order they stop, unfreezes and puts the interval back."""
    import gc
    import secrets
    import sys

    from orbithil import hal
    from orbithil.flight.stack import FlightStack

    assert gc.get_freeze_count() == 0
    interval = sys.getswitchinterval()
    with hal.open("model://?harden=1") as a_chip, hal.open("model://?harden=1") as b_chip:
        for first_to_stop in ("a", "b"):
            a = FlightStack(a_chip, Config(udp_port=0), {1: secrets.token_bytes(32)})
            b = FlightStack(b_chip, Config(udp_port=0), {1: secrets.token_bytes(32)})
            a.start()
            frozen = gc.get_freeze_count()
            assert frozen > 100_000  # the imported libraries and the model, at least
            assert len(gc.get_objects(generation=2)) < frozen / 10
            assert sys.getswitchinterval() == pytest.approx(FlightStack.SWITCH_INTERVAL_S)
            b.start()
            one, other = (a, b) if first_to_stop == "a" else (b, a)
            one.stop()
            assert gc.get_freeze_count() >= frozen, f"{first_to_stop} stopped, one flies"
            assert sys.getswitchinterval() == pytest.approx(FlightStack.SWITCH_INTERVAL_S)
            one.stop()  # a second stop does nothing
            other.stop()
            assert gc.get_freeze_count() == 0
            assert sys.getswitchinterval() == pytest.approx(interval)


def test_a_stack_that_fails_to_start_puts_the_process_back_as_it_was(monkeypatch):
    import gc
    import secrets
    import sys

    from orbithil import hal
    from orbithil.flight.stack import FlightStack

    interval = sys.getswitchinterval()
    with hal.open("model://?harden=1") as chip:
        stack = FlightStack(chip, Config(udp_port=0), {1: secrets.token_bytes(32)})

        def fails() -> None:
            raise OSError("no thread for the rate groups")

        monkeypatch.setattr(stack.scheduler, "start", fails)
        with pytest.raises(OSError, match="rate groups"):
            stack.start()
    assert gc.get_freeze_count() == 0
    assert sys.getswitchinterval() == pytest.approx(interval)
