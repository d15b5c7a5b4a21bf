"""The on-board model served by a pool of chips: sharded, voted, and held back by the
power model through an eclipse (library level; on behavioural-model chips)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from orbithil import hal
from orbithil.payload.model import PoolExecutor, default_model
from orbithil.payload.orbit import Orbit
from orbithil.payload.pool import Pool, PoolError
from orbithil.payload.power import PowerModel, StepClock


def test_tmr_inference_over_three_chips_equals_numpy_and_outvotes_an_upset():
    model = default_model()
    xs, labels = model.test_split(limit=60)
    expected = model.logits(xs)
    chips = [(f"chip{i}", hal.open(url)) for i, url in
             enumerate(["model://?harden=0", "model://", "model://"])]  # fmt: skip
    disagreed: list[str] = []
    with Pool(chips, PoolExecutor(model),
              on_event=lambda name, **f: disagreed.append(f["chip"])
              if name == "RESULT_DISAGREED" else None) as pool:  # fmt: skip
        bad = chips[0][1]
        bad.arm_injection()
        for word in (6, 23, 40):  # the sign bit of the weight on pixel 27 in three rows
            bad.inject("mem", word, 31)  # unhardened: the upsets stay
        bad.write_reg("INJ_ARM", 0)
        result = pool.result(pool.submit(list(xs), "tmr"), timeout=120)
    got = np.array([item.output for item in result.items])
    assert np.array_equal(got, expected)  # bit for bit, whatever chip0 said
    assert np.mean(np.argmax(got, axis=1) == labels) > 0.9
    assert disagreed and set(disagreed) == {"chip0"}


def test_eclipse_defers_inference_and_sunrise_releases_it():
    model = default_model()
    timeline = Orbit.default().timeline()
    eclipse = timeline.eclipses[0]
    power = PowerModel(chips=2, timeline=timeline)
    clock = StepClock(start=eclipse.entry_s + 60)  # a minute into the shadow
    lock = threading.Lock()

    def admit() -> bool:  # a job costs about its cycles' energy; the battery decides
        with lock:
            return power.can_admit(50.0, 1.0, clock.now())

    chips = [(f"chip{i}", hal.open("model://")) for i in range(2)]
    xs, _ = model.test_split(limit=10)
    with Pool(chips, PoolExecutor(model), admit=admit) as pool:
        # little charge left: eclipse work must wait
        power.battery_j = (power.config.soc_floor + 0.02) * power.config.battery_j
        job = pool.submit(list(xs), "none")
        threading.Event().wait(0.3)
        assert pool.stats.runs == 0 and pool.deferred() == 10
        with lock:
            clock.advance(eclipse.exit_s - clock.now() + 600)  # ten minutes after sunrise
            power.step(600, True, [0.0, 0.0])
        assert pool.result(job, timeout=60).ok
    assert power.soc >= power.config.soc_floor


def test_a_pipeline_runs_each_layer_on_its_own_chips_and_votes_per_stage():
    model = default_model()
    xs, _ = model.test_split(limit=40)
    expected = model.logits(xs)
    # four chips, two stages: chip0 and chip2 run layer 1, chip1 and chip3 layer 2
    urls = ["model://?harden=0", "model://?harden=0", "model://?harden=0", "model://?harden=0"]
    chips = [(f"chip{i}", hal.open(url)) for i, url in enumerate(urls)]
    seen: list[tuple[str, dict]] = []
    executor = PoolExecutor(model, base=None)
    stages_run: dict[str, set[int]] = {name: set() for name, _ in chips}
    run_stage = executor.run_stage

    def spy(chip, stage, item):
        name = next(n for n, c in chips if c is chip)
        stages_run[name].add(stage)
        return run_stage(chip, stage, item)

    executor.run_stage = spy  # records which chip ran which stage, runs it unchanged
    with Pool(chips, executor, pipeline=True,
              on_event=lambda name, **f: seen.append((name, f))) as pool:  # fmt: skip
        assert pool.stage_of == {"chip0": 0, "chip1": 1, "chip2": 0, "chip3": 1}
        shard = pool.result(pool.submit(list(xs), "none"), timeout=120)
        voted = pool.result(pool.submit(list(xs[:10]), "dmr"), timeout=120)
        with pytest.raises(PoolError, match="tmr needs 3 chips per pipeline stage; the pool "
                                            "has 2 in service per pipeline stage"):  # fmt: skip
            pool.submit(list(xs[:2]), "tmr")
    assert np.array_equal(np.array([i.output for i in shard.items]), expected)
    assert stages_run == {"chip0": {0}, "chip1": {1}, "chip2": {0}, "chip3": {1}}
    assert np.array_equal(np.array([i.output for i in voted.items]), expected[:10])
    assert all(len(i.chips) == 4 for i in voted.items)  # two per stage
    assert all(len(i.runs) == 2 for i in shard.items)  # metered: a run per stage
    assert all(len(i.runs) == 4 for i in voted.items)
    with pytest.raises(PoolError, match="a pipeline of 2 stages needs at least 2 chips"):
        Pool(chips[:1], PoolExecutor(model), pipeline=True)


def test_a_tmr_pipeline_outvotes_an_upset_layer_one_chip_before_layer_two():
    model = default_model()
    xs, _ = model.test_split(limit=20)
    chips = [(f"chip{i}", hal.open("model://?harden=0")) for i in range(6)]
    disagreed: list[dict] = []
    with Pool(chips, PoolExecutor(model), pipeline=True,
              on_event=lambda name, **f: disagreed.append(f)
              if name == "RESULT_DISAGREED" else None) as pool:  # fmt: skip
        bad = chips[0][1]  # serves stage 0 (layer 1)
        bad.arm_injection()
        for word in (6, 23, 40):  # the sign bit of the weight on pixel 27 in three rows
            bad.inject("mem", word, 31)
        bad.write_reg("INJ_ARM", 0)
        result = pool.result(pool.submit(list(xs), "tmr"), timeout=120)
    assert np.array_equal(np.array([i.output for i in result.items]), model.logits(xs))
    assert disagreed and {f["chip"] for f in disagreed} == {"chip0"}
    assert all(item.disagreements == ["chip0"] for item in result.items if item.disagreements)
    assert all(len(item.chips) == 6 for item in result.items)
