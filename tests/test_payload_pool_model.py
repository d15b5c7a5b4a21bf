"""The on-board model served by a pool of chips: sharded, voted, and held back by the
power model through an eclipse (library level; on behavioural-model chips)."""

from __future__ import annotations

import threading

import numpy as np

from orbithil import hal
from orbithil.payload.model import PoolExecutor, default_model
from orbithil.payload.orbit import Orbit
from orbithil.payload.pool import Pool
from orbithil.payload.power import PowerModel, StepClock


def test_tmr_inference_over_three_chips_equals_numpy_and_outvotes_an_upset(tmp_path, monkeypatch):
    monkeypatch.setenv("ORBITHIL_CACHE_DIR", str(tmp_path))
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


def test_eclipse_defers_inference_and_sunrise_releases_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ORBITHIL_CACHE_DIR", str(tmp_path))
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
