"""The payload's orbit from a TLE, and when it is in sunlight: what the power model needs.

``Orbit`` propagates a two-line element set with SGP4 (skyfield's ``EarthSatellite``) and
tells whether the spacecraft is sunlit (skyfield's ``is_sunlit`` against the JPL DE421
ephemeris that ``skyfield-data`` ships; nothing downloads). Time is counted in seconds
since the TLE's epoch, the same simulated seconds the flight stack's clock gives.

Asking skyfield on every tick of the flight loop would cost a millisecond each, so
``Orbit.timeline()`` samples a few orbits once (every 20 s by default), refines each
sunrise and sunset by bisection to 0.1 s, and answers ``is_sunlit(t)`` and
``next_eclipse(t)`` by lookup. Past the sampled span the timeline repeats its mean eclipse
cycle; the real eclipses drift from that by seconds per orbit as the Sun and the orbit
plane move, so a long run can sample a longer span instead (200 hours at a 20 s step take
about 3 s to sample).

```python
orbit = Orbit.default()                      # the bundled ISS element set
timeline = orbit.timeline()                  # three orbits, sampled once
timeline.period_s, timeline.eclipse_fraction  # about 92.7 min and 0.39
timeline.is_sunlit(1234.5)                   # a lookup, no skyfield call
```
"""

from __future__ import annotations

import atexit
import bisect
import functools
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from orbithil.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TLE",
    "DEFAULT_TLE_NAME",
    "Eclipse",
    "Orbit",
    "SunlightTimeline",
    "tle_checksum",
    "validate_tle",
]

DEFAULT_TLE_NAME = "ISS (ZARYA)"
# An ISS (NORAD 25544) element set of 2018 July 3, 19:25:57 UTC: the one skyfield's own test
# suite compares against JPL HORIZONS (skyfield/tests/test_earth_satellites.py). About
# 410 km up, inclined 51.6 degrees, 15.54 revolutions a day (a 92.7-minute orbit); on that
# date the orbit plane was nearly edge-on to the Sun (beta angle near 0), so eclipses take
# 39% of each orbit (36 minutes), the most an orbit this low sees. Its epoch is time zero
# of the default orbit.
DEFAULT_TLE = (
    "1 25544U 98067A   18184.80969102  .00001614  00000-0  31745-4 0  9993",
    "2 25544  51.6414 295.8524 0003435 262.6267 204.2868 15.54005638121106",
)

TLE_LINE_LENGTH = 69
SECONDS_PER_DAY = 86400.0
# Timeline sampling: a step short enough that no LEO eclipse (tens of minutes) falls
# between two samples, and long enough that three orbits take a few hundred samples.
MAX_STEP_S = 60.0


# --- the ephemeris and timescale, loaded once per process from skyfield-data ------------
@functools.cache
def _sky() -> tuple[Any, Any]:
    """skyfield's timescale and the DE421 ephemeris, from files shipped in skyfield-data.

    Loaded once and shared (both are read-only). The timescale is skyfield's built-in one
    (leap seconds and Delta T bundled with skyfield), so the Earth-orientation file that
    skyfield-data also ships is never read."""
    import skyfield_data
    from skyfield.api import Loader

    with warnings.catch_warnings():
        # skyfield-data warns when one of its files is past the date its maintainers set.
        # Only finals2000A.all (Earth orientation) expires this way, and the built-in
        # timescale below never reads it, so that one warning says nothing to our users.
        warnings.filterwarnings(
            "ignore",
            message=r"The file finals2000A\.all (has expired|would expire)",
            category=RuntimeWarning,
        )
        path = skyfield_data.get_skyfield_data_path()
    load = Loader(path, verbose=False)
    ephemeris = load("de421.bsp")
    atexit.register(ephemeris.close)  # its file stays open while the process may ask
    return load.timescale(builtin=True), ephemeris


# --- TLE validation --------------------------------------------------------------------
def tle_checksum(line: str) -> int:
    """The TLE checksum of a line's first 68 columns: digits summed, each '-' counting 1,
    modulo 10."""
    return sum(int(c) if c.isdigit() else c == "-" for c in line[:68]) % 10


# Fields of a TLE that must be numbers (1-based columns, inclusive), checked before SGP4
# reads them: its C parser stops at the first bad character and carries on with a wrong value.
_TLE_FIELDS = (
    (1, 19, 20, "epoch year", "digits"),
    (1, 21, 32, "epoch day of year", "number"),
    (2, 9, 16, "inclination, degrees", "number"),
    (2, 18, 25, "right ascension of the ascending node, degrees", "number"),
    (2, 27, 33, "eccentricity, decimal point assumed", "digits"),
    (2, 35, 42, "argument of perigee, degrees", "number"),
    (2, 44, 51, "mean anomaly, degrees", "number"),
    (2, 53, 63, "mean motion, revolutions per day", "number"),
)


def _field_ok(text: str, kind: str) -> bool:
    if kind == "digits":
        return text.isdigit()
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def validate_tle(line1: str, line2: str) -> tuple[str, str]:
    """Both lines, trailing blanks removed, if they form a well-formed TLE; else a
    ConfigError that names the line and what is wrong with it."""
    lines = []
    for number, line in ((1, line1), (2, line2)):
        if not isinstance(line, str):
            raise ConfigError(f"TLE line {number} must be a string, not {type(line).__name__}")
        line = line.rstrip()
        if len(line) != TLE_LINE_LENGTH:
            raise ConfigError(
                f"TLE line {number} is {len(line)} characters long; a TLE line has exactly "
                f"{TLE_LINE_LENGTH}: copy it whole, without wrapping (got {line!r})"
            )
        if not line.startswith(f"{number} "):
            raise ConfigError(
                f"TLE line {number} must start with '{number} ' (got {line[:2]!r});"
                " are the two lines swapped or is a name line passed as a TLE line?"
            )
        if not line[68].isdigit():
            raise ConfigError(
                f"TLE line {number} ends in {line[68]!r} where its checksum digit belongs"
            )
        expected = tle_checksum(line)
        if int(line[68]) != expected:
            raise ConfigError(
                f"TLE line {number} fails its checksum: the last digit is {line[68]} but the "
                f"line sums to {expected} (digits, '-' counts 1, modulo 10); it was changed "
                "or mistyped, copy both lines again from their source"
            )
        lines.append(line)
    for number, first, last, what, kind in _TLE_FIELDS:
        text = lines[number - 1][first - 1 : last]
        if not _field_ok(text, kind):
            raise ConfigError(
                f"TLE line {number} columns {first}-{last} ({what}) must be "
                f"{'digits' if kind == 'digits' else 'a number'}, got {text!r}"
            )
    if lines[0][2:7] != lines[1][2:7]:
        raise ConfigError(
            f"TLE lines are for different satellites: catalogue number {lines[0][2:7]!r} on "
            f"line 1, {lines[1][2:7]!r} on line 2; use two lines of one element set"
        )
    return lines[0], lines[1]


# --- the orbit ----------------------------------------------------------------------------
class Orbit:
    """A spacecraft's orbit from a TLE; times are seconds since the TLE epoch."""

    def __init__(self, satellite: Any, *, timescale: Any, ephemeris: Any) -> None:
        self.satellite = satellite
        self._ts = timescale
        self._eph = ephemeris

    @classmethod
    def from_tle(cls, line1: str, line2: str, *, name: str = "satellite") -> Orbit:
        """The orbit of a two-line element set; ConfigError if the lines are malformed."""
        from skyfield.api import EarthSatellite

        line1, line2 = validate_tle(line1, line2)
        ts, eph = _sky()
        try:
            satellite = EarthSatellite(line1, line2, name, ts)
        except (ValueError, IndexError, TypeError) as exc:
            raise ConfigError(f"TLE for {name!r} could not be read by SGP4: {exc}") from exc
        error = satellite.model.sgp4(satellite.model.jdsatepoch, satellite.model.jdsatepochF)[0]
        if error:
            raise ConfigError(
                f"TLE for {name!r} has elements SGP4 cannot propagate (SGP4 error {error}: "
                "e.g. an eccentricity or mean motion out of range); check the numbers"
            )
        orbit = cls(satellite, timescale=ts, ephemeris=eph)
        log.debug("orbit %s: epoch %s, period %.2f min", name, orbit.epoch, orbit.period_s / 60)
        return orbit

    @classmethod
    def from_text(cls, text: str) -> Orbit:
        """The orbit of a TLE given as text: two lines, or three with a name line first."""
        lines = [line for line in text.strip().splitlines() if line.strip()]
        if len(lines) == 2:
            return cls.from_tle(*lines)
        if len(lines) == 3:
            return cls.from_tle(lines[1], lines[2], name=lines[0].strip())
        raise ConfigError(
            f"a TLE is two lines (or three with a name line first), got {len(lines)} lines"
        )

    @classmethod
    def default(cls) -> Orbit:
        """The bundled ISS orbit (``DEFAULT_TLE``)."""
        return cls.from_tle(*DEFAULT_TLE, name=DEFAULT_TLE_NAME)

    @property
    def name(self) -> str:
        return str(self.satellite.name)

    @property
    def epoch(self) -> datetime:
        """The TLE epoch (UTC): time zero of this orbit's seconds."""
        return self.satellite.epoch.utc_datetime()

    @property
    def period_s(self) -> float:
        """The orbital period from the TLE's mean motion, in seconds."""
        return 2 * math.pi / self.satellite.model.no_kozai * 60.0

    def time(self, t_s: ArrayLike) -> Any:
        """A skyfield ``Time`` for seconds since the epoch (a scalar or an array)."""
        return self.satellite.epoch + np.asarray(t_s, dtype=float) / SECONDS_PER_DAY

    def sunlit(self, t_s: ArrayLike) -> Any:
        """Whether the spacecraft is in sunlight at each time (seconds since the epoch):
        a bool for a scalar, a bool array for an array. One vectorised skyfield call."""
        lit = self.satellite.at(self.time(t_s)).is_sunlit(self._eph)
        return bool(lit) if np.ndim(lit) == 0 else np.asarray(lit, dtype=bool)

    def altitude_km(self, t_s: ArrayLike) -> Any:
        """Height above the WGS84 ellipsoid, in km, at each time."""
        from skyfield.api import wgs84

        height = wgs84.height_of(self.satellite.at(self.time(t_s))).km
        return float(height) if np.ndim(height) == 0 else np.asarray(height)

    def timeline(
        self,
        *,
        orbits: float = 3.0,
        span_s: float | None = None,
        step_s: float = 20.0,
        tolerance_s: float = 0.1,
    ) -> SunlightTimeline:
        """Sunlight over ``span_s`` seconds from the epoch (default: ``orbits`` periods,
        at least two), sampled every ``step_s`` and with each sunrise and sunset refined to
        ``tolerance_s``; later questions are lookups."""
        span = orbits * self.period_s if span_s is None else span_s
        if not (math.isfinite(span) and span >= 2 * self.period_s):
            raise ConfigError(
                f"a sunlight timeline needs at least two orbits ({2 * self.period_s:.0f} s) to "
                f"find the eclipse cycle, got a span of {span} s"
            )
        if not (math.isfinite(step_s) and 0 < step_s <= MAX_STEP_S):
            raise ConfigError(
                f"timeline step_s={step_s} is not valid; use 0 < step_s <= {MAX_STEP_S:g} s "
                "(a longer step can miss the edges of an eclipse)"
            )
        if not (math.isfinite(tolerance_s) and 0 < tolerance_s < step_s):
            raise ConfigError(
                f"timeline tolerance_s={tolerance_s} is not valid; use 0 < tolerance_s < "
                f"step_s ({step_s:g})"
            )
        return SunlightTimeline.sample(self, span_s=span, step_s=step_s, tolerance_s=tolerance_s)


# --- eclipses and the timeline -------------------------------------------------------------
@dataclass(frozen=True)
class Eclipse:
    """One pass through the Earth's shadow: entry (sunset) and exit (sunrise), in seconds
    since the orbit's epoch."""

    entry_s: float
    exit_s: float

    @property
    def duration_s(self) -> float:
        return self.exit_s - self.entry_s

    def shifted(self, dt_s: float) -> Eclipse:
        return Eclipse(self.entry_s + dt_s, self.exit_s + dt_s)


def _refine(
    orbit: Orbit, lo: np.ndarray, hi: np.ndarray, lit_lo: np.ndarray, tolerance_s: float
) -> np.ndarray:
    """The times where sunlight changes, one inside each [lo, hi] (the state at ``lo`` is
    ``lit_lo``), bisected together to ``tolerance_s``: one skyfield call per halving."""
    lo, hi = lo.astype(float), hi.astype(float)
    while lo.size and float(np.max(hi - lo)) > tolerance_s:
        mid = (lo + hi) / 2
        same = orbit.sunlit(mid) == lit_lo
        lo = np.where(same, mid, lo)
        hi = np.where(same, hi, mid)
    return (lo + hi) / 2


def _edge_beyond(
    orbit: Orbit, t_s: float, lit: bool, direction: int, step_s: float, tolerance_s: float
) -> float | None:
    """The nearest change of sunlight from ``t_s`` going ``direction`` (+1 later, -1
    earlier), searched within one orbit, or None when the state holds for a whole orbit."""
    offsets = step_s * np.arange(1, math.ceil(orbit.period_s / step_s) + 1)
    times = t_s + direction * offsets
    differs = np.flatnonzero(orbit.sunlit(times) != lit)
    if not differs.size:
        return None
    far = times[differs[0]]
    near = t_s if differs[0] == 0 else times[differs[0] - 1]
    lo, hi = (near, far) if direction > 0 else (far, near)
    lit_lo = lit if direction > 0 else not lit
    return float(_refine(orbit, np.array([lo]), np.array([hi]), np.array([lit_lo]), tolerance_s)[0])


class SunlightTimeline:
    """Sunlight of one orbit, precomputed: eclipses with refined edges, answered by lookup.

    Within the sampled span the answers are the sampled ones; outside it the timeline
    repeats its mean eclipse cycle (from its first to its last eclipse entry)."""

    def __init__(
        self,
        eclipses: Sequence[Eclipse],
        *,
        span_s: float,
        step_s: float,
        orbital_period_s: float,
        always_sunlit: bool = True,
    ) -> None:
        self.eclipses: tuple[Eclipse, ...] = tuple(eclipses)
        self.span_s = float(span_s)
        self.step_s = float(step_s)
        self.orbital_period_s = float(orbital_period_s)
        self._always_sunlit = bool(always_sunlit)  # only used when there is no eclipse
        self._edges = [t for e in self.eclipses for t in (e.entry_s, e.exit_s)]
        self._exits = [e.exit_s for e in self.eclipses]
        n = len(self.eclipses)
        # The repeating pattern: whole eclipse cycles from the first entry to the last.
        if n >= 2:
            self._cycle_len = self.eclipses[-1].entry_s - self.eclipses[0].entry_s
            self._window = self.eclipses[:-1]
        else:
            self._cycle_len = self.orbital_period_s
            self._window = self.eclipses
        self._window_exits = [e.exit_s for e in self._window]

    @classmethod
    def sample(
        cls, orbit: Orbit, *, span_s: float, step_s: float, tolerance_s: float
    ) -> SunlightTimeline:
        """Sample ``orbit`` over [0, span_s] and refine every sunrise and sunset."""
        times = np.arange(0.0, span_s + step_s, step_s)
        lit = orbit.sunlit(times)
        change = np.flatnonzero(lit[1:] != lit[:-1])
        edges = list(_refine(orbit, times[change], times[change + 1], lit[change], tolerance_s))
        # An eclipse under way at either end of the span: find its other edge too, so that
        # the edges alternate sunset, sunrise, ... and every eclipse is whole.
        if not lit[0]:
            before = _edge_beyond(orbit, 0.0, False, -1, step_s, tolerance_s)
            edges.insert(0, 0.0 if before is None else before)
        if not lit[-1]:
            after = _edge_beyond(orbit, float(times[-1]), False, +1, step_s, tolerance_s)
            edges.append(float(times[-1]) if after is None else after)
        eclipses = [
            Eclipse(float(edges[i]), float(edges[i + 1])) for i in range(0, len(edges) - 1, 2)
        ]
        timeline = cls(
            eclipses,
            span_s=span_s,
            step_s=step_s,
            orbital_period_s=orbit.period_s,
            always_sunlit=bool(lit[0]),
        )
        log.info(
            "sunlight of %s over %.1f h: eclipse cycle %.2f min, eclipse fraction %.3f, "
            "%d eclipses",
            orbit.name,
            span_s / 3600,
            timeline.period_s / 60,
            timeline.eclipse_fraction,
            len(timeline.eclipses),
        )
        return timeline

    # --- figures ---------------------------------------------------------------------
    @property
    def period_s(self) -> float:
        """The mean time from one eclipse entry to the next (the orbital period as the
        Sun sees it); the TLE's period when there are fewer than two eclipses."""
        n = len(self.eclipses)
        return self._cycle_len / (n - 1) if n >= 2 else self.orbital_period_s

    @property
    def eclipse_fraction(self) -> float:
        """The share of each orbit spent in the Earth's shadow, over the whole cycles."""
        if not self.eclipses:
            return 0.0 if self._always_sunlit else 1.0
        return sum(e.duration_s for e in self._window) / self._cycle_len

    @property
    def mean_eclipse_s(self) -> float:
        """The mean duration of one eclipse, in seconds (0 without eclipses)."""
        window = self._window
        return sum(e.duration_s for e in window) / len(window) if window else 0.0

    # --- lookups -----------------------------------------------------------------------
    def _fold(self, t_s: float) -> tuple[float, float]:
        """(t', shift) with t = t' + shift and t' inside the sampled eclipses."""
        if 0.0 <= t_s <= self.span_s or not self.eclipses:
            return t_s, 0.0
        first = self.eclipses[0].entry_s
        shift = math.floor((t_s - first) / self._cycle_len) * self._cycle_len
        return t_s - shift, shift

    def is_sunlit(self, t_s: float) -> bool:
        """Whether the spacecraft is in sunlight at ``t_s`` (seconds since the epoch)."""
        if not self.eclipses:
            return self._always_sunlit
        t, _ = self._fold(t_s)
        return bisect.bisect_right(self._edges, t) % 2 == 0

    def next_eclipse(self, t_s: float) -> Eclipse | None:
        """The eclipse under way at ``t_s``, else the next one; None if there is none."""
        if not self.eclipses:
            return None
        if 0.0 <= t_s <= self.span_s:
            k = bisect.bisect_right(self._exits, t_s)
            if k < len(self.eclipses):
                return self.eclipses[k]
        first = self.eclipses[0].entry_s
        m = math.floor((t_s - first) / self._cycle_len)
        t = t_s - m * self._cycle_len
        k = bisect.bisect_right(self._window_exits, t)
        if k < len(self._window):
            return self._window[k].shifted(m * self._cycle_len)
        return self._window[0].shifted((m + 1) * self._cycle_len)

    def next_sunrise(self, t_s: float) -> float | None:
        """``t_s`` when sunlit, else the end of the eclipse under way (None: never)."""
        if self.is_sunlit(t_s):
            return t_s
        eclipse = self.next_eclipse(t_s)
        return None if eclipse is None else eclipse.exit_s

    def next_sunset(self, t_s: float) -> float | None:
        """The start of the next eclipse after ``t_s`` (None: never)."""
        eclipse = self.next_eclipse(t_s)
        if eclipse is not None and eclipse.entry_s <= t_s:
            if self.is_sunlit(t_s):  # only where the repeated cycle drifts from the samples
                return t_s
            eclipse = self.next_eclipse(eclipse.exit_s)
        return None if eclipse is None else eclipse.entry_s
