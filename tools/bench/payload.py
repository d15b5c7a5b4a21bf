"""``orbithil bench payload``: the on-board model served by a pool of chips.

- ``inferences_per_s_<backend>_<n>``: test images classified per second through
  ``payload.pool`` (policy ``none``) on 1 and on 2 chips, on the behavioural model
  (``model://``) and on the RTL under Verilator (``sim://verilator``). The runs alternate
  1, 2, 1, 2, ... on disjoint chunks of the test split, each on a pool opened for it (a
  1-chip run has no second chip sitting idle); each keeps its best. ``scaling_2_over_1``
  is the simulated chips' ratio (target >= 1.6 on 2 cores). ``_2_pipelined``: the same 2
  chips as a pipeline (``Pool(pipeline=True)``: chip0 runs layer 1, chip1 layer 2), and
  ``pipeline_over_shard_<backend>`` its ratio to sharding: the digits model's layers are
  unbalanced (64x68 against 10x68 weights), so sharding wins and is the default.
- ``sim_idle_cpu_share``: CPU seconds per second a simulated chip uses while nobody
  talks to it (its simulator and every process of its session).
- ``foreign_cpu_cores_<backend>``: the most CPU (in cores) other processes on the machine
  used during one of the timed throughput runs: a figure measured while it is well above
  0 is not this code's.
- ``accuracy_float``, ``accuracy_int8`` (numpy) and ``accuracy_chip`` (the chips, through
  the pool) on the same test images; ``logit_mismatches`` counts chip outputs that differ
  from numpy's int8 logits in any run of this benchmark (0: bit for bit).
- ``policy_cost_<policy>``: seconds per item under ``rerun``, ``dmr`` and ``tmr`` over
  ``none``, the same items on the same three chips, in turn, best of the repeats;
  ``policy_runs_<policy>``: the chip runs per item under each (``none`` included).
- failover: jobs on three chips while one chip's line goes dead (every command times out:
  the pool fences it, recovers it once the line is back, and re-admits it) and another is
  taken out and put back. ``jobs_lost`` (no result, or an item without an answer) and
  ``jobs_duplicated`` (a job reported done more than once, or more items completed than
  were submitted) must be 0, and ``failover_wrong_classes`` (an item whose class is not
  numpy's) too.

The model chips run in this process (the GIL: two of them do not scale); the simulated
ones each run their simulator in a process of its own. The last backend benchmarked
(``sim`` when it is) serves the accuracy, policy and failover measurements.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from orbithil import hal
from orbithil.payload.model import (
    PoolExecutor,
    QuantisedModel,
    accuracy,
    default_model,
)
from orbithil.payload.pool import ChipState, Policy, Pool

from . import BenchResult

BACKENDS = {"model": "model://?harden=1", "sim": "sim://verilator?harden=1"}
POLICIES = (Policy.RERUN, Policy.DMR, Policy.TMR)
JOB_TIMEOUT_S = 600.0
FAULT_TIMEOUT_S = 0.3  # per attempt on the chip whose line dies: it is fenced in about a second


@dataclass(frozen=True)
class Sizes:
    """How much each part of the benchmark runs."""

    images: dict[str, int]  # test images per backend, split over the repeats of each size
    repeats: int = 3
    policy_items: int = 24
    policy_repeats: int = 2
    failover_jobs: int = 30
    failover_items: int = 4  # per job
    idle_s: float = 2.0  # how long a simulated chip is watched while idle


FULL = Sizes(images={"model": 90, "sim": 450}, repeats=5)
QUICK = Sizes(
    images={"model": 30, "sim": 90},
    repeats=2,
    policy_items=8,
    policy_repeats=1,
    failover_jobs=12,
    failover_items=3,
    idle_s=1.0,
)


def run(
    *, quick: bool = False, backends: Sequence[str] = tuple(BACKENDS), sizes: Sizes | None = None
) -> BenchResult:
    sizes = sizes or (QUICK if quick else FULL)
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends {list(backends)}: use some of {', '.join(BACKENDS)}")
    model = default_model()
    served = backends[-1]
    xs, labels = model.test_split(limit=max(sizes.images[b] for b in backends))
    expected = model.logits(xs)
    check = _Checker(expected)
    metrics: dict[str, float | int | str] = {}

    for backend in backends:
        n_images = sizes.images[backend]
        best, foreign = _throughput(backend, model, xs[:n_images], sizes.repeats, check)
        for chips, rate in best.items():
            metrics[f"inferences_per_s_{backend}_{chips}"] = round(rate, 2)
        metrics[f"scaling_2_over_1_{backend}"] = round(best[2] / best[1], 3)
        metrics[f"pipeline_over_shard_{backend}"] = round(best["2_pipelined"] / best[2], 3)
        metrics[f"foreign_cpu_cores_{backend}"] = round(foreign, 2)
    if "sim" in backends:
        metrics["scaling_2_over_1"] = metrics["scaling_2_over_1_sim"]
        metrics["sim_idle_cpu_share"] = round(_idle_cpu_share(BACKENDS["sim"], sizes.idle_s), 3)

    n_images = sizes.images[served]
    chip_logits = check.classified(n_images)
    metrics |= {
        "test_images": n_images,
        "accuracy_float": round(accuracy(model.float_logits(xs[:n_images]), labels[:n_images]), 4),
        "accuracy_int8": round(accuracy(expected[:n_images], labels[:n_images]), 4),
        "accuracy_chip": round(accuracy(chip_logits, labels[:n_images]), 4),
    }

    costs = _policy_costs(served, model, xs[: sizes.policy_items], sizes.policy_repeats, check)
    for key, value in costs.items():
        metrics[f"policy_{key}"] = round(value, 3)

    metrics |= _failover(served, model, xs, sizes, check)
    metrics["logit_mismatches"] = check.mismatches
    return BenchResult(
        metrics=metrics,
        targets={
            **({"scaling_2_over_1": (">=", 1.6)} if "sim" in backends else {}),
            "jobs_lost": ("<=", 0),
            "jobs_duplicated": ("<=", 0),
            "failover_wrong_classes": ("<=", 0),
            "logit_mismatches": ("<=", 0),
        },
        params={
            "backends": {b: BACKENDS[b] for b in backends},
            "served_by": served,
            "model": model.sha256[:16],
            "cores": os.cpu_count(),
            **asdict(sizes),
        },
    )


class _Checker:
    """Every output of every run against numpy's int8 logits (by test image index)."""

    def __init__(self, expected: np.ndarray) -> None:
        self.expected = expected
        self.mismatches = 0
        self.seen: dict[int, np.ndarray] = {}

    def outputs(self, indices: Sequence[int], result) -> list[np.ndarray]:
        out = []
        for index, item in zip(indices, result.items, strict=True):
            if item.output is None:
                raise RuntimeError(f"image {index} got no answer: {item.error}")
            if not np.array_equal(item.output, self.expected[index]):
                self.mismatches += 1
            self.seen[index] = item.output
            out.append(item.output)
        return out

    def classified(self, n: int) -> np.ndarray:
        missing = [i for i in range(n) if i not in self.seen]
        if missing:
            raise RuntimeError(f"{len(missing)} test images were never run on a chip")
        return np.array([self.seen[i] for i in range(n)])


@contextlib.contextmanager
def _pool(urls: Sequence[str], model: QuantisedModel, **options) -> Iterator[Pool]:
    """A started pool of chips at ``urls`` (the model resident at the top of their SRAM)."""
    chips: list = []
    try:
        for i, url in enumerate(urls):
            timeout = FAULT_TIMEOUT_S if url.startswith("fault://") else 5.0
            retries = 1 if url.startswith("fault://") else 3
            chips.append((f"chip{i}", hal.open(url, timeout=timeout, retries=retries)))
        with Pool(chips, PoolExecutor(model, base=None), **options) as pool:  # at the top
            yield pool
    finally:
        for _, chip in chips:
            chip.close()


def _timed_job(pool: Pool, items: Sequence[np.ndarray], policy: Policy) -> tuple[float, object]:
    started = time.perf_counter()
    result = pool.result(pool.submit(list(items), policy), timeout=JOB_TIMEOUT_S)
    return time.perf_counter() - started, result


def _throughput(
    backend: str, model: QuantisedModel, xs: np.ndarray, repeats: int, check: _Checker
) -> tuple[dict[int | str, float], float]:
    """Best inferences/s on 1 and on 2 chips (sharding whole inferences), and on 2 chips
    as a pipeline (chip0 layer 1, chip1 layer 2), in turn, each repeat on its own chunk;
    and the largest share of a core that other processes used during one of those runs."""
    best = {1: 0.0, 2: 0.0, "2_pipelined": 0.0}
    foreign = 0.0
    for chunk in np.array_split(np.arange(len(xs)), repeats):
        for key in best:
            chips, pipeline = (2, True) if key == "2_pipelined" else (key, False)
            with _pool([BACKENDS[backend]] * chips, model, pipeline=pipeline) as pool:
                sessions = [_session_of(pc.chip) for pc in pool.chips.values()]
                before = _cpu_now(sessions)
                seconds, result = _timed_job(pool, xs[chunk], Policy.NONE)
                foreign = max(foreign, _foreign_share(before, _cpu_now(sessions), seconds))
            check.outputs(chunk, result)
            best[key] = max(best[key], len(chunk) / seconds)
    return best, foreign


def _policy_costs(
    backend: str, model: QuantisedModel, xs: np.ndarray, repeats: int, check: _Checker
) -> dict[str, float]:
    """Seconds per item under each policy over ``none``'s, on one pool of three chips
    (``cost_<policy>``), and the chip runs each item took under it (``runs_<policy>``:
    counted, not timed, so it holds on a busy machine)."""
    best = {policy: float("inf") for policy in (Policy.NONE, *POLICIES)}
    runs = dict.fromkeys(best, 0)
    indices = range(len(xs))
    with _pool([BACKENDS[backend]] * 3, model) as pool:

        def total_runs() -> int:
            return sum(chip["runs"] for chip in pool.status().values())

        for _ in range(repeats):
            for policy in best:
                before = total_runs()
                seconds, result = _timed_job(pool, xs, policy)
                runs[policy] += total_runs() - before
                check.outputs(indices, result)
                best[policy] = min(best[policy], seconds)
    items = repeats * len(xs)
    return {
        **{f"cost_{p.value}": best[p] / best[Policy.NONE] for p in POLICIES},
        **{f"runs_{p.value}": runs[p] / items for p in (Policy.NONE, *POLICIES)},
    }


def _failover(
    backend: str, model: QuantisedModel, xs: np.ndarray, sizes: Sizes, check: _Checker
) -> dict[str, int]:
    """Jobs through three chips while chip0's line dies and comes back and chip1 is taken
    out and put back; every job must complete exactly once, every item with its class."""
    done = Counter()  # job id -> JOB_DONE events
    events = Counter()
    lock = threading.Lock()

    def on_event(name: str, **fields) -> None:
        with lock:
            events[name] += 1
            if name == "JOB_DONE":
                done[fields["job"]] += 1

    rng = np.random.default_rng(7)
    url = BACKENDS[backend]
    urls = [f"fault://{url}{'&' if '?' in url else '?'}seed=1", url, url]
    with _pool(urls, model, on_event=on_event) as pool:
        pool.RECOVERY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
        line = pool.chips["chip0"].chip.link.port  # the fault:// port in front of chip0
        jobs: dict[int, np.ndarray] = {}
        for _ in range(sizes.failover_jobs):
            chosen = rng.integers(0, len(xs), sizes.failover_items)
            jobs[pool.submit(list(xs[chosen]), Policy.NONE)] = chosen
        deadline = time.monotonic() + JOB_TIMEOUT_S
        _wait(lambda: pool.status()["chip0"]["runs"] >= 2, deadline)
        line.drop = 1.0  # chip0's line goes dead: its commands time out, it is fenced
        _wait(lambda: pool.status()["chip0"]["state"] != ChipState.HEALTHY.value, deadline)
        pool.take_out("chip1")  # and the operator takes chip1 out meanwhile
        time.sleep(0.2)
        line.drop = 0.0  # the line comes back: recovery re-admits chip0
        pool.put_back("chip1")
        lost = wrong = 0
        for job_id, chosen in jobs.items():
            try:
                result = pool.result(job_id, timeout=max(deadline - time.monotonic(), 1.0))
            except TimeoutError:
                lost += 1
                continue
            if not result.ok:
                lost += 1
                continue
            for index, item in zip(chosen, result.items, strict=True):
                wrong += int(np.argmax(item.output)) != int(np.argmax(check.expected[index]))
            check.outputs(chosen, result)
        stats = pool.stats
    total_items = sizes.failover_jobs * sizes.failover_items
    duplicated = sum(n - 1 for n in done.values() if n > 1)
    duplicated += max(stats.items_completed - total_items, 0)
    return {
        "jobs_submitted": sizes.failover_jobs,
        "jobs_lost": lost,
        "jobs_duplicated": duplicated,
        "failover_wrong_classes": wrong,
        "failover_fences": stats.fences,
        "failover_readmissions": stats.readmissions,
        "failover_requeued_runs": stats.requeued,
        "failover_late_runs_dropped": stats.late_runs,
    }


def _wait(condition, deadline: float) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the failover run did not reach its next stage in time")
        time.sleep(0.01)


def _session_of(chip) -> int | None:
    """The session of a simulated chip's processes (sim.backend starts its child in a
    session of its own, with the simulator in it); None for a chip in this process."""
    proc = getattr(chip._backend, "proc", None)
    return None if proc is None else proc.pid


def _cpu_now(sessions: Sequence[int | None]) -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, of which this process and the
    simulated chips' sessions) so far; NaNs without /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan"), float("nan")
    busy = sum(fields) - fields[3] - fields[4]  # everything but idle and iowait
    own = sum(os.times()[:2]) + sum(_session_cpu_s(s) for s in sessions if s is not None)
    return busy / os.sysconf("SC_CLK_TCK"), own


def _foreign_share(
    before: tuple[float, float], after: tuple[float, float], seconds: float
) -> float:
    """Cores' worth of CPU other processes used between two ``_cpu_now`` readings."""
    return max((after[0] - before[0]) - (after[1] - before[1]), 0.0) / seconds


def _idle_cpu_share(url: str, seconds: float) -> float:
    """CPU seconds per second of a simulated chip's processes (its session) while the
    host sends nothing (Linux: from /proc; NaN elsewhere)."""
    with hal.open(url) as chip:
        chip.identify()
        session = _session_of(chip)
        if session is None:
            return float("nan")
        time.sleep(0.2)  # let the last answer's steps settle
        before, started = _session_cpu_s(session), time.monotonic()
        time.sleep(seconds)
        return (_session_cpu_s(session) - before) / (time.monotonic() - started)


def _session_cpu_s(session: int) -> float:
    if not os.path.isdir("/proc"):
        return float("nan")
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # fields after the name: state, ppid, pgrp, session
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")
