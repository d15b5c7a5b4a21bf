"""Orbit, sunlight, power and heat: the models the payload scheduler gates compute with."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest

from orbithil.errors import ConfigError
from orbithil.payload import orbit as orbit_module
from orbithil.payload.orbit import DEFAULT_TLE, Orbit, tle_checksum
from orbithil.payload.power import (
    PowerConfig,
    PowerModel,
    SimClock,
    StepClock,
    ThermalConfig,
    ThermalModel,
    energy_units,
)

SEED = 14


@pytest.fixture(scope="module")
def orbit():
    return Orbit.default()


@pytest.fixture(scope="module")
def timeline(orbit):
    return orbit.timeline()


# --- orbit and sunlight -------------------------------------------------------------------
def test_default_orbit_is_iss_like(orbit, timeline):
    assert orbit.epoch.isoformat().startswith("2018-07-03T19:25:57")
    assert 90 * 60 < orbit.period_s < 96 * 60
    assert timeline.period_s == pytest.approx(orbit.period_s, rel=0.005)
    assert 380 < orbit.altitude_km(0.0) < 440
    assert 0.35 <= timeline.eclipse_fraction <= 0.40
    assert 30 * 60 < timeline.mean_eclipse_s < 40 * 60


def test_eclipse_entries_and_exits_alternate(timeline):
    eclipses = timeline.eclipses
    assert len(eclipses) >= 3
    edges = [t for e in eclipses for t in (e.entry_s, e.exit_s)]
    assert edges == sorted(edges) and len(set(edges)) == len(edges)
    for e in eclipses:
        assert timeline.is_sunlit(e.entry_s - 1) and not timeline.is_sunlit(e.entry_s + 1)
        assert not timeline.is_sunlit(e.exit_s - 1) and timeline.is_sunlit(e.exit_s + 1)
        assert timeline.next_sunrise(e.entry_s + 1) == e.exit_s
    first = eclipses[0]
    assert timeline.next_sunset(0.0) == first.entry_s
    assert timeline.next_sunset(first.entry_s + 1) == eclipses[1].entry_s
    assert timeline.next_sunrise(first.exit_s + 1) == first.exit_s + 1  # already sunlit


def test_timeline_agrees_with_skyfield(orbit, timeline):
    """Lookups (inside the sampled span and repeated beyond it) against skyfield itself."""
    import skyfield_data
    from skyfield.api import EarthSatellite, Loader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # skyfield-data's expiry notice
        load = Loader(skyfield_data.get_skyfield_data_path(), verbose=False)
    ts, eph = load.timescale(builtin=True), load("de421.bsp")
    sat = EarthSatellite(*DEFAULT_TLE, "ISS", ts)
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}")
    times = np.sort(rng.uniform(-0.5 * orbit.period_s, timeline.span_s + 3 * orbit.period_s, 600))
    edges = np.array([t for e in timeline.eclipses for t in (e.entry_s, e.exit_s)])
    # Near an edge the answer depends on the 0.1 s refinement (and beyond the span on the
    # repeated cycle, which drifts by a fraction of a second per orbit): keep 5 s away.
    cycle = timeline.period_s
    phase = (times[:, None] - edges[None, :]) % cycle
    times = times[np.min(np.minimum(phase, cycle - phase), axis=1) > 5.0]
    truth = sat.at(sat.epoch + times / 86400.0).is_sunlit(eph)
    eph.close()
    looked_up = np.array([timeline.is_sunlit(t) for t in times])
    assert len(times) > 400
    assert np.array_equal(looked_up, truth)
    assert np.array_equal(orbit.sunlit(times), truth)


def test_edges_are_refined_to_a_fraction_of_a_second(orbit, timeline):
    for e in timeline.eclipses:
        assert orbit.sunlit(e.entry_s - 0.2) and not orbit.sunlit(e.entry_s + 0.2)
        assert not orbit.sunlit(e.exit_s - 0.2) and orbit.sunlit(e.exit_s + 0.2)


def test_loading_the_ephemeris_shows_users_no_warning():
    orbit_module._sky.cache_clear()  # load again, as a fresh process would
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Orbit.default().sunlit(0.0)
    assert [str(w.message) for w in caught] == []


def test_three_line_tle_text():
    orbit = Orbit.from_text(f"ISS (ZARYA)\n{DEFAULT_TLE[0]}\n{DEFAULT_TLE[1]}\n")
    assert orbit.name == "ISS (ZARYA)"


def _with_checksum(line: str) -> str:
    return line[:68] + str(tle_checksum(line))


L1, L2 = DEFAULT_TLE


@pytest.mark.parametrize(
    ("line1", "line2", "message"),
    [
        (L1[:-1] + "4", L2, "line 1 fails its checksum: the last digit is 4 but the line sums to"),
        (L1, L2.replace("51.6414", "51.6415"), "line 2 fails its checksum"),
        (L1[:60], L2, "line 1 is 60 characters long; a TLE line has exactly 69"),
        (L2, L1, "line 1 must start with '1 ' .* swapped"),
        (L1, _with_checksum(L2.replace("25544", "25545")),
         "different satellites: catalogue number '25544' on line 1, '25545'"),
        (L1, _with_checksum(L2.replace("51.6414", "51.64x4")),
         r"line 2 columns 9-16 \(inclination, degrees\) must be a number, got ' 51.64x4'"),
    ],
)  # fmt: skip
def test_malformed_tle_is_refused_with_the_reason(line1, line2, message):
    with pytest.raises(ConfigError, match=message):
        Orbit.from_tle(line1, line2, name="test")


def test_timeline_options_are_checked(orbit):
    with pytest.raises(ConfigError, match="at least two orbits"):
        orbit.timeline(orbits=1)
    with pytest.raises(ConfigError, match=r"step_s=120 is not valid; use 0 < step_s <= 60"):
        orbit.timeline(step_s=120)


# --- clocks -----------------------------------------------------------------------------------
def test_sim_clock_scales_monotonic_time():
    wall = [100.0]
    clock = SimClock(60, start=500.0, monotonic=lambda: wall[0])
    assert clock.now() == 500.0
    wall[0] += 1.5
    assert clock.now() == pytest.approx(590.0)
    assert clock.wall_s(90.0) == pytest.approx(1.5)


def test_sim_clock_runs_factor_times_faster_than_wall_time():
    clock = SimClock(50.0)
    w0, s0 = time.monotonic(), clock.now()
    time.sleep(0.2)
    w1, s1 = time.monotonic(), clock.now()
    assert (s1 - s0) / (w1 - w0) == pytest.approx(50.0, rel=0.3)


def test_step_clock_moves_only_when_advanced():
    clock = StepClock(start=10.0)
    assert clock.now() == 10.0
    assert clock.advance(2.5) == 12.5 == clock.now()
    with pytest.raises(ConfigError, match="dt_s=-1 is not valid"):
        clock.advance(-1)
    with pytest.raises(ConfigError, match="factor=0 is not valid"):
        SimClock(0)


# --- power --------------------------------------------------------------------------------------
def test_power_config_is_validated_with_what_is_valid():
    with pytest.raises(ConfigError, match=r"soc_floor=1\.5 is not valid; use a fraction 0\.\.1"):
        PowerConfig(soc_floor=1.5)
    with pytest.raises(ConfigError, match="battery_wh=0 is not valid; use a value > 0"):
        PowerConfig(battery_wh=0)
    with pytest.raises(ConfigError, match=r"builds are 0 \(HARDEN=0\) and 1"):
        PowerConfig(joules_per_unit={0: 1e-3, 2: 1e-3})
    with pytest.raises(ConfigError, match="must give both builds"):
        PowerConfig(joules_per_unit={1: 1e-3})
    with pytest.raises(ConfigError, match=r"unknown power setting\(s\) array_kw; valid: "):
        PowerConfig.from_mapping({"array_kw": 1})
    assert PowerConfig.from_mapping({"array_w": 80}).array_w == 80.0


def test_job_energy_from_the_chip_counter():
    config = PowerConfig(joules_per_unit={0: 1e-3, 1: 2e-3})
    assert config.job_energy_j(8192, harden=0) == pytest.approx(8.192)
    assert config.job_energy_j(8192, harden=True) == pytest.approx(16.384)
    assert energy_units(0xFFFF_FFF0, 0x10) == 0x20  # across the 32-bit wrap
    assert config.chip_load_w(10.0, busy_s=5.0, job_energy_j=20.0) == pytest.approx(
        config.chip_idle_w + config.link_w * 0.5 + 2.0
    )


def test_battery_sheds_at_its_ceiling_and_counts_unmet_load():
    config = PowerConfig(array_w=100, battery_wh=1, initial_soc=0.99, bus_load_w=10, chip_idle_w=0)
    power = PowerModel(config, chips=0)
    power.step(10.0, True, [])  # 900 J surplus, 36 J of room
    assert power.soc == 1.0
    assert power.energy_shed_j == pytest.approx(900 - 36)
    assert power.power_in_w == pytest.approx(10 + 3.6)
    power.step(400.0, False, [])  # 4000 J of load, 3600 J in the battery
    assert power.soc == 0.0 and power.below_floor
    assert power.energy_unmet_j == pytest.approx(400.0)
    balance = power.energy_in_j - power.energy_out_j
    assert balance == pytest.approx(power.battery_j - power.initial_battery_j)


def test_admission_needs_the_timeline():
    with pytest.raises(ConfigError, match=r"timeline=orbit\.timeline"):
        PowerModel(PowerConfig()).can_admit(10.0, 1.0, 0.0)


JOB_J, JOB_S, DT = 2400.0, 60.0, 10.0  # a 40 W job for a minute; 10 s steps
SMALL_SAT = dict(
    array_w=100, battery_wh=50, soc_floor=0.30, bus_load_w=30, chip_idle_w=2, link_w=1,
    admit_margin=0.05,
)  # fmt: skip


def _offer_jobs_until(power, clock, end):
    """Two chips, a job offered to each free chip on every step (a queue that never empties;
    a deferred job waits at its head). Returns (admitted, deferred) as (time, sunlit)."""
    config, timeline = power.config, power.timeline
    remaining = [0.0] * power.chips  # seconds of work left per chip
    admitted, deferred = [], []
    while clock.now() < end:
        now = clock.now()
        lit = timeline.is_sunlit(now)
        for chip in range(power.chips):
            if remaining[chip] > 0:
                continue
            pending = sum(r / JOB_S * config.job_cost_j(JOB_J, JOB_S) for r in remaining)
            if power.can_admit(JOB_J, JOB_S, now, pending_j=pending):
                remaining[chip] = JOB_S
                admitted.append((now, lit))
            else:
                deferred.append((now, lit))
                break
        loads = []
        for chip in range(power.chips):
            busy = min(DT, remaining[chip])
            loads.append(config.chip_load_w(DT, busy_s=busy, job_energy_j=JOB_J * busy / JOB_S))
            remaining[chip] -= busy
        power.step(DT, lit, loads)
        clock.advance(DT)
    return admitted, deferred


def test_one_orbit_of_continuous_jobs_defers_through_eclipse(timeline):
    """From a sunrise, one orbit with jobs offered without pause: the sunlit part computes
    what the array can spare, the eclipse waits, the queue starts again after sunrise."""
    config = PowerConfig(**SMALL_SAT, initial_soc=0.60)
    power = PowerModel(config, chips=2, timeline=timeline)
    eclipse = timeline.eclipses[1]
    clock = StepClock(start=timeline.eclipses[0].exit_s)
    admitted, deferred = _offer_jobs_until(power, clock, clock.now() + timeline.period_s + 600)

    in_eclipse = [t for t, lit in deferred if not lit]
    assert in_eclipse, "no job was deferred in eclipse"
    assert all(eclipse.entry_s <= t < eclipse.exit_s for t in in_eclipse)
    # Compute through the eclipse only while the battery can carry it to sunrise: the
    # last part of the eclipse runs none.
    assert not [
        t for t, lit in admitted if eclipse.entry_s + 0.5 * eclipse.duration_s < t < eclipse.exit_s
    ]
    assert power.min_soc >= config.soc_floor
    # The deferred work starts once the Sun is back.
    resumed = [t for t, lit in admitted if t >= eclipse.exit_s]
    assert resumed and resumed[0] - eclipse.exit_s < 300.0
    assert timeline.is_sunlit(resumed[0])
    # Energy balance: what came in minus what went out is what the battery gained.
    assert power.energy_in_j - power.energy_out_j == pytest.approx(
        power.battery_j - power.initial_battery_j, abs=1e-6
    )
    assert power.energy_unmet_j == 0.0
    assert power.energy_generated_j == pytest.approx(power.energy_in_j + power.energy_shed_j)
    assert len([t for t, lit in admitted if lit]) > 50  # the sunlit part did compute


def test_a_full_battery_computes_into_the_eclipse_until_its_budget_is_spent(timeline):
    config = PowerConfig(**SMALL_SAT, initial_soc=1.0)
    power = PowerModel(config, chips=2, timeline=timeline)
    eclipse = timeline.eclipses[1]
    clock = StepClock(start=eclipse.entry_s)
    admitted, deferred = _offer_jobs_until(power, clock, eclipse.exit_s)
    # As many jobs as the battery holds beyond the bus and idle chips' need until sunrise
    # and the floor plus margin, taken at once; then the queue waits for the Sun.
    limit = config.soc_floor + config.admit_margin
    budget = (1.0 - limit) * config.battery_j - power.baseline_w * eclipse.duration_s
    assert len(admitted) == int(budget // config.job_cost_j(JOB_J, JOB_S)) == 17
    last = max(t for t, _ in admitted)
    assert admitted[0][0] == eclipse.entry_s and last < eclipse.entry_s + 600
    assert all(t >= last for t, _ in deferred) and len(deferred) > 100
    assert limit <= power.soc < limit + 0.03  # what was projected at each admission


def test_sunlight_charges_for_the_coming_eclipse_before_computing(timeline):
    config = PowerConfig(battery_wh=50, initial_soc=0.40, bus_load_w=30, chip_idle_w=2)
    power = PowerModel(config, chips=2, timeline=timeline)
    eclipse = timeline.eclipses[1]
    late = eclipse.entry_s - 120.0  # two minutes of sunlight left: too little to recharge
    decision = power.assess(2400.0, 60.0, late)
    assert decision.sunlit and not decision.admit
    assert decision.sunrise_s == eclipse.exit_s
    assert "below floor 0.3 + margin 0.05" in decision.reason
    power.battery_j = config.battery_j  # a full battery carries the job through
    assert power.can_admit(2400.0, 60.0, late)


# --- heat --------------------------------------------------------------------------------------
def test_chip_temperature_follows_its_rc_time_constant():
    config = ThermalConfig(heat_capacity_j_per_k=60, conductance_w_per_k=0.5, sink_c=10)
    assert config.time_constant_s == 120.0
    assert config.steady_state_c(20.0) == 50.0
    chip = ThermalModel(config)
    for _ in range(120):
        chip.step(1.0, 20.0)
    assert chip.temperature_c == pytest.approx(50 - 40 * math.exp(-1), abs=1e-9)
    in_one = ThermalModel(config)
    in_one.step(120.0, 20.0)  # exact per step: the same in one step as in 120
    assert in_one.temperature_c == pytest.approx(chip.temperature_c, abs=1e-9)
    chip.step(10 * 120.0, 20.0)
    assert chip.temperature_c == pytest.approx(50.0, abs=0.01)
    assert not chip.throttled and chip.telemetry()["TEMP_C"] == chip.temperature_c


def test_throttle_engages_at_the_limit_and_releases_with_hysteresis():
    chip = ThermalModel(ThermalConfig(throttle_c=70, release_c=60, critical_c=85))
    trace = []
    for _ in range(600):  # 35 W: settles at 80 C, above the limit
        before = chip.temperature_c
        chip.step(1.0, 35.0)
        trace.append((before, chip.temperature_c, chip.throttled))
    engaged = next(i for i, (_, _, throttled) in enumerate(trace) if throttled)
    assert trace[engaged][0] < 70 <= trace[engaged][1]
    assert chip.throttled and not chip.critical and chip.throttle_count == 1
    cooling = []
    while chip.throttled:
        chip.step(1.0, 0.0)
        cooling.append(chip.temperature_c)
    assert min(cooling[:-1]) > 60.0 >= cooling[-1]  # held between 70 and 60, released at 60
    assert any(t < 70 for t in cooling[:-1])
    chip.step(2000.0, 45.0)  # settles at 100 C
    assert chip.critical and chip.throttled and chip.telemetry()["CRITICAL"] == 1.0
    with pytest.raises(ConfigError, match="release_c < throttle_c < critical_c"):
        ThermalConfig(throttle_c=70, release_c=75)
