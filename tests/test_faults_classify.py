"""Fault plans over netlist targets, and the outcome classifier (pure; no simulator)."""

from __future__ import annotations

from collections import Counter

import pytest

from orbithil.payload.classify import Observation, Outcome, classify
from orbithil.sim.faults import FaultModel, TargetSpace

SPACE = {
    "flip_flops": [{"name": "u_a.r", "bit": b, "width": 8, "block": "u_a"} for b in range(8)],
    "memories": [{"name": "u_m.mem", "words": 4, "width": 8, "block": "u_m"}],
}  # 8 flip-flop bits and 32 memory bits


def test_every_bit_is_equally_likely():
    plan = TargetSpace(SPACE).plan(20_000, seed=1, cycles=(0, 99))
    share_ff = sum(i.word is None for i in plan) / len(plan)
    assert 0.18 < share_ff < 0.22  # 8 of 40 bits
    words = Counter(i.word for i in plan if i.word is not None)
    assert set(words) == {0, 1, 2, 3} and max(words.values()) / min(words.values()) < 1.15
    assert {b for i in plan for b in i.bits} == set(range(8))
    assert all(0 <= i.cycle <= 99 for i in plan)


def test_the_same_seed_gives_the_same_plan():
    space = TargetSpace(SPACE)
    assert space.plan(50, seed=7, cycles=(0, 9)) == space.plan(50, seed=7, cycles=(0, 9))
    assert space.plan(50, seed=7, cycles=(0, 9)) != space.plan(50, seed=8, cycles=(0, 9))


def test_multiple_bit_upsets_are_adjacent_bits_of_one_word():
    for inj in TargetSpace(SPACE).plan(500, seed=2, cycles=(0, 9), model="mbu"):
        assert 2 <= len(inj.bits) <= 4
        assert list(inj.bits) == list(range(inj.bits[0], inj.bits[0] + len(inj.bits)))
        assert inj.bits[-1] < 8 and inj.model is FaultModel.MBU


def test_stuck_at_has_a_value_and_a_window():
    inj = TargetSpace(SPACE).plan(1, seed=3, cycles=(5, 5), model="stuck", stuck_cycles=40)[0]
    assert inj.value in (0, 1) and inj.duration == 40 and inj.cycle == 5


def test_filters_by_block_and_glob():
    assert TargetSpace(SPACE, blocks={"u_m"}).ff_bits == 0
    assert TargetSpace(SPACE, glob="u_a.*").memory_bits == 0
    with pytest.raises(ValueError, match=r"no targets left.*valid blocks: \['u_a'\]"):
        TargetSpace(SPACE, blocks={"u_x"})


def test_bad_plan_arguments_say_what_is_valid():
    space = TargetSpace(SPACE)
    with pytest.raises(ValueError, match=r"cycles must be \(first, last\)"):
        space.plan(1, seed=0, cycles=(5, 2))
    with pytest.raises(ValueError, match="'burst' is not a valid FaultModel"):
        space.plan(1, seed=0, cycles=(0, 1), model="burst")


def test_plan_over_the_real_netlist():
    from orbithil.sim import netlist

    space = TargetSpace(netlist.load_targets(1, clks_per_bit=4))  # the engine's list
    # flip-flops (the memories' read registers among them: the SRAM's 39-bit word and the
    # buffers' 9-bit bytes), then memories: the SRAM's 2,048 x 39, the two receive banks'
    # and the transmit buffer's 512 x 9 (bytes with their parity)
    assert space.total_bits == 2130 + 2048 * 39 + 3 * 512 * 9
    read_registers = ("u_mem.q", "u_frame_rx.rd0", "u_frame_rx.rd1", "u_frame_tx.rword")
    bits = {r.name: len(r.bits) for r in space.registers}
    assert [bits[name] for name in read_registers] == [39, 9, 9, 9]
    assert space.bits_per_block()["u_mem"] > 79_000
    plan = space.plan(4000, seed=4, cycles=(0, 1000))
    memory_share = sum(i.word is not None for i in plan) / len(plan)
    assert 0.965 < memory_share < 0.99  # 93,696 of 95,826 bits are memory bits
    assert any(i.word is None for i in plan)  # flip-flops are drawn too, by their share


GOLDEN = Observation(outputs=(1, 2, 3), end_state="s0", counters={"ECC_CORRECTED": 0})


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (Observation(outputs=(1, 2, 3), end_state="s0"), Outcome.MASKED),
        (
            Observation(outputs=(1, 2, 3), end_state="s0", counters={"ECC_CORRECTED": 1}),
            Outcome.CORRECTED,
        ),
        (
            Observation(outputs=(1, 2, 3), end_state="s0", counters={"TMR_MISMATCH": 1}),
            Outcome.CORRECTED,
        ),
        (
            Observation(outputs=(1, 2, 3), end_state="s0", counters={"MAC_RETRIES": 1}),
            Outcome.CORRECTED,
        ),
        (Observation(outputs=(1, 2, 3), end_state="s1"), Outcome.LATENT),
        (
            Observation(outputs=(1, 2, 3), end_state="s1", counters={"ECC_CORRECTED": 2}),
            Outcome.CORRECTED,
        ),
        (Observation(outputs=(1, 9, 3), end_state="s0"), Outcome.SDC),
        (
            Observation(outputs=(1, 9, 3), end_state="s0", counters={"ECC_CORRECTED": 1}),
            Outcome.SDC,
        ),
        (Observation(outputs=(1, 9, 3), naks=1), Outcome.DETECTED),
        (Observation(outputs=(1, 2, 3), counters={"ECC_UNCORRECTABLE": 1}), Outcome.DETECTED),
        (Observation(outputs=(1, 2, 3), counters={"WDT_EXPIRIES": 1}), Outcome.DETECTED),
        (Observation(outputs=(1, 2, 3), job_errors=1), Outcome.DETECTED),
        (Observation(hang=True, naks=3), Outcome.HANG),
        (Observation(tool_error="simulator died", hang=True), Outcome.TOOL_ERROR),
    ],
)
def test_outcome_table(run, expected):
    assert classify(GOLDEN, run) is expected


def test_every_outcome_is_reachable():
    seen = set()
    for run in (
        Observation(outputs=(1, 2, 3), end_state="s0"),
        Observation(outputs=(1, 2, 3), end_state="s0", counters={"ECC_CORRECTED": 1}),
        Observation(outputs=(1, 2, 3), end_state="s1"),
        Observation(naks=1),
        Observation(outputs=(0,), end_state="s0"),
        Observation(hang=True),
        Observation(tool_error="x"),
    ):
        seen.add(classify(GOLDEN, run))
    assert seen == set(Outcome)


# --- boundaries the mutation run found untested (make mutation, docs/reliability.md) ----
BUSY_GOLDEN = Observation(
    outputs=(1, 2, 3),
    end_state="s0",
    counters={"ECC_CORRECTED": 2, "ECC_UNCORRECTABLE": 1, "WDT_EXPIRIES": 1},
    naks=2,
    job_errors=1,
)


@pytest.mark.parametrize(
    "fewer",
    [
        {"naks": 1},
        {"job_errors": 0},
        {"counters": {"ECC_CORRECTED": 2, "ECC_UNCORRECTABLE": 0, "WDT_EXPIRIES": 1}},
        {"counters": {"ECC_CORRECTED": 2, "ECC_UNCORRECTABLE": 1, "WDT_EXPIRIES": 0}},
    ],
)
def test_fewer_errors_than_the_golden_run_are_not_a_detection(fewer):
    run = Observation(**{**BUSY_GOLDEN.__dict__, **fewer})
    assert classify(BUSY_GOLDEN, run) is Outcome.MASKED
    assert classify(BUSY_GOLDEN, BUSY_GOLDEN) is Outcome.MASKED


def test_fewer_corrections_than_the_golden_run_are_not_a_correction():
    counters = {**BUSY_GOLDEN.counters, "ECC_CORRECTED": 1}
    run = Observation(**{**BUSY_GOLDEN.__dict__, "counters": counters})
    assert classify(BUSY_GOLDEN, run) is Outcome.MASKED
    counters = {**BUSY_GOLDEN.counters, "ECC_CORRECTED": 3}
    run = Observation(**{**BUSY_GOLDEN.__dict__, "counters": counters})
    assert classify(BUSY_GOLDEN, run) is Outcome.CORRECTED


@pytest.mark.parametrize("counter", ["LINK_RETRIES", "PARITY_ERRORS", "FEC_CORRECTED"])
def test_a_link_or_buffer_recovery_is_a_correction(counter):
    run = Observation(outputs=(1, 2, 3), end_state="s1", counters={counter: 1})
    assert classify(GOLDEN, run) is Outcome.CORRECTED


def test_an_observation_survives_the_stores_json():
    import json

    from orbithil.payload.classify import observation_from_dict, observation_to_dict

    run = Observation(outputs=("ab", "cd"), end_state="e", counters={"X": 1}, naks=2,
                      job_errors=3, hang=True, tool_error="t")  # fmt: skip
    data = observation_to_dict(run)
    assert data["outputs"] == ["ab", "cd"]
    assert observation_from_dict(json.loads(json.dumps(data))) == run
    assert observation_from_dict({}) == Observation()
