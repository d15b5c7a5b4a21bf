"""``orbithil passes``: the spacecraft's passes over the ground stations and the merged
contact windows, from its TLE (skyfield + sgp4, offline).

Times are printed in UTC and in seconds since the TLE epoch (the flight stack's orbit
clock). Without ``--stations`` the built-in network is used (``payload.passes.
DEFAULT_STATIONS``: Svalbard, Wallops, Malindi, Hartebeesthoek); without ``--tle``, the
bundled ISS element set.
"""

from __future__ import annotations

import json
from pathlib import Path

from orbithil.errors import ConfigError
from orbithil.payload import passes as passes_mod
from orbithil.payload.orbit import Orbit
from orbithil.tools.console import console as make_console


def _orbit(path: str | None) -> Orbit:
    if path is None:
        return Orbit.default()
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"TLE file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"TLE file {path} is not readable text: {exc}") from None
    try:
        return Orbit.from_text(text)
    except ConfigError as exc:
        raise ConfigError(f"TLE file {path}: {exc}") from None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _mark(found: bool, outside: bool, where: str) -> str:
    """A note on a pass edge outside the window, or not a rise/set at all."""
    if not found:
        return f" ({'up' if where == 'before' else 'still up'} at the search edge)"
    return f" ({where} the window)" if outside else ""


def _plan_as_dict(orbit: Orbit, plan: passes_mod.PassPlan, hours: float) -> dict:
    start_utc, end_utc = passes_mod.utc(orbit, [plan.start_s, plan.end_s])
    return {
        "satellite": orbit.name,
        "epoch_utc": passes_mod.utc(orbit, [0.0])[0],
        "start_s": plan.start_s,
        "end_s": plan.end_s,
        "start_utc": start_utc,
        "end_utc": end_utc,
        "hours": hours,
        "stations": [
            {**s.as_dict(), "passes": [p.as_dict(orbit) for p in plan.passes[s.name]]}
            for s in plan.stations
        ],
        "windows": [w.as_dict(orbit) for w in plan.windows],
        "contact_s": round(plan.contact_s, 3),
        "longest_gap_s": round(plan.longest_gap_s, 3),
    }


def passes(args) -> int:
    stations = (
        passes_mod.load_stations(args.stations) if args.stations else passes_mod.DEFAULT_STATIONS
    )
    orbit = _orbit(args.tle)
    plan = passes_mod.pass_plan(orbit, stations, args.start, args.hours)
    data = _plan_as_dict(orbit, plan, args.hours)
    if args.json:
        print(json.dumps(data))
        return 0
    from rich.table import Table

    out = make_console()
    out.print(
        f"{orbit.name}: epoch {data['epoch_utc']}; {args.hours:g} h from {data['start_utc']} "
        f"({plan.start_s:g} s since the epoch) to {data['end_utc']} ({plan.end_s:g} s)"
    )
    table = Table(title="passes per station (times: UTC, and seconds since the TLE epoch)")
    for column in ("station", "rise", "rise s", "culminates", "set", "set s", "duration",
                   "max el"):  # fmt: skip
        table.add_column(column, justify="left" if column == "station" else "right")
    for station, station_data in zip(plan.stations, data["stations"], strict=True):
        found = plan.passes[station.name]
        if not found:
            table.add_row(
                station.name,
                f"[dim]no pass above {station.min_elevation_deg:g} deg in the window[/]",
                *[""] * 6,
            )
            continue
        for p, item in zip(found, station_data["passes"], strict=True):
            rise = item["rise_utc"] + _mark(p.rise_found, p.rise_s < plan.start_s, "before")
            set_ = item["set_utc"] + _mark(p.set_found, p.set_s > plan.end_s, "after")
            table.add_row(
                station.name,
                rise,
                f"{p.rise_s:.1f}",
                item["culminate_utc"],
                set_,
                f"{p.set_s:.1f}",
                _duration(p.duration_s),
                f"{p.max_elevation_deg:.1f}",
            )
    out.print(table)
    windows = Table(title="contact windows (overlapping passes merged, cut to the window)")
    for column in ("#", "start", "start s", "end", "end s", "duration", "stations", "max el"):
        windows.add_column(column, justify="left" if column == "stations" else "right")
    for i, (w, item) in enumerate(zip(plan.windows, data["windows"], strict=True), 1):
        windows.add_row(
            str(i),
            item["start_utc"],
            f"{w.start_s:.1f}",
            item["end_utc"],
            f"{w.end_s:.1f}",
            _duration(w.duration_s),
            ", ".join(w.stations),
            f"{w.max_elevation_deg:.1f}",
        )
    out.print(windows)
    span = plan.end_s - plan.start_s
    out.print(
        f"{len(plan.windows)} contact windows, {_duration(plan.contact_s)} in contact "
        f"({100 * plan.contact_s / span:.1f}% of the window); longest gap "
        f"{_duration(plan.longest_gap_s)}"
    )
    return 0


HELP = "ground-station passes and contact windows from the spacecraft's TLE"


def register(subparsers) -> None:
    add_arguments(subparsers.add_parser("passes", help=HELP, description=__doc__))


def add_arguments(p) -> None:
    """The options of ``orbithil passes`` (also ``orbithil ground passes``)."""
    p.add_argument(
        "--hours",
        type=float,
        default=24.0,
        metavar="H",
        help="length of the window in hours (default: %(default)s)",
    )
    p.add_argument(
        "--start",
        type=float,
        default=0.0,
        metavar="S",
        help="start of the window, seconds since the TLE epoch (default: %(default)s)",
    )
    p.add_argument(
        "--stations",
        metavar="FILE",
        help="a TOML file of [[stations]] tables (name, lat, lon, alt_m, min_elevation_deg); "
        "default: Svalbard, Wallops, Malindi, Hartebeesthoek",
    )
    p.add_argument(
        "--tle",
        metavar="FILE",
        help="a text file with the TLE: two lines, or a name line and two (default: the ISS)",
    )
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=passes)
