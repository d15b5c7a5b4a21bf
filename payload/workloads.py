"""Workloads: short scripts of HAL-level operations, written once, run on every backend.

A workload is a generator. It yields steps, a ``Request`` (one command frame) or an
``Idle`` (let the chip run, e.g. so the scrubber sweeps), and receives each request's ACK
payload, or None when the chip refused it (a NAK) or answered something malformed.
Later steps may depend on earlier answers (the inference workload requantises a layer's
output on the host and feeds it to the next layer), as a real host program would.

Two drivers run the same generator:

- ``run_on_chip`` drives a ``hal.Chip`` (model, sim over the serial bridge, a board);
- ``sim.engine`` drives it inside cocotb, in simulated time, for fault injection.

Each request says what its answer means for the outcome classifier (``sim.classify``):
``output`` answers are the workload's results (compared with the golden run), ``job``
answers carry a MAC job status (non-zero is a detected error), ``check`` answers only
have to be ACKs (their contents, e.g. uptime, are not results).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from orbithil.hal import protocol as p
from orbithil.hal.errors import HalError, LinkTimeout, NakError, ProtocolError
from orbithil.hal.icd import MAX_MEM_WORDS_PER_FRAME, REG, RW_REGISTERS, Cmd
from orbithil.payload.classify import Observation

OUTPUT, JOB, CHECK = "output", "job", "check"

# Expected ACK payload lengths per command (None: variable, checked by the parser).
RESPONSE_LEN = {
    Cmd.PING: 8,
    Cmd.READ_REG: 5,
    Cmd.WRITE_REG: 5,
    Cmd.READ_MEM: None,
    Cmd.WRITE_MEM: 3,
    Cmd.RUN_JOB: 5,
    Cmd.TELEMETRY: 64,
    Cmd.SOFT_RESET: 0,
    Cmd.SCRUB: 4,
    Cmd.INJECT: 5,
}


@dataclass(frozen=True)
class Request:
    cmd: int
    payload: bytes
    kind: str = CHECK  # OUTPUT, JOB or CHECK

    @classmethod
    def of(cls, request: tuple[int, bytes], kind: str = CHECK) -> Request:
        return cls(request[0], request[1], kind)


@dataclass(frozen=True)
class Idle:
    cycles: int


Step = Request | Idle
Script = Generator[Step, bytes | None, None]


def parse_answer(request: Request, payload: bytes) -> bytes:
    """Check an ACK payload's shape for ``request``; ProtocolError if it is malformed."""
    want = RESPONSE_LEN.get(request.cmd)
    if want is not None and len(payload) != want:
        raise ProtocolError(f"answer to 0x{request.cmd:02X} has {len(payload)} bytes, want {want}")
    if request.cmd == Cmd.READ_MEM:
        p.parse_mem(payload)  # raises on a count/length mismatch
    return payload


# --- HAL-level operations as steps ---------------------------------------------------
def write_mem(addr: int, words: np.ndarray):
    words = np.asarray(words, dtype=np.uint32).ravel()
    for start in range(0, len(words), MAX_MEM_WORDS_PER_FRAME):
        yield Request.of(p.write_mem(addr + start, words[start : start + MAX_MEM_WORDS_PER_FRAME]))


def read_mem(addr: int, count: int, *, kind: str = OUTPUT):
    """The words (uint32), or None if any part was refused (an uncorrectable word)."""
    parts = []
    for start in range(0, count, MAX_MEM_WORDS_PER_FRAME):
        n = min(MAX_MEM_WORDS_PER_FRAME, count - start)
        answer = yield Request.of(p.read_mem(addr + start, n), kind)
        if answer is None:
            return None
        parts.append(p.parse_mem(answer)[1])
    return np.concatenate(parts)


def write_reg(name: str, value: int, *, kind: str = CHECK):
    answer = yield Request.of(p.write_reg(REG[name].addr, value), kind)
    return None if answer is None else p.parse_reg(answer)[1]


def read_reg(name: str, *, kind: str = OUTPUT):
    answer = yield Request.of(p.read_reg(REG[name].addr), kind)
    return None if answer is None else p.parse_reg(answer)[1]


def matvec(w_addr: int, x_addr: int, y_addr: int, x: np.ndarray, rows: int, cols: int):
    """Load x, run the job on weights already at ``w_addr``, read y back (int32 or None)."""
    yield from write_mem(x_addr, p.pack_int8(x))
    answer = yield Request.of(p.run_job(w_addr, x_addr, y_addr, rows, cols), JOB)
    if answer is None or p.parse_job(answer)[0] != 0:
        return None
    words = yield from read_mem(y_addr, rows)
    return None if words is None else p.unpack_int32(words)


def telemetry():
    yield Request.of(p.telemetry())


def idle(cycles: int):
    yield Idle(cycles)


# --- the workloads -------------------------------------------------------------------
def control(rng: np.random.Generator) -> Script:
    """Register-heavy: configure, write and read back scratch registers, kick the
    watchdog, take telemetry (the flight software's housekeeping loop)."""
    yield from write_reg("WDT_TIMEOUT", 60_000)
    yield from write_reg("SCRUB_PERIOD", 0)
    for _ in range(6):
        a, b = (int(v) for v in rng.integers(0, 2**32, 2))
        yield from write_reg("SCRATCH0", a)
        yield from write_reg("SCRATCH1", b)
        yield from write_reg("WDT_KICK", 1)
        yield from read_reg("SCRATCH0")
        yield from read_reg("SCRATCH1")
        yield from read_reg("WDT_TIMEOUT")
        yield from telemetry()
    yield from write_reg("WDT_TIMEOUT", 0)


MEMORY_WORDS = 192


def memory(rng: np.random.Generator) -> Script:
    """Fill a block, let the scrubber sweep the SRAM, read the block back."""
    data = rng.integers(0, 2**32, MEMORY_WORDS, dtype=np.uint64).astype(np.uint32)
    yield from write_mem(0, data)
    yield Request.of(p.scrub(2))
    yield from idle(2 * 2048 * 4)  # two sweeps of every word at two cycles a step, with slack
    yield Request.of(p.scrub(0))
    yield from read_mem(0, MEMORY_WORDS)
    yield from read_reg("SCRUB_PERIOD")


# A small quantised network: 32 int8 inputs -> 16 hidden (ReLU) -> 8 outputs.
LAYERS = ((16, 32), (8, 16))
REQUANT_SHIFT = 7


def network(rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """The network's weights and one input, from ``rng``."""
    weights = [rng.integers(-64, 64, size=shape).astype(np.int8) for shape in LAYERS]
    x = rng.integers(-128, 128, size=LAYERS[0][1]).astype(np.int8)
    return weights, x


def requantise(y: np.ndarray) -> np.ndarray:
    """int32 accumulators -> int8 activations: ReLU, shift, saturate (done on the host)."""
    return np.clip(np.maximum(y, 0) >> REQUANT_SHIFT, 0, 127).astype(np.int8)


def forward(weights: list[np.ndarray], x: np.ndarray, matvec) -> np.ndarray:
    """The network's output, each layer's product from ``matvec(w, act)`` (numpy, or a
    chip's ``run_matvec``); the host requantises between layers."""
    act = x
    for i, w in enumerate(weights):
        y = matvec(w, act)
        act = requantise(y) if i < len(weights) - 1 else y
    return act


def reference_inference(rng: np.random.Generator) -> np.ndarray:
    """The network's output computed in numpy: what the chip must produce."""
    weights, x = network(rng)
    return forward(weights, x, lambda w, act: w.astype(np.int32) @ act.astype(np.int32))


def inference(rng: np.random.Generator) -> Script:
    """Load every layer's weights, then run the layers as matvec jobs; the host
    requantises each layer's output into the next layer's input."""
    weights, x = network(rng)
    addrs, base = [], 0
    for w in weights:  # weights of every layer first, as a deployed model sits in SRAM
        addrs.append(base)
        yield from write_mem(base, p.pack_int8(w))
        base += w.size // 4
    x_addr, y_addr = base, base + 16
    act = x
    for i, (w, w_addr) in enumerate(zip(weights, addrs, strict=True)):
        rows, cols = w.shape
        y = yield from matvec(w_addr, x_addr, y_addr, act, rows, cols)
        if y is None:  # the chip refused the job or the read: a detected error
            return
        if i < len(weights) - 1:
            act = requantise(y)


def digits(rng: np.random.Generator) -> Script:
    """The on-board model (``payload.model``) classifying one held-out digit, drawn by
    ``rng``: its weights resident in SRAM as ``ChipRunner`` lays them out, each layer's
    tiles run as MAC jobs, the host requantising between layers. The outputs are every
    layer's int32 results, the last being the logits (the class is their argmax)."""
    from orbithil.payload.model import BIAS_INPUTS, default_model, plan_layout, requantise

    model = default_model()
    xs, _ = model.test_split()
    act = xs[int(rng.integers(0, len(xs)))]
    layout = plan_layout(model)
    yield from write_mem(layout.base, layout.weights)
    for addr, w in zip(layout.act_addr, model.weights, strict=True):
        yield from write_mem(addr + w.shape[1] // 4 - 1, p.pack_int8(BIAS_INPUTS))
    for i, w in enumerate(model.weights):
        yield from write_mem(layout.act_addr[i], p.pack_int8(act))
        for job in layout.layer_jobs(i):
            request = p.run_job(
                job.w_addr, job.x_addr, job.y_addr, job.r1 - job.r0, job.c1 - job.c0
            )
            answer = yield Request.of(request, JOB)
            if answer is None or p.parse_job(answer)[0] != 0:
                return  # the chip refused the job or it failed: a detected error
        words = yield from read_mem(layout.out_addr[i], layout.out_words[i])
        if words is None:
            return
        y = layout.gather(i, words, w.shape[0])
        if i < len(model.weights) - 1:
            act = requantise(y, model.multipliers[i], model.shifts[i])


WORKLOADS: dict[str, Callable[[np.random.Generator], Script]] = {
    "control": control,
    "memory": memory,
    "inference": inference,
    "digits": digits,
}


def script(name: str, seed: int = 0) -> Script:
    """A fresh run of workload ``name`` (its data drawn from ``seed``)."""
    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"no workload {name!r}; workloads: {', '.join(WORKLOADS)}") from None
    return factory(np.random.default_rng(seed))


# --- what a run saw, kept the same way by every driver --------------------------------
@dataclass
class Tally:
    """Outputs, NAKs and job errors of one run, and whether it hung; both drivers feed
    it, so a run means the same on a chip behind the HAL and inside the engine."""

    outputs: list[str] = field(default_factory=list)
    naks: int = 0
    job_errors: int = 0
    hang: bool = False

    def answer(self, step: Request, payload: bytes | None) -> bytes | None:
        """Record the answer to ``step`` (None: refused); returns what the script gets."""
        if payload is not None:
            try:
                payload = parse_answer(step, payload)
            except ProtocolError:
                payload = None
        if payload is None:
            self.naks += 1
            if step.kind == OUTPUT:
                self.outputs.append("nak")
            return None
        if step.kind == OUTPUT:
            self.outputs.append(payload.hex())
        elif step.kind == JOB and p.parse_job(payload)[0] != 0:
            self.job_errors += 1
        return payload

    def observation(self, counters: dict | None, end_state: str) -> Observation:
        return Observation(
            outputs=tuple(self.outputs),
            end_state=end_state,
            counters=dict(counters or {}),
            naks=self.naks,
            job_errors=self.job_errors,
            hang=self.hang,
        )


# --- the driver for a hal.Chip --------------------------------------------------------
def run_on_chip(
    chip,
    name: str,
    seed: int = 0,
    *,
    end_state: bool = True,
    before_step: dict[int, Callable[[], None]] | None = None,
) -> Observation:
    """Run workload ``name`` on a ``hal.Chip``: a NAK is counted and the script goes on, a
    link timeout is a hang (the run stops there). The HAL retries damaged frames itself;
    its retries count as ``LINK_RETRIES``. ``before_step[k]`` is called just before step
    k goes out (the board path injects there)."""
    tally = Tally()
    gen = script(name, seed)
    answer = None
    retries = chip.link.stats.retries
    index = 0
    try:
        while True:
            step = gen.send(answer)
            if before_step and index in before_step:
                before_step[index]()
            index += 1
            if isinstance(step, Idle):
                _idle_on_chip(chip, step.cycles)
                answer = None
                continue
            try:
                payload = chip.call((step.cmd, step.payload))
            except LinkTimeout:
                tally.hang = True
                return tally.observation(None, "")
            except HalError:
                payload = None
            answer = tally.answer(step, payload)
    except StopIteration:
        pass
    try:
        counters = dict(chip.telemetry().values)
        counters["LINK_RETRIES"] = chip.link.stats.retries - retries
        return tally.observation(counters, chip_end_state(chip) if end_state else "")
    except LinkTimeout:
        tally.hang = True
        return tally.observation(None, "")


def _idle_on_chip(chip, cycles: int, *, timeout_s: float = 30.0) -> None:
    """Let ``cycles`` clock cycles pass on the chip, timed by its own UPTIME counter (the
    same on a board, the free-running simulation and the model)."""
    start = chip.read_reg("UPTIME")
    deadline = time.monotonic() + timeout_s
    while (chip.read_reg("UPTIME") - start) % 2**32 < cycles:
        if time.monotonic() > deadline:
            raise LinkTimeout(f"the chip's UPTIME did not advance {cycles} cycles in {timeout_s} s")


def chip_end_state(chip) -> str:
    """The end state read through the ICD: read-write registers and SRAM, and how many
    SRAM words needed a correction on the way (a flip still sitting in a word is state
    that differs, as the simulator's raw codewords show it)."""
    digest = hashlib.sha256()
    corrected = chip.read_reg("ECC_CORRECTED")
    for reg in RW_REGISTERS:
        digest.update(reg.name.encode() + chip.read_reg(reg.name).to_bytes(4, "big"))
    words = chip.identity.mem_words
    for start in range(0, words, MAX_MEM_WORDS_PER_FRAME):
        n = min(MAX_MEM_WORDS_PER_FRAME, words - start)
        try:
            digest.update(chip.read_mem(start, n).tobytes())
        except NakError:
            digest.update(b"uncorrectable %d" % start)
    digest.update(b"corrected %d" % (chip.read_reg("ECC_CORRECTED") - corrected))
    return digest.hexdigest()
