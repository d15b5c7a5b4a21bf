"""Checkpoint placement inside the workload's steps (sim.placement): the rule on made-up
costs and plans, and on both simulators the engine restoring from placed checkpoints
exactly (every restore point reproduces the golden run, every fault's observation equals
the one restored from step checkpoints only) with shorter leads."""

from __future__ import annotations

import itertools

import pytest

from orbithil.sim import harness
from orbithil.sim.inject import Setup, plan, run_plan
from orbithil.sim.placement import place

STEPS = [0, 1000, 5000]
LENGTH = 10_000


def _place(runs, *, snapshot_s=50e-6, cycle_s=1e-6, free=100):
    return place(runs, step_cycles=STEPS, length=LENGTH, cycle_s=cycle_s,
                 snapshot_s=snapshot_s, free_slots=free)  # fmt: skip


def test_marks_go_at_the_runs_cycles_when_the_gap_pays_for_the_checkpoint():
    # a checkpoint costs 50 cycles' worth: runs within 50 cycles of the restore point
    # before them get none
    p = _place([1020, 1049, 1050, 3000, 3010, 3100, 5030, 9000, 12_000, -5])
    assert p.min_gap == 50
    assert p.marks == (1050, 3000, 3100, 9000)  # 12,000 and -5 are outside the run


def test_marks_never_sit_closer_than_the_gap_to_the_restore_point_before_them():
    p = _place(range(0, LENGTH, 7), snapshot_s=200e-6, free=1000)
    points = sorted({*STEPS, *p.marks})
    gaps = [b - a for a, b in itertools.pairwise(points) if b in p.marks]
    assert min(gaps) >= p.min_gap == 200
    assert len(p.marks) > 30  # (a step checkpoint may follow a mark closer than that)


def test_the_gap_grows_until_the_marks_fit_the_slots():
    runs = range(0, LENGTH, 3)  # ~3,300 runs evenly over the workload
    p = _place(runs, free=40)
    assert len(p.marks) <= 40
    assert p.min_gap > 50
    assert len(_place(runs, free=40 + 20).marks) > len(p.marks)  # more slots, more marks
    # spread over the whole workload, about length / slots apart
    assert p.marks[0] < LENGTH / 10 and p.marks[-1] > LENGTH * 0.9
    # and it is the smallest: one cycle less asks for more than the slots
    cycle_s = 1e-6
    tighter = _place(runs, snapshot_s=(p.min_gap - 1) * cycle_s, cycle_s=cycle_s, free=10**6)
    assert tighter.min_gap == p.min_gap - 1 and len(tighter.marks) > 40
    none = _place(runs, free=0)
    assert none.marks == () and none.min_gap == 50 and none.free_slots == 0


def test_no_marks_without_runs_or_for_runs_on_the_step_checkpoints():
    assert _place([]).marks == ()
    assert _place(STEPS).marks == ()
    assert _place([s + 10 for s in STEPS]).marks == ()  # 10 cycles: cheaper to simulate


def test_bad_costs_and_a_missing_start_checkpoint_are_refused():
    with pytest.raises(ValueError, match="cycle 0"):
        place([5], step_cycles=[10], length=100, cycle_s=1e-6, snapshot_s=1e-5, free_slots=5)
    with pytest.raises(ValueError, match="more than 0 s"):
        place([5], step_cycles=[0], length=100, cycle_s=0, snapshot_s=1e-5, free_slots=5)
    with pytest.raises(ValueError, match="no less than 0 s"):
        place([5], step_cycles=[0], length=100, cycle_s=1e-6, snapshot_s=-1, free_slots=5)


@pytest.mark.sim
@pytest.mark.parametrize("sim", harness.SIMULATORS)
def test_placed_checkpoints_restore_exactly_and_shorten_the_leads(sim):
    """The inference workload (hardened) on a uniform plan: the engine places checkpoints
    inside steps, including while a memory frame goes out, while the chip computes and
    while an answer comes in; a fault-free run from every placed checkpoint is the
    golden run, and every fault's observation equals the one from step checkpoints only."""
    setup = Setup(sim, 1, "inference")
    injections = plan(setup, 24 if sim == "verilator" else 3, seed=5)
    goldens: list[dict] = []
    placed = run_plan(setup, injections, prune=False, on_golden=goldens.append,
                      verify_restore=True)  # fmt: skip
    steps_only = run_plan(setup, injections, prune=False, placement=False)
    [line] = goldens
    check, placement = line["restore_check"], line["placement"]
    assert check["wrong"] == [], f"restore points that are not the golden run: {check}"
    assert placement["mid_checkpoints"] >= len(injections) // 2, placement
    if sim == "verilator":  # all three parts of a request: out, the job, the answer back
        assert {"sending", "computing", "receiving"} <= placement["mid_checkpoints_by_kind"].keys()
    differ = [
        (a.injection, a.outcome, b.outcome)
        for a, b in zip(placed, steps_only, strict=True)
        if a.observation != b.observation
    ]
    assert not differ
    lead = sum(r.info["lead_cycles"] for r in placed)
    assert lead * 4 < sum(r.info["lead_cycles"] for r in steps_only)
    poll = 16 * 10 * setup.clks_per_bit  # the host looks for an answer every 16 bytes' time
    assert lead / len(placed) < poll  # a checkpoint at the fault, or at the look before it
