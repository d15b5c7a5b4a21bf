"""Def/use pruning of memory faults (sim.prune): the class arithmetic on hand-written
traces, and on both simulators the pruned engine giving every fault exactly the
observation a full simulation gives."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from orbithil.sim import harness
from orbithil.sim.faults import FaultModel, Injection
from orbithil.sim.inject import Setup, golden, plan, run_plan
from orbithil.sim.prune import AccessTrace, Kind, TraceError

T0 = 1000  # the run's cycle 0 (a falling edge); rising edges at T0 + 5 + 10k


def _trace(tmp_path, lines, end=T0 + 10 * 100):
    path = tmp_path / "access.trace"
    path.write_text("".join(f"{line}\n" for line in lines))
    return AccessTrace.parse(path, T0, end)


def _mem(word: int, cycle: int, bits=(3,), target="u_mem.mem", model=FaultModel.FLIP):
    return Injection(target, word, bits, cycle, model, target.split(".")[0])


def test_a_flip_belongs_to_the_first_access_after_it(tmp_path):
    # memory 0 reads word 7 from edge 5 to edge 25 (edges 1005, 1015), then word 9 to the
    # end; word 7 is written at edge 1055 and read again from 1205 (cycle 20's edge)
    trace = _trace(
        tmp_path,
        ["1005 0 R 7", "1025 0 R 9", "1055 0 W 7", "1205 0 R 7", "1215 0 R 9", "1005 1 R 0"],
    )
    assert trace.next_read(0, 7, T0) == 1005  # cycle 0's flip is seen at the first edge
    assert trace.next_read(0, 7, T0 + 10) == 1015
    assert trace.next_read(0, 7, T0 + 20) == 1205  # the span [1005, 1025) has no edge after
    assert trace.next_read(0, 9, T0 + 500) == T0 + 505  # read on every edge to the end
    assert trace.next_write(0, 7, T0 + 50) == 1055
    assert trace.next_write(0, 7, T0 + 60) is None

    first = trace.decide(_mem(7, 0))
    assert first.kind is Kind.REPRESENTATIVE and first.cycle == 0
    assert trace.decide(_mem(7, 1)).key != first.key  # each edge of a read span: its own class
    assert trace.decide(_mem(7, 2)).kind is Kind.OVERWRITTEN  # cycles 2..5: written at 1055
    assert trace.decide(_mem(7, 5)).kind is Kind.OVERWRITTEN
    late = [trace.decide(_mem(7, c)) for c in (6, 13, 20)]  # after the write, to 1205
    assert {d.key for d in late} == {("u_mem.mem", 7, (3,), "flip", 205)}
    assert {d.cycle for d in late} == {20}  # injected just before the read: latest checkpoint
    assert trace.decide(_mem(7, 21)).kind is Kind.UNREAD  # read last at 1205, cycle 20's edge
    assert trace.decide(_mem(8, 0)).kind is Kind.UNREAD  # never accessed
    # the same word and cycle with other bits, or as an MBU, is another class
    assert trace.decide(_mem(7, 6, bits=(4,))).key != late[0].key
    assert trace.decide(_mem(7, 6, model=FaultModel.MBU)).key != late[0].key


def test_flip_flops_stuck_bits_and_untraced_memories_are_simulated(tmp_path):
    trace = _trace(tmp_path, ["1005 0 R 0"])
    assert trace.decide(Injection("u_exec.state", None, (0,), 3, FaultModel.FLIP, "u_exec")).kind \
        is Kind.SIMULATED  # fmt: skip
    assert trace.decide(_mem(5, 3, model=FaultModel.STUCK)).kind is Kind.SIMULATED
    assert trace.decide(_mem(5, 3, target="u_other.mem")).kind is Kind.SIMULATED


def test_a_write_and_read_on_one_edge_is_a_read(tmp_path):
    trace = _trace(tmp_path, ["1005 0 R 2", "1015 0 R 4", "1055 0 R 2", "1055 0 W 2"])
    assert trace.decide(_mem(2, 3)).kind is Kind.REPRESENTATIVE  # the read sees the flip


@pytest.mark.parametrize(
    "line, problem",
    [("1006 0 R 1", "not a rising edge"), ("995 0 R 1", "not a rising edge"),
     ("1005 0 X 1", "unknown access"), ("1005 0 R", "not an access line")],
)  # fmt: skip
def test_a_damaged_trace_is_refused(tmp_path, line, problem):
    with pytest.raises(TraceError, match=problem):
        _trace(tmp_path, [line])


def test_an_empty_trace_is_refused(tmp_path):
    with pytest.raises(TraceError, match="no reads"):
        _trace(tmp_path, [])


@pytest.mark.sim
@pytest.mark.parametrize("sim", harness.SIMULATORS)
def test_pruned_outcomes_equal_full_simulation(sim):
    """Every class kind on the inference workload (hardened: SECDED SRAM, parity buffers):
    a uniform plan over the memories, each fault with neighbours a few cycles later (the
    same class unless an access falls between), flips in weights loaded and waiting for
    their job (one class per word: read by the job), flips known to be overwritten (words
    the workload loads before reading) and a flip-flop; pruned and fully simulated, every
    observation equal."""
    setup = Setup(sim, 1, "inference")
    base = plan(setup, 24 if sim == "verilator" else 4, seed=7,
                blocks={"u_mem", "u_frame_rx", "u_frame_tx"})  # fmt: skip
    reference = golden(setup)
    cycles = reference.cycles
    injections = [replace(f, cycle=min(f.cycle + d, cycles - 1)) for f in base for d in (0, 1, 4)]
    job = reference.checkpoints[5]  # layer 1's job is sent: its weights (words 0-127) wait
    injections += [_mem(word, job - d) for word in (3, 100) for d in (40, 15, 0)]
    injections += [
        _mem(20, 10, bits=(1, 2), model=FaultModel.MBU),  # layer 1's weights, loaded first
        _mem(40, 12, target="u_frame_rx.buffer0", bits=(5,)),  # before the first frame
        Injection("u_exec.state", None, (0,), cycles // 3, FaultModel.FLIP, "u_exec"),
    ]
    pruned = run_plan(setup, injections)
    full = run_plan(setup, injections, prune=False)
    kinds = Counter(r.info["pruning"] for r in pruned)
    assert {"unread", "overwritten", "representative", "reused", "simulated"} <= kinds.keys(), kinds
    assert {r.info["pruning"] for r in full} == {"simulated"}
    differ = [
        (a.injection, a.info["pruning"], a.outcome, b.outcome)
        for a, b in zip(pruned, full, strict=True)
        if a.observation != b.observation
    ]
    assert not differ
    assert sum(r.info["cycles"] for r in pruned) < sum(r.info["cycles"] for r in full) / 3


def test_simulated_counts_every_kind_but_the_pruned_ones():
    from orbithil.sim.prune import simulated

    kinds = {"simulated": 3, "representative": 2, "reused": 4, "overwritten": 5, "unread": 7}
    assert simulated(kinds) == 5
