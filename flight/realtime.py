"""Real-time scheduling for the flight process (Linux ``SCHED_FIFO``), as flight software
on a Linux flight computer runs.

Why the whole process: the rate groups are Python, so a rate group that wakes on time
still waits for the interpreter lock, and the thread holding it may be one the kernel has
set aside for another process (a campaign on the other core): the rate group then starts
milliseconds late whatever its own priority. So every thread of the process is given a
real-time priority (``STACK_PRIORITY``), and the rate-group thread a higher one
(``RATE_GROUP_PRIORITY``), so it preempts the stack's own work too.

What it does not touch: processes the stack starts later (a simulator behind ``sim://``)
and threads started after ``apply`` run with the normal policy (``SCHED_RESET_ON_FORK``),
and ``restore`` gives every thread it changed its old policy back. The kernel keeps 5 % of
each second for normal tasks (``sched_rt_runtime_us``), so a runaway thread cannot lock a
machine up.

Needs the privilege to set real-time priorities: root, ``CAP_SYS_NICE`` or an
``RLIMIT_RTPRIO`` (``ulimit -r``) of at least ``RATE_GROUP_PRIORITY``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field

from orbithil.errors import OrbithilError

MODES = ("off", "auto", "on")
STACK_PRIORITY = 10
RATE_GROUP_PRIORITY = 20
HOW_TO_ALLOW = (
    "run as root, grant CAP_SYS_NICE (setcap cap_sys_nice+ep on the Python binary), "
    f"or raise the real-time priority limit to {RATE_GROUP_PRIORITY} (ulimit -r, "
    "/etc/security/limits.conf rtprio)"
)


class RealtimeError(OrbithilError):
    """Real-time scheduling was asked for (``realtime = "on"``) and is not allowed."""


def _available() -> bool:
    return hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_RESET_ON_FORK")


def _tasks() -> list[int]:
    """The thread ids of this process."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [threading.get_native_id()]


@dataclass
class Realtime:
    """Gives the process's threads real-time priorities and takes them back."""

    mode: str = "off"
    changed: dict[int, tuple[int, int]] = field(default_factory=dict)  # tid: (policy, prio)
    why_not: str = ""  # auto: why the stack runs without

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"realtime = {self.mode!r}; use one of {', '.join(MODES)}")

    @property
    def active(self) -> bool:
        return bool(self.changed)

    def apply(self, rate_group_tid: int | None) -> bool:
        """Every thread of the process at ``STACK_PRIORITY``, ``rate_group_tid`` at
        ``RATE_GROUP_PRIORITY``. Returns whether it could; ``on`` raises when it cannot."""
        if self.mode == "off":
            return False
        try:
            if not _available():
                raise OSError("this system has no SCHED_FIFO (Linux only)")
            for tid in _tasks():
                priority = RATE_GROUP_PRIORITY if tid == rate_group_tid else STACK_PRIORITY
                self._set(tid, priority)
        except OSError as exc:
            self.restore()
            self.why_not = f"real-time scheduling not allowed ({exc.strerror or exc})"
            if self.mode == "on":
                raise RealtimeError(
                    f'realtime = "on": {self.why_not}; {HOW_TO_ALLOW}, or set realtime = '
                    '"auto" to run without it'
                ) from None
            return False
        return True

    def _set(self, tid: int, priority: int) -> None:
        try:
            old = (os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority)
            os.sched_setscheduler(
                tid, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(priority)
            )
        except ProcessLookupError:  # the thread ended meanwhile
            return
        self.changed.setdefault(tid, old)

    def restore(self) -> None:
        """Every changed thread back to the policy it had (threads that ended are gone)."""
        for tid, (policy, priority) in self.changed.items():
            # a thread that ended, or is no longer ours to change, has nothing to give back
            with contextlib.suppress(OSError):
                os.sched_setscheduler(tid, policy, os.sched_param(priority))
        self.changed.clear()
