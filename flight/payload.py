"""The payload service: a pool of chips serving the on-board model, paced by the power it
may draw through the orbit and by each chip's heat.

It is the sole owner of the chips: ``payload.pool.Pool`` drives each one from its own
thread (runs, health polls that kick its watchdog, fencing and recovery), and every
operator action on a chip (scrub period, debug injection, reset, out of service) goes
through the pool to that thread. What the stack adds here:

- jobs from telecommands: ``SUBMIT_JOB`` (a range of the model's held-out test images,
  under the current policy) and ``RUN_INFERENCE`` (one image); each job ends in exactly
  one ``JOB_DONE`` (or ``INFERENCE_DONE``) event listing the class of every image;
- admission: compute runs only in COMPUTE mode and while the power model admits it
  (``payload.power.PowerModel.assess``: the battery reaches the next sunrise above its
  floor plus a margin); a chip whose thermal model is over its throttle limit takes no
  work until it cools;
- power and heat, stepped by the 10 Hz rate group on the payload clock (simulated orbit
  seconds, ``time_factor`` times faster than real time): the array from the orbit's
  sunlight (``payload.orbit``), the bus, each chip's idle power, its link while it works
  and its jobs' energy (the chip's cycle count x ENERGY_PER_CYCLE x the build's joules
  per unit);
- metering and the tenants' tokens (flight/ledger.py): every job's runs, cycles and
  joules, counted per image from the chips' own cycle counts; a tenant's job is quoted and
  its quote reserved from the tenant's tokens when it is submitted, and when it is done it
  is settled at the cycles its completed images ran (or released when none completed, or
  when the stack stops first), exactly once;
- telemetry for the pool, the power system, each chip (``CHIP<n>_*``) and each tenant
  (``TENANT<n>_*``), and events for every fence, re-admission, disagreement, deferral and
  ledger transaction.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orbithil.errors import ConfigError
from orbithil.flight.dictionary import CHIP_STATES, JOB_RESULT, MAX_CHIPS, POLICIES, QUOTE_RESULT
from orbithil.flight.ledger import STOPPED, Ledger, LedgerError, Tariff, Tenant, Txn, event_of

log = logging.getLogger(__name__)

ENERGY_PER_CYCLE = 1  # energy units per MAC-engine cycle (fpga/rtl/orbithil_chip.v default)
STATE_THROTTLED = 3  # CHIP<n>_STATE beyond the pool's own states (CHIP_STATES)


class PayloadRefused(Exception):
    """A payload command that cannot be carried out (reported as the command's failure)."""


@dataclass
class _ChipAccount:
    """What one chip drew since the last power step, and its thermal model."""

    harden: int
    url: str
    thermal: Any
    energy_j: float = 0.0  # job energy since the last step
    busy_s: float = 0.0  # simulated seconds it worked since the last step
    telemetry: dict = field(default_factory=dict)
    throttled: bool = False


@dataclass
class _JobRecord:
    indexes: list[int]
    policy: str
    single: bool  # RUN_INFERENCE: reported as INFERENCE_DONE
    tenant: Tenant | None = None  # None: an operator's job, not charged
    hold: int | None = None  # the ledger hold of a tenant's job


@dataclass(frozen=True)
class Quote:
    """What a job would hold (its worst case) and about what it would pay, in tokens."""

    images: int
    policy: str
    hold: int
    expected: int


def prior_cycles(layout, layer: int | None = None) -> int:
    """MAC cycles of one inference (or of one ``layer``) on the costliest build, before any
    has run: the hardened MAC reads each operand word twice at 8 cycles a read, plus 4 per
    output row (the model backend's count; the RTL's is close, and runs refine it)."""
    return sum((job.r1 - job.r0) * (4 * (job.c1 - job.c0) + 4) for job in layout.jobs
               if layer is None or job.layer == layer)  # fmt: skip


class Payload:
    """The pool, the power system and the thermal models, as one flight service.

    ``chips``: (url, HAL chip) pairs, named "0", "1", ... in that order."""

    OP_TIMEOUT_S = 30.0  # an operator's action waits this long for a chip's thread

    def __init__(
        self,
        chips: Sequence[tuple[str, Any]],
        *,
        telemetry,
        events,
        modes,
        clock,
        power_config,
        thermal_config,
        timeline,
        policy: str = "none",
        health_s: float = 0.5,
        scrub_period: int = 256,
        wdt_cycles: int = 50_000_000,
        pipeline: bool = False,
        ledger: Ledger | None = None,
        tariff: Tariff | None = None,
    ) -> None:
        from orbithil.payload.model import PoolExecutor, default_model
        from orbithil.payload.pool import Pool
        from orbithil.payload.power import PowerModel, ThermalModel

        if not 1 <= len(chips) <= MAX_CHIPS:
            raise ConfigError(f"the payload takes 1..{MAX_CHIPS} chips, got {len(chips)}")
        if policy not in POLICIES:
            raise ConfigError(f"policy {policy!r}: use one of {', '.join(POLICIES)}")
        self.tm = telemetry
        self.events = events
        self.modes = modes
        self.clock = clock
        self.policy = policy
        self.model = default_model()  # trained once per machine (seconds), then cached
        self.xs, self.labels = self.model.test_split()
        self.ledger = ledger or Ledger()
        self.tariff = tariff or Tariff()
        self.power = PowerModel(power_config, chips=len(chips), timeline=timeline)
        self.timeline = timeline
        self._lock = threading.Lock()
        self._accounts: dict[str, _ChipAccount] = {}
        for n, (url, chip) in enumerate(chips):
            harden = int(chip.identity.harden)
            thermal = ThermalModel(thermal_config, name=str(n))
            self._accounts[str(n)] = _ChipAccount(harden, url, thermal)
        self._unbooked_j = 0.0  # job energy not yet taken from the battery by a step
        self._energy_j = 0.0
        from orbithil.payload.model import plan_layout

        # learnt from runs: the longest single run (a whole inference, or one layer in a
        # pipeline), for a quote's worst case, and the usual cycles of an inference
        layout = plan_layout(self.model)
        self._pass_cycles = float(prior_cycles(layout))
        self._run_cycles = float(
            max(prior_cycles(layout, layer) for layer in range(len(self.model.weights)))
            if pipeline else self._pass_cycles
        )  # fmt: skip
        self._item_j = self._prior_item_j()  # energy of one inference, learnt from runs
        self._item_s = 0.05  # simulated seconds of one inference, learnt from runs
        self._last_step: float | None = None
        self._deferring = False
        self._last_corrected: tuple[float, float] | None = None
        self._done: queue.Queue[int] = queue.Queue()
        self._jobs: dict[int, _JobRecord] = {}
        # a job's submission (pool, ledger, record) is one step: a job finishing at once
        # is reported only once its record exists
        self._submit_lock = threading.Lock()
        self.pool = Pool(
            [(str(n), chip) for n, (_, chip) in enumerate(chips)],
            PoolExecutor(self.model, base=None),  # weights at the top of each chip's SRAM
            on_event=self._pool_event,
            admit=self.admit,
            chip_allowed=self._chip_allowed,
            on_run=self._on_run,
            on_health=self._on_health,
            scrub_period=scrub_period,
            wdt_cycles=wdt_cycles,
            # uncorrectable memory is the stack's FDIR's to act on (a reset and SAFE)
            fence_on=("WDT_EXPIRIES",),
            pipeline=pipeline,
        )
        self.pool.HEALTH_S = health_s
        self._ops: queue.Queue = queue.Queue(maxsize=64)
        self._stop = threading.Event()
        self._ops_thread: threading.Thread | None = None
        self.tm.set("POOL_CHIPS", len(chips))
        self.tm.set("POLICY", POLICIES.index(policy))

    def _prior_item_j(self) -> float:
        """Before any run: an inference's energy on the costliest build, from the model's
        MAC work (``prior_cycles``)."""
        config = self.power.config
        return self._pass_cycles * ENERGY_PER_CYCLE * max(config.joules_per_unit.values())

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        self.pool.start()
        self._ops_thread = threading.Thread(target=self._operations, name="payload-ops")
        self._ops_thread.daemon = True
        self._ops_thread.start()

    def stop(self) -> None:
        """Stop the pool and report what it finished; the holds of tenants' jobs are
        released, charging nothing: their results go nowhere once the link is down."""
        self._stop.set()
        self.pool.stop()
        if self._ops_thread is not None:
            self._ops_thread.join(5)
        self._finish_jobs()

    # --- operator actions (run on the payload-ops thread, each chip's on its own) -------
    def submit_op(self, operation: Callable[[], None]) -> None:
        """Queue an operator action (a telecommand's handler) for the payload-ops thread."""
        try:
            self._ops.put_nowait(operation)
        except queue.Full:
            raise PayloadRefused("the payload's command queue is full") from None

    def _operations(self) -> None:
        while not self._stop.is_set():
            try:
                operation = self._ops.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                operation()
            except Exception:  # its command reports the failure; the thread goes on
                log.exception("payload operation failed")

    def chip_name(self, index: int) -> str:
        if str(index) not in self._accounts:
            raise PayloadRefused(
                f"no chip {index}: the pool has chips 0..{len(self._accounts) - 1}"
            )
        return str(index)

    def on_chip(self, index: int, operation: Callable[[Any], Any]) -> Any:
        """Run ``operation(chip)`` on chip ``index``'s own thread; waits for it."""
        return self.pool.call(self.chip_name(index), operation, self.OP_TIMEOUT_S)

    def set_scrub(self, period: int, why: str) -> None:
        """Every chip's scrubber (and the period recovered chips get)."""
        self.pool.scrub_period = period
        for name in self._accounts:
            if self.pool.status()[name]["state"] != "fenced":  # recovery applies the period
                self.pool.call(name, lambda chip: chip.scrub(period), self.OP_TIMEOUT_S)
        self.tm.set("SCRUB_PERIOD", period)
        self.events.emit("SCRUB_SET", period=period, why=why)

    def inject(self, index: int, kind: str, where: int, bit: int, copy: int) -> None:
        def flip(chip) -> None:
            chip.arm_injection()
            chip.inject(kind, where, bit, copy)
            chip.write_reg("INJ_ARM", 0)

        self.on_chip(index, flip)

    def reset(self, index: int, why: str) -> None:
        self.pool.fence(self.chip_name(index), why)

    def fence_reporting(self, counter: str, why: str) -> list[str]:
        """Fence every chip whose last telemetry shows ``counter`` above zero."""
        with self._lock:
            names = [n for n, a in self._accounts.items() if a.telemetry.get(counter, 0) > 0]
        for name in names:
            self.pool.fence(name, why)
        return names

    def take_out(self, index: int) -> None:
        self.pool.take_out(self.chip_name(index))

    def put_back(self, index: int) -> None:
        name = self.chip_name(index)
        if self.pool.status()[name]["state"] != "out":
            raise PayloadRefused(f"chip {index} is in service already")
        self.pool.put_back(name)

    def report_status(self) -> None:
        status = self.pool.status()
        for name, s in status.items():
            account = self._accounts[name]
            self.events.emit("CHIP_STATUS", chip=name, url=account.url, state=s["state"],
                             runs=s["runs"], faults=s["faults"],
                             disagreements=s["disagreements"],
                             temp=account.thermal.temperature_c)  # fmt: skip

    def set_policy(self, policy: str) -> None:
        self.policy = policy
        self.tm.set("POLICY", POLICIES.index(policy))
        self.events.emit("POLICY_SET", policy=policy)

    # --- jobs -------------------------------------------------------------------------
    def quote(self, count: int, policy: str | None = None) -> Quote:
        """What a job of ``count`` images under ``policy`` (None or "current": the current
        one) would hold: each image run as often as the policy may run it, each run as long
        as the longest seen; and what it would pay when every run agrees. PayloadRefused
        when the chips in service cannot serve the policy."""
        from orbithil.payload.pool import PoolError

        policy = self._policy(policy)
        try:
            self.pool.check(policy)
            worst = self.pool.max_runs(policy) * self.pool.stages
            usual = self.pool.nominal_runs(policy)
        except (PoolError, ValueError) as exc:
            raise PayloadRefused(str(exc)) from None
        with self._lock:
            run_cycles, pass_cycles = self._run_cycles, self._pass_cycles
        # priced on the build its policy makes dearest; the hold as if in eclipse (the job
        # may wait into one), the expected cost as the satellite is now
        harden = max({a.harden for a in self._accounts.values()},
                     key=lambda h: self.tariff.factor(h, policy))  # fmt: skip
        hold = self._price([(harden, count * worst * run_cycles)], policy, eclipse=True)
        eclipse = not self.timeline.is_sunlit(self.clock.now())
        expected = self._price([(harden, count * usual * pass_cycles)], policy, eclipse=eclipse)
        return Quote(count, policy, hold, expected)

    def _price(self, runs, policy: str, *, eclipse: bool) -> int:
        """Tokens for ``runs`` ((harden, cycles) each): their cycles and their energy on
        their build, at the tariff's factor for the build and policy (ledger.Tariff)."""
        config = self.power.config
        return self.tariff.price(
            [(h, c, config.job_energy_j(c * ENERGY_PER_CYCLE, harden=h)) for h, c in runs],
            policy, eclipse=eclipse,
        )  # fmt: skip

    def quote_text(self, count: int, policy: str | None, tenant: Tenant | None) -> str:
        """QUOTE_JOB's completion: the quote, and what the tenant has to pay it with."""
        q = self.quote(count, policy)
        if tenant is None:
            account = "operators' jobs are not charged"
        else:
            account = f"{tenant.name} has {self.ledger.available(tenant.name)} tokens available"
        return QUOTE_RESULT.format(hold=q.hold, expected=q.expected, images=count,
                                   policy=q.policy, account=account)  # fmt: skip

    def _policy(self, policy: str | None) -> str:
        return self.policy if policy in (None, "current") else policy

    def submit(self, first: int, count: int, *, single: bool = False, policy: str | None = None,
               tenant: Tenant | None = None) -> str:  # fmt: skip
        """Queue images ``first``.. ``first+count-1`` under ``policy`` (None: the current
        one). A tenant's job reserves its quote first (PayloadRefused when the tenant has
        too few tokens). Returns the command's completion text (``JOB_RESULT``)."""
        from orbithil.payload.pool import PoolError

        n = len(self.xs)
        indexes = [(first + i) % n for i in range(count)]
        policy = self._policy(policy)
        with self._submit_lock:
            quote = None
            try:
                if tenant is not None:  # (quote refuses a policy the pool cannot serve)
                    quote = self.quote(count, policy)
                    self.ledger.affordable(tenant.name, quote.hold)
                job = self.pool.submit([self.xs[i] for i in indexes], policy)
            except (PoolError, LedgerError) as exc:
                raise PayloadRefused(str(exc)) from None
            txn = None
            if tenant is not None:
                try:
                    txn = self.ledger.reserve(tenant.name, quote.hold, job=job)
                except LedgerError as exc:  # the store could not be written: no hold
                    self.pool.cancel(job, f"not reserved: {exc}")
                    raise PayloadRefused(str(exc)) from None
            with self._lock:
                self._jobs[job] = _JobRecord(indexes, policy, single, tenant,
                                             txn.number if txn else None)  # fmt: skip
        self.tm.add("JOBS_SUBMITTED")
        if not single:
            self.events.emit("JOB_SUBMITTED", job=job, first=indexes[0], last=indexes[-1],
                             policy=policy, tenant=tenant.name if tenant else "-")  # fmt: skip
        if txn is None:
            account = "an operator's job, not charged"
        else:
            self.report(txn)
            account = (f"{tenant.name} holds {txn.tokens} tokens for it (hold {txn.number}), "
                       f"{txn.available} available")  # fmt: skip
        return JOB_RESULT.format(job=job, images=count, policy=policy, account=account)

    def grant(self, index: int, tokens: int) -> str:
        """GRANT_TOKENS: ``tokens`` more for tenant ``index``; the completion text."""
        tenant = self.tenant(index)
        try:
            txn = self.ledger.grant(tenant.name, tokens)
        except LedgerError as exc:
            raise PayloadRefused(str(exc)) from None
        self.report(txn)
        return f"{tenant.name}: {txn.available} tokens available (txn {txn.number})"

    def tenant(self, index: int) -> Tenant:
        for tenant in self.ledger.tenants.values():
            if tenant.index == index:
                return tenant
        known = ", ".join(f"{t.index} {t.name}" for t in self.ledger.tenants.values())
        if not known:
            raise PayloadRefused("no tenants are configured ([[tenants]] in the flight config)")
        raise PayloadRefused(f"no tenant {index}: the tenants are {known}")

    def resend(self, first: int, count: int) -> str:
        """LEDGER_RESEND: the events of transactions ``first``..``first+count-1`` again."""
        last = first + count - 1
        txns = self.ledger.history(first, last)
        if not txns:
            book, held = self.ledger.book_id, self.ledger.transactions
            has = f"transactions 1..{held}" if held else "no transactions"
            raise PayloadRefused(f"no transaction {first}..{last}: ledger {book} has {has}")
        for txn in txns:
            self.report(txn)
        return (f"resent {len(txns)} transactions {txns[0].number}..{txns[-1].number} of "
                f"ledger {self.ledger.book_id}")  # fmt: skip

    def report(self, txn: Txn) -> None:
        """The event of a ledger transaction (the ground books it from the event)."""
        name, fields = event_of(txn, self.ledger.book_id)
        self.events.emit(name, **fields)

    def _finish_jobs(self) -> None:
        """Report the jobs the pool finished since the last tick: one event each; settle or
        release a tenant's hold."""
        from orbithil.payload.pool import PoolError

        while True:
            try:
                job_id = self._done.get_nowait()
            except queue.Empty:
                return
            with self._submit_lock, self._lock:  # a job just submitted has its record
                record = self._jobs.pop(job_id, None)
            if record is None:  # a job cancelled as it was submitted: forget it
                with contextlib.suppress(PoolError, TimeoutError):
                    self.pool.result(job_id, timeout=0)
                continue
            result = self.pool.result(job_id, timeout=1.0)  # done: returns at once
            self._learn(result.items)
            self._report_job(record, job_id, result.items)
            self._settle(record, job_id, result.items)

    def _report_job(self, record: _JobRecord, job_id: int, items) -> None:
        """Telemetry and the JOB_DONE (or INFERENCE_DONE) event of a finished job."""
        classes, correct = [], 0
        for index, item in zip(record.indexes, items, strict=True):
            if item.output is None:
                classes.append("-")
                continue
            label = int(np.argmax(item.output))
            classes.append(str(label))
            correct += label == int(self.labels[index])
        completed = sum(c != "-" for c in classes)
        self.tm.add("JOBS_DONE")
        self.tm.add("ITEMS_DONE", completed)
        self.tm.add("ITEMS_FAILED", len(classes) - completed)
        self.tm.add("INFERENCES_CORRECT", correct)
        if record.single:
            index = record.indexes[0]
            if classes[0] == "-":
                self.events.emit("COMMAND_FAILED", command="RUN_INFERENCE",
                                 reason=items[0].error)  # fmt: skip
                return
            self.tm.set("INFERENCE_CLASS", int(classes[0]))
            self.events.emit("INFERENCE_DONE", index=index, label=int(classes[0]),
                             truth=int(self.labels[index]))  # fmt: skip
            return
        runs = [run for item in items for run in item.runs]
        self.events.emit("JOB_DONE", job=job_id, completed=completed, items=len(classes),
                         correct=correct, policy=record.policy,
                         tenant=record.tenant.name if record.tenant else "-", runs=len(runs),
                         cycles=sum(c for _, c in runs), joules=self._joules(runs),
                         classes="".join(classes))  # fmt: skip

    def _settle(self, record: _JobRecord, job_id: int, items) -> None:
        """A tenant's finished job: charge the cycles its completed images ran, or release
        its hold when none completed or the stack is stopping (the results are not
        delivered). Exactly once: the record was popped."""
        if record.hold is None:
            return
        billed = [run for item in items if item.output is not None for run in item.runs]
        cycles = sum(c for _, c in billed)
        try:
            if self._stop.is_set():
                txn = self.ledger.release(record.hold, STOPPED)
            elif billed:
                eclipse = not self.timeline.is_sunlit(self.clock.now())
                cost = self._price([(self._accounts[chip].harden, c) for chip, c in billed],
                                   record.policy, eclipse=eclipse)  # fmt: skip
                txn = self.ledger.settle(record.hold, cost, cycles=cycles,
                                         runs=len(billed))  # fmt: skip
            else:
                errors = sorted({item.error for item in items if item.error})
                txn = self.ledger.release(record.hold, "no image completed: " +
                                          ("; ".join(errors)[:200] or "unknown"))  # fmt: skip
        except LedgerError as exc:  # the store cannot be written: the hold stays open
            log.critical("job %d of %s not settled: %s", job_id, record.tenant.name, exc)
            return
        self.report(txn)

    def _learn(self, items) -> None:
        """Refine the cycles of a run (longest) and of an inference (usual) from runs."""
        with self._lock:
            for item in items:
                if item.output is None or not item.runs:
                    continue
                self._run_cycles = max(self._run_cycles, *(c for _, c in item.runs))
                per_pass = item.cycles * self.pool.stages / len(item.runs)
                self._pass_cycles = 0.8 * self._pass_cycles + 0.2 * per_pass

    def _joules(self, runs) -> float:
        config = self.power.config
        return sum(config.job_energy_j(cycles * ENERGY_PER_CYCLE,
                                       harden=self._accounts[chip].harden)
                   for chip, cycles in runs)  # fmt: skip

    # --- hooks the pool calls -----------------------------------------------------------
    def _pool_event(self, name: str, **fields) -> None:
        if name == "JOB_DONE":
            self._done.put(fields["job"])
            return
        if name == "CHIP_FENCED":
            self.tm.add("FENCES")
        elif name == "CHIP_READMITTED":
            self.tm.add("READMISSIONS")
        elif name == "RESULT_DISAGREED":
            self.tm.add("DISAGREEMENTS")
        self.events.emit(name, **fields)

    def admit(self) -> bool:
        """Whether compute may start now (called by the pool before each run)."""
        if self.modes.mode != "COMPUTE":
            return False
        return self._assess().admit

    def _assess(self):
        now = self.clock.now()
        with self._lock:
            # what finished runs drew since the last step, and what every chip could be
            # drawing right now
            pending = self._unbooked_j + self._item_j * len(self._accounts)
            return self.power.assess(self._item_j, self._item_s, now, pending_j=pending)

    def _chip_allowed(self, name: str) -> bool:
        return not self._accounts[name].throttled

    def _on_run(self, name: str, cycles: int, seconds: float) -> None:
        account = self._accounts[name]
        joules = self.power.config.job_energy_j(cycles * ENERGY_PER_CYCLE, harden=account.harden)
        sim_s = seconds * getattr(self.clock, "factor", 1.0)
        with self._lock:
            account.energy_j += joules
            account.busy_s += sim_s
            self._unbooked_j += joules
            self._energy_j += joules
            self._item_j = max(0.8 * self._item_j + 0.2 * joules, joules)  # no under-estimate
            self._item_s = 0.8 * self._item_s + 0.2 * sim_s

    def _on_health(self, name: str, values: dict) -> None:
        with self._lock:
            self._accounts[name].telemetry = dict(values)

    @property
    def uptime_cycles(self) -> int | None:
        """Chip 0's UPTIME as last read (the stack's clock when it counts chip time)."""
        with self._lock:
            return self._accounts["0"].telemetry.get("UPTIME")

    # --- the 10 Hz rate group ---------------------------------------------------------------
    def tick(self) -> None:
        """Step power and heat to now, report finished jobs, publish telemetry."""
        now = self.clock.now()
        sunlit = self.timeline.is_sunlit(now)
        with self._lock:
            dt = 0.0 if self._last_step is None else max(0.0, now - self._last_step)
            self._last_step = now
            loads = []
            for account in self._accounts.values():
                busy = min(account.busy_s, dt)
                load = self.power.config.chip_load_w(dt, busy_s=busy, job_energy_j=account.energy_j)
                loads.append(load)
                account.thermal.step(dt, load)
                account.energy_j = account.busy_s = 0.0
            self.power.step(dt, sunlit, loads)
            self._unbooked_j = 0.0
            energy = self._energy_j
        self._finish_jobs()
        self._throttle()
        self._deferral(sunlit)
        self._publish(now, loads, energy)

    def _throttle(self) -> None:
        for name, account in self._accounts.items():
            hot = account.thermal.throttled
            if hot and not account.throttled:
                self.events.emit("CHIP_THROTTLED", chip=name, temp=account.thermal.temperature_c)
            account.throttled = hot

    def _deferral(self, sunlit: bool) -> None:
        """Events when the power system starts or stops holding queued compute back."""
        queued = self.pool.queued()
        if self.modes.mode != "COMPUTE":
            return
        admission = self._assess()
        if not admission.admit and queued and not self._deferring:
            self._deferring = True
            self.events.emit("JOBS_DEFERRED", reason=admission.reason)
        elif admission.admit and self._deferring:
            self._deferring = False
            self.events.emit("JOBS_RESUMED", reason=admission.reason)

    def _publish(self, now: float, loads: list[float], energy: float) -> None:
        tm = self.tm
        status = self.pool.status()
        queued = self.pool.queued()
        held = self.modes.mode != "COMPUTE" or self._deferring
        tm.set("JOBS_QUEUED", queued)
        tm.set("JOBS_DEFERRED", queued if held else 0)
        tm.set("POOL_HEALTHY", sum(s["state"] == "healthy" for s in status.values()))
        power = self.power.telemetry()
        for channel in ("SOC", "BATTERY_WH", "POWER_IN_W", "POWER_OUT_W", "SUNLIT"):
            tm.set(channel, power[channel])
        tm.set("SOC_MIN", self.power.min_soc)
        tm.set("ORBIT_TIME_S", now)
        tm.set("ENERGY_J", energy)
        temps = []
        sums = dict.fromkeys(("ECC_CORRECTED", "ECC_UNCORRECTABLE", "TMR_MISMATCH",
                              "WDT_EXPIRIES", "JOB_COUNT", "ENERGY"), 0)  # fmt: skip
        with self._lock:
            telemetry = {name: dict(a.telemetry) for name, a in self._accounts.items()}
        for (name, account), load in zip(self._accounts.items(), loads, strict=True):
            s, n = status[name], int(name)
            state = CHIP_STATES.index(s["state"])
            if state == 0 and account.throttled:
                state = STATE_THROTTLED
            temps.append(account.thermal.temperature_c)
            tm.set(f"CHIP{n}_STATE", state)
            tm.set(f"CHIP{n}_RUNS", s["runs"])
            tm.set(f"CHIP{n}_FAULTS", s["faults"])
            tm.set(f"CHIP{n}_DISAGREEMENTS", s["disagreements"])
            tm.set(f"CHIP{n}_TEMP_C", account.thermal.temperature_c)
            tm.set(f"CHIP{n}_POWER_W", load)
            tm.set(f"CHIP{n}_ECC_CORRECTED", telemetry[name].get("ECC_CORRECTED", 0))
            tm.set(f"CHIP{n}_FEC_CORRECTED", telemetry[name].get("FEC_CORRECTED", 0))
            tm.set(f"CHIP{n}_PARITY_ERRORS", telemetry[name].get("PARITY_ERRORS", 0))
            for key in sums:
                sums[key] += telemetry[name].get(key, 0)
        tm.set("TEMP_MAX_C", max(temps))
        for key, value in sums.items():
            tm.set(key, value)
        healthy = all(s["state"] == "healthy" for s in status.values())
        tm.set("CHIP_HEALTHY", int(healthy))
        tm.set("CHIP_UPTIME", telemetry["0"].get("UPTIME", 0))
        tm.set("CHIP_STATUS", telemetry["0"].get("STATUS", 0))
        self._rate(sums["ECC_CORRECTED"])
        self._publish_ledger()

    def _publish_ledger(self) -> None:
        self.tm.set("LEDGER_ID", int(self.ledger.book_id, 16))
        book = self.ledger.summary()
        for channel, key in (("LEDGER_TXNS", "txns"), ("TOKENS_ISSUED", "issued"),
                             ("TOKENS_HELD", "held"), ("TOKENS_EARNED", "earned"),
                             ("HOLDS_OPEN", "holds")):  # fmt: skip
            self.tm.set(channel, book[key])
        for tenant in self.ledger.tenants.values():
            totals, n = self.ledger.totals(tenant.name), tenant.index
            self.tm.set(f"TENANT{n}_AVAILABLE", totals.available)
            self.tm.set(f"TENANT{n}_HELD", totals.held)
            self.tm.set(f"TENANT{n}_SPENT", totals.spent)
            self.tm.set(f"TENANT{n}_CYCLES", totals.cycles)
            self.tm.set(f"TENANT{n}_JOBS", totals.jobs)

    RATE_WINDOW_S = 1.0

    def _rate(self, corrected: float) -> None:
        """ECC corrections per second (wall time) over the pool, for the FDIR's scrub rule,
        over windows of a second (the chips' counters are read every health poll)."""
        now = time.monotonic()
        last = self._last_corrected
        if last is None or corrected < last[1]:  # a chip was reset: its count restarted
            self._last_corrected = (now, corrected)
            return
        if now - last[0] >= self.RATE_WINDOW_S:
            rate = (corrected - last[1]) / (now - last[0])
            if math.isfinite(rate):
                self.tm.set("ECC_CORRECTED_RATE", rate)
            self._last_corrected = (now, corrected)
