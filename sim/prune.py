"""Exact def/use pruning of memory faults, from the golden run's access trace (FAIL*-style).

A flip in a memory word changes nothing until the word is next accessed: every flip of
the same bits of the same word between two accesses leads to the same state at the next
access, so to the same outcome whatever its cycle. The golden run records each memory's
accesses (``chip_tb``'s monitor: a read on every rising edge at the read port's address,
and every write, which stores a whole word). A planned fault (word, bits, cycle) then
falls in one class, decided by the first access after its cycle:

- ``overwritten``: a write comes first, the flip is gone before anything saw it: the run
  is the golden run (masked), no simulation needed;
- ``unread``: no access before the run ends: the outputs are golden's and the flip is
  still in the word at the end (latent for the data SRAM, whose words are part of the end
  state; masked for the frame buffers, which are not);
- otherwise the class is (memory, word, bits, fault model, time of that read): its first
  fault is simulated (the ``representative``, injected at the class's last cycle, the one
  just before the read, so the engine restores from the latest checkpoint it can) and
  every later fault of the class is given the same result (``reused``).

Flip-flops and stuck-at windows are always simulated (``simulated``). Sampling stays
uniform over bits x cycles: classes only save simulation, they do not reweight the plan.
Times are the simulator's in ns: rising edges at 5 + 10k, the engine's flips on falling
edges (multiples of 10), so a flip at time t is seen by a read at any edge after t.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from orbithil.sim.faults import FaultModel, Injection

# chip_tb's memory numbers in the trace (its monitor's comment), by netlist target name
MEMORIES = ("u_mem.mem", "u_frame_rx.buffer0", "u_frame_rx.buffer1", "u_frame_tx.buffer")
CLOCK_NS = 10
EDGE_NS = 5  # rising edges: 5 ns after each cycle's falling edge


class Kind(StrEnum):
    SIMULATED = "simulated"  # no class (a flip-flop, a stuck-at, or pruning off): simulated
    REPRESENTATIVE = "representative"  # simulated; its result stands for its class
    REUSED = "reused"  # a class already simulated: its representative's result
    OVERWRITTEN = "overwritten"  # written before it is read again: the golden run
    UNREAD = "unread"  # never accessed again: golden outputs, the flip left in the word


PRUNED = (Kind.REUSED, Kind.OVERWRITTEN, Kind.UNREAD)  # decided without a simulation


def simulated(kinds: Mapping[str, int]) -> int:
    """How many of ``kinds`` (a count per ``Kind`` value) took a simulation."""
    return sum(n for kind, n in kinds.items() if kind not in PRUNED)


@dataclass(frozen=True)
class Decision:
    kind: Kind
    key: tuple | None = None  # the class of a representative or reused fault
    cycle: int | None = None  # where the representative is injected (its class's last cycle)

    @property
    def label(self) -> str:
        """The class as one string, for the store: ``memory[word]:bits:model@read`` (the
        read's time in ns from the run's start)."""
        if self.key is None:
            return ""
        memory, word, bits, model, read = self.key
        return f"{memory}[{word}]:{'.'.join(map(str, bits))}:{model}@{read}"


class TraceError(RuntimeError):
    pass


class AccessTrace:
    """Every access to every traced memory word in one golden run.

    ``start_ns``: the golden run's cycle 0 (a falling edge); ``end_ns``: the instant it
    ended (its end state read), after the last traced edge.
    """

    def __init__(self, start_ns: int, end_ns: int) -> None:
        self.start_ns = start_ns
        self.end_ns = end_ns
        # (memory, word) -> (starts, ends): the word read on every edge in [start, end)
        self._reads: dict[tuple[int, int], tuple[list[int], list[int]]] = {}
        self._writes: dict[tuple[int, int], list[int]] = {}  # (memory, word) -> edge times
        self.lines = 0

    @classmethod
    def parse(cls, path: Path, start_ns: int, end_ns: int) -> AccessTrace:
        """Read chip_tb's trace file ("<time> <memory> R|W <address>" per line)."""
        trace = cls(start_ns, end_ns)
        current: dict[int, tuple[int, int]] = {}  # memory -> (read address, since)
        with open(path, encoding="ascii") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    t_s, m_s, op, addr_s = line.split()
                    t, m, addr = int(t_s), int(m_s), int(addr_s)
                except ValueError:
                    raise TraceError(f"{path}:{number}: not an access line: {line!r}") from None
                if (t - start_ns) % CLOCK_NS != EDGE_NS or not start_ns < t < end_ns:
                    raise TraceError(
                        f"{path}:{number}: access at {t} ns is not a rising edge of the run "
                        f"({start_ns}..{end_ns} ns, edges at {EDGE_NS} ns past each cycle)"
                    )
                if op == "W":
                    trace._writes.setdefault((m, addr), []).append(t)
                elif op == "R":
                    if m in current:
                        trace._add_read(m, *current[m], t)
                    current[m] = (addr, t)
                else:
                    raise TraceError(f"{path}:{number}: unknown access {op!r}")
                trace.lines += 1
        for m, (addr, since) in current.items():
            trace._add_read(m, addr, since, end_ns)
        if not current:
            raise TraceError(f"{path}: no reads traced: the monitor did not run")
        return trace

    def _add_read(self, m: int, addr: int, since: int, until: int) -> None:
        starts, ends = self._reads.setdefault((m, addr), ([], []))
        starts.append(since)
        ends.append(until)

    def next_read(self, m: int, word: int, t: int) -> int | None:
        """The first edge after time ``t`` at which ``word`` of memory ``m`` is read."""
        segments = self._reads.get((m, word))
        if segments is None:
            return None
        starts, ends = segments
        i = bisect.bisect_right(ends, t + EDGE_NS)  # the first read span with an edge after t
        return None if i == len(ends) else max(starts[i], t + EDGE_NS)

    def next_write(self, m: int, word: int, t: int) -> int | None:
        writes = self._writes.get((m, word))
        if writes is None:
            return None
        i = bisect.bisect_right(writes, t)
        return None if i == len(writes) else writes[i]

    def decide(self, injection: Injection) -> Decision:
        """The class of ``injection`` (``Kind.SIMULATED`` when it has none)."""
        if (
            injection.word is None
            or injection.model is FaultModel.STUCK
            or injection.target not in MEMORIES
        ):
            return Decision(Kind.SIMULATED)
        m = MEMORIES.index(injection.target)
        t = self.start_ns + injection.cycle * CLOCK_NS
        read = self.next_read(m, injection.word, t)
        write = self.next_write(m, injection.word, t)
        if read is None and write is None:
            return Decision(Kind.UNREAD)
        if read is None or (write is not None and write < read):
            return Decision(Kind.OVERWRITTEN)
        key = (
            injection.target, injection.word, injection.bits, str(injection.model),
            read - self.start_ns,
        )  # fmt: skip
        return Decision(Kind.REPRESENTATIVE, key, (read - EDGE_NS - self.start_ns) // CLOCK_NS)
