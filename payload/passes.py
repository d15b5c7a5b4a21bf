"""Ground-station passes from the orbit, merged into the contact windows of the ground link.

A ``Station`` (name, latitude, longitude, altitude, minimum elevation) is configuration
data, validated when it is made and loaded from TOML (``load_stations``)::

    [[stations]]
    name = "Svalbard"
    lat = 78.23              # degrees, north positive (geodetic, WGS84)
    lon = 15.41              # degrees, east positive
    alt_m = 500              # metres above the WGS84 ellipsoid (default 0)
    min_elevation_deg = 5    # the antenna's horizon mask (default 5)

Passes come from the spacecraft's TLE (``payload.orbit.Orbit``) through skyfield's
``EarthSatellite.find_events`` above each station's minimum elevation, with the timescale
and ephemeris ``payload.orbit`` loads from ``skyfield-data``: nothing downloads. Times are
seconds since the TLE epoch, the orbit clock of the flight stack. Passes of all stations
are merged into contact windows (the union of overlapping passes, remembering which
stations see the spacecraft); ``contact_windows`` gives them as the ``(start_s, end_s)``
pairs that ``flight.link.ContactPlan`` takes.

```python
orbit = Orbit.default()                               # the bundled ISS element set
plan = pass_plan(orbit, DEFAULT_STATIONS, start_s=0.0, hours=24)
plan.passes["Wallops"][0].max_elevation_deg           # one pass of one station
plan.windows[0].stations                              # who sees the first contact
contact_windows(orbit, DEFAULT_STATIONS, 0.0, 24)     # [(start_s, end_s), ...]
```

Every pass is searched with an orbit of margin on both sides of the window, so a pass
already under way at the window's start, or still under way at its end, has its real rise
and set times (and its real maximum elevation); only the contact windows are cut to the
window. A pass longer than the margin (not a LEO pass) keeps the margin's edge as its
rise or set and says so (``rise_found`` / ``set_found``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from orbithil.config import read_toml
from orbithil.errors import ConfigError
from orbithil.payload.orbit import SECONDS_PER_DAY, Orbit

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MIN_ELEVATION_DEG",
    "DEFAULT_STATIONS",
    "ContactWindow",
    "Pass",
    "PassPlan",
    "Station",
    "contact_windows",
    "elevation_deg",
    "find_passes",
    "load_stations",
    "merge_passes",
    "pass_plan",
    "stations_from_data",
    "utc",
]

DEFAULT_MIN_ELEVATION_DEG = 5.0
# Lowest and highest ground station altitudes accepted, in metres: the Dead Sea shore to
# above Everest. A value outside is almost always kilometres or feet given as metres.
MIN_ALT_M = -500.0
MAX_ALT_M = 9000.0
# Longest window asked for at once: a TLE's predictions drift by kilometres a day, so a
# month ahead is already a rough plan (and a larger number is usually seconds given as hours).
MAX_HOURS = 31 * 24.0
# The margin searched on each side of a window: one orbit, at most this long.
MAX_MARGIN_S = 6 * 3600.0


# --- stations ------------------------------------------------------------------------------
def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return number


@dataclass(frozen=True)
class Station:
    """A ground station: where it is (WGS84 geodetic degrees, metres above the ellipsoid)
    and the lowest elevation its antenna works at. Validated when made (ConfigError)."""

    name: str
    lat: float
    lon: float
    alt_m: float = 0.0
    min_elevation_deg: float = DEFAULT_MIN_ELEVATION_DEG

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"a station needs a name (a non-empty string), got {self.name!r}")
        name = self.name.strip()
        object.__setattr__(self, "name", name)
        checks = (
            ("lat", -90.0, 90.0, "degrees, north positive"),
            ("lon", -180.0, 180.0, "degrees, east positive"),
            ("alt_m", MIN_ALT_M, MAX_ALT_M, "metres above the WGS84 ellipsoid"),
        )
        for key, low, high, unit in checks:
            value = _number(getattr(self, key), f"station {name!r}: {key}")
            if not low <= value <= high:
                raise ConfigError(
                    f"station {name!r}: {key}={value:g} is outside {low:g}..{high:g} ({unit})"
                )
            object.__setattr__(self, key, value)
        elevation = _number(self.min_elevation_deg, f"station {name!r}: min_elevation_deg")
        if not 0.0 <= elevation < 90.0:
            raise ConfigError(
                f"station {name!r}: min_elevation_deg={elevation:g} must be at least 0 and "
                "below 90 (degrees above the horizon the antenna can track from)"
            )
        object.__setattr__(self, "min_elevation_deg", elevation)

    @classmethod
    def from_mapping(cls, data: Any, *, where: str = "station") -> Station:
        """A station from a TOML table (``name``, ``lat``, ``lon``, optional ``alt_m`` and
        ``min_elevation_deg``); ConfigError naming ``where`` if a key is missing or unknown."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{where} must be a table of name, lat, lon, alt_m, min_elevation_deg; got {data!r}"
            )
        keys = ("name", "lat", "lon", "alt_m", "min_elevation_deg")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {list(keys)}")
        missing = [key for key in ("name", "lat", "lon") if key not in data]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)} (name, lat, lon required)")
        return cls(**data)

    def topos(self) -> Any:
        """The station as a skyfield ``GeographicPosition`` on the WGS84 ellipsoid."""
        from skyfield.api import wgs84

        return wgs84.latlon(self.lat, self.lon, elevation_m=self.alt_m)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "lat": self.lat,
            "lon": self.lon,
            "alt_m": self.alt_m,
            "min_elevation_deg": self.min_elevation_deg,
        }


# A small real network, positions rounded to about 0.01 degree and altitudes approximate:
# enough for pass geometry, not for pointing an antenna. One polar station (it never sees a
# 51.6-degree orbit such as the ISS's, and sees every orbit of a polar one), two at middle
# latitudes and one on the equator.
DEFAULT_STATIONS: tuple[Station, ...] = (
    Station("Svalbard", 78.23, 15.41, alt_m=500.0),  # KSAT SvalSat, Platåberget, Norway
    Station("Wallops", 37.94, -75.46, alt_m=10.0),  # NASA Wallops Flight Facility, USA
    Station("Malindi", -3.00, 40.19, alt_m=10.0),  # ASI Broglio Space Centre, Kenya
    Station("Hartebeesthoek", -25.89, 27.71, alt_m=1540.0),  # SANSA, South Africa
)


def stations_from_data(data: Any, *, where: str = "stations") -> tuple[Station, ...]:
    """Stations from parsed TOML: a table with a ``stations`` list of tables (what
    ``[[stations]]`` gives), a list of station tables, or one station table."""
    if isinstance(data, Mapping) and "stations" in data:
        unknown = sorted(set(data) - {"stations"})
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown} beside 'stations'")
        data = data["stations"]
    elif isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list | tuple):
        raise ConfigError(
            f"{where}: give a list of station tables ([[stations]] in TOML), got {data!r}"
        )
    if not data:
        raise ConfigError(f"{where}: no stations; give at least one [[stations]] table")
    stations = tuple(
        Station.from_mapping(item, where=f"{where}[{i}]") for i, item in enumerate(data)
    )
    seen: dict[str, int] = {}
    for i, station in enumerate(stations):
        key = station.name.casefold()
        if key in seen:
            first = seen[key]
            raise ConfigError(
                f"{where}: {where}[{first}] {stations[first].name!r} and {where}[{i}] "
                f"{station.name!r} have the same name; names identify stations, make them unique"
            )
        seen[key] = i
    return stations


def load_stations(path: str | Path) -> tuple[Station, ...]:
    """The stations of a TOML file of ``[[stations]]`` tables; ConfigError if it is missing,
    not TOML, or a station is not valid."""
    data = read_toml(path, "stations file")
    if "stations" not in data:
        raise ConfigError(
            f"stations file {path} has no [[stations]] tables; each station is one, e.g. "
            '[[stations]] name = "Svalbard" lat = 78.23 lon = 15.41 alt_m = 500 '
            "min_elevation_deg = 5"
        )
    return stations_from_data(data, where=str(path))


# --- geometry -------------------------------------------------------------------------------
def _seconds(orbit: Orbit, t: Any) -> np.ndarray:
    """Seconds since the orbit's epoch of a skyfield ``Time`` (array)."""
    return np.atleast_1d(np.asarray((t - orbit.satellite.epoch) * SECONDS_PER_DAY, dtype=float))


def elevation_deg(orbit: Orbit, station: Station, t_s: ArrayLike) -> Any:
    """The spacecraft's elevation above the station's horizon, in degrees, at each time
    (seconds since the epoch): a float for a scalar, an array for an array."""
    topocentric = (orbit.satellite - station.topos()).at(orbit.time(t_s))
    elevation = topocentric.altaz()[0].degrees
    return float(elevation) if np.ndim(elevation) == 0 else np.asarray(elevation)


@dataclass(frozen=True)
class Pass:
    """One pass of the spacecraft over a station, in seconds since the TLE epoch.

    ``rise_found`` / ``set_found`` are False when the spacecraft was already (still) above
    the station's minimum elevation at the edge of the search, so that ``rise_s``
    (``set_s``) is that edge, not a rise (set)."""

    station: str
    rise_s: float
    culminate_s: float
    set_s: float
    max_elevation_deg: float
    rise_found: bool = True
    set_found: bool = True

    @property
    def duration_s(self) -> float:
        return self.set_s - self.rise_s

    def as_dict(self, orbit: Orbit | None = None) -> dict[str, Any]:
        """The pass as JSON-ready data; with ``orbit``, its times in UTC too."""
        out: dict[str, Any] = {
            "station": self.station,
            "rise_s": round(self.rise_s, 3),
            "culminate_s": round(self.culminate_s, 3),
            "set_s": round(self.set_s, 3),
            "duration_s": round(self.duration_s, 3),
            "max_elevation_deg": round(self.max_elevation_deg, 3),
            "rise_found": self.rise_found,
            "set_found": self.set_found,
        }
        if orbit is not None:
            rise, culminate, set_ = utc(orbit, [self.rise_s, self.culminate_s, self.set_s])
            out.update(rise_utc=rise, culminate_utc=culminate, set_utc=set_)
        return out


@dataclass(frozen=True)
class _RawPass:
    rise_s: float
    set_s: float
    culminations_s: tuple[float, ...]
    rise_found: bool
    set_found: bool


def _assemble(
    times_s: Sequence[float], kinds: Sequence[int], *, start_s: float, end_s: float,
    up_at_start: bool,
) -> list[_RawPass]:  # fmt: skip
    """Passes from ``find_events``' sorted (time, kind) sequence over [start_s, end_s]
    (kind 0 rise, 1 culmination, 2 set), whatever part of a pass each end cuts off.

    ``up_at_start`` says whether the spacecraft was above the mask at ``start_s``; it only
    matters when there are no events (always up, or never). A pass open at the start begins
    at ``start_s``, one open at the end ends at ``end_s``, each marked as not found. Two
    rises in a row (a set find_events missed) close the first pass at its last event."""
    passes: list[_RawPass] = []
    if len(times_s):
        up_at_start = int(kinds[0]) != 0
    rise: float | None = start_s if up_at_start else None
    rise_found = False
    culminations: list[float] = []
    last = start_s
    for t, kind in zip(map(float, times_s), map(int, kinds), strict=True):
        if kind == 0:
            if rise is not None:
                log.warning("find_events gave two rises in a row (at %.1f s and %.1f s): "
                            "the first pass ends at its last event", rise, t)  # fmt: skip
                passes.append(_RawPass(rise, last, tuple(culminations), rise_found, False))
            rise, rise_found, culminations = t, True, []
        elif kind == 1:
            if rise is None:  # a culmination outside any pass: up without a rise
                rise, rise_found, culminations = last, False, []
            culminations.append(t)
        elif kind == 2:
            if rise is None:  # a set without a rise: up since the last event
                rise, rise_found, culminations = last, False, []
            passes.append(_RawPass(rise, t, tuple(culminations), rise_found, True))
            rise, culminations = None, []
        else:
            raise ValueError(f"find_events gave an unknown event kind {kind}")
        last = t
    if rise is not None:
        passes.append(_RawPass(rise, end_s, tuple(culminations), rise_found, False))
    return passes


def _check_window(start_s: float, hours: float) -> tuple[float, float]:
    start_s = _number(start_s, "start_s (seconds since the TLE epoch)")
    hours = _number(hours, "hours")
    if not 0.0 < hours <= MAX_HOURS:
        raise ConfigError(
            f"hours={hours:g} is not valid; give 0 < hours <= {MAX_HOURS:g} (a TLE's "
            "predictions are rough beyond a month)"
        )
    return start_s, start_s + hours * 3600.0


def find_passes(orbit: Orbit, station: Station, start_s: float, hours: float) -> list[Pass]:
    """The station's passes that overlap [start_s, start_s + hours h] (seconds since the
    TLE epoch), in time order, with their real rise and set even outside the window."""
    start_s, end_s = _check_window(start_s, hours)
    margin = min(orbit.period_s, MAX_MARGIN_S)
    lo, hi = start_s - margin, end_s + margin
    topos = station.topos()
    times, kinds = orbit.satellite.find_events(
        topos, orbit.time(lo), orbit.time(hi), altitude_degrees=station.min_elevation_deg
    )
    times_s = _seconds(orbit, times) if len(kinds) else np.empty(0)
    up_at_start = (
        bool(elevation_deg(orbit, station, lo) >= station.min_elevation_deg)
        if not len(kinds)
        else False
    )
    raw = [
        p
        for p in _assemble(times_s, kinds, start_s=lo, end_s=hi, up_at_start=up_at_start)
        if p.set_s > start_s and p.rise_s < end_s
    ]
    if not raw:
        return []
    # Elevations at every culmination and at both ends of every pass, in one skyfield call.
    probe = [t for p in raw for t in (p.rise_s, p.set_s, *p.culminations_s)]
    elevations = np.atleast_1d(elevation_deg(orbit, station, probe))
    passes, i = [], 0
    for p in raw:
        n = 2 + len(p.culminations_s)
        times_p, el = probe[i : i + n], elevations[i : i + n]
        i += n
        top = int(np.argmax(el))
        passes.append(
            Pass(
                station=station.name,
                rise_s=p.rise_s,
                culminate_s=times_p[top],
                set_s=p.set_s,
                max_elevation_deg=float(el[top]),
                rise_found=p.rise_found,
                set_found=p.set_found,
            )
        )
    return passes


# --- contact windows ------------------------------------------------------------------------
@dataclass(frozen=True)
class ContactWindow:
    """A time when at least one station sees the spacecraft: the union of overlapping
    passes, cut to the planned window, with the stations and passes that make it up."""

    start_s: float
    end_s: float
    stations: tuple[str, ...]
    passes: tuple[Pass, ...] = field(repr=False)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def max_elevation_deg(self) -> float:
        return max(p.max_elevation_deg for p in self.passes)

    def as_dict(self, orbit: Orbit | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "duration_s": round(self.duration_s, 3),
            "stations": list(self.stations),
            "max_elevation_deg": round(self.max_elevation_deg, 3),
        }
        if orbit is not None:
            out["start_utc"], out["end_utc"] = utc(orbit, [self.start_s, self.end_s])
        return out


def merge_passes(
    passes: Iterable[Pass], *, start_s: float = -math.inf, end_s: float = math.inf
) -> list[ContactWindow]:
    """Contact windows: passes of any stations whose times overlap (or touch) joined into
    one, cut to [start_s, end_s]; passes entirely outside are left out."""
    ordered = sorted(
        (p for p in passes if p.set_s > start_s and p.rise_s < end_s),
        key=lambda p: (p.rise_s, p.set_s),
    )
    groups: list[list[Pass]] = []
    end = -math.inf
    for p in ordered:
        if groups and p.rise_s <= end:
            groups[-1].append(p)
            end = max(end, p.set_s)
        else:
            groups.append([p])
            end = p.set_s
    return [
        ContactWindow(
            start_s=max(group[0].rise_s, start_s),
            end_s=min(max(p.set_s for p in group), end_s),
            stations=tuple(dict.fromkeys(p.station for p in group)),
            passes=tuple(group),
        )
        for group in groups
    ]


@dataclass(frozen=True)
class PassPlan:
    """Passes per station (every station, in the order given) and the merged contact
    windows over [start_s, end_s], seconds since the TLE epoch."""

    start_s: float
    end_s: float
    stations: tuple[Station, ...]
    passes: dict[str, list[Pass]]
    windows: list[ContactWindow]

    @property
    def contact_s(self) -> float:
        """Total time in contact with at least one station within the window."""
        return sum(w.duration_s for w in self.windows)

    @property
    def longest_gap_s(self) -> float:
        """The longest time within the window without contact (the whole window if none)."""
        edges = [self.start_s, *(t for w in self.windows for t in (w.start_s, w.end_s)),
                 self.end_s]  # fmt: skip
        return max(edges[i + 1] - edges[i] for i in range(0, len(edges), 2))


def pass_plan(
    orbit: Orbit, stations: Sequence[Station], start_s: float = 0.0, hours: float = 24.0
) -> PassPlan:
    """Every station's passes over [start_s, start_s + hours h] and the contact windows."""
    start_s, end_s = _check_window(start_s, hours)
    stations = tuple(stations)
    if not stations:
        raise ConfigError("no stations: give at least one ground station")
    if not all(isinstance(s, Station) for s in stations):
        raise ConfigError("stations must be Station objects (see stations_from_data)")
    names = [s.name.casefold() for s in stations]
    if len(set(names)) != len(names):
        raise ConfigError(f"station names must be unique, got {[s.name for s in stations]}")
    passes = {s.name: find_passes(orbit, s, start_s, hours) for s in stations}
    windows = merge_passes((p for ps in passes.values() for p in ps), start_s=start_s, end_s=end_s)
    log.info(
        "passes of %s over %d stations in %.1f h from %.0f s: %d passes, %d contact windows",
        orbit.name, len(stations), hours, start_s, sum(map(len, passes.values())), len(windows),
    )  # fmt: skip
    return PassPlan(start_s, end_s, stations, passes, windows)


def contact_windows(
    orbit: Orbit, stations: Sequence[Station], start_s: float, hours: float, *,
    relative: bool = False,
) -> list[tuple[float, float]]:  # fmt: skip
    """The contact windows over [start_s, start_s + hours h] as ``(start, end)`` pairs in
    time order, what ``flight.link.ContactPlan(passes=...)`` takes.

    Times are seconds since the TLE epoch (the flight stack's ``clock = "orbit"``, which
    reads ``orbit_start_s`` when the stack starts); with ``relative=True`` they are seconds
    since ``start_s`` instead. A window under way at ``start_s`` begins there, one under
    way at the end stops there. An empty list means no contact at all (note that an empty
    ``ContactPlan`` means always in contact)."""
    plan = pass_plan(orbit, stations, start_s, hours)
    offset = plan.start_s if relative else 0.0
    return [(w.start_s - offset, w.end_s - offset) for w in plan.windows]


def utc(orbit: Orbit, t_s: Sequence[float]) -> list[str]:
    """ISO 8601 UTC times (to the second) of seconds since the orbit's epoch."""
    times = orbit.time(list(t_s)).utc_datetime()
    return [_iso(t) for t in np.atleast_1d(times)]


def _iso(t: datetime) -> str:
    rounded = (t + timedelta(microseconds=500_000)).replace(microsecond=0)
    return rounded.isoformat().replace("+00:00", "Z")
