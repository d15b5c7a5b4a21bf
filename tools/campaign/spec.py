"""Campaign specs: a TOML file, validated at load with errors that name the key, the bad
value and what is allowed. ``EXAMPLE`` is what ``orbithil campaign new`` writes."""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orbithil.errors import ConfigError
from orbithil.payload.workloads import WORKLOADS
from orbithil.sim.faults import FaultModel
from orbithil.sim.harness import SIMULATORS
from orbithil.tools.campaign.stats import ORBIT_PRESETS

EXECUTORS = ("local", "dask")
# Injections per build, at most: the whole plan is drawn and stored before anything runs
# (a million take about 0.5 GB while planned), and at ~15 injections/s a million is already
# most of a day per build on two cores.
MAX_INJECTIONS = 1_000_000

EXAMPLE = """\
# An orbithil fault-injection campaign. Run it with
#   orbithil campaign plan  THIS.toml            (sizes and prints the plan)
#   orbithil campaign run   THIS.toml --store campaign.sqlite
#   orbithil campaign report campaign.sqlite
name = "inference-hardened-vs-not"
seed = 1                      # seed of the plan: the same seed gives the same injections

[workload]
name = "inference"            # control | memory | inference | digits
seed = 0                      # seed of the workload's data (weights, inputs)

[chip]
harden = [0, 1]               # the builds to compare: [0], [1] or [0, 1]
simulator = "verilator"       # verilator | icarus

[targets]
blocks = []                   # only these blocks, e.g. ["u_mem", "u_regs"]; [] = all
glob = ""                     # only targets matching this glob, e.g. "u_mac.*"; "" = all

[fault]
model = "flip"                # flip | mbu (2-4 adjacent bits) | stuck (stuck-at window)
mbu_bits = [2, 4]             # mbu: fewest and most bits flipped together
stuck_cycles = 100            # stuck: cycles the bit is held

[size]                        # per build: a number of injections, or a margin
injections = 500
# margin = 0.01               # wanted error margin of each share (instead of injections)
# confidence = 0.95

[run]
executor = "local"            # local (worker processes here) | dask
workers = 0                   # local: simulators in parallel; 0 = one per core
scheduler = ""                # dask: "tcp://host:8786"; "" starts a local cluster
chunk = 200                   # injections per simulator process (each starts one, ~2 s)

[orbit]
rate = "leo"                  # upsets per bit per day: a preset (leo, leo-saa, geo,
                              # solar-flare) or a number such as 4e-7
"""


class SpecError(ConfigError):
    """A campaign spec is wrong; the message says where, what and what is allowed."""


@dataclass(frozen=True)
class Spec:
    name: str = "campaign"
    seed: int = 1
    workload: str = "inference"
    workload_seed: int = 0
    harden: tuple[int, ...] = (0, 1)
    simulator: str = "verilator"
    blocks: tuple[str, ...] = ()
    glob: str = ""
    model: str = "flip"
    mbu_bits: tuple[int, int] = (2, 4)
    stuck_cycles: int = 100
    injections: int | None = 500
    margin: float | None = None
    confidence: float = 0.95
    executor: str = "local"
    workers: int = 0
    scheduler: str = ""
    chunk: int = 200
    orbit_rate: float | str = "leo"
    source: str = field(default="", compare=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Spec:
        data = dict(data)
        for key in ("harden", "blocks", "mbu_bits"):
            data[key] = tuple(data[key])
        return cls(**data)

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


_SECTIONS: dict[str, dict[str, str]] = {
    "": {"name": "a string", "seed": "an integer"},
    "workload": {"name": f"one of {', '.join(WORKLOADS)}", "seed": "an integer"},
    "chip": {"harden": "a list of 0 and/or 1", "simulator": f"one of {', '.join(SIMULATORS)}"},
    "targets": {"blocks": "a list of block names", "glob": "a glob string"},
    "fault": {
        "model": f"one of {', '.join(m.value for m in FaultModel)}",
        "mbu_bits": "[fewest, most] with 2 <= fewest <= most <= 4",
        "stuck_cycles": "an integer >= 1",
    },
    "size": {
        "injections": f"an integer from 1 to {MAX_INJECTIONS:,} (per build)",
        "margin": "a number in (0, 0.5]",
        "confidence": "a number in (0, 1)",
    },
    "run": {
        "executor": f"one of {', '.join(EXECUTORS)}",
        "workers": "an integer >= 0",
        "scheduler": 'a Dask scheduler address "tcp://host:port", or ""',
        "chunk": "an integer >= 1",
    },
    "orbit": {"rate": f"a preset ({', '.join(ORBIT_PRESETS)}) or a number > 0"},
}


def load(path: Path | str) -> Spec:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(
            f"{path}: no such file; `orbithil campaign new {path}` writes one"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, source=str(path))


def parse(data: dict, *, source: str = "<spec>") -> Spec:
    def where(section: str, key: str) -> str:
        return f"{source}: {section + '.' if section else ''}{key}"

    for section, value in data.items():
        if isinstance(value, dict):
            if section not in _SECTIONS:
                raise SpecError(
                    f"{source}: unknown section [{section}]; sections: "
                    + ", ".join(f"[{s}]" for s in _SECTIONS if s)
                )
            for key in value:
                if key not in _SECTIONS[section]:
                    raise SpecError(
                        f"{where(section, key)}: unknown key; [{section}] takes "
                        + ", ".join(_SECTIONS[section])
                    )
        elif section not in _SECTIONS[""]:
            raise SpecError(f"{where('', section)}: unknown key; top-level keys: name, seed")

    def get(section: str, key: str, default, check):
        table = data.get(section, {}) if section else data
        if key not in table:
            return default
        value = table[key]
        if not check(value):
            raise SpecError(
                f"{where(section, key)} = {value!r} is not allowed; use {_SECTIONS[section][key]}"
            )
        return value

    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_num(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    harden = get(
        "chip",
        "harden",
        [0, 1],
        lambda v: (
            isinstance(v, list)
            and v
            and all(h in (0, 1) and is_int(h) for h in v)
            and len(set(v)) == len(v)
        ),
    )
    mbu = get(
        "fault",
        "mbu_bits",
        [2, 4],
        lambda v: (
            isinstance(v, list)
            and len(v) == 2
            and all(is_int(x) for x in v)
            and 2 <= v[0] <= v[1] <= 4
        ),
    )
    size = data.get("size", {})
    if "injections" in size and "margin" in size:
        raise SpecError(f"{source}: [size] takes injections or margin, not both")
    margin = get("size", "margin", None, lambda v: is_num(v) and 0 < v <= 0.5)
    injections = get(
        "size",
        "injections",
        None if margin else 500,
        lambda v: is_int(v) and 1 <= v <= MAX_INJECTIONS,
    )
    rate = get(
        "orbit",
        "rate",
        "leo",
        lambda v: (isinstance(v, str) and v in ORBIT_PRESETS) or (is_num(v) and v > 0),
    )
    executor = get("run", "executor", "local", lambda v: isinstance(v, str) and v in EXECUTORS)
    scheduler = get(
        "run",
        "scheduler",
        "",
        lambda v: (
            isinstance(v, str) and (v == "" or v.startswith(("tcp://", "tls://", "inproc://")))
        ),
    )
    return Spec(
        name=get("", "name", "campaign", lambda v: isinstance(v, str) and v != ""),
        seed=get("", "seed", 1, is_int),
        workload=get(
            "workload", "name", "inference", lambda v: isinstance(v, str) and v in WORKLOADS
        ),
        workload_seed=get("workload", "seed", 0, is_int),
        harden=tuple(sorted(harden)),
        simulator=get(
            "chip", "simulator", "verilator", lambda v: isinstance(v, str) and v in SIMULATORS
        ),
        blocks=tuple(
            get(
                "targets",
                "blocks",
                [],
                lambda v: isinstance(v, list) and all(isinstance(b, str) for b in v),
            )
        ),
        glob=get("targets", "glob", "", lambda v: isinstance(v, str)),
        model=get(
            "fault",
            "model",
            "flip",
            lambda v: isinstance(v, str) and v in {m.value for m in FaultModel},
        ),
        mbu_bits=tuple(mbu),
        stuck_cycles=get("fault", "stuck_cycles", 100, lambda v: is_int(v) and v >= 1),
        injections=injections,
        margin=margin,
        confidence=get("size", "confidence", 0.95, lambda v: is_num(v) and 0 < v < 1),
        executor=executor,
        workers=get("run", "workers", 0, lambda v: is_int(v) and v >= 0),
        scheduler=scheduler,
        chunk=get("run", "chunk", 200, lambda v: is_int(v) and v >= 1),
        orbit_rate=rate,
        source=source,
    )


def check_size(spec: Spec, n: int, population: int, build: str) -> None:
    """Refuse a build's sample size that cannot be planned: more than MAX_INJECTIONS (a
    margin too narrow) or more than its fault space has faults."""
    asked = f"margin = {spec.margin:g}" if spec.injections is None else f"injections = {n:,}"
    if n > MAX_INJECTIONS:
        raise SpecError(
            f"{spec.source or '<spec>'}: size.{asked} needs {n:,} injections for {build}, more "
            f"than the {MAX_INJECTIONS:,} a campaign plans per build; ask for a wider margin"
        )
    if n > population:
        raise SpecError(
            f"{spec.source or '<spec>'}: size.{asked} is more than the {population:,} faults "
            f"(bit, cycle) {build} has; use injections <= {population:,}"
        )


def to_toml(spec: Spec) -> str:
    """``spec`` as a TOML file ``load`` reads back to the same spec."""

    def value(v) -> str:
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, tuple | list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    size = (
        f"injections = {spec.injections}"
        if spec.injections is not None
        else f"margin = {spec.margin!r}\nconfidence = {spec.confidence!r}"
    )
    return (
        f"name = {value(spec.name)}\nseed = {spec.seed}\n\n"
        f"[workload]\nname = {value(spec.workload)}\nseed = {spec.workload_seed}\n\n"
        f"[chip]\nharden = {value(spec.harden)}\nsimulator = {value(spec.simulator)}\n\n"
        f"[targets]\nblocks = {value(spec.blocks)}\nglob = {value(spec.glob)}\n\n"
        f"[fault]\nmodel = {value(spec.model)}\nmbu_bits = {value(spec.mbu_bits)}\n"
        f"stuck_cycles = {spec.stuck_cycles}\n\n[size]\n{size}\n\n"
        f"[run]\nexecutor = {value(spec.executor)}\nworkers = {spec.workers}\n"
        f"scheduler = {value(spec.scheduler)}\nchunk = {spec.chunk}\n\n"
        f"[orbit]\nrate = {value(spec.orbit_rate)}\n"
    )
