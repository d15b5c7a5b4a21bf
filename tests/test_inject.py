"""The injection engine on both simulators: the validation cases of the issue, the engine
agreeing with one-process-per-injection runs, determinism, and the board path through the
HAL's INJECT command (on the model, as no board is attached here)."""

from __future__ import annotations

from collections import Counter

import pytest

from orbithil import hal
from orbithil.hal.icd import RW_REGISTERS
from orbithil.payload.classify import Outcome
from orbithil.sim import harness
from orbithil.sim.board_inject import board_space, run_plan_on_chip
from orbithil.sim.faults import FaultModel, Injection
from orbithil.sim.inject import Setup, golden, plan, run_plan

pytestmark = pytest.mark.sim

# The inference workload's steps: 0-2 write layer 1's weights (128 words), 3 layer 2's,
# 4 writes x, 5 runs layer 1's job.
FIRST_JOB_STEP = 5
# The memory workload's steps: 0-3 write 192 words, 4 starts the scrubber, 5 idles while
# it sweeps the SRAM twice, 6 stops it, 7-10 read the block back.
SCRUB_STEP, SCRUB_OFF_STEP = 4, 6


@pytest.fixture(params=harness.SIMULATORS)
def sim(request):
    return request.param


def _flip(target: str, word: int | None, bits, cycle: int, block: str, model=FaultModel.FLIP):
    return Injection(target, word, tuple(bits), cycle, model, block)


def test_unhardened_mac_operand_flip_is_sdc_and_hardened_corrects_it(sim):
    outcomes = {}
    for harden in (0, 1):
        setup = Setup(sim, harden, "inference")
        before_job = golden(setup).checkpoints[FIRST_JOB_STEP]
        # weight word 0 (row 0 of layer 1), live: loaded, about to be used by the job
        results = run_plan(setup, [_flip("u_mem.mem", 0, (3,), before_job, "u_mem")])
        outcomes[harden] = results[0].outcome
    assert outcomes == {0: Outcome.SDC, 1: Outcome.CORRECTED}


def test_hardened_sram_single_flips_are_never_silent(sim):
    setup = Setup(sim, 1, "memory")
    ref = golden(setup)
    n = 24 if sim == "verilator" else 8
    # flips anywhere in the SRAM while the scrubber runs: it must find and fix each
    injections = plan(setup, n, seed=7, glob="u_mem.mem")
    injections = [
        _flip(i.target, i.word, i.bits, ref.checkpoints[SCRUB_STEP] + i.cycle % 4000, i.block)
        for i in injections
    ]
    outcomes = Counter(r.outcome for r in run_plan(setup, injections))
    assert set(outcomes) <= {Outcome.CORRECTED, Outcome.MASKED}, outcomes
    assert outcomes[Outcome.CORRECTED] >= n // 2, outcomes


def test_double_flip_in_one_secded_word_is_detected(sim):
    setup = Setup(sim, 1, "memory")
    ref = golden(setup)
    # word 5 holds data the workload reads back; two adjacent bits, after the scrubber
    # stopped, so the read-back is what finds it
    mbu = _flip("u_mem.mem", 5, (10, 11), ref.checkpoints[SCRUB_OFF_STEP + 1], "u_mem",
                FaultModel.MBU)  # fmt: skip
    [result] = run_plan(setup, [mbu])
    assert result.outcome is Outcome.DETECTED
    assert result.observation.naks >= 1  # READ_MEM answered NAK MEM_UNCORRECTABLE


def test_flip_in_one_tmr_copy_is_corrected_or_masked(sim):
    setup = Setup(sim, 1, "control")
    ref = golden(setup)
    scratch0 = [r.name for r in RW_REGISTERS].index("SCRATCH0")
    injections = [
        _flip(f"u_regs.g_reg[{scratch0}].g_tmr.u_c{copy}.q", None, (bit,), cycle, "u_regs")
        for copy, bit, cycle in ((0, 5, ref.checkpoints[3]), (1, 31, ref.checkpoints[4]),
                                 (2, 0, ref.cycles // 2))
    ]  # fmt: skip
    outcomes = [r.outcome for r in run_plan(setup, injections)]
    assert set(outcomes) <= {Outcome.CORRECTED, Outcome.MASKED}, outcomes
    assert Outcome.CORRECTED in outcomes


def test_same_seed_same_outcomes_and_engine_agrees_with_naive_runs(sim):
    setup = Setup(sim, 0, "inference")
    n = 16 if sim == "verilator" else 5
    first = run_plan(setup, plan(setup, n, seed=11))
    again = run_plan(setup, plan(setup, n, seed=11))
    assert [r.outcome for r in first] == [r.outcome for r in again]
    assert [r.observation for r in first] == [r.observation for r in again]
    # the engine (checkpoint restore, early stop) against a fresh process per injection
    naive = run_plan(setup, [r.injection for r in first[:3]], mode="naive")
    assert [r.observation for r in naive] == [r.observation for r in first[:3]]
    assert all(r.outcome is not Outcome.TOOL_ERROR for r in first)


def test_stuck_at_and_mbu_models_run():
    setup = Setup("verilator", 0, "control")
    outcomes = [
        r.outcome
        for model in (FaultModel.STUCK, FaultModel.MBU)
        for r in run_plan(setup, plan(setup, 6, seed=3, model=model))
    ]
    assert len(outcomes) == 12 and Outcome.TOOL_ERROR not in outcomes


def test_board_path_runs_the_same_plan_through_inject_on_the_model():
    setup = Setup("verilator", 1, "inference")
    space = board_space(setup.targets())
    assert {r.block for r in space.registers} == {"u_regs"}
    assert [m["name"] for m in space.memories] == ["u_mem.mem"]
    cycles = golden(setup).cycles
    injections = space.plan(12, seed=5, cycles=(0, cycles - 1))
    before_job = golden(setup).checkpoints[FIRST_JOB_STEP]
    injections.append(_flip("u_mem.mem", 0, (3,), before_job, "u_mem"))  # a live weight
    with hal.open("model://?harden=1") as chip:
        results = run_plan_on_chip(chip, setup, injections)
    outcomes = Counter(r.outcome for r in results)
    assert not outcomes.keys() & {Outcome.SDC, Outcome.TOOL_ERROR, Outcome.HANG}, outcomes
    assert results[-1].outcome is Outcome.CORRECTED
    with hal.open("model://?harden=0") as chip:
        [unhardened] = run_plan_on_chip(chip, Setup("verilator", 0, "inference"),
                                        [injections[-1]])  # fmt: skip
    assert unhardened.outcome is Outcome.SDC


def test_a_tool_failure_is_retried_once_reported_and_the_rest_goes_on():
    setup = Setup("verilator", 0, "control")
    bogus = _flip("u_exec.no_such_register", None, (0,), 100, "u_exec")
    good = plan(setup, 2, seed=1)
    results = run_plan(setup, [good[0], bogus, good[1]])
    assert [r.index for r in results] == [0, 1, 2]
    assert results[1].outcome is Outcome.TOOL_ERROR
    assert "no_such_register" in results[1].observation.tool_error
    assert results[0].outcome is not Outcome.TOOL_ERROR
    assert results[2].outcome is not Outcome.TOOL_ERROR


def test_a_flip_in_a_buffered_command_byte_is_never_executed_as_written_when_hardened(sim):
    """The inference workload's first WRITE_MEM (60 weight words) sits in a receive bank from
    its CRC check until the executor has read every word: flips of its weight bytes then
    change what is written unhardened (SDC), and are caught by the buffer's parity hardened
    (NAK PARITY, the host resends: corrected), never executed as written."""
    n = 6 if sim == "verilator" else 3
    outcomes = {}
    for harden in (0, 1):
        setup = Setup(sim, harden, "inference")
        ref = golden(setup)
        start, end = ref.checkpoints[0], ref.checkpoints[1]  # the first WRITE_MEM's step
        # the frame's bytes arrive over about the first 80 % of the step, the executor reads
        # them after its delimiter: a flip late in the step hits a byte written and not yet read
        injections = [
            _flip(f"u_frame_rx.buffer{bank}", 7 + 4 * k + k % 4, (k % 8,),
                  start + (end - start) * (80 + 3 * k) // 100, "u_frame_rx")
            for bank in (0, 1) for k in range(n)
        ]  # fmt: skip
        outcomes[harden] = Counter(r.outcome for r in run_plan(setup, injections))
    assert outcomes[0][Outcome.SDC] >= 1, outcomes  # the window is hit: unhardened, it shows
    assert Outcome.SDC not in outcomes[1], outcomes
    assert outcomes[1][Outcome.CORRECTED] >= 1, outcomes  # and hardened, parity caught it
