"""Planning and running a campaign: the plan into the store, then the executors.

Executors:

- ``local``: worker threads, each driving one engine process (one simulator per
  worker) on a chunk of injections at a time; results stream back as they finish.
- ``dask``: chunks as Dask tasks on a cluster (``scheduler`` address) or on a
  ``LocalCluster``; Dask re-runs the tasks of a worker that dies, and a failed task is
  retried. Results come back per chunk; a chunk Dask gives up on (``KilledWorker``) is
  reported (``ChunksFailed``) once every other chunk is stored, and a rerun does it.

The engine is deterministic, so the same spec and seed give the same results on either.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from orbithil.errors import ConfigError
from orbithil.payload.classify import observation_from_dict, observation_to_dict
from orbithil.sim import inject
from orbithil.sim.faults import (
    FaultModel,
    Injection,
    TargetSpace,
    injection_from_dict,
    injection_to_dict,
)
from orbithil.tools.campaign.spec import Spec, check_size
from orbithil.tools.campaign.stats import sample_size
from orbithil.tools.campaign.store import Store, StoreError, sqlite_problem


@dataclass(frozen=True)
class BuildPlan:
    setup: inject.Setup
    space: TargetSpace
    golden: inject.GoldenRecord
    population: int  # (bit, cycle) pairs: the fault space the sample is drawn from
    n: int


def setups(spec: Spec) -> list[inject.Setup]:
    return [inject.Setup(spec.simulator, h, spec.workload, spec.workload_seed) for h in spec.harden]


def plan_builds(spec: Spec) -> list[BuildPlan]:
    """Each build's target space, golden run and sample size (runs golden if needed)."""
    plans = []
    for setup in setups(spec):
        space = TargetSpace(
            setup.targets(), blocks=set(spec.blocks) or None, glob=spec.glob or None
        )
        golden = inject.golden(setup)
        population = space.total_bits * golden.cycles
        if spec.injections is not None:
            n = spec.injections
        else:
            n = sample_size(spec.margin, spec.confidence, population)
        check_size(spec, n, population, f"HARDEN={setup.harden}")
        plans.append(BuildPlan(setup, space, golden, population, n))
    return plans


def injections_for(spec: Spec, build: BuildPlan) -> list[Injection]:
    return build.space.plan(
        build.n,
        seed=spec.seed,
        cycles=(0, build.golden.cycles - 1),
        model=FaultModel(spec.model),
        mbu_size=spec.mbu_bits,
        stuck_cycles=spec.stuck_cycles,
    )


def create(store_path, spec: Spec) -> Store:
    """A new store holding the spec, every build's golden run and the whole plan."""
    store = Store(store_path, create=True)
    if store.planned:
        existing = store.meta("spec")
        wanted = json.loads(json.dumps(spec.to_dict()))  # as stored: tuples become lists
        if existing != wanted | {"source": existing.get("source", "")}:
            store.close()
            raise StoreError(
                f"{store_path} already holds a campaign with another spec; resume it with "
                "`orbithil campaign run --store` alone, or give a new store path"
            )
        return store
    rows = []
    for build in plan_builds(spec):
        rows.append(
            (
                {
                    "harden": build.setup.harden,
                    "sim": build.setup.sim,
                    "workload": build.setup.workload,
                    "seed": build.setup.seed,
                },
                build.space.bits_per_block(),
                build.golden.cycles,
                build.golden.observation,
                injections_for(spec, build),
            )
        )
    store.write_plan(spec.to_dict(), rows)
    return store


# --- execution ---------------------------------------------------------------------------
@dataclass
class RunStats:
    done: int = 0
    seconds: float = 0.0
    store_seconds: float = 0.0  # time spent committing results
    outcomes: Counter | None = None


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_chunk(setup: dict, items: list[tuple[int, dict]]) -> list[dict]:
    """One chunk on whatever machine runs it (the Dask task): results as plain data."""
    results = inject.run_plan(
        inject.Setup(**setup), [(pid, injection_from_dict(d)) for pid, d in items]
    )
    return [
        {
            "plan_id": r.index,
            "outcome": r.outcome.value,
            "observation": observation_to_dict(r.observation),
            "info": r.info,
        }
        for r in results
    ]


def execute(
    store: Store,
    spec: Spec,
    *,
    on_result: Callable[[str], None] | None = None,
    workers: int | None = None,
    executor: str | None = None,
    scheduler: str | None = None,
) -> RunStats:
    """Run every pending injection of ``store``; commits each result as it arrives."""
    by_setup = {
        s["id"]: inject.Setup(s["sim"], s["harden"], s["workload"], s["seed"])
        for s in store.setups()
    }
    pending = store.pending()
    work = [
        (by_setup[setup_id], chunk)
        for setup_id, items in pending.items()
        for chunk in _chunks(items, spec.chunk)
    ]
    stats = RunStats(outcomes=Counter())
    started = time.perf_counter()
    results: queue.Queue = queue.Queue()

    def commit(plan_id: int, outcome: str, observation, info: dict) -> None:
        t = time.perf_counter()
        try:
            added = store.add_result(plan_id, outcome, observation, info)
        except sqlite3.Error as exc:  # a full disk, a store removed or made read-only
            raise StoreError(
                f"{sqlite_problem(store.path, exc)}; the campaign stopped, the "
                f"{stats.done} results of this run before it are kept"
            ) from None
        stats.store_seconds += time.perf_counter() - t
        if added:
            stats.done += 1
            stats.outcomes[outcome] += 1
            if on_result is not None:
                on_result(outcome)

    executor = executor or spec.executor
    if work and executor == "local":
        for setup in by_setup.values():
            inject.golden(setup)  # built and cached once, before the workers start
        _execute_local(work, workers or spec.worker_count, results, commit)
    elif work:
        _execute_dask(
            work,
            scheduler if scheduler is not None else spec.scheduler,
            workers or spec.worker_count,
            commit,
            resume=f"orbithil campaign run --store {store.path}",
        )
    stats.seconds = time.perf_counter() - started
    return stats


class _Stopped(Exception):
    """Raised in a worker thread to end its engine process once the campaign stops."""


STOP_GRACE_S = 60.0  # after Ctrl-C, the longest wait for running engines to hand over


def _execute_local(work, n_workers: int, results: queue.Queue, commit) -> None:
    """Worker threads, one engine process each, committing in this thread as results
    come. On Ctrl-C (or a store that cannot be written) the workers are told to stop: no
    chunk starts, a running engine is ended at its next result, and every result that
    finished is committed before the exception goes on."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def deliver(result) -> None:
        results.put(result)  # a finished result is kept, even when stopping
        if stop.is_set():
            raise _Stopped

    def worker(setup: inject.Setup, chunk) -> None:
        try:
            for attempt in (1, 2):  # a failed worker's chunk is retried once
                if stop.is_set():
                    return
                try:
                    inject.run_plan(setup, chunk, on_result=deliver)
                    return
                except inject.EngineError as exc:
                    if attempt == 2:
                        failures.append(exc)  # reported after the others finish
        except _Stopped:
            pass
        except BaseException as exc:
            failures.append(exc)
        finally:
            results.put(None)

    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="campaign")
    futures = []
    try:
        futures = [pool.submit(worker, setup, chunk) for setup, chunk in work]
        finished = 0
        while finished < len(work):
            item = results.get()
            if item is None:
                finished += 1
                continue
            commit(item.index, item.outcome.value, item.observation, item.info)
    except BaseException as exc:
        stop.set()
        for future in futures:
            future.cancel()  # chunks not started never start
        storing = not isinstance(exc, StoreError)  # a store that failed takes nothing more
        deadline = time.monotonic() + STOP_GRACE_S
        while True:
            running = not all(f.done() for f in futures)
            if running and time.monotonic() > deadline:
                break
            try:
                item = results.get(timeout=0.05)
            except queue.Empty:
                if running:
                    continue
                break
            if item is not None and storing:
                try:
                    commit(item.index, item.outcome.value, item.observation, item.info)
                except StoreError:
                    storing = False
        raise
    finally:
        # joined when every chunk ended (always, but for an engine past STOP_GRACE_S)
        pool.shutdown(wait=all(f.done() for f in futures), cancel_futures=True)
    if failures:
        raise failures[0]


class ChunksFailed(StoreError):
    """Chunks that failed on a cluster; what the others found is in the store."""


SCHEDULER_CONNECT_S = 10.0  # a scheduler that does not answer within this is unreachable


def connect_scheduler(address: str, *, timeout_s: float = SCHEDULER_CONNECT_S):
    """A Dask client of the scheduler at ``address``; a ConfigError saying
    so (not an OSError traceback) when it cannot be reached within ``timeout_s``."""
    from dask.distributed import Client

    try:
        return Client(address, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address} within {timeout_s:g} s "
            f"({type(exc).__name__}: {exc}); start one there (`dask scheduler`), fix the "
            "address, or run with --executor local"
        ) from None


def _execute_dask(work, scheduler: str, n_workers: int, commit, *, resume: str) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = connect_scheduler(scheduler)
    else:
        cluster = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(cluster)
    try:
        futures = [
            client.submit(
                run_chunk,
                {"sim": s.sim, "harden": s.harden, "workload": s.workload, "seed": s.seed},
                [(pid, injection_to_dict(inj)) for pid, inj in chunk],
                retries=1,
                pure=False,
            )
            for s, chunk in work
        ]
        failed: list[str] = []
        for future in as_completed(futures):
            try:
                results = future.result()
            except Exception as exc:  # a chunk that failed on the cluster (KilledWorker: its
                failed.append(f"{type(exc).__name__}: {exc}")  # workers kept dying under it)
                continue  # the other chunks go on and are kept
            for r in results:
                commit(
                    r["plan_id"], r["outcome"], observation_from_dict(r["observation"]), r["info"]
                )
        if failed:
            raise ChunksFailed(
                f"{len(failed)} of {len(futures)} chunks failed on the Dask cluster (first: "
                f"{failed[0][:300]}); every other chunk's results are kept: `{resume}` runs "
                "the rest"
            )
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
