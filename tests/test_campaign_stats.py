"""Campaign statistics against published values, and spec validation messages."""

from __future__ import annotations

import math

import pytest

from orbithil.tools.campaign import spec as spec_mod
from orbithil.tools.campaign import stats


def test_leveugle_sample_size_published_values():
    # Leveugle et al., DATE 2009: e = 1%, 95% (t = 1.96), p = 0.5
    assert stats.sample_size(0.01, 0.95, 1_000_000) == 9513
    assert stats.sample_size(0.01, 0.95) == 9604  # infinite population: t^2 p(1-p)/e^2
    assert stats.sample_size(0.05, 0.95) == 385
    assert stats.sample_size(0.01, 0.95, 100) == 99  # small populations: nearly all of it
    assert stats.sample_size(0.01, 0.99, 1_000_000) == math.ceil(
        1e6 / (1 + 1e-4 * 999_999 / (2.5758293035489004**2 * 0.25))
    )


@pytest.mark.parametrize(
    ("k", "n", "wilson", "exact"),
    [  # Newcombe, Statistics in Medicine 17 (1998), table II, methods 3 and 5
        (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
        (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
        (0, 20, (0.0, 0.1611), (0.0, 0.1684)),
        (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
    ],
)
def test_intervals_match_newcombe(k, n, wilson, exact):
    w = stats.wilson(k, n)
    c = stats.clopper_pearson(k, n)
    assert (round(w.low, 4), round(w.high, 4)) == wilson
    assert (round(c.low, 4), round(c.high, 4)) == exact
    assert w.estimate == c.estimate == k / n


def test_zero_failure_bound_is_the_rule_of_three():
    assert stats.zero_failure_upper(300) == pytest.approx(1 - 0.05 ** (1 / 300))
    assert stats.zero_failure_upper(300) == pytest.approx(3 / 300, rel=0.01)
    # the exact interval's one-sided bound at twice the alpha
    assert stats.zero_failure_upper(20, 0.975) == pytest.approx(stats.clopper_pearson(0, 20).high)


def test_stratified_weights_blocks_by_bits():
    # a block of 90% of the bits with 10% hits and one of 10% with 50%: 0.9*0.1 + 0.1*0.5
    est = stats.stratified({"mem": (10, 100, 900), "ff": (50, 100, 100)})
    assert est.estimate == pytest.approx(0.14)
    assert est.low < 0.14 < est.high
    # more injections, narrower
    wide = stats.stratified({"mem": (1, 10, 900), "ff": (5, 10, 100)})
    assert wide.high - wide.low > est.high - est.low


def test_orbit_rates_scale_shares_by_bits_and_rate():
    sdc = stats.Interval(0.01, 0.005, 0.02)
    due = stats.Interval(0.001, 0.0, 0.003)
    orbit = stats.in_orbit(100_000, "leo", sdc, due)
    assert orbit.upsets_per_day == pytest.approx(0.04)
    assert orbit.sdc_per_day.estimate == pytest.approx(4e-4)
    assert orbit.sdc_per_day.high == pytest.approx(8e-4)
    assert stats.in_orbit(100_000, 1e-6, sdc, due).upsets_per_day == pytest.approx(0.1)
    with pytest.raises(ValueError, match="presets: leo"):
        stats.in_orbit(1, "mars", sdc, due)


def test_bad_arguments_are_refused():
    for call in (
        lambda: stats.sample_size(0, 0.95),
        lambda: stats.sample_size(0.01, 1.5),
        lambda: stats.wilson(5, 3),
    ):
        with pytest.raises(ValueError):
            call()


def test_example_spec_loads_and_round_trips(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(spec_mod.EXAMPLE)
    spec = spec_mod.load(path)
    assert spec.harden == (0, 1) and spec.workload == "inference" and spec.injections == 500
    again = tmp_path / "again.toml"
    again.write_text(spec_mod.to_toml(spec))
    assert spec_mod.load(again) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[chip]\nharden = [2]", r"chip\.harden = \[2\] is not allowed; use a list of 0 and/or 1"),
        ('[workload]\nname = "video"', r"workload\.name = 'video' .* one of control, memory"),
        ('[fault]\nmodel = "laser"', r"fault\.model = 'laser' .* one of flip, mbu, stuck"),
        ("[size]\ninjections = 10\nmargin = 0.01", "injections or margin, not both"),
        ("[size]\nmargin = 2", r"size\.margin = 2 is not allowed"),
        (
            "[size]\ninjections = 100000000000",
            r"size\.injections = 100000000000 is not allowed; use an integer from 1 to 1,000,000",
        ),
        ("[size]\ninjections = 0", r"size\.injections = 0 is not allowed"),
        ("[fault]\nmodel = []", r"fault\.model = \[\] is not allowed; use one of flip"),
        ("[workload]\nname = [1]", r"workload\.name = \[1\] is not allowed"),
        ("[chip]\nsimulator = {}", r"chip\.simulator = \{\} is not allowed"),
        ("[run]\nexecutor = []", r"run\.executor = \[\] is not allowed"),
        ("[chips]\nharden = [1]", r"unknown section \[chips\]; sections: \[workload\]"),
        ("[run]\nworkerz = 2", r"run\.workerz: unknown key; \[run\] takes executor, workers"),
        ('[run]\nscheduler = "localhost"', r"tcp://host:port"),
        ('[orbit]\nrate = "moon"', r"orbit\.rate = 'moon' .* a preset \(leo"),
        ("name = ", "not valid TOML"),
    ],
)
def test_spec_errors_name_key_value_and_allowed(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(spec_mod.SpecError, match=message):
        spec_mod.load(path)


def test_a_size_the_fault_space_or_the_planner_cannot_hold_is_refused():
    spec = spec_mod.parse({"size": {"injections": 500}}, source="c.toml")
    spec_mod.check_size(spec, 500, 10_000, "HARDEN=0")  # fits: no error
    with pytest.raises(spec_mod.SpecError, match=r"injections = 500 is more than the 400 faults"):
        spec_mod.check_size(spec, 500, 400, "HARDEN=0")
    narrow = spec_mod.parse({"size": {"margin": 1e-6}}, source="c.toml")
    n = stats.sample_size(1e-6, 0.95, 10**15)
    with pytest.raises(spec_mod.SpecError, match=r"margin = 1e-06 needs .* ask for a wider"):
        spec_mod.check_size(narrow, n, 10**15, "HARDEN=1")
