"""A pool of chips serving jobs: placement, sharding, reliability policies, fencing and
re-admission, and exactly-once completion.

Each chip (any HAL URL, any mix) is driven by its own thread, so there is exactly one
command in flight per chip and the chips run concurrently (a simulated chip waiting for
bytes sleeps in a socket read, not on a core). A job is a batch of items (one item: one
inference, a chain of matvecs); its items are tasks in one queue, pulled by whichever
healthy chip is free, so a large batch is sharded across the pool by itself.

Policies, per job:

| policy | runs of each item | decided by |
|---|---|---|
| ``none`` | once, on any chip | that run |
| ``rerun`` | twice on one chip; a third time there on a mismatch | agreement / majority |
| ``dmr`` | on two different chips; a third chip on a mismatch | agreement / majority |
| ``tmr`` | on three different chips | majority vote |

A run whose output differs from the decided one is a disagreement: counted, and reported
as an event naming the chip. A chip whose command times out (a hang), whose watchdog
expired, or that reports uncorrectable memory or a failed job is fenced: it takes no work,
is reset with its memory cleared, scrubbed, self-tested (a known product against numpy)
and re-admitted; the run it was doing goes back to the queue for another chip. A task
completes once, under the pool's lock; a run that finishes after its task was decided is
counted and dropped, so no job is lost or reported twice.

With ``pipeline=True`` an item is a chain of stages (the executor's ``stages``, e.g. one
per layer of a model): each chip serves one stage (chip i stage i mod stages), and an item's
decided stage output becomes its next stage's input, so chip A runs layer 1 while chip B
runs layer 2 of the item before. The policy applies per stage (a TMR pipeline of two
stages needs six chips, and votes after every layer). Sharding whole items is the default:
a pipeline is faster only when its stages are balanced and a chip's turn-around, not its
compute, limits throughput (``orbithil bench payload`` measures both).

Admission (``admit``) and per-chip permission (``chip_allowed``) are hooks the flight
stack connects to its power and thermal models: while ``admit()`` is false no run starts
and the queued items count as deferred. ``on_health`` receives each chip's telemetry as
its worker reads it; ``call`` runs an operator's operation (a scrub period, a debug
injection) on a chip's own thread between runs, so a chip still has one owner.
"""

from __future__ import annotations

import collections
import concurrent.futures
import enum
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from orbithil.errors import ConfigError
from orbithil.hal.errors import ChipFault, HalError, LinkTimeout, NakError
from orbithil.hal.icd import NakReason

log = logging.getLogger(__name__)


class Policy(enum.StrEnum):
    NONE = "none"
    RERUN = "rerun"
    DMR = "dmr"
    TMR = "tmr"


CHIPS_NEEDED = {Policy.NONE: 1, Policy.RERUN: 1, Policy.DMR: 2, Policy.TMR: 3}
# Runs of an item a policy starts with: on that many different chips (a `rerun` run is one
# chip running the item two or three times).
UNITS = CHIPS_NEEDED
MAX_UNITS = 5  # runs of one item on different chips before it is given up as undecidable


class ChipState(enum.StrEnum):
    HEALTHY = "healthy"
    FENCED = "fenced"  # taken out by the pool after a fault, being recovered
    OUT = "out"  # taken out by the operator


class Executor(Protocol):
    """What the pool runs on a chip: ``prepare`` loads what runs need (weights) into a
    chip, again after every reset; ``run`` does one item and returns its output and the
    chip cycles it took."""

    def prepare(self, chip) -> None: ...

    def run(self, chip, item: Any) -> tuple[np.ndarray, int]: ...


class StagedExecutor(Executor, Protocol):
    """An executor whose items can also run stage by stage (``Pool(pipeline=True)``)."""

    @property
    def stages(self) -> int: ...

    def run_stage(self, chip, stage: int, item: Any) -> tuple[np.ndarray, int]: ...


class PoolError(ConfigError):
    """A request the pool cannot take (unknown chip, unknown policy, too few chips)."""


@dataclass
class ItemResult:
    output: np.ndarray | None  # the decided output; None when the item failed
    chips: list[str]  # the chips whose runs decided it
    disagreements: list[str]  # chips whose run differed from the decided output
    error: str = ""
    # (chip, cycles) of every run of the item that counted (every stage's, in a pipeline;
    # not runs lost with a failing chip, nor late ones): what metering charges
    runs: tuple[tuple[str, int], ...] = ()

    @property
    def cycles(self) -> int:
        return sum(cycles for _, cycles in self.runs)


@dataclass
class JobResult:
    job_id: int
    policy: Policy
    items: list[ItemResult]
    seconds: float
    cycles: int  # chip cycles of every run, the repeated ones included

    @property
    def ok(self) -> bool:
        return all(item.output is not None for item in self.items)


@dataclass
class _Task:
    job: _Job
    index: int
    item: Any
    wanted: int = 1  # units (runs on different chips) the policy wants so far
    units: int = 0  # units finished
    running: int = 0  # units in progress
    runs: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (chip, output)
    spent: list[tuple[str, int]] = field(default_factory=list)  # (chip, cycles) per run
    used: set[str] = field(default_factory=set)  # chips that ran it or are running it
    queued: bool = True
    done: bool = False
    result: ItemResult | None = None
    stage: int = 0  # pipeline stage
    # chips, dissenters and (chip, cycles) runs of the earlier stages
    earlier: tuple[list[str], list[str], list[tuple[str, int]]] = ([], [], [])


@dataclass
class _Job:
    id: int
    policy: Policy
    tasks: list[_Task]
    started: float
    remaining: int
    cycles: int = 0
    event: threading.Event = field(default_factory=threading.Event)
    result: JobResult | None = None


@dataclass
class PoolChip:
    name: str
    chip: Any
    state: ChipState = ChipState.HEALTHY
    runs: int = 0
    faults: int = 0
    fences: int = 0
    disagreements: int = 0
    cycles: int = 0
    busy: bool = False
    last_fault: str = ""
    telemetry: dict = field(default_factory=dict)  # from the last health poll
    next_poll: float = 0.0
    ops: collections.deque = field(default_factory=collections.deque)  # (fn, Future)


@dataclass
class PoolStats:
    jobs_submitted: int = 0
    jobs_completed: int = 0
    items_completed: int = 0
    items_failed: int = 0
    runs: int = 0
    reruns: int = 0  # extra runs a mismatch asked for
    disagreements: int = 0
    late_runs: int = 0  # runs that finished after their item was decided (dropped)
    requeued: int = 0  # runs put back after their chip failed
    fences: int = 0
    readmissions: int = 0


class Pool:
    """Jobs over chips. ``chips``: (name, Chip) pairs; ``executor``: what runs on them."""

    POLL_S = 0.05
    RECOVERY_BACKOFF_S = (0.5, 2.0, 5.0)
    HEALTH_S = 0.5  # an idle chip's telemetry is read (and its watchdog kicked) this often
    WDT_CYCLES = 50_000_000  # the chips' watchdog timeout, kicked by every health poll

    def __init__(
        self,
        chips: Sequence[tuple[str, Any]],
        executor: Executor,
        *,
        on_event: Callable[..., None] | None = None,
        admit: Callable[[], bool] | None = None,
        chip_allowed: Callable[[str], bool] | None = None,
        on_run: Callable[[str, int, float], None] | None = None,
        on_health: Callable[[str, dict], None] | None = None,
        scrub_period: int = 256,
        self_test: Callable[[Any], bool] | None = None,
        wdt_cycles: int | None = None,
        fence_on: Sequence[str] = ("WDT_EXPIRIES", "ECC_UNCORRECTABLE"),
        pipeline: bool = False,
    ) -> None:
        if not chips:
            raise PoolError("a pool needs at least one chip")
        names = [name for name, _ in chips]
        if len(set(names)) != len(names):
            raise PoolError(f"chip names must differ: {names}")
        self.chips = {name: PoolChip(name, chip) for name, chip in chips}
        self.executor = executor
        self.pipeline = bool(pipeline)
        self.stages = 1
        if self.pipeline:
            self.stages = int(getattr(executor, "stages", 0))
            if self.stages < 1 or not hasattr(executor, "run_stage"):
                raise PoolError("pipeline=True needs an executor with stages and run_stage")
            if len(names) < self.stages:
                raise PoolError(
                    f"a pipeline of {self.stages} stages needs at least {self.stages} chips; "
                    f"the pool has {len(names)}"
                )
        self.stage_of = {name: i % self.stages for i, name in enumerate(names)}
        self.on_event = on_event or (lambda name, **fields: None)
        self.admit = admit or (lambda: True)
        self.chip_allowed = chip_allowed or (lambda name: True)
        self.on_run = on_run or (lambda name, cycles, seconds: None)
        self.on_health = on_health or (lambda name, values: None)
        self.scrub_period = scrub_period
        self.wdt_cycles = self.WDT_CYCLES if wdt_cycles is None else wdt_cycles
        if not 0 <= self.wdt_cycles < 1 << 32:
            raise PoolError(f"wdt_cycles={wdt_cycles}: use 0 (off) .. 2**32-1 cycles")
        self.fence_on = tuple(fence_on)
        self.self_test = self_test or default_self_test
        self.stats = PoolStats()
        self._lock = threading.Condition()
        self._queue: collections.deque[_Task] = collections.deque()
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> Pool:
        for pc in self.chips.values():
            self._configure(pc)
        for pc in self.chips.values():
            thread = threading.Thread(target=self._worker, args=(pc,), name=f"pool {pc.name}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop the workers; jobs not done by then finish with their open items failed, so
        nobody waits on them."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._lock:
            for job in self._jobs.values():
                for task in job.tasks:
                    if not task.done:
                        self._finish(task, None, error="the pool stopped")

    def __enter__(self) -> Pool:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the API ----------------------------------------------------------------------
    def submit(self, items: Sequence[Any], policy: Policy | str = Policy.NONE) -> int:
        """Queue a job of ``items`` under ``policy``; returns its id."""
        policy = self.check(policy)
        if not items:
            raise PoolError("a job needs at least one item")
        with self._lock:
            job_id = next(self._ids)
            job = _Job(job_id, policy, [], time.monotonic(), len(items))
            job.tasks = [_Task(job, i, item, wanted=UNITS[policy]) for i, item in enumerate(items)]
            self._jobs[job_id] = job
            self._queue.extend(job.tasks)
            self.stats.jobs_submitted += 1
            self._lock.notify_all()
        return job_id

    def check(self, policy: Policy | str) -> Policy:
        """``policy`` as a Policy, if the chips in service can serve it now (PoolError
        saying why not)."""
        try:
            policy = Policy(policy)
        except ValueError:
            valid = ", ".join(p.value for p in Policy)
            raise PoolError(f"policy {policy!r}: use one of {valid}") from None
        usable = min(self._in_service(stage) for stage in range(self.stages))
        if CHIPS_NEEDED[policy] > usable:
            per_stage = " per pipeline stage" if self.pipeline else ""
            raise PoolError(
                f"policy {policy.value} needs {CHIPS_NEEDED[policy]} chips{per_stage}; the "
                f"pool has {usable} in service{per_stage}"
            )
        return policy

    @staticmethod
    def nominal_runs(policy: Policy | str) -> int:
        """The runs an item takes under ``policy`` (per stage) when every run agrees."""
        policy = Policy(policy)
        return 2 if policy is Policy.RERUN else UNITS[policy]

    def max_runs(self, policy: Policy | str) -> int:
        """The most runs an item can take under ``policy`` (per stage, in a pipeline): one
        for ``none``, three for ``rerun``, and for ``dmr``/``tmr`` a chip more per mismatch,
        up to ``MAX_UNITS`` chips or every chip of a stage."""
        policy = Policy(policy)
        if policy is Policy.NONE:
            return 1
        if policy is Policy.RERUN:
            return 3
        return max(UNITS[policy], min(MAX_UNITS, self.width()))

    def result(self, job_id: int, timeout: float) -> JobResult:
        """The job's result, waiting up to ``timeout`` seconds (TimeoutError after). A job
        is forgotten once its result has been taken."""
        job = self._jobs.get(job_id)
        if job is None:
            raise PoolError(f"no job {job_id} (unknown, or its result was already taken)")
        if not job.event.wait(timeout):
            raise TimeoutError(f"job {job_id} not done within {timeout:g} s")
        assert job.result is not None
        with self._lock:
            self._jobs.pop(job_id, None)
        return job.result

    def cancel(self, job_id: int, why: str) -> None:
        """Fail every item of a job not decided yet (runs under way finish and are
        dropped); the job then completes as usual, reporting ``why`` per failed item."""
        with self._lock:
            job = self._jobs.get(job_id)
            for task in job.tasks if job is not None else ():
                if not task.done:
                    self._finish(task, None, error=why)

    def take_out(self, name: str) -> None:
        """Take a chip out of service (the operator's decision); its current run finishes."""
        pc = self._chip(name)
        with self._lock:
            pc.state = ChipState.OUT
            self._starved()
        self.on_event("CHIP_OUT", chip=name)

    def fence(self, name: str, why: str) -> None:
        """Fence a chip now (the flight stack's FDIR): it is reset, scrubbed, self-tested
        and re-admitted like one the pool fenced itself. No-op unless it is healthy."""
        self._fault(self._chip(name), None, ChipFault(why, detail="commanded"))

    def call(self, name: str, operation: Callable[[Any], Any], timeout: float) -> Any:
        """Run ``operation(chip)`` on the chip's own thread between runs and return what
        it returns (or raise what it raised); TimeoutError if the chip's thread did not
        get to it within ``timeout`` seconds (e.g. while it recovers)."""
        pc = self._chip(name)
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            pc.ops.append((operation, future))
            self._lock.notify_all()
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():
                raise TimeoutError(
                    f"chip {name} did not take the operation within {timeout:g} s "
                    f"(state {pc.state.value})"
                ) from None
            return future.result()  # it started just now: let it finish

    def width(self) -> int:
        """Chips per stage (all chips, unless it is a pipeline): the most a policy can use."""
        return min(
            sum(self.stage_of[name] == stage for name in self.chips) for stage in range(self.stages)
        )

    def healthy(self) -> int:
        """Chips in service and healthy."""
        with self._lock:
            return sum(pc.state is ChipState.HEALTHY for pc in self.chips.values())

    def put_back(self, name: str) -> None:
        """Return a chip to service, after a reset and self-test like a fenced one."""
        pc = self._chip(name)
        with self._lock:
            if pc.state is not ChipState.OUT:
                return
            pc.state = ChipState.FENCED
            self._lock.notify_all()

    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def deferred(self) -> int:
        """Items waiting only because admission is closed."""
        return 0 if self.admit() else self.queued()

    def status(self) -> dict[str, dict]:
        with self._lock:
            return {
                name: {
                    "state": pc.state.value,
                    "busy": pc.busy,
                    "runs": pc.runs,
                    "faults": pc.faults,
                    "fences": pc.fences,
                    "disagreements": pc.disagreements,
                    "cycles": pc.cycles,
                    "last_fault": pc.last_fault,
                }
                for name, pc in self.chips.items()
            }

    def _chip(self, name: str) -> PoolChip:
        try:
            return self.chips[name]
        except KeyError:
            raise PoolError(f"no chip {name!r}; chips: {', '.join(self.chips)}") from None

    # --- the workers ------------------------------------------------------------------
    def _next_task(self, pc: PoolChip) -> _Task | None:
        """A task this chip may run now (under the lock), marked as running on it. A task
        that wants more units than are running stays queued for other chips."""
        if pc.state is not ChipState.HEALTHY or not self.admit() or not self.chip_allowed(pc.name):
            return None
        for task in list(self._queue):
            if task.done:
                self._unqueue(task)
                continue
            if pc.name in task.used:
                continue  # a policy's runs go to different chips
            if self.stage_of[pc.name] != task.stage:
                continue  # a pipeline: this chip serves another stage
            task.used.add(pc.name)
            task.running += 1
            if task.units + task.running >= task.wanted:
                self._unqueue(task)
            return task
        return None

    def _enqueue(self, task: _Task) -> None:
        if not task.queued and not task.done:
            task.queued = True
            self._queue.appendleft(task)  # ahead of new work: finish what was started
            self._lock.notify_all()

    def _unqueue(self, task: _Task) -> None:
        if task.queued:
            task.queued = False
            self._queue.remove(task)

    def _operations(self, pc: PoolChip) -> None:
        while pc.ops:
            operation, future = pc.ops.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(operation(pc.chip))
            except BaseException as exc:  # the caller gets it
                future.set_exception(exc)

    def _worker(self, pc: PoolChip) -> None:
        while not self._stop.is_set():
            if pc.ops and pc.state is not ChipState.FENCED:
                self._operations(pc)
                continue
            if pc.state is ChipState.FENCED:
                self._recover(pc)
                continue
            if time.monotonic() >= pc.next_poll:
                self._health(pc)
                continue
            with self._lock:
                task = self._next_task(pc)
                if task is None:
                    if not pc.ops:
                        self._lock.wait(self.POLL_S)
                    continue
                pc.busy = True
            try:
                self._run(pc, task)
            finally:
                pc.busy = False

    def _run(self, pc: PoolChip, task: _Task) -> None:
        """One unit of ``task`` on ``pc``: one run, or for ``rerun`` two (three when they
        differ) on this chip."""
        outputs: list[np.ndarray] = []
        spent: list[int] = []  # cycles of each run
        started, cycles_before = time.monotonic(), pc.cycles  # this chip's, this thread's

        def once() -> None:
            output, cycles = self._run_once(pc, task)
            outputs.append(output)
            spent.append(cycles)

        try:
            once()
            if task.job.policy is Policy.RERUN:
                once()
                if not np.array_equal(outputs[0], outputs[1]):
                    with self._lock:
                        self.stats.reruns += 1
                    once()  # the deciding third
        except HalError as exc:
            if health_fault(exc):
                self._fault(pc, task, exc)
            else:  # the chip refused this item (a bad request): the item fails, not the chip
                self._fail_item(task, f"{type(exc).__name__}: {exc}")
            return
        except Exception as exc:  # the executor failed on this item: report it, keep the worker
            log.exception("run of job %d item %d on %s failed", task.job.id, task.index, pc.name)
            self._fail_item(task, f"{type(exc).__name__}: {exc}")
            return
        self.on_run(pc.name, pc.cycles - cycles_before, time.monotonic() - started)
        with self._lock:
            task.running -= 1
            if task.done:
                self.stats.late_runs += 1
                return
            task.units += 1
            task.runs += [(pc.name, out) for out in outputs]
            task.spent += [(pc.name, cycles) for cycles in spent]
            self._decide(task)

    def _fail_item(self, task: _Task, error: str) -> None:
        with self._lock:
            task.running -= 1
            if not task.done:
                self._finish(task, None, error=error[:300])

    def _in_service(self, stage: int = 0) -> int:
        """Chips in service (serving ``stage``, in a pipeline)."""
        return sum(
            pc.state is not ChipState.OUT and self.stage_of[name] == stage
            for name, pc in self.chips.items()
        )

    def _starved(self) -> None:
        """Under the lock: fail queued items no chip in service can run any more (every
        chip in service for their stage has run them already and none is running them)."""
        for task in list(self._queue):
            serving = {
                n
                for n, pc in self.chips.items()
                if pc.state is not ChipState.OUT and self.stage_of[n] == task.stage
            }
            if not task.done and task.running == 0 and not (serving - task.used):
                self._finish(task, None, error="no chip in service left to run it")

    def _run_once(self, pc: PoolChip, task: _Task) -> tuple[np.ndarray, int]:
        """One run of ``task`` on ``pc``: its output and the chip cycles it took."""
        if self.pipeline:
            output, spent = self.executor.run_stage(pc.chip, task.stage, task.item)  # type: ignore[attr-defined]
        else:
            output, spent = self.executor.run(pc.chip, task.item)
        with self._lock:
            pc.runs += 1
            pc.cycles += spent
            task.job.cycles += spent
            self.stats.runs += 1
        return np.asarray(output), int(spent)

    def _decide(self, task: _Task) -> None:
        """Under the lock, after a unit finished: finish the task when its runs decide
        it, else want one more unit (on another chip)."""
        if task.units + task.running < task.wanted:
            self._enqueue(task)  # a unit was lost with its chip, or more are wanted
            return
        if task.units < task.wanted:
            return  # the others are still running
        outputs = [out for _, out in task.runs]
        winner, votes = _majority(outputs)
        policy = task.job.policy
        if policy is Policy.NONE or (votes >= 2 and 2 * votes > len(outputs)):
            self._finish(task, winner)
        elif policy is Policy.RERUN:
            self._finish(task, None, error="three runs on one chip gave three answers")
        elif task.wanted < min(MAX_UNITS, self._in_service(task.stage)):
            task.wanted += 1  # a mismatch: one more chip decides
            self.stats.reruns += 1
            self._enqueue(task)
        elif task.running == 0:
            self._finish(task, None, error=f"no majority in {len(outputs)} runs")

    def _finish(self, task: _Task, output: np.ndarray | None, *, error: str = "") -> None:
        task.done = True
        self._unqueue(task)
        odd = []
        if output is not None:
            odd = [name for name, out in task.runs if not np.array_equal(out, output)]
        for name in odd:
            self.chips[name].disagreements += 1
            self.stats.disagreements += 1
            self.on_event("RESULT_DISAGREED", chip=name, job=task.job.id, item=task.index,
                          policy=task.job.policy.value)  # fmt: skip
        chips = task.earlier[0] + [n for n, _ in task.runs]
        dissent = task.earlier[1] + odd
        spent = task.earlier[2] + task.spent
        if output is not None and task.stage + 1 < self.stages:
            # a pipeline: the decided output goes on to the next stage's chips
            following = _Task(task.job, task.index, output, wanted=UNITS[task.job.policy],
                              stage=task.stage + 1, earlier=(chips, dissent, spent))  # fmt: skip
            task.job.tasks[task.index] = following
            self._queue.appendleft(following)  # ahead of new items: finish what was started
            self._lock.notify_all()
            return
        task.result = ItemResult(output, sorted(set(chips)), sorted(set(dissent)), error,
                                 tuple(spent))  # fmt: skip
        if output is None:
            self.stats.items_failed += 1
        else:
            self.stats.items_completed += 1
        job = task.job
        job.remaining -= 1
        if job.remaining == 0:
            items = [t.result for t in job.tasks]
            assert all(item is not None for item in items)
            job.result = JobResult(job.id, job.policy, items, time.monotonic() - job.started,
                                   job.cycles)  # type: ignore[arg-type]  # fmt: skip
            self.stats.jobs_completed += 1
            job.event.set()
            self.on_event("JOB_DONE", job=job.id, items=len(items), ok=int(job.result.ok))
        self._lock.notify_all()

    # --- health, faults and recovery -------------------------------------------------
    def _configure(self, pc: PoolChip) -> None:
        pc.chip.identify()
        pc.chip.write_reg("WDT_TIMEOUT", self.wdt_cycles)
        pc.chip.scrub(self.scrub_period)
        self.executor.prepare(pc.chip)
        pc.telemetry = dict(pc.chip.telemetry().values)
        pc.next_poll = time.monotonic() + self.HEALTH_S
        self.on_health(pc.name, pc.telemetry)

    def _health(self, pc: PoolChip) -> None:
        """Kick the watchdog and read telemetry; a watchdog expiry or uncorrectable memory
        since the last poll fences the chip."""
        pc.next_poll = time.monotonic() + self.HEALTH_S
        try:
            pc.chip.kick()
            now = dict(pc.chip.telemetry().values)
        except HalError as exc:
            self._fault(pc, None, exc)
            return
        before, pc.telemetry = pc.telemetry, now
        self.on_health(pc.name, now)
        for counter in self.fence_on:
            if now.get(counter, 0) > before.get(counter, 0):
                fault = ChipFault(f"{counter} rose to {now[counter]}", detail=counter)
                self._fault(pc, None, fault)
                return

    def _fault(self, pc: PoolChip, task: _Task | None, exc: Exception) -> None:
        why = f"{type(exc).__name__}: {exc}"[:200]
        with self._lock:
            pc.faults += 1
            pc.last_fault = why
            if task is not None:
                task.running -= 1
                # The unit is lost with the chip: another chip takes it, or this one once
                # it is back (it produced nothing for this item, so it counts as unused).
                task.used.discard(pc.name)
                if not task.done:
                    self._enqueue(task)
                    self.stats.requeued += 1
            fenced = pc.state is ChipState.HEALTHY
            if fenced:
                pc.state = ChipState.FENCED
                pc.fences += 1
                self.stats.fences += 1
            self._lock.notify_all()
        if fenced:
            self.on_event("CHIP_FENCED", chip=pc.name, why=why)

    def _recover(self, pc: PoolChip) -> None:
        """Reset, scrub, self-test, reload and re-admit a fenced chip; back off on failure."""
        for attempt, backoff in enumerate((0.0, *self.RECOVERY_BACKOFF_S)):
            if self._stop.wait(backoff):
                return
            try:
                pc.chip.reset(clear_memory=True)
                self.on_event("CHIP_RESET", chip=pc.name, why=f"recovery after {pc.last_fault}")
                pc.chip.scrub(self.scrub_period)
                if not self.self_test(pc.chip):
                    raise ChipFault("self-test gave a wrong product", flags=0, detail="")
                self._configure(pc)
            except Exception as exc:  # any failure: try again after the back-off
                pc.last_fault = f"recovery {attempt + 1}: {type(exc).__name__}: {exc}"[:200]
                continue
            with self._lock:
                if pc.state is ChipState.FENCED:
                    pc.state = ChipState.HEALTHY
                self.stats.readmissions += 1
                self._lock.notify_all()
            self.on_event("CHIP_READMITTED", chip=pc.name, attempts=attempt + 1)
            return
        with self._lock:  # out of service until the operator puts it back
            if pc.state is ChipState.FENCED:
                pc.state = ChipState.OUT
            self._starved()
        self.on_event("CHIP_RECOVERY_FAILED", chip=pc.name, why=pc.last_fault)


def health_fault(exc: Exception) -> bool:
    """Whether ``exc`` says the chip itself is unhealthy (as opposed to a bad request)."""
    if isinstance(exc, LinkTimeout | ChipFault):
        return True
    return isinstance(exc, NakError) and exc.reason == NakReason.MEM_UNCORRECTABLE


def _majority(outputs: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """The most common output and how many runs gave it."""
    best, votes = outputs[0], 0
    for candidate in outputs:
        count = sum(np.array_equal(candidate, other) for other in outputs)
        if count > votes:
            best, votes = candidate, count
    return best, votes


def default_self_test(chip) -> bool:
    """A known int8 product on the chip against numpy, and the chip's identity."""
    chip.identify()
    rng = np.random.default_rng(12345)
    w = rng.integers(-128, 128, (16, 32), dtype=np.int8)
    x = rng.integers(-128, 128, 32, dtype=np.int8)
    expected = w.astype(np.int32) @ x.astype(np.int32)
    return bool(np.array_equal(chip.run_matvec(w, x, base=0), expected))
