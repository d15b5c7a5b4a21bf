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
from orbithil.sim import engine_port
from orbithil.sim.faults import FaultModel, Injection
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

    def __init__(self, tb, targets: dict) -> None:
        self.tb = tb
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

    async def _run(self, op: engine_port.Op, slot: int = 0) -> None:
        self._op.set_signal_val_int(_IMMEDIATE, int(op))
        self._slot.set_signal_val_int(_IMMEDIATE, slot)
        self._count = (self._count + 1) & 0xFFFF_FFFF
        self._go.set_signal_val_int(_IMMEDIATE, self._count)
        await ReadWrite()

    async def snapshot(self) -> Snapshot:
        """Save the state now into a new slot."""
        slot = self._slots_used
        if slot >= engine_port.SLOTS:
            raise RuntimeError(
                f"the engine port holds {engine_port.SLOTS} checkpoints and this run needs "
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


@dataclass
class Checkpoint:
    """The instant before golden step ``step`` is sent: its cycle and the state. (The
    requests sent so far, hence the next sequence number, follow from replaying the
    script up to ``step``.)"""

    step: int
    cycle: int
    snapshot: Snapshot


@dataclass
class Golden:
    observation: Observation
    cycles: int  # the run's length, from the start state to the final telemetry answer
    answers: list = field(default_factory=list)  # per step: ACK payload, None for Idle/NAK
    checkpoints: list[Checkpoint] = field(default_factory=list)
    end: tuple[list[str], list[str]] = ((), ())  # State.end_parts() when the run ended
    end_snapshot: Snapshot | None = None  # the state then (end parts are read against it)


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


class Engine:
    """Runs workload ``name`` on the chip in chip_tb, golden and with injections."""

    def __init__(self, dut, targets: dict, workload: str, *, seed: int = 0, clks_per_bit: int):
        self.dut = dut
        self.workload = workload
        self.seed = seed
        self.link = TbLink(dut, clks_per_bit=clks_per_bit)
        self.state = State(dut, targets)
        self.golden: Golden | None = None
        self.start: Snapshot | None = None
        self.trace: AccessTrace | None = None

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
        observation, info = await self._run(record=golden)
        golden.observation, golden.cycles = observation, info.cycles
        self.golden = golden
        if trace is not None:
            end_ns = _now_ns()  # the instant the end state was read: no edge traced since
            tb.trace_on._handle.set_signal_val_int(_IMMEDIATE, 0)
            await Timer(CLOCK_NS, "ns")  # the monitor closes the file on the next edge
            self.trace = AccessTrace.parse(trace, start_ns, end_ns)
        return golden

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
        record: Golden | None = None,
        from_checkpoint: bool = False,
        early_stop: bool = False,
    ) -> tuple[Observation, RunInfo]:
        wall, cpu = time.perf_counter(), time.process_time()
        golden = self.golden
        start = Checkpoint(0, 0, self.start)
        if from_checkpoint and golden and injection is not None:
            for cp in golden.checkpoints:
                if cp.cycle <= injection.cycle:
                    start = cp
        # Restored in this instant, before the next rising edge: from
        # here on the chip runs as it did from the checkpoint, and the first request goes
        # out in the same instant as it did in the golden run.
        await self.state.restore(start.snapshot)
        base_ns = _now_ns() - start.cycle * CLOCK_NS  # cycle c happens at base + c*10
        link = self.link
        link.queued = start.snapshot.txq_len
        link.received = start.snapshot.rxq_len
        link.deframer.reset()
        link.frames.clear()

        tally = Tally()
        counters = {"LINK_RETRIES": 0}
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

        def cycle_now() -> int:
            return (_now_ns() - base_ns) // CLOCK_NS

        step_index = start.step
        observation = None
        while True:
            if record is not None:
                record.checkpoints.append(
                    Checkpoint(step_index, cycle_now(), await self.state.snapshot())
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
                if cp.cycle == cycle_now() and await self.state.equals(cp.snapshot):
                    info = RunInfo(cycle_now() - start.cycle, start.cycle, True)
                    info.wall_s = time.perf_counter() - wall
                    info.cpu_s = time.process_time() - cpu
                    return golden.observation, info
            try:
                step = gen.send(answer)
            except StopIteration:
                break
            if isinstance(step, Idle):
                await Timer(step.cycles * CLOCK_NS, "ns")
                answer = None
            else:
                requests += 1
                payload = await self._transact(step.cmd, step.payload, requests, counters)
                if payload is False:
                    tally.hang = True
                    observation = tally.observation(None, "")
                    break
                answer = tally.answer(step, payload)
            if record is not None:
                record.answers.append(answer)
            elif golden is not None and same_as_golden:
                same_as_golden = answer == golden.answers[step_index]
            step_index += 1

        if observation is None:  # the counters, as the HAL's telemetry() reads them
            requests += 1
            final = await self._transact(*telemetry(), requests, counters)
            if final is False:
                tally.hang = True
            elif final is None or len(final) != TELEMETRY_LEN:
                tally.naks += 1
            else:
                counters.update(parse_telemetry(final))
            if record is not None:
                end = await self.state.end_parts()
                record.end, record.end_snapshot = end, await self.state.snapshot()
            elif golden is not None and golden.end_snapshot is not None:
                end = await self.state.end_parts((golden.end, golden.end_snapshot))
            else:
                end = await self.state.end_parts()
            observation = tally.observation(counters, hash_end_state(*end))
        if fault is not None and not fault.done():
            fault.cancel()
        info = RunInfo(cycle_now() - start.cycle, start.cycle, False)
        info.wall_s = time.perf_counter() - wall
        info.cpu_s = time.process_time() - cpu
        return observation, info

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
    async def _transact(self, cmd: int, payload: bytes, number: int, counters: dict):
        """The ACK payload, None for a command NAK, False when every attempt went
        unanswered (a hang). Request ``number`` uses sequence number ``number & 0xFF``."""
        link = self.link
        seq = number & 0xFF
        wire = codec.frame_encode(seq, cmd, payload)
        budget = (len(wire) + MAX_ENCODED + 16) * link.byte_ns + JOB_ALLOWANCE_CYCLES * CLOCK_NS
        for attempt in range(ATTEMPTS):
            if attempt:
                counters["LINK_RETRIES"] += 1
            link.send_bytes(wire)
            deadline = _now_ns() + budget
            resend = False
            while not resend:
                frame = await link.next_frame(timeout_ns=max(deadline - _now_ns(), 0))
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
