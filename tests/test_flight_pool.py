"""The flight stack's payload: a pool of chips commanded from the ground (jobs, policies,
chips out and back, status), a voted-out upset named in an event, and one orbit of power
at a time factor with compute deferred through eclipse."""

from __future__ import annotations

import re

import numpy as np
import pytest

from orbithil.flight.ground import CommandRejected
from orbithil.payload.model import default_model, plan_layout


def expected_classes(first: int, count: int) -> str:
    model = default_model()
    xs, _ = model.test_split()
    n = len(xs)
    return "".join(str(int(np.argmax(model.forward(xs[(first + i) % n])))) for i in range(count))


def job_done(g, job: int, timeout: float = 30.0):
    return g.wait_event("JOB_DONE", lambda e: e.text.startswith(f"job {job} done"), timeout=timeout)


def submitted_job(g, since: int) -> int:
    event = g.wait_event("JOB_SUBMITTED", timeout=5, since=since)
    return int(re.match(r"job (\d+):", event.text).group(1))


def test_a_pool_serves_jobs_under_each_policy_and_takes_chips_out_and_back(flight_stack):
    fs = flight_stack(["model://?harden=0", "model://?harden=0", "model://?harden=1"],
                      hk_period_ms=50, chip_poll_ms=50)  # fmt: skip
    g = fs.ground
    assert g.wait_telemetry("POOL_HEALTHY", lambda v: v == 3, timeout=10) == 3
    with pytest.raises(CommandRejected, match="not allowed in SAFE"):
        g.command("SUBMIT_JOB", first=0, count=4)
    g.command("SET_MODE", mode="NOMINAL")
    g.command("SET_MODE", mode="COMPUTE")
    for policy, first, count in (("none", 0, 40), ("rerun", 40, 12), ("dmr", 7, 12),
                                 ("tmr", 100, 30)):  # fmt: skip
        g.command("SET_POLICY", policy=policy)
        since = len(g.events)
        g.command("SUBMIT_JOB", first=first, count=count)
        job = submitted_job(g, since)
        done = job_done(g, job)
        assert f"{count}/{count} completed" in done.text and f"policy {policy}" in done.text
        assert done.text.endswith(f"classes {expected_classes(first, count)}")
        assert len([e for e in g.events if e.text.startswith(f"job {job} done")]) == 1
    g.wait_telemetry("ITEMS_DONE", lambda v: v == 94, timeout=5)
    assert g.telemetry["ITEMS_FAILED"] == 0 and g.telemetry["DISAGREEMENTS"] == 0
    assert all(g.telemetry[f"CHIP{n}_RUNS"] > 0 for n in range(3))
    # a chip out of service: tmr cannot be served by two, the others still can
    g.command("CHIP_OUT", chip=2)
    g.wait_event("CHIP_OUT", lambda e: "chip 2" in e.text, timeout=5)
    g.wait_telemetry("CHIP2_STATE", lambda v: v == 2, timeout=5)
    with pytest.raises(CommandRejected, match="tmr needs 3 chips; the pool has 2 in service"):
        g.command("SUBMIT_JOB", first=0, count=3)
    with pytest.raises(CommandRejected, match=r"no chip 5: the pool has chips 0\.\.2"):
        g.command("CHIP_OUT", chip=5)
    g.command("SET_POLICY", policy="dmr")
    since = len(g.events)
    g.command("SUBMIT_JOB", first=3, count=10)
    done = job_done(g, submitted_job(g, since))
    assert done.text.endswith(f"classes {expected_classes(3, 10)}")
    runs_out = g.telemetry["CHIP2_RUNS"]
    g.command("CHIP_IN", chip=2)
    g.wait_event("CHIP_READMITTED", lambda e: "chip 2" in e.text, timeout=10)
    g.wait_telemetry("POOL_HEALTHY", lambda v: v == 3, timeout=5)
    assert g.telemetry["CHIP2_RUNS"] == runs_out  # it ran nothing while out
    with pytest.raises(CommandRejected, match="in service already"):
        g.command("CHIP_IN", chip=2)
    since = len(g.events)
    g.command("POOL_STATUS")
    for n in range(3):
        g.wait_event("CHIP_STATUS", lambda e, n=n: e.text.startswith(f"chip {n} model://"),
                     timeout=5, since=since)  # fmt: skip


def test_tmr_outvotes_a_chip_with_an_upset_weight_and_the_event_names_it(flight_stack):
    fs = flight_stack(["model://?harden=1", "model://?harden=0", "model://?harden=1"],
                      hk_period_ms=50, policy="tmr")  # fmt: skip
    g = fs.ground
    g.command("SET_MODE", mode="NOMINAL")
    g.command("SET_MODE", mode="COMPUTE")
    # one bit of a first-layer weight word on the unhardened chip (no ECC to correct it):
    # its logits change for every image that lights those pixels
    words = fs.chips[1].identity.mem_words
    weight = words - plan_layout(default_model()).words + 7
    g.command("CHIP_INJECT", kind="mem", index=weight, bit=5, copy=0, chip=1)
    since = len(g.events)
    g.command("SUBMIT_JOB", first=0, count=20)
    done = job_done(g, submitted_job(g, since))
    assert done.text.endswith(f"classes {expected_classes(0, 20)}")  # the vote is right
    disagreed = [e for e in g.events if e.name == "RESULT_DISAGREED"]
    assert disagreed and all(e.text.startswith("chip 1 disagreed") for e in disagreed)
    g.wait_telemetry("CHIP1_DISAGREEMENTS", lambda v: v > 0, timeout=5)
    assert g.telemetry["CHIP0_DISAGREEMENTS"] == g.telemetry["CHIP2_DISAGREEMENTS"] == 0
    assert g.wait_telemetry("DISAGREEMENTS", lambda v: v == len(disagreed), timeout=5)


def test_one_orbit_defers_compute_through_eclipse_and_keeps_the_battery_above_its_floor(
    flight_stack,
):
    from orbithil.payload.orbit import Orbit

    timeline = Orbit.default().timeline()
    eclipse = timeline.next_eclipse(0.0)  # the first: sunset ~2429 s, sunrise ~4593 s
    start = eclipse.entry_s - 400.0  # 400 s of sunlight before sunset
    factor = 250.0  # an orbit (5,560 s) in 22 s
    # A small satellite whose battery carries the bus through eclipse with little to spare:
    # 5 Wh, 2 W of bus and idle chips (0.24 of the battery through the 2,164 s eclipse), and
    # 53 J per inference, so the pool could drain it in seconds if admission let it.
    power = {"array_w": 20.0, "battery_wh": 5.0, "soc_floor": 0.3, "initial_soc": 0.8,
             "bus_load_w": 1.0, "chip_idle_w": 0.5, "link_w": 0.1,
             "joules_per_unit": {"0": 0.005, "1": 0.008}}  # fmt: skip
    fs = flight_stack(["model://?harden=0", "model://?harden=0"], hk_period_ms=50,
                      clock="orbit", time_factor=factor, orbit_start_s=start, power=power,
                      thermal={"conductance_w_per_k": 2.0})  # fmt: skip
    g = fs.ground
    g.command("SET_MODE", mode="NOMINAL")
    g.command("SET_MODE", mode="COMPUTE")
    jobs = []
    for first in range(0, 400, 100):  # 400 inferences: far more than the eclipse allows
        since = len(g.events)
        g.command("SUBMIT_JOB", first=first, count=100)
        jobs.append((submitted_job(g, since), first))
    deferred = g.wait_event("JOBS_DEFERRED", timeout=20)
    # while the Sun is down, the queue waits
    dark = g.wait_telemetry("SUNLIT", lambda v: v == 0, timeout=30)
    assert dark == 0 and g.wait_telemetry("JOBS_DEFERRED", lambda v: v > 0, timeout=5) > 0
    resumed = g.wait_event("JOBS_RESUMED", timeout=60)
    assert resumed.time_us / 1e6 >= eclipse.exit_s - 1.0  # compute resumed at sunrise, not before
    done = {job: job_done(g, job, timeout=60) for job, _ in jobs}
    for job, first in jobs:
        assert done[job].text.endswith(f"classes {expected_classes(first, 100)}")
    finished_last = max(event.time_us for event in done.values()) / 1e6
    assert finished_last >= eclipse.exit_s  # some jobs waited for the Sun
    assert deferred.time_us / 1e6 < eclipse.exit_s
    # the rest of the orbit, then the battery's lowest point
    g.wait_telemetry("ORBIT_TIME_S", lambda v: v >= start + timeline.period_s, timeout=60)
    soc_min = g.wait_telemetry("SOC_MIN", timeout=5)
    assert 0.3 <= soc_min < 0.45  # it was used, down to the margin, never under the floor
    assert g.telemetry["ITEMS_DONE"] == 400 and g.telemetry["ITEMS_FAILED"] == 0
    assert g.telemetry["MODE"] == 2  # no FDIR action took it out of COMPUTE
    assert not [e for e in g.events if e.name == "FDIR_TRIGGERED"]


def test_fdir_goes_safe_on_a_battery_under_its_floor(flight_stack):
    from orbithil.payload.orbit import Orbit

    eclipse = Orbit.default().timeline().next_eclipse(0.0)
    # in eclipse, the bus alone takes the battery under its floor within seconds
    fs = flight_stack("model://?harden=0", hk_period_ms=50, time_factor=100.0,
                      orbit_start_s=eclipse.entry_s + 10,
                      power={"battery_wh": 1.0, "initial_soc": 0.32})  # fmt: skip
    g = fs.ground
    g.command("SET_MODE", mode="NOMINAL")
    fdir = g.wait_event("FDIR_TRIGGERED", lambda e: "battery-low" in e.text, timeout=20)
    assert "SOC=" in fdir.text and "-> safe" in fdir.text
    g.wait_telemetry("MODE", lambda v: v == 0, timeout=5)
    assert g.wait_telemetry("SOC", timeout=5) < 0.3


def test_a_hot_chip_is_throttled_and_fdir_goes_safe_at_its_critical_temperature(flight_stack):
    # a chip with almost no radiator: its idle power heats it through every limit
    thermal = {"heat_capacity_j_per_k": 2.0, "conductance_w_per_k": 0.05,
               "throttle_c": 25.0, "release_c": 20.0, "critical_c": 40.0}  # fmt: skip
    fs = flight_stack("model://?harden=0", hk_period_ms=50, time_factor=20.0, thermal=thermal)
    g = fs.ground
    g.command("SET_MODE", mode="NOMINAL")
    g.wait_event("CHIP_THROTTLED", lambda e: e.text.startswith("chip 0 at"), timeout=20)
    g.wait_telemetry("CHIP0_STATE", lambda v: v == 3, timeout=5)
    fdir = g.wait_event("FDIR_TRIGGERED", lambda e: "over-temperature" in e.text, timeout=20)
    assert "TEMP_MAX_C=" in fdir.text
    g.wait_telemetry("MODE", lambda v: v == 0, timeout=5)
    assert g.wait_telemetry("TEMP_MAX_C", timeout=5) >= 40.0


def test_a_pipelined_pool_runs_layer_one_on_chip_0_and_layer_two_on_chip_1(flight_stack):
    fs = flight_stack(["model://?harden=0", "model://?harden=1"], hk_period_ms=50,
                      pipeline=True)  # fmt: skip
    g = fs.ground
    with pytest.raises(CommandRejected, match="dmr needs 2 chips per pipeline stage; the pool "
                                              "has 1 per pipeline stage"):  # fmt: skip
        g.command("SET_POLICY", policy="dmr")
    g.command("SET_MODE", mode="NOMINAL")
    g.command("SET_MODE", mode="COMPUTE")
    since = len(g.events)
    g.command("SUBMIT_JOB", first=200, count=30)
    done = job_done(g, submitted_job(g, since))
    assert done.text.endswith(f"classes {expected_classes(200, 30)}")
    g.wait_telemetry("CHIP1_RUNS", lambda v: v == 30, timeout=5)
    assert g.telemetry["CHIP0_RUNS"] == 30  # one stage each, every item through both


def test_housekeeping_carries_the_channels_of_the_chips_there_are(flight_stack):
    fs = flight_stack(["model://?harden=0", "model://?harden=0"], hk_period_ms=50)
    g = fs.ground
    g.wait_telemetry("CHIP1_STATE", lambda v: v == 0, timeout=5)
    assert "CHIP1_TEMP_C" in g.telemetry and "CHIP2_STATE" not in g.telemetry


def test_station_passes_drive_the_contact_plan(flight_stack):
    import time

    from orbithil.payload.orbit import Orbit
    from orbithil.payload.passes import DEFAULT_STATIONS, contact_windows

    first = contact_windows(Orbit.default(), DEFAULT_STATIONS, 0.0, 24)[0]
    factor = 40.0  # the pass begins 1 s (40 s of orbit) after the stack starts
    fs = flight_stack("model://?harden=0", hk_period_ms=50, clock="orbit", stations="default",
                      time_factor=factor, orbit_start_s=first[0] - 40.0)  # fmt: skip
    link = fs.stack.link
    assert not link.contacts.up(fs.stack.clock.now())
    time.sleep(0.5)
    assert fs.ground.packets["hk"] == 0  # no station sees the spacecraft yet
    fs.ground.wait_telemetry("LINK_UP", lambda v: v == 1, timeout=10)  # the pass began
    assert first[0] <= fs.stack.clock.now() < first[1]
    assert fs.ground.wait_telemetry("TM_STORED", timeout=5) >= 0
