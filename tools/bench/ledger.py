"""``orbithil bench ledger``: what the compute-token ledger costs.

- transactions per second, a job's reserve and settle at a time, in memory and with the
  SQLite store (each transaction committed, fsync'd, before it returns, in the cache
  directory: a real disk, not tmpfs), and the latency of one stored transaction (median,
  p99);
- settlements per second with the store on disk when jobs finish together (``SETTLERS``
  threads settling at once, as a pool's chips finish theirs: group commit lets
  settlements that arrive together share one commit, none acknowledged before it is on
  disk); target >= 2,000;
- ``orbithil ledger check`` over a store of 1,000,000 posting rows (made directly in
  SQLite, a valid book of grants, reserves and settlements);
- replaying a store at start, per 10,000 transactions;
- the ground's booking: archive ingest of ledger events (each booked with its postings)
  against the same number of other events, in packets/s;
- SUBMIT_JOB's round trip on a stack on the model (sent to COMPLETED received), a
  tenant's (quoted and held: a journaled transaction and its event) against an operator's
  (not charged), alternated. (The job's JOB_DONE and settlement follow on the payload's
  10 Hz tick either way, so the time to JOB_DONE is the tick's, not the ledger's.)
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from spacepackets.ccsds.spacepacket import PacketType

from orbithil.flight import ccsds
from orbithil.flight.dictionary import APID_EVENT, EVENT_BY_NAME
from orbithil.flight.ledger import Ledger, Tenant, event_of
from orbithil.flight.ledger_store import SCHEMA, STORE_VERSION
from orbithil.flight.ledger_store import check as check_store
from orbithil.settings import cache_dir

from . import BenchResult

TENANT = Tenant(0, "acme", (2,))
SETTLERS = 8
SETTLE_TARGET = 2000.0
CHECK_TARGET_S = 15.0


def book_rate(pairs: int, store: Path | None) -> tuple[float, list[float]]:
    """(transactions/s, each stored transaction's ms) over ``pairs`` reserve+settle."""
    ledger = Ledger([TENANT], store=store)
    ledger.grant("acme", 10**12)
    each: list[float] = []
    start = time.perf_counter()
    for job in range(pairs):
        t = time.perf_counter()
        hold = ledger.reserve("acme", 500, job=job)
        each.append((time.perf_counter() - t) * 1e3)
        t = time.perf_counter()
        ledger.settle(hold.number, 300, cycles=299_000, runs=3)
        each.append((time.perf_counter() - t) * 1e3)
    rate = 2 * pairs / (time.perf_counter() - start)
    ledger.close()
    return rate, each


def replay_seconds(store: Path) -> float:
    start = time.perf_counter()
    Ledger([TENANT], store=store).close()
    return time.perf_counter() - start


def settle_rate(store: Path, jobs: int, settlers: int = SETTLERS) -> tuple[float, int]:
    """(settlements/s, commits) of ``jobs`` holds settled by ``settlers`` threads at once
    on a store on disk; every settlement is on disk when its call returns."""
    ledger = Ledger([TENANT], store=store)
    ledger.grant("acme", 10**12)
    holds = [ledger.reserve("acme", 500, job=job).number for job in range(jobs)]
    commits = ledger.commits
    share = [holds[i::settlers] for i in range(settlers)]
    go = threading.Barrier(settlers + 1)

    def settle(mine: list[int]) -> None:
        go.wait(timeout=30)
        for hold in mine:
            ledger.settle(hold, 300, cycles=299_000, runs=3)

    threads = [threading.Thread(target=settle, args=(m,)) for m in share]
    for t in threads:
        t.start()
    go.wait(timeout=30)
    start = time.perf_counter()
    for t in threads:
        t.join(timeout=600)
    seconds = time.perf_counter() - start
    if any(t.is_alive() for t in threads):
        raise RuntimeError("settlements did not finish in 600 s")
    commits = ledger.commits - commits
    ledger.check()
    ledger.close()
    return jobs / seconds, commits


def synthetic_store(path: Path, postings: int) -> int:
    """A valid store of about ``postings`` posting rows (a grant, then each job reserved
    and settled: five postings a job), written straight into SQLite; its transactions."""
    jobs = max(1, (postings - 2) // 5)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA + "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value TEXT);")
    db.executemany(
        "INSERT INTO ledger_meta VALUES (?, ?)",
        [("version", str(STORE_VERSION)), ("book", "bench"), ("created", "-")],
    )
    grant = 10 * jobs + 10
    txns = [("bench", 1, "grant", "acme", None, None, 0, 0, "", grant, 0, 0)]
    posts = [("bench", 1, "issued", -grant), ("bench", 1, "tenant:acme", grant)]
    available = grant
    for job in range(jobs):
        reserve, settle = 2 + 2 * job, 3 + 2 * job
        available -= 10
        txns.append(("bench", reserve, "reserve", "acme", job, reserve, 0, 0, "", available, 0, 0))
        posts += [("bench", reserve, "tenant:acme", -10), ("bench", reserve, "held:acme", 10)]
        available += 3
        txns.append(("bench", settle, "settle", "acme", job, reserve, 7000, 1, "", available,
                     0, 0))  # fmt: skip
        posts += [("bench", settle, "held:acme", -10), ("bench", settle, "earned:acme", 7),
                  ("bench", settle, "tenant:acme", 3)]  # fmt: skip
    db.executemany("INSERT INTO ledger_txns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", txns)
    db.executemany("INSERT INTO ledger_postings VALUES (?, ?, ?, ?)", posts)
    db.commit()
    db.close()
    return len(txns)


def check_seconds(path: Path) -> tuple[float, bool]:
    """(seconds, ok) of ``orbithil ledger check`` over the store at ``path``."""
    report = check_store(path)
    return report.seconds, report.ok


def booking_rates(folder: Path, n: int) -> tuple[float, float]:
    """Archive ingest packets/s of ``n`` ledger events and of ``n`` other events."""
    from orbithil.tools.ground.archive import Archive

    onboard = Ledger([TENANT])
    onboard.grant("acme", 10**12)
    ledger_packets, other_packets = [], []
    done = EVENT_BY_NAME["JOB_DONE"]
    for i in range(n // 2):
        hold = onboard.reserve("acme", 500, job=i)
        for txn in (hold, onboard.settle(hold.number, 300, cycles=299_000, runs=3)):
            name, fields = event_of(txn, onboard.book_id)
            text = EVENT_BY_NAME[name].format.format(**fields)
            ledger_packets.append(_event(len(ledger_packets), EVENT_BY_NAME[name].id, text))
            other = done.format.format(job=i, completed=1, items=1, correct=1, policy="none",
                                       tenant="acme", runs=1, cycles=10_656, joules=0.1,
                                       classes="7")  # fmt: skip
            other_packets.append(_event(len(other_packets), done.id, other))
    rates = []
    for name, packets in (("ledger", ledger_packets), ("other", other_packets)):
        archive = Archive(folder / f"{name}.sqlite")
        start = time.perf_counter()
        for at in range(0, len(packets), 500):
            archive.ingest([(1_750_000_000_000_000 + at + i, p)
                            for i, p in enumerate(packets[at : at + 500])])  # fmt: skip
        rates.append(len(packets) / (time.perf_counter() - start))
        archive.close()
    return rates[0], rates[1]


def _event(index: int, event_id: int, text: str) -> bytes:
    data = ccsds.event_data(index, event_id, 1, text)
    return ccsds.pack(PacketType.TM, APID_EVENT, index & 0x3FFF, data)


def submit_round_trips(folder: Path, jobs: int) -> tuple[list[float], list[float]]:
    """SUBMIT_JOB round trips (ms) of one-image jobs, a tenant's and an operator's
    alternated; each job is done (and settled) before the next is sent."""
    from orbithil import hal
    from orbithil.flight.ground import Ground, MemorySequence
    from orbithil.flight.stack import Config, FlightStack

    keys = {1: secrets.token_bytes(32), 2: secrets.token_bytes(32)}
    config = Config(udp_port=0, hk_period_ms=1000, tenants=[{"name": "acme", "key_ids": [2]}],
                    ledger={"store": str(folder / "stack.sqlite")})  # fmt: skip
    tenant_ms: list[float] = []
    operator_ms: list[float] = []
    numbers = MemorySequence()
    with hal.open("model://?harden=1") as chip:
        stack = FlightStack(chip, config, keys)
        address = stack.link.udp_address
        with stack, Ground(address, key_id=1, key=keys[1], sequence=numbers) as op, \
                Ground(address, key_id=2, key=keys[2], sequence=numbers) as acme:  # fmt: skip
            op.command("GRANT_TOKENS", tenant=0, tokens=10**9)
            op.command("SET_MODE", mode="NOMINAL")
            op.command("SET_MODE", mode="COMPUTE")
            acme.command("NOOP")  # both hear the events from now on
            for i in range(2 * jobs + 2):
                ground, out = (acme, tenant_ms) if i % 2 else (op, operator_ms)
                since = len(ground.events)
                start = time.perf_counter()
                job = ground.command_result("SUBMIT_JOB", first=i, count=1).split(":")[0]
                if i >= 2:  # the first of each: warm-up
                    out.append((time.perf_counter() - start) * 1e3)
                ground.wait_event("JOB_DONE", lambda e, j=job: e.text.startswith(f"{j} done"),
                                  since=since, timeout=30)  # fmt: skip
    return tenant_ms, operator_ms


def run(*, quick: bool = False) -> BenchResult:
    pairs = 300 if quick else 2000
    folder = Path(tempfile.mkdtemp(dir=cache_dir("bench")))
    try:
        memory_rate, _ = book_rate(pairs, None)
        store_rate, each = book_rate(pairs, folder / "bench.sqlite")
        replay = replay_seconds(folder / "bench.sqlite")
        txns = 2 * pairs + 1
        settled, commits = settle_rate(folder / "settle.sqlite", 2000 if quick else 10_000)
        rows = 100_000 if quick else 1_000_000
        synthetic_store(folder / "check.sqlite", rows)
        check_s, check_ok = check_seconds(folder / "check.sqlite")
        if not check_ok:
            raise RuntimeError("ledger check found the synthetic book wrong")
        ledger_rate, other_rate = booking_rates(folder, 2000 if quick else 10_000)
        tenant_ms, operator_ms = submit_round_trips(folder, 10 if quick else 40)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return BenchResult(
        {
            "memory_txns_per_s": round(memory_rate),
            "store_txns_per_s": round(store_rate),
            "store_txn_median_ms": round(statistics.median(each), 3),
            "store_txn_p99_ms": round(float(np.percentile(each, 99)), 3),
            "settlements_per_s": round(settled),
            "settlements_per_commit": round((2000 if quick else 10_000) / max(commits, 1), 1),
            f"ledger_check_s_{'100k' if quick else '1m'}_rows": round(check_s, 2),
            "replay_s_per_10k_txns": round(replay * 10_000 / txns, 3),
            "archive_ledger_events_per_s": round(ledger_rate),
            "archive_other_events_per_s": round(other_rate),
            "tenant_submit_median_ms": round(statistics.median(tenant_ms), 2),
            "operator_submit_median_ms": round(statistics.median(operator_ms), 2),
            "tenant_submit_p99_ms": round(float(np.percentile(tenant_ms, 99)), 2),
            "operator_submit_p99_ms": round(float(np.percentile(operator_ms, 99)), 2),
        },
        targets={
            "settlements_per_s": (">=", SETTLE_TARGET),
            **({} if quick else {"ledger_check_s_1m_rows": ("<=", CHECK_TARGET_S)}),
        },
        params={
            "pairs": pairs,
            "settlers": SETTLERS,
            "store_dir": str(cache_dir("bench")),
            "chip": "model://?harden=1",
            "jobs_each": len(tenant_ms),
        },
    )
