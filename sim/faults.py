"""Fault models and seeded injection plans over a build's netlist targets.

An injection is data: where (a flip-flop register, or a memory and word), which bits,
when (a cycle of the workload), and how (a single flip, an adjacent multiple-bit upset, a
stuck-at window). A plan is a seeded list of injections, sampled so that every bit of the
chip (flip-flop and memory bits alike) is equally likely, optionally restricted to blocks
or to names matching a glob.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from enum import StrEnum

import numpy as np

from orbithil.errors import ConfigError


class FaultModel(StrEnum):
    FLIP = "flip"  # one bit inverted at a cycle (a single-event upset)
    MBU = "mbu"  # 2..4 adjacent bits of the same word or register inverted together
    STUCK = "stuck"  # one bit held at 0 or 1 for a window of cycles


@dataclass(frozen=True)
class Injection:
    """One fault: ``target`` (hierarchical name below the chip), ``word`` (memory word, or
    None for a flip-flop register), ``bits``, ``cycle``, ``model``; for STUCK the held
    ``value`` and ``duration`` in cycles."""

    target: str
    word: int | None
    bits: tuple[int, ...]
    cycle: int
    model: FaultModel
    block: str
    value: int | None = None
    duration: int = 0


@dataclass(frozen=True)
class _Register:
    name: str
    width: int
    block: str
    bits: tuple[int, ...]  # the bits of it the netlist keeps


class TargetSpace:
    """Every injectable bit of one build, from ``sim.netlist.list_targets``."""

    def __init__(self, targets: dict, *, blocks: set[str] | None = None, glob: str | None = None):
        def keep(name: str, block: str) -> bool:
            return (blocks is None or block in blocks) and (
                glob is None or fnmatch.fnmatch(name, glob)
            )

        registers: dict[str, list] = {}
        for ff in targets["flip_flops"]:
            if keep(ff["name"], ff["block"]):
                registers.setdefault(ff["name"], [ff["width"], ff["block"], []])[2].append(
                    ff["bit"]
                )
        self.registers = [
            _Register(n, w, b, tuple(sorted(bits))) for n, (w, b, bits) in sorted(registers.items())
        ]
        self.memories = [m for m in targets["memories"] if keep(m["name"], m["block"])]
        self.ff_bits = sum(len(r.bits) for r in self.registers)
        self.memory_bits = sum(m["words"] * m["width"] for m in self.memories)
        if self.ff_bits + self.memory_bits == 0:
            valid = sorted({f["block"] for f in targets["flip_flops"]})
            asked = sorted(blocks) if blocks else None
            raise ConfigError(
                f"no targets left after the filter (blocks={asked}, glob={glob!r}); "
                f"valid blocks: {valid}"
            )
        # cumulative bit counts: a uniform draw over all bits picks a register or memory
        sizes = [len(r.bits) for r in self.registers] + [
            m["words"] * m["width"] for m in self.memories
        ]
        self._cumulative = np.cumsum(sizes)

    @property
    def total_bits(self) -> int:
        return self.ff_bits + self.memory_bits

    def block_bits(self) -> dict[str, tuple[int, int]]:
        """Per block: (flip-flop bits, memory bits)."""
        out: dict[str, list[int]] = {}
        for r in self.registers:
            out.setdefault(r.block, [0, 0])[0] += len(r.bits)
        for m in self.memories:
            out.setdefault(m["block"], [0, 0])[1] += m["words"] * m["width"]
        return {block: (ff, mem) for block, (ff, mem) in out.items()}

    def bits_per_block(self) -> dict[str, int]:
        return {block: ff + mem for block, (ff, mem) in self.block_bits().items()}

    def _locate(self, k: int) -> tuple[str, int | None, int, int, str]:
        """The k-th bit of the chip: (name, word or None, bit, width, block)."""
        i = int(np.searchsorted(self._cumulative, k, side="right"))
        start = int(self._cumulative[i - 1]) if i else 0
        offset = k - start
        if i < len(self.registers):
            reg = self.registers[i]
            return reg.name, None, reg.bits[offset], reg.width, reg.block
        mem = self.memories[i - len(self.registers)]
        return (
            mem["name"],
            offset // mem["width"],
            offset % mem["width"],
            mem["width"],
            mem["block"],
        )

    def plan(
        self,
        n: int,
        *,
        seed: int,
        cycles: tuple[int, int],
        model: FaultModel = FaultModel.FLIP,
        mbu_size: tuple[int, int] = (2, 4),
        stuck_cycles: int = 100,
    ) -> list[Injection]:
        """``n`` injections, seeded; cycles uniform in ``cycles`` (inclusive)."""
        model = FaultModel(model)
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        if cycles[0] < 0 or cycles[1] < cycles[0]:
            raise ConfigError(f"cycles must be (first, last) with 0 <= first <= last, got {cycles}")
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            name, word, bit, width, block = self._locate(int(rng.integers(0, self.total_bits)))
            cycle = int(rng.integers(cycles[0], cycles[1] + 1))
            if model is FaultModel.MBU:
                size = int(rng.integers(mbu_size[0], mbu_size[1] + 1))
                first = min(bit, max(width - size, 0))
                bits = tuple(range(first, min(first + size, width)))
                out.append(Injection(name, word, bits, cycle, model, block))
            elif model is FaultModel.STUCK:
                value = int(rng.integers(0, 2))
                out.append(Injection(name, word, (bit,), cycle, model, block, value, stuck_cycles))
            else:
                out.append(Injection(name, word, (bit,), cycle, model, block))
        return out


def injection_to_dict(injection: Injection) -> dict:
    out = asdict(injection)
    out["bits"] = list(injection.bits)
    out["model"] = str(injection.model)
    return out


def injection_from_dict(data: dict) -> Injection:
    return Injection(**{**data, "bits": tuple(data["bits"]), "model": FaultModel(data["model"])})
