"""Ground-station passes and contact windows from the orbit (payload/passes.py) and
``orbithil passes``: offline (skyfield-data), deterministic, a few milliseconds each."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from orbithil.errors import ConfigError
from orbithil.flight.link import ContactPlan
from orbithil.payload.orbit import DEFAULT_TLE, Orbit, tle_checksum
from orbithil.payload.passes import (
    DEFAULT_STATIONS,
    ContactWindow,
    Pass,
    Station,
    _assemble,
    contact_windows,
    elevation_deg,
    find_passes,
    load_stations,
    merge_passes,
    pass_plan,
    stations_from_data,
)
from orbithil.tools.cli import main

DAY_H = 24.0
STATIONS = {s.name: s for s in DEFAULT_STATIONS}
SVALBARD, WALLOPS = STATIONS["Svalbard"], STATIONS["Wallops"]
# The default (ISS) orbit's first Wallops pass after its epoch (see
# test_passes_match_find_events): rises at ~43261 s, culminates at ~43490 s (27.0 deg),
# sets at ~43720 s.
WALLOPS_RISE_S, WALLOPS_CULMINATE_S, WALLOPS_SET_S = 43261.0, 43490.0, 43720.0


def _fixed(line: str) -> str:
    return line[:68] + str(tle_checksum(line))


def iss_variant_lines(
    *, inclination: float | None = None, mean_motion: float | None = None
) -> tuple[str, str]:
    """The bundled ISS element set with another inclination or mean motion (checksums
    recomputed): a polar orbit at the same height, or a geostationary one."""
    line1, line2 = DEFAULT_TLE
    if inclination is not None:
        line2 = line2[:8] + f"{inclination:8.4f}" + line2[16:]
    if mean_motion is not None:
        line2 = line2[:52] + f"{mean_motion:11.8f}" + line2[63:]
    return _fixed(line1), _fixed(line2)


def iss_variant(**elements: float) -> Orbit:
    return Orbit.from_tle(*iss_variant_lines(**elements), name="variant")


@pytest.fixture(scope="module")
def orbit() -> Orbit:
    return Orbit.default()


@pytest.fixture(scope="module")
def day(orbit):
    return pass_plan(orbit, DEFAULT_STATIONS, 0.0, DAY_H)


# --- stations as configuration --------------------------------------------------------------
def test_default_network_is_a_few_real_stations_on_all_latitudes():
    assert 3 <= len(DEFAULT_STATIONS) <= 4
    assert len({s.name for s in DEFAULT_STATIONS}) == len(DEFAULT_STATIONS)
    latitudes = sorted(s.lat for s in DEFAULT_STATIONS)
    assert latitudes[-1] > 70 and latitudes[0] < 0  # a polar station, and the south


def test_stations_load_from_toml_tables(tmp_path):
    path = tmp_path / "stations.toml"
    path.write_text(
        '[[stations]]\nname = "Svalbard"\nlat = 78.23\nlon = 15.39\nalt_m = 500\n'
        "min_elevation_deg = 5\n\n"
        '[[stations]]\nname = "Quito"\nlat = -0.2\nlon = -78.5\n'
    )
    svalbard, quito = load_stations(path)
    assert svalbard == Station("Svalbard", 78.23, 15.39, alt_m=500.0, min_elevation_deg=5.0)
    assert quito.alt_m == 0.0 and quito.min_elevation_deg == 5.0  # the defaults
    assert isinstance(svalbard.lat, float) and isinstance(svalbard.alt_m, float)
    # the same from parsed data: a list of tables, or one table
    assert stations_from_data([{"name": "Quito", "lat": -0.2, "lon": -78.5}]) == (quito,)
    assert stations_from_data({"name": "Quito", "lat": -0.2, "lon": -78.5}) == (quito,)


@pytest.mark.parametrize(
    "table, message",
    [
        ({"name": "X", "lat": 91, "lon": 0}, "station 'X': lat=91 is outside -90..90"),
        ({"name": "X", "lat": 0, "lon": -181}, "lon=-181 is outside -180..180"),
        ({"name": "X", "lat": 0, "lon": 0, "alt_m": 12000}, "alt_m=12000 is outside -500..9000"),
        ({"name": "X", "lat": 0, "lon": 0, "min_elevation_deg": 90}, "below 90"),
        ({"name": "X", "lat": 0, "lon": 0, "min_elevation_deg": -1}, "at least 0"),
        ({"name": "X", "lat": "78N", "lon": 0}, "lat must be a number, got '78N'"),
        ({"name": "X", "lat": True, "lon": 0}, "lat must be a number, got True"),
        ({"name": "X", "lat": math.nan, "lon": 0}, "lat must be a finite number"),
        ({"name": " ", "lat": 0, "lon": 0}, "a station needs a name"),
        ({"name": "X", "lat": 0}, "stations[0]: missing lon (name, lat, lon required)"),
        ({"name": "X", "lat": 0, "lon": 0, "elev": 5}, "unknown key(s) ['elev']"),
    ],
)
def test_a_bad_station_is_refused_with_what_is_wrong(table, message):
    with pytest.raises(ConfigError) as caught:
        stations_from_data([table])
    assert message in str(caught.value)


def test_station_lists_are_checked_as_a_whole(tmp_path):
    with pytest.raises(ConfigError, match="no stations; give at least one"):
        stations_from_data({"stations": []})
    with pytest.raises(
        ConfigError, match=r"\[0\] 'Wallops' and stations\[1\] 'wallops' have the same name"
    ):
        stations_from_data([WALLOPS.as_dict(), {**WALLOPS.as_dict(), "name": "wallops"}])
    with pytest.raises(ConfigError, match="give a list of station tables"):
        stations_from_data({"stations": "Svalbard"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_stations(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[stations]\n")
    with pytest.raises(ConfigError, match="is not readable TOML"):
        load_stations(bad)
    bad.write_text("[station]\nname = 'X'\n")
    with pytest.raises(ConfigError, match=r"has no \[\[stations\]\] tables"):
        load_stations(bad)


# --- passes from the geometry ------------------------------------------------------------
def test_a_polar_station_never_sees_the_iss_while_lower_ones_do(day):
    # 51.6 degrees of inclination plus ~16 degrees of visibility circle stay far south
    # of Svalbard at 78 degrees north
    assert day.passes["Svalbard"] == []
    for name in ("Wallops", "Malindi", "Hartebeesthoek"):
        assert len(day.passes[name]) >= 3, name


def test_a_polar_station_sees_most_revolutions_of_a_polar_orbit():
    polar = iss_variant(inclination=97.6)
    passes = find_passes(polar, SVALBARD, 0.0, DAY_H)
    revolutions = DAY_H * 3600 / polar.period_s
    assert len(passes) >= 0.6 * revolutions


def test_leo_passes_are_minutes_long_and_above_the_mask(orbit, day):
    for station in DEFAULT_STATIONS:
        for p in day.passes[station.name]:
            assert p.rise_found and p.set_found
            assert 60.0 <= p.duration_s <= 12 * 60.0
            assert p.rise_s < p.culminate_s < p.set_s
            assert station.min_elevation_deg <= p.max_elevation_deg <= 90.0
            at_rise, at_top, at_set = elevation_deg(
                orbit, station, [p.rise_s, p.culminate_s, p.set_s]
            )
            assert at_rise == pytest.approx(station.min_elevation_deg, abs=0.1)
            assert at_set == pytest.approx(station.min_elevation_deg, abs=0.1)
            assert at_top == pytest.approx(p.max_elevation_deg)


def test_passes_match_find_events(orbit):
    times, kinds = orbit.satellite.find_events(
        WALLOPS.topos(), orbit.time(0.0), orbit.time(DAY_H * 3600), altitude_degrees=5.0
    )
    seconds = [(t - orbit.satellite.epoch) * 86400.0 for t in times]
    assert list(kinds) == [0, 1, 2] * (len(kinds) // 3)  # whole passes inside the day
    expected = [tuple(seconds[i : i + 3]) for i in range(0, len(seconds), 3)]
    found = [(p.rise_s, p.culminate_s, p.set_s) for p in find_passes(orbit, WALLOPS, 0, DAY_H)]
    assert len(found) == len(expected)
    for got, want in zip(found, expected, strict=True):
        assert got == pytest.approx(want, abs=1.0)  # find_events' own half-second tolerance
    assert found[0] == pytest.approx((WALLOPS_RISE_S, WALLOPS_CULMINATE_S, WALLOPS_SET_S), abs=2)


def test_a_pass_under_way_at_the_start_keeps_its_real_rise(orbit):
    start = WALLOPS_CULMINATE_S  # halfway through the first Wallops pass
    first = find_passes(orbit, WALLOPS, start, 1.0)[0]
    assert first.rise_found and first.rise_s == pytest.approx(WALLOPS_RISE_S, abs=2)
    assert first.max_elevation_deg == pytest.approx(27.0, abs=0.1)  # culminated before start
    windows = contact_windows(orbit, [WALLOPS], start, 1.0)
    assert windows[0] == (start, pytest.approx(WALLOPS_SET_S, abs=2))
    assert contact_windows(orbit, [WALLOPS], start, 1.0, relative=True)[0] == (
        0.0,
        pytest.approx(WALLOPS_SET_S - start, abs=2),
    )


def test_a_pass_still_under_way_at_the_end_is_cut_there(orbit):
    end = WALLOPS_CULMINATE_S
    hours = (end - 40_000.0) / 3600
    (p,) = find_passes(orbit, WALLOPS, 40_000.0, hours)
    assert p.set_found and p.set_s == pytest.approx(WALLOPS_SET_S, abs=2)
    assert contact_windows(orbit, [WALLOPS], 40_000.0, hours) == [
        (pytest.approx(WALLOPS_RISE_S, abs=2), pytest.approx(end))
    ]


def test_a_window_inside_one_pass_is_one_contact(orbit):
    hours = 60.0 / 3600
    start = WALLOPS_CULMINATE_S - 30.0
    assert contact_windows(orbit, [WALLOPS], start, hours) == [(start, pytest.approx(start + 60.0))]


def test_a_geostationary_spacecraft_is_always_or_never_up():
    geo = iss_variant(inclination=0.05, mean_motion=1.0027)
    below = Station("under it", 0.0, -170.5)  # its sub-satellite point at the epoch
    (always,) = find_passes(geo, below, 0.0, DAY_H)
    assert not always.rise_found and not always.set_found  # up across the whole search
    assert always.max_elevation_deg > 80.0
    assert contact_windows(geo, [below], 0.0, DAY_H) == [(0.0, DAY_H * 3600)]
    assert find_passes(geo, Station("far side", 0.0, 10.0), 0.0, DAY_H) == []


def test_windows_and_options_are_checked(orbit):
    with pytest.raises(ConfigError, match=r"hours=0 is not valid; give 0 < hours <= 744"):
        contact_windows(orbit, DEFAULT_STATIONS, 0.0, 0)
    with pytest.raises(ConfigError, match="hours must be a finite number"):
        find_passes(orbit, WALLOPS, 0.0, math.inf)
    with pytest.raises(ConfigError, match="no stations"):
        pass_plan(orbit, [], 0.0, 1.0)
    with pytest.raises(ConfigError, match="station names must be unique"):
        pass_plan(orbit, [WALLOPS, WALLOPS], 0.0, 1.0)


# --- find_events sequences cut by the search window -----------------------------------------
@pytest.mark.parametrize(
    "kinds, up_at_start, expected",
    [
        ([], False, []),
        ([], True, [(0.0, 100.0, False, False)]),  # up through the whole search
        ([0, 1, 2], False, [(10.0, 30.0, True, True)]),
        ([2], False, [(0.0, 10.0, False, True)]),  # set: it was up at the start
        ([1, 2], False, [(0.0, 20.0, False, True)]),  # culminated after the start
        ([0], False, [(10.0, 100.0, True, False)]),  # rose, still up at the end
        ([0, 1], False, [(10.0, 100.0, True, False)]),
        ([1], False, [(0.0, 100.0, False, False)]),  # up at both ends, one culmination
        ([2, 0], False, [(0.0, 10.0, False, True), (20.0, 100.0, True, False)]),
        ([0, 1, 1, 2], False, [(10.0, 40.0, True, True)]),  # two peaks in one pass
        ([0, 0, 2], False, [(10.0, 10.0, True, False), (20.0, 30.0, True, True)]),
    ],
)
def test_partial_event_sequences_become_whole_or_marked_passes(kinds, up_at_start, expected):
    times = [10.0 * (i + 1) for i in range(len(kinds))]
    passes = _assemble(times, kinds, start_s=0.0, end_s=100.0, up_at_start=up_at_start)
    assert [(p.rise_s, p.set_s, p.rise_found, p.set_found) for p in passes] == expected


# --- merging passes into contact windows -------------------------------------------------
def _pass(station: str, rise: float, set_: float, elevation: float = 10.0) -> Pass:
    return Pass(station, rise, (rise + set_) / 2, set_, elevation)


def test_overlapping_passes_merge_and_remember_their_stations():
    passes = [
        _pass("A", 100, 200, 20.0),
        _pass("B", 150, 300, 60.0),  # overlaps A
        _pass("C", 300, 350),  # touches B: still one contact
        _pass("A", 500, 600),
        _pass("B", 520, 560),  # inside A's second pass
        _pass("C", 900, 950),
    ]
    windows = merge_passes(reversed(passes))  # any order in
    assert [(w.start_s, w.end_s, w.stations) for w in windows] == [
        (100, 350, ("A", "B", "C")),
        (500, 600, ("A", "B")),
        (900, 950, ("C",)),
    ]
    assert windows[0].max_elevation_deg == 60.0 and windows[0].duration_s == 250
    assert len(windows[1].passes) == 2


def test_merged_windows_are_cut_to_the_plan():
    passes = [_pass("A", -50, 50), _pass("B", 40, 80), _pass("A", 950, 1100)]
    passes.append(_pass("B", 2000, 2100))  # after the plan: left out
    windows = merge_passes(passes, start_s=0, end_s=1000)
    assert [(w.start_s, w.end_s) for w in windows] == [(0, 80), (950, 1000)]
    assert merge_passes([]) == []


def test_a_day_of_windows_is_sorted_disjoint_and_covers_every_pass(day):
    windows = day.windows
    assert all(isinstance(w, ContactWindow) for w in windows)
    assert all(0.0 <= w.start_s < w.end_s <= DAY_H * 3600 for w in windows)
    assert all(a.end_s < b.start_s for a, b in itertools.pairwise(windows))
    for name, passes in day.passes.items():
        for p in passes:
            middle = min(max(p.culminate_s, 0.0), DAY_H * 3600)
            assert any(w.start_s <= middle <= w.end_s and name in w.stations for w in windows)
    # Malindi and Hartebeesthoek, 2,700 km apart, share a pass of the day
    assert any(len(w.stations) > 1 for w in windows)
    assert day.contact_s == pytest.approx(sum(w.duration_s for w in windows))
    assert 0 < day.contact_s < day.longest_gap_s < DAY_H * 3600


def test_contact_windows_drive_the_links_contact_plan(orbit, day):
    windows = contact_windows(orbit, DEFAULT_STATIONS, 0.0, DAY_H)
    assert windows == [(w.start_s, w.end_s) for w in day.windows]
    plan = ContactPlan(tuple(windows))
    first_start, first_end = windows[0]
    assert not plan.up(first_start - 1.0)
    assert plan.up((first_start + first_end) / 2)
    assert not plan.up(first_end + 1.0)


# --- the CLI ---------------------------------------------------------------------------------
def test_cli_json_lists_passes_per_station_and_windows(capsys, day):
    assert main(["passes", "--hours", "24", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["satellite"] == "ISS (ZARYA)" and data["epoch_utc"] == "2018-07-03T19:25:57Z"
    assert (data["start_s"], data["end_s"]) == (0.0, 86400.0)
    by_name = {s["name"]: s for s in data["stations"]}
    assert list(by_name) == [s.name for s in DEFAULT_STATIONS]
    assert by_name["Svalbard"]["passes"] == []
    wallops = by_name["Wallops"]["passes"][0]
    assert wallops["rise_s"] == pytest.approx(WALLOPS_RISE_S, abs=2)
    assert wallops["rise_utc"] == "2018-07-04T07:26:58Z"  # 43261 s after the epoch
    assert wallops["duration_s"] == pytest.approx(wallops["set_s"] - wallops["rise_s"], abs=0.01)
    assert [(w["start_s"], w["end_s"]) for w in data["windows"]] == [
        (pytest.approx(w.start_s, abs=1e-3), pytest.approx(w.end_s, abs=1e-3)) for w in day.windows
    ]
    assert {"start_utc", "end_utc", "stations", "max_elevation_deg"} <= set(data["windows"][0])


def test_cli_reads_stations_and_a_tle_from_files(tmp_path, capsys):
    stations = tmp_path / "stations.toml"
    stations.write_text('[[stations]]\nname = "Svalbard"\nlat = 78.23\nlon = 15.39\n')
    tle = tmp_path / "polar.tle"
    line1, line2 = iss_variant_lines(inclination=97.6)
    tle.write_text(f"POLAR\n{line1}\n{line2}\n")
    assert main(["passes", "--stations", str(stations), "--tle", str(tle), "--hours", "6"]) == 0
    out = capsys.readouterr().out
    assert "POLAR" in out and "Svalbard" in out and "contact windows" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hours", "-1"], "hours=-1 is not valid"),
        (["--tle", "{missing}"], "TLE file {missing} does not exist"),
        (["--tle", "{bad_tle}"], "TLE file {bad_tle}: TLE line 2 fails its checksum"),
        (["--stations", "{missing}"], "stations file {missing} does not exist"),
        (["--stations", "{bad_station}"], "station 'X': lat=100 is outside -90..90"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys, args, message):
    files = {
        "missing": tmp_path / "missing",
        "bad_tle": tmp_path / "bad.tle",
        "bad_station": tmp_path / "bad.toml",
    }
    files["bad_tle"].write_text(f"{DEFAULT_TLE[0]}\n{DEFAULT_TLE[1][:-1]}0\n")
    files["bad_station"].write_text('[[stations]]\nname = "X"\nlat = 100\nlon = 0\n')
    args = [a.format(**files) for a in args]
    assert main(["passes", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orbithil: error: ") and message.format(**files) in err
    assert err.count("\n") == 1


def test_ground_passes_is_the_same_command_under_ground(capsys):
    assert main(["passes", "--hours", "6", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main(["ground", "passes", "--hours", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == alone
