"""The injection engine: many injections in one simulator process (runs inside cocotb).

For each injection the engine

1. restores the chip and testbench to a checkpoint of the golden run: the state at the
   instant before one of the workload's steps, the last one at or before the injection
   cycle. Every flip-flop (the netlist's list), every memory word, the testbench's queue
   counters and host UART are written back by the build's port (``sim.engine_port``: the
   checkpoints are kept and restored in Verilog, the state stays private to the
   simulator), and the workload script is replayed up to that step with the golden
   answers (no simulation needed: the run is identical to golden until the fault);
2. runs on with one Timer to the injection cycle and flips the bits there (the port), or
   holds a stuck-at bit for its window;
3. drives the rest of the workload in simulated time, the link behaving like the HAL's
   (same-sequence retries on timeout, frame NAK or a damaged answer);
4. at every later step boundary the run reaches at the golden run's cycle with the golden
   answers so far, compares the state with golden's (cheap parts first); when it is equal
   nothing can differ any more and the run stops: the result is the golden observation.

All waits are multiples of the 10 ns clock period, so every Python wake-up, checkpoint,
restore and injection falls on a falling clock edge, when no flip-flop is being loaded.
"""

from __future__ import annotations

import bisect
import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cocotb
from cocotb.handle import _GPISetAction
from cocotb.triggers import ReadWrite, Timer
from cocotb.utils import get_sim_time

from orbithil.hal import codec
from orbithil.hal.codec import MAX_ENCODED
from orbithil.hal.icd import ACK_FLAG, NAK
from orbithil.hal.link import DEFAULT_RETRIES, Verdict, judge
from orbithil.hal.protocol import TELEMETRY_LEN, parse_telemetry, telemetry
from orbithil.payload.classify import Observation
from orbithil.payload.workloads import Idle, Request, Tally, script
from orbithil.sim import engine_port, placement
from orbithil.sim.faults import FaultModel, Injection
from orbithil.sim.placement import Placement
from orbithil.sim.prune import AccessTrace, Decision, Kind
from orbithil.sim.targets import handle_for
from orbithil.sim.tb_link import CLOCK_NS, TbLink

ATTEMPTS = DEFAULT_RETRIES + 1  # as the HAL: the first try and its same-sequence resends
JOB_ALLOWANCE_CYCLES = 20_000  # time a request may take beyond its bytes (a 64x64 job)
TRACE_PATH_BYTES = 1024  # chip_tb's trace_path register


def _now_ns() -> int:
    return int(get_sim_time("ns"))


# The raw GPI write that ``handle.value = Immediate(v)`` ends in, called directly: it
# lands at once, and cocotb's checks cost ten times the write itself.
_IMMEDIATE = _GPISetAction.NO_DELAY.value


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint held in the port's slot ``slot``, and the host queue counters then
    (Python keeps its own count of them, ``sim.tb_link``)."""

    slot: int
    txq_len: int
    rxq_len: int


class State:
    """Save, restore and compare every bit of state of chip_tb that a run depends on, and
    flip or set bits of it, through the build's port (``sim.engine_port``): one write
    of the op, the simulator does the rest in Verilog, with the chip's state private.

    An op runs in the simulator's next evaluation of the present instant, which it waits
    for (``ReadWrite``: simulated time does not move), so the state, and a comparison's
    result, are there when it returns. Only one coroutine issues ops at a time (the
    run's, or the fault's, and the run compares only once the fault is done), so one
    op's fields are never overwritten by another's before the simulator used them.
    """

    def __init__(self, tb, targets: dict, slots: int) -> None:
        self.tb = tb
        self.slots = slots  # checkpoints the build's port holds (``engine_port.slots``)
        chip = tb.dut
        regs = engine_port.registers(targets)
        self._number = {path.removeprefix("dut."): i for i, path in enumerate(regs)}
        self.memory_names = [m["name"] for m in targets["memories"]]
        for m, name in enumerate(self.memory_names):
            self._number[name] = len(regs) + m
        self.sram = self.memory_names.index("u_mem.mem")
        self._sram_words = targets["memories"][self.sram]["words"]
        names = sorted({f["name"] for f in targets["flip_flops"]})
        self._regfile = [handle_for(chip, n)._handle for n in names if n.startswith("u_regs.")]
        sram = handle_for(chip, "u_mem.mem")
        self._sram = [sram[i]._handle for i in range(self._sram_words)]
        self._go = tb.eng_go._handle
        self._op = tb.eng_op._handle
        self._slot = tb.eng_slot._handle
        self._target = tb.eng_target._handle
        self._word = tb.eng_word._handle
        self._mask = tb.eng_mask._handle
        self._value = tb.eng_value._handle
        self._equal = tb.eng_equal._handle
        self._diff = tb.eng_diff._handle
        self._txq_len = tb.txq_len._handle
        self._rxq_len = tb.rxq_len._handle
        self._count = 0  # eng_go's value: every op changes it
        self._slots_used = 0

    @property
    def slots_used(self) -> int:
        """The port's slots holding a snapshot (one per ``snapshot`` call)."""
        return self._slots_used

    async def _run(self, op: engine_port.Op, slot: int = 0) -> None:
        self._op.set_signal_val_int(_IMMEDIATE, int(op))
        self._slot.set_signal_val_int(_IMMEDIATE, slot)
        self._count = (self._count + 1) & 0xFFFF_FFFF
        self._go.set_signal_val_int(_IMMEDIATE, self._count)
        await ReadWrite()

    async def snapshot(self) -> Snapshot:
        """Save the state now into a new slot."""
        slot = self._slots_used
        if slot >= self.slots:
            raise RuntimeError(
                f"the engine port holds {self.slots} checkpoints and this run needs "
                f"more: raise SLOTS in sim/engine_port.py (the build is remade)"
            )
        self._slots_used += 1
        await self._run(engine_port.Op.SAVE, slot)
        return Snapshot(
            slot,
            int(self._txq_len.get_signal_val_binstr(), 2),
            int(self._rxq_len.get_signal_val_binstr(), 2),
        )

    async def restore(self, snap: Snapshot) -> None:
        """Write ``snap`` back, in this instant (before the next rising edge)."""
        await self._run(engine_port.Op.RESTORE, snap.slot)

    async def equals(self, snap: Snapshot) -> bool:
        """Whether the state now is ``snap``."""
        await self._run(engine_port.Op.COMPARE, snap.slot)
        return self._equal.get_signal_val_binstr() == "1"

    async def change(self, injection: Injection, value: int | None) -> None:
        """Invert ``injection``'s bits (``value`` None) or set them to ``value``."""
        self._target.set_signal_val_int(_IMMEDIATE, self._number[injection.target])
        self._word.set_signal_val_int(_IMMEDIATE, injection.word or 0)
        mask = sum(1 << b for b in injection.bits)
        width = engine_port.REGISTER_BITS
        self._mask.set_signal_val_binstr(_IMMEDIATE, format(mask, f"0{width}b"))
        self._value.set_signal_val_binstr(_IMMEDIATE, format(mask if value else 0, f"0{width}b"))
        await self._run(engine_port.Op.FLIP if value is None else engine_port.Op.SET)

    async def end_parts(
        self, reference: tuple[tuple[list[str], list[str]], Snapshot] | None = None
    ) -> tuple[list[str], list[str]]:
        """The architectural state, as ``hash_end_state`` takes it: the register file's
        flip-flops and the SRAM (raw codewords: a flip still sitting in a word is latent
        state). With ``reference`` (end parts read before and the snapshot taken with
        them), the SRAM is compared with the snapshot's in the simulator and only the
        words that differ are read."""
        regfile = [h.get_signal_val_binstr() for h in self._regfile]
        if reference is None:
            return regfile, [h.get_signal_val_binstr() for h in self._sram]
        (_, sram), snap = reference
        self._target.set_signal_val_int(_IMMEDIATE, self._number[self.memory_names[self.sram]])
        await self._run(engine_port.Op.DIFF, snap.slot)
        bits = self._diff.get_signal_val_binstr()  # MSB first: word i is bits[-1 - i]
        sram = list(sram)
        for i in range(self._sram_words):
            if bits[-1 - i] != "0":
                sram[i] = self._sram[i].get_signal_val_binstr()
        return regfile, sram


def hash_end_state(regfile: list[str], sram: list[str]) -> str:
    return hashlib.sha256(("|".join(regfile) + "#" + "|".join(sram)).encode()).hexdigest()


@dataclass(frozen=True)
class Resume:
    """Where inside its step a mid-step checkpoint was taken, and what the host was doing
    then: enough to carry on from that instant exactly as the golden run did.

    Mid-step checkpoints are taken in an ``Idle`` step, or while a request waits for its
    answer before any whole frame of it has come and with every byte the chip sent
    already taken in by the host (at the host's looks, and between them while no byte
    comes): the bytes of the answer so far are kept and fed to a fresh deframer on
    restore, which then holds what the golden run's held, and the host's next look falls
    where it did.
    (The final telemetry request, after the script's last step, counts as one more step.)"""

    idle_left: int = 0  # an Idle step: its cycles still to run
    attempt: int = -1  # a request: the attempt in flight (-1: an Idle step)
    wire_start: int = 0  # where that attempt's frame starts in the testbench's send queue
    deadline: int = 0  # the cycle at which that attempt gives up
    retries: int = 0  # LINK_RETRIES counted so far
    answer: bytes = b""  # the bytes of the answer received so far (no whole frame yet)
    poll_left: int = 0  # cycles from the checkpoint to the host's next look at the answer
    sending: bool = False  # (for reports) the frame was still going out to the chip

    @property
    def kind(self) -> str:
        """Where in its step the checkpoint was taken: idle, sending (the request going
        out), computing (sent, no answer yet) or receiving (the answer coming in)."""
        if self.attempt < 0:
            return "idle"
        return "receiving" if self.answer else "sending" if self.sending else "computing"


@dataclass
class Checkpoint:
    """The state at cycle ``cycle`` of the golden run: the instant before golden step
    ``step`` is sent (``resume`` None), or an instant inside it (``resume`` says where).
    (The requests sent so far, hence the next sequence number, follow from replaying the
    script up to ``step``.)"""

    step: int
    cycle: int
    snapshot: Snapshot
    resume: Resume | None = None


@dataclass
class Golden:
    observation: Observation
    cycles: int  # the run's length, from the start state to the final telemetry answer
    answers: list = field(default_factory=list)  # per step: ACK payload, None for Idle/NAK
    checkpoints: list[Checkpoint] = field(default_factory=list)  # one per step, in order
    end: tuple[list[str], list[str]] = ((), ())  # State.end_parts() when the run ended
    end_snapshot: Snapshot | None = None  # the state then (end parts are read against it)
    mids: list[Checkpoint] = field(default_factory=list)  # placed inside steps, in order
    wall_s: float = 0.0  # the golden run's wall time, its snapshots included
    snapshot_s: float = 0.0  # ... of which taking its step checkpoints

    def restore_points(self) -> list[Checkpoint]:
        """Every checkpoint, by cycle (a step's own after a mid-step one at its cycle, so
        a search for the latest at or before a cycle finds the step's)."""
        points = self.checkpoints + self.mids
        return sorted(points, key=lambda cp: (cp.cycle, cp.resume is None))


@dataclass
class RunInfo:
    """How one run went, for benchmarks and the store."""

    cycles: int = 0  # simulated cycles this run took (from its restore point)
    start_cycle: int = 0  # the workload cycle it was restored to
    stopped_early: bool = False
    wall_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time over the run (the simulator and Python)
    pruning: str = str(Kind.SIMULATED)  # how its outcome was decided (sim.prune.Kind)
    fault_class: str = ""  # its def/use class (sim.prune.Decision.label), if it has one
    lead_cycles: int = 0  # of ``cycles``, those simulated before the fault (restore point on)
    restore_s: float = 0.0  # writing the restore point's state back (wall seconds)


@dataclass
class _Recording:
    """What a recording run keeps: step checkpoints and the end state (the golden run),
    or checkpoints inside steps at ``marks`` (``Engine.add_checkpoints``)."""

    golden: Golden
    marks: list[int] | None = None  # ascending; None: record step checkpoints instead
    next_mark: int = 0  # index of the first mark not yet passed
    step_cycle: int = 0  # the cycle the current step began at


class Engine:
    """Runs workload ``name`` on the chip in chip_tb, golden and with injections."""

    def __init__(
        self, dut, targets: dict, workload: str, *, seed: int = 0, clks_per_bit: int, slots: int
    ):
        self.dut = dut
        self.workload = workload
        self.seed = seed
        self.link = TbLink(dut, clks_per_bit=clks_per_bit)
        self.state = State(dut, targets, slots)
        self.golden: Golden | None = None
        self.start: Snapshot | None = None
        self.trace: AccessTrace | None = None
        self._points: list[Checkpoint] | None = None  # golden's restore points, by cycle
        self._point_cycles: list[int] = []
        self._base_ns = 0  # the run's cycle 0, in simulated ns

    async def reset(self) -> None:
        """Hard reset with cleared SRAM; this instant is the start state (cycle 0)."""
        await self.link.reset()
        self.start = await self.state.snapshot()

    # --- one run ------------------------------------------------------------------------
    async def run_golden(self, trace: Path | None = None) -> Golden:
        """The golden run from the start state, keeping a checkpoint at every step; with
        ``trace``, chip_tb's monitor writes every memory access into that file and
        ``self.trace`` holds them (``sim.prune``)."""
        golden = Golden(Observation(), 0)
        tb = self.dut
        if trace is not None:
            name = str(trace).encode()
            if len(name) > TRACE_PATH_BYTES:
                raise ValueError(f"trace path longer than {TRACE_PATH_BYTES} bytes: {trace}")
            bits = format(int.from_bytes(name, "big"), f"0{8 * TRACE_PATH_BYTES}b")
            tb.trace_path._handle.set_signal_val_binstr(_IMMEDIATE, bits)
            tb.trace_on._handle.set_signal_val_int(_IMMEDIATE, 1)
        start_ns = _now_ns()
        wall = time.perf_counter()
        observation, info = await self._run(record=_Recording(golden))
        golden.wall_s = time.perf_counter() - wall
        golden.observation, golden.cycles = observation, info.cycles
        self.golden, self._points = golden, None
        if trace is not None:
            end_ns = _now_ns()  # the instant the end state was read: no edge traced since
            tb.trace_on._handle.set_signal_val_int(_IMMEDIATE, 0)
            await Timer(CLOCK_NS, "ns")  # the monitor closes the file on the next edge
            self.trace = AccessTrace.parse(trace, start_ns, end_ns)
        return golden

    def place(self, run_cycles: list[int]) -> Placement:
        """Marks for checkpoints inside steps, for runs injecting at ``run_cycles``
        (``sim.placement``), from this golden run's own costs."""
        golden = self.golden
        if golden is None:
            raise RuntimeError("place() needs the golden run first")
        steps = max(len(golden.checkpoints), 1)
        return placement.place(
            run_cycles,
            step_cycles=[cp.cycle for cp in golden.checkpoints],
            length=golden.cycles,
            cycle_s=max(golden.wall_s - golden.snapshot_s, 1e-9) / max(golden.cycles, 1),
            snapshot_s=golden.snapshot_s / steps,
            free_slots=self.state.slots - self.state.slots_used - 1,  # one kept spare
        )

    async def add_checkpoints(self, marks: list[int] | tuple[int, ...]) -> Observation:
        """Rerun the golden run from the start state, taking a checkpoint inside a step at
        (or, waiting on a request, up to a poll interval before) each of ``marks``; they
        join the golden run's restore points. The rerun must be the golden run: its
        observation is returned for the caller to check, and its answers are checked here.
        A golden run whose link needed a resend gets none (a resumed request is only ever
        its first attempt, with nothing left of an earlier answer in the deframer).
        """
        golden = self.golden
        if golden is None:
            raise RuntimeError("add_checkpoints() needs the golden run first")
        if golden.observation.counters.get("LINK_RETRIES"):
            marks = ()
        record = _Recording(Golden(Observation(), 0), marks=sorted(marks))
        observation, _ = await self._run(record=record)
        if record.golden.answers != golden.answers:
            raise AssertionError("a rerun of the golden run got different answers")
        golden.mids = record.golden.mids
        self._points = None
        return observation

    async def check_restore_points(self) -> list[tuple[int, Observation]]:
        """Run on without a fault from every checkpoint placed inside a step: the (cycle,
        observation) of each that did not end as the golden run did (none, if restoring
        there is exact). Costs a run from each to the end. (The start state is checked by
        every ``add_checkpoints``, which reruns the golden run from it.)"""
        golden = self.golden
        if golden is None:
            raise RuntimeError("check_restore_points() needs the golden run first")
        wrong = []
        for cp in golden.mids:
            observation, _ = await self._run(restart=cp)
            if observation != golden.observation:
                wrong.append((cp.cycle, observation))
        return wrong

    def unsimulated(self, injection: Injection, decision: Decision) -> Observation:
        """The observation of a fault whose class needs no simulation (``sim.prune``):
        overwritten before any read, the golden run; never read again, golden outputs
        with the flip still in its word (in the end state if the word is the SRAM's)."""
        golden = self.golden
        if decision.kind is Kind.OVERWRITTEN:
            return golden.observation
        if decision.kind is not Kind.UNREAD:
            raise ValueError(f"{decision.kind} needs a simulation")
        if injection.target != self.state.memory_names[self.state.sram]:
            return golden.observation  # the frame buffers are not part of the end state
        regfile, sram = golden.end
        sram = list(sram)
        sram[injection.word] = _flipped(sram[injection.word], injection.bits, None)
        return replace(golden.observation, end_state=hash_end_state(regfile, sram))

    async def run(
        self, injection: Injection | None, *, from_checkpoint: bool = True, early_stop: bool = True
    ) -> tuple[Observation, RunInfo]:
        """One run with ``injection`` (None: a fault-free rerun)."""
        return await self._run(
            injection=injection, from_checkpoint=from_checkpoint, early_stop=early_stop
        )

    async def _run(
        self,
        *,
        injection: Injection | None = None,
        record: _Recording | None = None,
        from_checkpoint: bool = False,
        early_stop: bool = False,
        restart: Checkpoint | None = None,
    ) -> tuple[Observation, RunInfo]:
        wall, cpu = time.perf_counter(), time.process_time()
        golden = self.golden
        start = Checkpoint(0, 0, self.start) if restart is None else restart
        if from_checkpoint and golden and injection is not None:
            if self._points is None:
                self._points = golden.restore_points()
                self._point_cycles = [cp.cycle for cp in self._points]
            k = bisect.bisect_right(self._point_cycles, injection.cycle)
            start = self._points[max(k - 1, 0)]
        # Restored in this instant, before the next rising edge: from
        # here on the chip runs as it did from the checkpoint, and the first request goes
        # out in the same instant as it did in the golden run.
        restore_wall = time.perf_counter()
        await self.state.restore(start.snapshot)
        restore_s = time.perf_counter() - restore_wall
        base_ns = _now_ns() - start.cycle * CLOCK_NS  # cycle c happens at base + c*10
        self._base_ns = base_ns
        link = self.link
        link.queued = start.snapshot.txq_len
        link.received = start.snapshot.rxq_len
        link.deframer.reset()
        link.frames.clear()

        tally = Tally()
        resume = start.resume
        counters = {"LINK_RETRIES": resume.retries if resume else 0}
        gen = script(self.workload, self.seed)
        answer = None
        requests = 0
        for k in range(start.step):  # replay up to the restore point with golden's answers
            step = gen.send(answer)
            answer = golden.answers[k]
            if isinstance(step, Request):
                requests += 1
                answer = tally.answer(step, answer)
        same_as_golden = True  # every answer so far equals golden's

        fault = None
        if injection is not None:
            fault = cocotb.start_soon(self._inject(injection, base_ns))

        step_index = start.step
        observation = None
        while True:
            if record is not None:
                record.step_cycle = self._cycle()
                if record.marks is None:
                    snap_wall = time.perf_counter()
                    snapshot = await self.state.snapshot()
                    record.golden.snapshot_s += time.perf_counter() - snap_wall
                    record.golden.checkpoints.append(
                        Checkpoint(step_index, record.step_cycle, snapshot)
                    )
            elif (
                early_stop
                and golden is not None
                and same_as_golden
                and step_index > start.step
                and fault is not None
                and fault.done()
                and step_index < len(golden.checkpoints)
            ):
                cp = golden.checkpoints[step_index]
                if cp.cycle == self._cycle() and await self.state.equals(cp.snapshot):
                    info = self._info(self._cycle(), start, injection, wall, cpu)
                    info.stopped_early, info.restore_s = True, restore_s
                    return golden.observation, info
            try:
                step = gen.send(answer)
            except StopIteration:
                break
            if isinstance(step, Idle):
                await self._idle(resume.idle_left if resume else step.cycles, record, step_index)
                answer = None
            else:
                requests += 1
                payload = await self._transact(
                    step.cmd, step.payload, requests, counters,
                    resume=resume, record=record, step=step_index,
                )  # fmt: skip
                if payload is False:
                    tally.hang = True
                    observation = tally.observation(None, "")
                    break
                answer = tally.answer(step, payload)
            resume = None
            if record is not None:
                record.golden.answers.append(answer)
            elif golden is not None and same_as_golden:
                same_as_golden = answer == golden.answers[step_index]
            step_index += 1

        if observation is None:  # the counters, as the HAL's telemetry() reads them
            requests += 1
            if record is not None:
                record.step_cycle = self._cycle()
            final = await self._transact(
                *telemetry(), requests, counters, resume=resume, record=record, step=step_index
            )
            if final is False:
                tally.hang = True
            elif final is None or len(final) != TELEMETRY_LEN:
                tally.naks += 1
            else:
                counters.update(parse_telemetry(final))
            if record is not None and record.marks is None:
                end = await self.state.end_parts()
                record.golden.end = end
                record.golden.end_snapshot = await self.state.snapshot()
            elif golden is not None and golden.end_snapshot is not None:
                end = await self.state.end_parts((golden.end, golden.end_snapshot))
            else:
                end = await self.state.end_parts()
            observation = tally.observation(counters, hash_end_state(*end))
        if fault is not None and not fault.done():
            fault.cancel()
        info = self._info(self._cycle(), start, injection, wall, cpu)
        info.restore_s = restore_s
        return observation, info

    @staticmethod
    def _info(
        cycle: int, start: Checkpoint, injection: Injection | None, wall: float, cpu: float
    ) -> RunInfo:
        info = RunInfo(cycle - start.cycle, start.cycle)
        if injection is not None:
            info.lead_cycles = min(max(injection.cycle - start.cycle, 0), info.cycles)
        info.wall_s = time.perf_counter() - wall
        info.cpu_s = time.process_time() - cpu
        return info

    # --- checkpoints inside steps -------------------------------------------------------
    def _cycle(self) -> int:
        return (_now_ns() - self._base_ns) // CLOCK_NS

    def _marks_before(self, record: _Recording, end: int) -> list[int]:
        """The marks from now up to cycle ``end`` (exclusive), used up; those already
        passed are dropped (no checkpoint could be taken for them), and so are those at
        the step's first cycle (the step's own checkpoint is there)."""
        now, marks, due = self._cycle(), record.marks, []
        while record.next_mark < len(marks) and marks[record.next_mark] < end:
            mark = marks[record.next_mark]
            record.next_mark += 1
            if mark >= now and mark > record.step_cycle:
                due.append(mark)
        return due

    async def _mid(self, record: _Recording, step: int, resume: Resume) -> None:
        snapshot = await self.state.snapshot()
        record.golden.mids.append(Checkpoint(step, self._cycle(), snapshot, resume))

    async def _idle(self, cycles: int, record: _Recording | None, step: int) -> None:
        """Let the chip run ``cycles``; a recording run stops at each mark on the way."""
        end = self._cycle() + cycles
        if record is not None and record.marks is not None:
            for mark in self._marks_before(record, end):  # each after the step's first cycle
                await Timer((mark - self._cycle()) * CLOCK_NS, "ns")
                if not self.link.pending():  # no byte the host has not taken in
                    await self._mid(record, step, Resume(idle_left=end - mark))
        left = end - self._cycle()
        if left > 0:
            await Timer(left * CLOCK_NS, "ns")

    # --- the fault --------------------------------------------------------------------
    async def _inject(self, injection: Injection, base_ns: int) -> None:
        delay = base_ns + injection.cycle * CLOCK_NS - _now_ns()
        if delay > 0:
            await Timer(delay, "ns")
        if injection.model is FaultModel.STUCK:
            # held for its window: re-asserted on every falling edge, so every rising edge
            # in the window loads logic with the stuck value
            for _ in range(max(injection.duration, 1)):
                await self.state.change(injection, injection.value)
                await Timer(CLOCK_NS, "ns")
            return
        await self.state.change(injection, None)

    # --- the link, in simulated time --------------------------------------------------
    async def _transact(
        self,
        cmd: int,
        payload: bytes,
        number: int,
        counters: dict,
        *,
        resume: Resume | None = None,
        record: _Recording | None = None,
        step: int = 0,
    ):
        """The ACK payload, None for a command NAK, False when every attempt went
        unanswered (a hang). Request ``number`` uses sequence number ``number & 0xFF``.

        ``resume``: carry on from a mid-step checkpoint taken while this request waited
        for its answer (its frame is put back into the send queue where it was: a later
        run may have queued other bytes there, and the answer's bytes so far are fed to the
        deframer). A recording run takes checkpoints at its marks while the first attempt
        waits, until a whole frame has come."""
        link = self.link
        seq = number & 0xFF
        wire = codec.frame_encode(seq, cmd, payload)
        budget = (len(wire) + MAX_ENCODED + 16) * link.byte_ns + JOB_ALLOWANCE_CYCLES * CLOCK_NS
        poll = link.poll_ns // CLOCK_NS
        for attempt in range(ATTEMPTS):
            if resume is not None:
                if attempt < resume.attempt:
                    continue
                wire_start = resume.wire_start
                link.rewrite(wire_start, wire)
                link.frames += link.deframer.feed(resume.answer).frames  # none: none had come
                received = link.received - len(resume.answer)
                deadline = self._base_ns + resume.deadline * CLOCK_NS
                first_wait = resume.poll_left * CLOCK_NS
                resume = None
            else:
                if attempt:
                    counters["LINK_RETRIES"] += 1
                wire_start = link.queued
                link.send_bytes(wire)
                received = link.received
                deadline = _now_ns() + budget
                first_wait = 0
            on_wait = None
            sent = self._cycle()
            if (
                record is not None
                and record.marks is not None
                and attempt == 0
                and not link.deframer.pending
            ):
                framed = (link.deframer.frames_ok, link.damaged)  # frames seen before it
                here = Resume(
                    attempt=attempt,
                    wire_start=wire_start,
                    deadline=(deadline - self._base_ns) // CLOCK_NS,
                    retries=counters["LINK_RETRIES"],
                )

                async def on_wait(here=here, received=received, framed=framed, sent=sent) -> int:
                    """At a look that found no frame: a checkpoint at each mark before the
                    next look; returns the ns waited here (the rest is next_frame's)."""
                    if (link.deframer.frames_ok, link.damaged) != framed or link.frames:
                        return 0  # a whole frame (or a damaged one) came: not resumable
                    now = self._cycle()
                    look = now + poll  # the next look
                    answer = link.received_bytes(received, link.received)
                    # not at the send: the new txq_len is not in the state until later in
                    # that instant
                    marks = [m for m in self._marks_before(record, look) if m > sent]
                    if answer and marks:  # the answer is coming in: between two looks
                        marks = [now]  # its bytes are not taken in, so here or nowhere
                    start_ns = _now_ns()
                    for mark in marks:
                        if mark > self._cycle():
                            await Timer((mark - self._cycle()) * CLOCK_NS, "ns")
                        if link.pending():
                            continue  # a byte came that the host has not taken in yet
                        where = replace(
                            here, answer=answer, poll_left=look - mark, sending=link.sending()
                        )
                        await self._mid(record, step, where)
                    return _now_ns() - start_ns

            resend = False
            while not resend:
                frame = await link.next_frame(
                    timeout_ns=max(deadline - _now_ns(), 0),
                    on_wait=on_wait,
                    first_wait_ns=first_wait,
                )
                first_wait = 0
                if frame is None:
                    break  # nothing in time: resend
                verdict = judge(frame, seq)  # the HAL's own per-frame rule
                if verdict in (Verdict.SKIP, Verdict.WAIT):
                    continue
                if verdict is Verdict.RESEND:
                    resend = True
                    break
                if frame.cmd == NAK:
                    return None
                if frame.cmd != cmd | ACK_FLAG:
                    return None  # a wrong answer code: refused, as the HAL would raise
                return frame.payload
            # No usable answer in time (lost, or damaged on the way back: the chip replays
            # its stored answer to the same sequence number) or a frame NAK: resend.
        return False


def _flipped(binstr: str, bits: tuple[int, ...], value: int | None) -> str:
    """``binstr`` (MSB first) with ``bits`` inverted (value None) or set to ``value``."""
    current = list(binstr)
    width = len(current)
    for bit in bits:
        i = width - 1 - bit
        if value is None:
            current[i] = {"0": "1", "1": "0"}.get(current[i].lower(), "1")
        else:
            current[i] = str(value)
    return "".join(current)
