"""Power and heat of the payload through an orbit: clocks, the battery, and each chip's heat.

The flight stack's payload scheduler drives three pure models, each deterministic and
O(1) per step:

- a clock: ``SimClock`` (simulated seconds from the monotonic clock, ``factor`` times
  faster than real time, so a 93-minute orbit passes in 28 s at 200x) or ``StepClock``
  (advanced by hand, for tests);
- ``PowerModel``: a solar array that gives ``array_w`` in sunlight, a battery with a
  ceiling (surplus is shed) and a floor, the bus's constant load, and each chip's load;
  ``can_admit`` decides whether a job may start now;
- ``ThermalModel``: one per chip, a first-order RC network to the radiator with a
  throttle limit (with hysteresis) and a critical limit.

The admission policy defers compute through eclipse instead of draining the battery: a
job is admitted only if, with it, the battery is projected to reach the next sunrise
(the end of the coming eclipse, from the ``SunlightTimeline``) at or above its floor plus
a margin. In sunlight that projection charges the battery at the array's surplus over the
bus and idle chips until sunset (up to the ceiling), so compute the array pays for runs
freely while a battery that still needs charging for the coming eclipse gets charged.

Energy (the chip's ENERGY counter, in ENERGY_PER_CYCLE units x cycles) becomes joules
through a per-build factor (``joules_per_unit``; hardened chips switch more logic).

```python
config = PowerConfig()
timeline = Orbit.default().timeline()
power = PowerModel(config, chips=2, timeline=timeline)
clock = StepClock()
if power.can_admit(config.job_energy_j(8192, harden=1), 60.0, clock.now()):
    ...  # start the job
sunlit = timeline.is_sunlit(clock.now())
clock.advance(10.0)
power.step(10.0, sunlit, [config.chip_load_w(10.0, busy_s=10.0, job_energy_j=1.4), 3.0])
```
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Protocol

from orbithil.errors import ConfigError
from orbithil.payload.orbit import SunlightTimeline

__all__ = [
    "Admission",
    "Clock",
    "PowerConfig",
    "PowerModel",
    "SimClock",
    "StepClock",
    "ThermalConfig",
    "ThermalModel",
    "energy_units",
]

JOULES_PER_WH = 3600.0
ENERGY_COUNTER_BITS = 32  # the chip's ENERGY register (fpga/ICD.md)


def _finite(value: float, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return number


def _at_least(value: float, low: float, what: str, *, strict: bool = False) -> float:
    number = _finite(value, what)
    if number < low or (strict and number == low):
        raise ConfigError(
            f"{what}={value!r} is not valid; use a value {'>' if strict else '>='} {low:g}"
        )
    return number


# --- clocks ------------------------------------------------------------------------------
class Clock(Protocol):
    """Simulated seconds since the orbit's epoch."""

    def now(self) -> float: ...


class SimClock:
    """Simulated time from ``time.monotonic()``, ``factor`` times faster than real time,
    starting at ``start`` simulated seconds (e.g. seconds since the TLE epoch)."""

    def __init__(
        self,
        factor: float = 1.0,
        *,
        start: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.factor = _at_least(factor, 0.0, "SimClock factor", strict=True)
        self.start = _finite(start, "SimClock start")
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now(self) -> float:
        """Simulated seconds: ``start`` plus ``factor`` times the wall time since creation
        (or the last ``restart``)."""
        return self.start + self.factor * (self._monotonic() - self._t0)

    def restart(self) -> None:
        """Be at ``start`` again now (e.g. when the stack that was built with it starts)."""
        self._t0 = self._monotonic()

    def wall_s(self, sim_s: float) -> float:
        """The wall-clock seconds that ``sim_s`` simulated seconds take (to sleep for)."""
        return sim_s / self.factor


class StepClock:
    """Simulated time that moves only when told to: deterministic tests and replays."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = _finite(start, "StepClock start")

    def now(self) -> float:
        return self._now

    def advance(self, dt_s: float) -> float:
        """Move ``dt_s`` (>= 0) seconds on; returns the new time."""
        self._now += _at_least(dt_s, 0.0, "StepClock.advance dt_s")
        return self._now


# --- power ---------------------------------------------------------------------------------
def _default_joules_per_unit() -> dict[int, float]:
    return {0: 1.0e-5, 1: 1.6e-5}


@dataclass(frozen=True)
class PowerConfig:
    """The electrical power system, as seen by the payload scheduler.

    The defaults describe a small satellite carrying a compute payload: a deployable array
    giving 120 W at the bus in sunlight, a 100 Wh battery kept between 30% (the floor the
    scheduler protects) and 100% (surplus is shed), 30 W of bus load (avionics, radio,
    attitude control, heaters), 3 W per idle chip and 1 W for each chip's link while it
    works. ``joules_per_unit`` turns the chip's ENERGY counter into joules per build
    (HARDEN 0 and 1): the default treats one unit as 10 uJ (16 uJ hardened, for its
    triplicated registers and duplicated MAC), standing for the larger model a flight
    accelerator would run in the time the stand-in runs its small one: an inference of the
    digits model (about 10,700 units unhardened, 20,700 hardened) costs 0.1 and 0.33 J, so a
    chip working flat out on the simulators draws some 3-20 W, and a pool of three through
    an eclipse takes about as much from the battery as the bus does. The iCE40 stand-in
    itself spends nanojoules: set your own chip's figures. The battery is ideal (no charge
    losses).
    """

    array_w: float = 120.0
    battery_wh: float = 100.0
    soc_floor: float = 0.30
    soc_ceiling: float = 1.0
    initial_soc: float = 0.80
    bus_load_w: float = 30.0
    chip_idle_w: float = 3.0
    link_w: float = 1.0
    joules_per_unit: Mapping[int, float] = field(default_factory=_default_joules_per_unit)
    admit_margin: float = 0.05

    def __post_init__(self) -> None:
        for name in ("array_w", "bus_load_w", "chip_idle_w", "link_w", "admit_margin"):
            object.__setattr__(self, name, _at_least(getattr(self, name), 0.0, name))
        object.__setattr__(
            self, "battery_wh", _at_least(self.battery_wh, 0.0, "battery_wh", strict=True)
        )
        for name in ("soc_floor", "soc_ceiling", "initial_soc"):
            value = _finite(getattr(self, name), name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}={value!r} is not valid; use a fraction 0..1")
            object.__setattr__(self, name, value)
        if not self.soc_floor + self.admit_margin < self.soc_ceiling:
            raise ConfigError(
                f"soc_floor ({self.soc_floor}) + admit_margin ({self.admit_margin}) must be "
                f"below soc_ceiling ({self.soc_ceiling}), or no job could ever be admitted"
            )
        if self.initial_soc > self.soc_ceiling:
            raise ConfigError(
                f"initial_soc={self.initial_soc} is above soc_ceiling={self.soc_ceiling}; "
                "use a value between 0 and the ceiling"
            )
        if not isinstance(self.joules_per_unit, Mapping):
            raise ConfigError(
                "joules_per_unit must map each build (0: HARDEN=0, 1: HARDEN=1) to joules "
                f"per energy unit, e.g. {{0: 1e-3, 1: 1.6e-3}}; got {self.joules_per_unit!r}"
            )
        table = {}
        for build, joules in self.joules_per_unit.items():
            key = int(build) if str(build) in ("0", "1") else None
            if key is None:
                raise ConfigError(
                    f"joules_per_unit has build {build!r}; the builds are 0 (HARDEN=0) and "
                    "1 (HARDEN=1)"
                )
            table[key] = _at_least(joules, 0.0, f"joules_per_unit[{key}]")
        if set(table) != {0, 1}:
            raise ConfigError(
                f"joules_per_unit must give both builds, 0 and 1; got {sorted(table)}"
            )
        object.__setattr__(self, "joules_per_unit", MappingProxyType(table))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PowerConfig:
        """A config from data (a TOML table); unknown keys are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown power setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**data)

    @property
    def battery_j(self) -> float:
        """The battery's capacity in joules."""
        return self.battery_wh * JOULES_PER_WH

    def baseline_w(self, chips: int) -> float:
        """The load with every chip idle: the bus plus ``chips`` idle chips."""
        return self.bus_load_w + chips * self.chip_idle_w

    def job_energy_j(self, units: int, *, harden: int | bool) -> float:
        """Joules of a job whose ENERGY counter moved by ``units`` on a build."""
        build = int(harden)
        if build not in self.joules_per_unit:
            raise ConfigError(f"harden={harden!r} is not a build; use 0 or 1")
        return _at_least(units, 0.0, "energy units") * self.joules_per_unit[build]

    def job_cost_j(self, energy_j: float, duration_s: float) -> float:
        """What a job takes from the power system beyond the idle chip: its energy plus its
        link's power for its duration."""
        return energy_j + self.link_w * duration_s

    def chip_load_w(self, dt_s: float, *, busy_s: float = 0.0, job_energy_j: float = 0.0) -> float:
        """A chip's mean power over a step of ``dt_s``: idle, plus the link for the
        ``busy_s`` it worked, plus the job energy it spent in the step."""
        if dt_s <= 0:
            return self.chip_idle_w
        return self.chip_idle_w + (self.link_w * busy_s + job_energy_j) / dt_s


def energy_units(before: int, after: int) -> int:
    """How far the chip's 32-bit ENERGY counter moved from ``before`` to ``after``, across
    a wrap."""
    return (int(after) - int(before)) % (1 << ENERGY_COUNTER_BITS)


@dataclass(frozen=True)
class Admission:
    """The power system's answer to a job: admit or defer, and why (for events)."""

    admit: bool
    reason: str
    sunlit: bool
    projected_soc: float  # at the next sunrise (or right after the job, if it fails first)
    sunrise_s: float | None  # the sunrise the projection reaches; None if there is none

    def __bool__(self) -> bool:
        return self.admit


class PowerModel:
    """The battery's state of charge through sunlight and eclipse, integrated step by step.

    The floor is a policy limit, not a physical one: ``step`` serves every load, so the
    battery can fall below it (``below_floor``, for FDIR to act on) and empty (the unmet
    energy is counted); ``can_admit`` keeps compute from taking it there."""

    def __init__(
        self,
        config: PowerConfig | None = None,
        *,
        chips: int = 1,
        timeline: SunlightTimeline | None = None,
    ) -> None:
        self.config = PowerConfig() if config is None else config
        if isinstance(chips, bool) or not isinstance(chips, int) or chips < 0:
            raise ConfigError(f"chips={chips!r} is not valid; use a whole number >= 0")
        self.chips = chips
        self.timeline = timeline
        self.battery_j = self.config.initial_soc * self.config.battery_j
        self.initial_battery_j = self.battery_j
        self.sunlit = False
        self.power_in_w = 0.0
        self.power_out_w = 0.0
        self.time_s = 0.0  # integrated simulated time
        self.energy_generated_j = 0.0  # the array's output
        self.energy_shed_j = 0.0  # array output nobody could use (battery at its ceiling)
        self.energy_in_j = 0.0  # array output used: generated - shed
        self.energy_out_j = 0.0  # loads served
        self.energy_unmet_j = 0.0  # loads not served: the battery was empty
        self.min_soc = self.soc

    @property
    def soc(self) -> float:
        """State of charge, 0..1."""
        return self.battery_j / self.config.battery_j

    @property
    def below_floor(self) -> bool:
        return self.soc < self.config.soc_floor

    @property
    def baseline_w(self) -> float:
        """The load with every chip idle."""
        return self.config.baseline_w(self.chips)

    def step(self, dt_s: float, sunlit: bool, loads_w: Sequence[float]) -> None:
        """Integrate ``dt_s`` seconds with the array lit or not and each chip drawing its
        mean power (``loads_w``, one per chip: ``PowerConfig.chip_load_w``) besides the
        bus."""
        dt = float(dt_s)
        if not (math.isfinite(dt) and dt >= 0):
            raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s!r}")
        if len(loads_w) != self.chips:
            raise ValueError(f"loads_w has {len(loads_w)} chip loads; this model has {self.chips}")
        chip_w = math.fsum(loads_w)
        if not (math.isfinite(chip_w) and min(loads_w, default=0.0) >= 0):
            raise ValueError(f"chip loads must be finite and >= 0 W, got {list(loads_w)}")
        self.sunlit = bool(sunlit)
        if dt == 0:
            return
        config = self.config
        generated = config.array_w * dt if self.sunlit else 0.0
        load = (config.bus_load_w + chip_w) * dt
        net = generated - load
        shed = unmet = 0.0
        if net >= 0:
            room = max(0.0, config.soc_ceiling * config.battery_j - self.battery_j)
            charge = min(net, room)
            shed = net - charge
            self.battery_j += charge
        else:
            draw = min(-net, self.battery_j)
            unmet = -net - draw
            self.battery_j -= draw
        self.time_s += dt
        self.energy_generated_j += generated
        self.energy_shed_j += shed
        self.energy_in_j += generated - shed
        self.energy_out_j += load - unmet
        self.energy_unmet_j += unmet
        self.power_in_w = (generated - shed) / dt
        self.power_out_w = (load - unmet) / dt
        self.min_soc = min(self.min_soc, self.soc)

    def assess(
        self, energy_j: float, duration_s: float, now: float, *, pending_j: float = 0.0
    ) -> Admission:
        """Whether a job of ``energy_j`` over ``duration_s`` may start at ``now`` (seconds
        since the epoch), and why. ``pending_j`` is what admitted jobs still have to draw.

        Admitted only if the battery, after the job and the pending work, stays at or above
        floor + margin now and is projected to reach the next sunrise at or above it, the
        bus and idle chips drawing all the while and the array charging in sunlight."""
        if self.timeline is None:
            raise ConfigError(
                "admission needs to know when the Sun rises: build the model with "
                "PowerModel(config, chips=n, timeline=orbit.timeline())"
            )
        config = self.config
        energy = _at_least(energy_j, 0.0, "job energy_j")
        duration = _at_least(duration_s, 0.0, "job duration_s")
        cost = config.job_cost_j(energy, duration) + _at_least(pending_j, 0.0, "pending_j")
        capacity = config.battery_j
        limit = config.soc_floor + config.admit_margin
        lit = self.timeline.is_sunlit(now)
        after_job = self.battery_j - cost
        if after_job < limit * capacity:
            return Admission(
                False,
                f"deferred: the job ({cost:.0f} J with pending work) would leave the battery at "
                f"SoC {after_job / capacity:.3f}, below floor {config.soc_floor:g} + margin "
                f"{config.admit_margin:g}",
                lit,
                after_job / capacity,
                None,
            )
        eclipse = self.timeline.next_eclipse(now)
        if eclipse is None:
            if lit:
                return Admission(
                    True, "admitted: no eclipse ahead", lit, after_job / capacity, None
                )
            return Admission(False, "deferred: no sunrise ahead", lit, after_job / capacity, None)
        base = self.baseline_w
        if lit:
            sunset = max(eclipse.entry_s, now)
            at_sunset = min(
                config.soc_ceiling * capacity,
                after_job + (config.array_w - base) * (sunset - now),
            )
            at_sunrise = at_sunset - base * (eclipse.exit_s - sunset)
        else:
            at_sunrise = after_job - base * (eclipse.exit_s - now)
        soc = at_sunrise / capacity
        admit = soc >= limit
        where = "the coming eclipse" if lit else "this eclipse"
        return Admission(
            admit,
            f"{'admitted' if admit else 'deferred'}: projected SoC {soc:.3f} at the end of "
            f"{where} (t={eclipse.exit_s:.0f} s) is {'at or above' if admit else 'below'} "
            f"floor {config.soc_floor:g} + margin {config.admit_margin:g}",
            lit,
            soc,
            eclipse.exit_s,
        )

    def can_admit(
        self, energy_j: float, duration_s: float, now: float, *, pending_j: float = 0.0
    ) -> bool:
        """Whether a job may start now without the battery falling below floor + margin
        before the next sunrise (``assess`` says why)."""
        return self.assess(energy_j, duration_s, now, pending_j=pending_j).admit

    def telemetry(self) -> dict[str, float]:
        """Housekeeping values: state of charge, battery energy, power in and out, sunlight."""
        return {
            "SOC": self.soc,
            "BATTERY_WH": self.battery_j / JOULES_PER_WH,
            "POWER_IN_W": self.power_in_w,
            "POWER_OUT_W": self.power_out_w,
            "SUNLIT": float(self.sunlit),
            "BELOW_FLOOR": float(self.below_floor),
        }


# --- heat ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThermalConfig:
    """One chip's thermal path: a heat capacity (chip, board and spreader) conducting to a
    radiator at ``sink_c``. The defaults (60 J/K, 0.5 W/K, a 10 C radiator) give a
    2-minute time constant and 2 K per watt, so a chip at 30 W settles at the 70 C throttle
    limit; it is released below 60 C and critical at 85 C."""

    heat_capacity_j_per_k: float = 60.0
    conductance_w_per_k: float = 0.5
    sink_c: float = 10.0
    throttle_c: float = 70.0
    release_c: float = 60.0
    critical_c: float = 85.0
    initial_c: float | None = None  # None: start at the sink temperature

    def __post_init__(self) -> None:
        for name in ("heat_capacity_j_per_k", "conductance_w_per_k"):
            object.__setattr__(self, name, _at_least(getattr(self, name), 0.0, name, strict=True))
        for name in ("sink_c", "throttle_c", "release_c", "critical_c"):
            object.__setattr__(self, name, _finite(getattr(self, name), name))
        if self.initial_c is not None:
            object.__setattr__(self, "initial_c", _finite(self.initial_c, "initial_c"))
        if not self.release_c < self.throttle_c < self.critical_c:
            raise ConfigError(
                f"thermal limits must satisfy release_c < throttle_c < critical_c, got "
                f"{self.release_c} / {self.throttle_c} / {self.critical_c}"
            )

    @property
    def time_constant_s(self) -> float:
        """Heat capacity over conductance: how fast the chip follows its power."""
        return self.heat_capacity_j_per_k / self.conductance_w_per_k

    def steady_state_c(self, power_w: float) -> float:
        """The temperature a constant ``power_w`` settles at."""
        return self.sink_c + power_w / self.conductance_w_per_k


class ThermalModel:
    """One chip's temperature, heated by its power; throttled with hysteresis.

    Each step is the exact solution for constant power over the step, so any step size is
    stable and the result does not depend on how a span is cut into steps."""

    def __init__(self, config: ThermalConfig | None = None, *, name: str = "chip") -> None:
        self.config = ThermalConfig() if config is None else config
        self.name = name
        start = self.config.initial_c
        self.temperature_c = self.config.sink_c if start is None else start
        self.power_w = 0.0
        self.peak_c = self.temperature_c
        self.throttled = False
        self.throttle_count = 0  # times the throttle engaged
        self._update_flags()

    @property
    def critical(self) -> bool:
        return self.temperature_c >= self.config.critical_c

    def _update_flags(self) -> None:
        if not self.throttled and self.temperature_c >= self.config.throttle_c:
            self.throttled = True
            self.throttle_count += 1
        elif self.throttled and self.temperature_c <= self.config.release_c:
            self.throttled = False

    def step(self, dt_s: float, power_w: float) -> float:
        """Advance ``dt_s`` seconds with the chip dissipating ``power_w``; returns the new
        temperature (C)."""
        dt = float(dt_s)
        if not (math.isfinite(dt) and dt >= 0):
            raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s!r}")
        power = float(power_w)
        if not (math.isfinite(power) and power >= 0):
            raise ValueError(f"power_w must be a finite number >= 0, got {power_w!r}")
        target = self.config.steady_state_c(power)
        decay = math.exp(-dt / self.config.time_constant_s)
        self.temperature_c = target + (self.temperature_c - target) * decay
        self.power_w = power
        self.peak_c = max(self.peak_c, self.temperature_c)
        self._update_flags()
        return self.temperature_c

    def telemetry(self) -> dict[str, float]:
        """Housekeeping values: temperature, power, throttle and critical flags."""
        return {
            "TEMP_C": self.temperature_c,
            "POWER_W": self.power_w,
            "THROTTLED": float(self.throttled),
            "CRITICAL": float(self.critical),
        }
