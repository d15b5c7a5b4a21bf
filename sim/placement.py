"""Where the injection engine keeps checkpoints inside the workload's steps.

A run restores the latest checkpoint at or before its fault and simulates from there to
the fault (its *lead*), then on from the fault. The golden run always keeps one
checkpoint per workload step (``sim.engine``); steps are long (a memory frame at the
UART's speed is 12,160 cycles of the demo's 56,960), so a lead averaged about 4,000
cycles. More checkpoints shorten leads, and the plan says where they pay: its faults'
cycles are known before the golden run is rerun to take them.

The costs, measured on the golden run of the same process:

- ``S``, taking one checkpoint (the port copies the whole state into a slot);
- ``c``, simulating one cycle of the workload (the link's Python included);
- a restore costs the same copy back wherever it lands: every run pays it once
  whatever the spacing, so it does not move the spacing.

A checkpoint at a run's fault cycle saves that run (and any later one before the next
restore point) the gap back to the previous restore point, and pays when that gap is
over ``S / c`` cycles. So marks go at the runs' cycles, no two restore points closer than
``min_gap = S / c``. When that asks for more checkpoints than the port has slots left,
``min_gap`` grows to the smallest gap that fits, which spreads them over the workload's
length about ``length / slots`` apart (sampling is uniform over the workload's cycles).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """Marks for mid-step checkpoints and the costs that decided them."""

    marks: tuple[int, ...]  # cycles at which to take a checkpoint, ascending
    min_gap: int  # no mark closer than this to the restore point before it
    cycle_s: float  # one simulated cycle (seconds)
    snapshot_s: float  # taking one checkpoint (seconds)
    free_slots: int  # the port's slots left for marks


def place(
    run_cycles: Iterable[int],
    *,
    step_cycles: Sequence[int],
    length: int,
    cycle_s: float,
    snapshot_s: float,
    free_slots: int,
) -> Placement:
    """Marks for runs whose faults fall at ``run_cycles`` (one per simulated run).

    ``step_cycles``: the checkpoints the golden run has anyway (its steps', the first at
    cycle 0); ``length``: the golden run's cycles; ``cycle_s``, ``snapshot_s``: the costs
    above, in seconds (positive); ``free_slots``: how many marks the port can hold.
    """
    if not step_cycles or min(step_cycles) != 0:
        raise ValueError("step_cycles must hold the start state's checkpoint, at cycle 0")
    if cycle_s <= 0 or snapshot_s < 0:
        raise ValueError(
            f"a cycle must cost more than 0 s and a checkpoint no less than 0 s: "
            f"cycle {cycle_s} s, checkpoint {snapshot_s} s"
        )
    fixed = sorted(step_cycles)
    wanted = sorted({c for c in run_cycles if 0 <= c < length})

    def marks_for(gap: int) -> list[int]:
        marks: list[int] = []
        for cycle in wanted:
            before = fixed[bisect.bisect_right(fixed, cycle) - 1]
            if marks and marks[-1] > before:
                before = marks[-1]
            if cycle - before >= gap:
                marks.append(cycle)
        return marks

    low = max(1, math.ceil(snapshot_s / cycle_s - 1e-9))  # (50.000000001 is 50)
    if free_slots <= 0:
        return Placement((), low, cycle_s, snapshot_s, 0)
    marks = marks_for(low)
    if len(marks) > free_slots:
        # greedy marks only thin out as the gap grows: the smallest gap that fits
        high = max(length, low)
        while low < high:
            mid = (low + high) // 2
            if len(marks_for(mid)) > free_slots:
                low = mid + 1
            else:
                high = mid
        marks = marks_for(low)
    return Placement(tuple(marks), low, cycle_s, snapshot_s, free_slots)
