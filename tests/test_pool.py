"""The payload pool on behavioural-model chips: sharding, policies and voting, fencing
and re-admission, exactly-once completion, admission control. (The flight stack's pool
over simulated chips is tested end to end in tests/test_payload_e2e.py.)"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from orbithil import hal
from orbithil.hal import protocol as p
from orbithil.payload.pool import ChipState, Policy, Pool, PoolError

RNG = np.random.default_rng(2026)
W = RNG.integers(-128, 128, (16, 32), dtype=np.int8)
W_WORDS = W.size // 4
X_ADDR, Y_ADDR = W_WORDS, W_WORDS + 8


class Matvec:
    """A real executor: W resident in each chip's SRAM, one MAC job per item."""

    def prepare(self, chip) -> None:
        chip.write_mem(0, p.pack_int8(W))

    def run(self, chip, x):
        chip.write_mem(X_ADDR, p.pack_int8(x))
        cycles = chip.run_job(0, X_ADDR, Y_ADDR, 16, 32)
        return p.unpack_int32(chip.read_mem(Y_ADDR, 16)), cycles


def inputs(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, 32, dtype=np.int8) for _ in range(n)]


def expected(x: np.ndarray) -> np.ndarray:
    return W.astype(np.int32) @ x.astype(np.int32)


@pytest.fixture
def events():
    seen: list[tuple[str, dict]] = []
    lock = threading.Lock()

    def on_event(name: str, **fields) -> None:
        with lock:
            seen.append((name, fields))

    on_event.seen = seen  # type: ignore[attr-defined]
    return on_event


def open_chips(urls: list[str]):
    return [(f"chip{i}", hal.open(url, timeout=0.3, retries=1)) for i, url in enumerate(urls)]


def test_a_batch_is_sharded_across_the_chips_and_every_item_is_right(events):
    chips = open_chips(["model://", "model://?harden=0", "model://"])
    with Pool(chips, Matvec(), on_event=events) as pool:
        items = inputs(90)
        job = pool.submit(items, "none")
        result = pool.result(job, timeout=60)
        status = pool.status()
    assert result.ok and len(result.items) == 90 and result.cycles > 0
    for x, item in zip(items, result.items, strict=True):
        assert np.array_equal(item.output, expected(x))
    assert all(s["runs"] > 0 for s in status.values())  # every chip took a share
    assert sum(s["runs"] for s in status.values()) == 90
    assert [name for name, _ in events.seen].count("JOB_DONE") == 1


def test_tmr_outvotes_a_chip_with_an_upset_weight_and_names_it(events):
    chips = open_chips(["model://?harden=0", "model://", "model://"])
    with Pool(chips, Matvec(), on_event=events) as pool:
        bad = chips[0][1]
        bad.arm_injection()
        bad.inject("mem", 3, 5)  # unhardened: the upset weight stays wrong
        bad.write_reg("INJ_ARM", 0)
        items = inputs(20, seed=2)
        result = pool.result(pool.submit(items, Policy.TMR), timeout=60)
        stats = pool.stats
    assert result.ok
    for x, item in zip(items, result.items, strict=True):
        assert np.array_equal(item.output, expected(x))
        assert item.chips == ["chip0", "chip1", "chip2"]
    disagreed = [f for name, f in events.seen if name == "RESULT_DISAGREED"]
    assert disagreed and {f["chip"] for f in disagreed} == {"chip0"}
    assert stats.disagreements == len(disagreed)


def test_dmr_asks_a_third_chip_on_a_mismatch():
    chips = open_chips(["model://?harden=0", "model://", "model://"])
    with Pool(chips, Matvec()) as pool:
        bad = chips[0][1]
        bad.arm_injection()
        bad.inject("mem", 0, 1)
        items = inputs(30, seed=3)
        result = pool.result(pool.submit(items, "dmr"), timeout=60)
        stats = pool.stats
    assert result.ok
    for x, item in zip(items, result.items, strict=True):
        assert np.array_equal(item.output, expected(x))
        assert 2 <= len(item.chips) <= 3
    decided_by_three = [item for item in result.items if len(item.chips) == 3]
    assert decided_by_three and stats.reruns >= len(decided_by_three)
    assert all(item.disagreements == ["chip0"] for item in decided_by_three)
    # metering: each item counts one run per chip that decided it, the third included
    assert all(sorted(c for c, _ in item.runs) == item.chips for item in result.items)
    assert sum(item.cycles for item in result.items) <= result.cycles  # late runs: not billed


def test_rerun_runs_twice_on_one_chip():
    chips = open_chips(["model://"])
    reported: list[tuple[str, int, float]] = []
    with Pool(chips, Matvec(), on_run=lambda *run: reported.append(run)) as pool:
        items = inputs(10, seed=4)
        result = pool.result(pool.submit(items, "rerun"), timeout=60)
        runs = pool.stats.runs
    assert result.ok and runs == 20
    assert len(reported) == 10  # once per unit (two runs each), with both runs' cycles
    assert sum(cycles for _, cycles, _ in reported) == result.cycles > 0
    assert all([c for c, _ in item.runs] == ["chip0", "chip0"] for item in result.items)
    assert sum(item.cycles for item in result.items) == result.cycles
    assert all(
        np.array_equal(i.output, expected(x)) for x, i in zip(items, result.items, strict=True)
    )


def test_a_chip_whose_line_dies_mid_run_is_fenced_and_readmitted_and_nothing_is_lost(events):
    chips = open_chips(["fault://model://?seed=1", "model://"])
    dying = chips[0][1].link.port
    with Pool(chips, Matvec(), on_event=events) as pool:
        pool.RECOVERY_BACKOFF_S = (0.2, 0.2, 0.2, 0.5, 1.0, 2.0)
        items = inputs(200, seed=5)
        job = pool.submit(items, "none")
        deadline = time.monotonic() + 30
        # mid-run: after some runs, while chip0 runs an item (a line that died between
        # items was found by the health poll instead, with nothing to requeue)
        while pool.status()["chip0"]["runs"] < 5 or not pool.chips["chip0"].busy:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        dying.drop = 1.0  # the line goes dead: every command to chip0 times out
        while pool.status()["chip0"]["state"] != ChipState.FENCED:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        dying.drop = 0.0  # the line comes back; recovery re-admits the chip
        result = pool.result(job, timeout=60)
        while pool.status()["chip0"]["state"] != ChipState.HEALTHY:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stats = pool.stats
    assert result.ok and len(result.items) == 200
    for x, item in zip(items, result.items, strict=True):
        assert np.array_equal(item.output, expected(x))
    names = [name for name, _ in events.seen]
    assert "CHIP_FENCED" in names and "CHIP_READMITTED" in names
    assert names.count("JOB_DONE") == 1  # reported once
    assert stats.items_completed == 200 and stats.items_failed == 0
    assert stats.requeued >= 1 and stats.fences >= 1 and stats.readmissions >= 1


def test_a_watchdog_expiry_fences_the_chip(events):
    chips = open_chips(["model://", "model://"])
    with Pool(chips, Matvec(), on_event=events) as pool:
        pool.HEALTH_S = 0.05
        chips[1][1].write_reg("WDT_TIMEOUT", 10)  # it expires before the next kick
        deadline = time.monotonic() + 30
        while "CHIP_READMITTED" not in [n for n, _ in events.seen]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        fenced = [f for n, f in events.seen if n == "CHIP_FENCED"]
    assert fenced[0]["chip"] == "chip1" and "WDT_EXPIRIES" in fenced[0]["why"]


def test_closed_admission_defers_everything_until_it_opens():
    open_ = threading.Event()
    chips = open_chips(["model://", "model://"])
    with Pool(chips, Matvec(), admit=open_.is_set) as pool:
        job = pool.submit(inputs(10), "none")
        time.sleep(0.3)
        assert pool.stats.runs == 0 and pool.deferred() == 10
        open_.set()
        assert pool.result(job, timeout=30).ok and pool.deferred() == 0


def test_a_cancelled_job_fails_what_is_undecided_and_completes_once(events):
    chips = open_chips(["model://", "model://", "model://"])
    with Pool(chips, Matvec(), admit=lambda: False, on_event=events) as pool:
        assert [pool.max_runs(p) for p in Policy] == [1, 3, 3, 3]  # three chips: three at most
        assert [pool.nominal_runs(p) for p in Policy] == [1, 2, 2, 3]
        job = pool.submit(inputs(4), "tmr")
        pool.cancel(job, "not paid for")
        result = pool.result(job, timeout=5)
        pool.cancel(job, "again")  # a job done (and forgotten) is left alone
    assert [i.error for i in result.items] == ["not paid for"] * 4
    assert all(i.output is None and i.runs == () for i in result.items)
    assert [name for name, _ in events.seen].count("JOB_DONE") == 1


def test_a_chip_taken_out_gets_no_work_until_put_back():
    chips = open_chips(["model://", "model://"])
    with Pool(chips, Matvec()) as pool:
        pool.take_out("chip1")
        assert pool.result(pool.submit(inputs(20), "none"), timeout=30).ok
        assert pool.status()["chip1"]["runs"] == 0
        with pytest.raises(PoolError, match="needs 2 chips; the pool has 1 in service"):
            pool.submit(inputs(1), "dmr")
        pool.put_back("chip1")
        deadline = time.monotonic() + 10
        while pool.status()["chip1"]["state"] != "healthy":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert pool.result(pool.submit(inputs(4), "dmr"), timeout=30).ok


def test_bad_requests_say_what_is_valid():
    chips = open_chips(["model://"])
    with Pool(chips, Matvec()) as pool:
        with pytest.raises(PoolError, match="policy 'quad': use one of none, rerun, dmr, tmr"):
            pool.submit(inputs(1), "quad")
        with pytest.raises(PoolError, match="tmr needs 3 chips"):
            pool.submit(inputs(1), "tmr")
        with pytest.raises(PoolError, match="no chip 'x'"):
            pool.take_out("x")


class Refusing(Matvec):
    """An executor whose item 3 is a request the chip refuses (rows 0), and whose item 5
    is a bad input the executor itself rejects."""

    def run(self, chip, x):
        if int(x[0]) == 3:
            chip.run_job(0, X_ADDR, Y_ADDR, 0, 32)  # NAK BAD_ARG: a bad request, not a bad chip
        if int(x[0]) == 5:
            raise ValueError("input 5 is not int8")
        return super().run(chip, x)


def test_a_refused_or_broken_item_fails_alone_and_fences_no_chip(events):
    chips = open_chips(["model://", "model://"])
    items = [np.full(32, i, dtype=np.int8) for i in range(8)]
    with Pool(chips, Refusing(), on_event=events) as pool:
        result = pool.result(pool.submit(items, "none"), timeout=30)
        stats = pool.stats
    assert [i for i, item in enumerate(result.items) if item.output is None] == [3, 5]
    assert "NakError" in result.items[3].error and "not int8" in result.items[5].error
    assert stats.fences == 0 and "CHIP_FENCED" not in [n for n, _ in events.seen]


def test_dmr_on_two_disagreeing_chips_ends_the_item_instead_of_waiting_for_a_third():
    chips = open_chips(["model://?harden=0", "model://"])
    with Pool(chips, Matvec()) as pool:
        bad = chips[0][1]
        bad.arm_injection()
        bad.inject("mem", 0, 1)
        result = pool.result(pool.submit(inputs(6, seed=9), "dmr"), timeout=30)
    failed = [item for item in result.items if item.output is None]
    assert failed and all("no majority" in item.error for item in failed)


def test_stopping_the_pool_ends_waiting_jobs():
    chips = open_chips(["model://"])
    pool = Pool(chips, Matvec(), admit=lambda: False).start()
    job = pool.submit(inputs(3), "none")
    pool.stop()
    result = pool.result(job, timeout=5)
    assert not result.ok and all(item.error == "the pool stopped" for item in result.items)
