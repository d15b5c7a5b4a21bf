"""The ledger survives ``kill -9``: ``orbithil fly`` and ``orbithil ground serve`` are each
killed at seeded random moments while tenants' jobs are submitted and settled, restarted,
and after every restart ``ledger check`` proves the books balance, every acknowledged
hold is in the book, and no hold was closed twice. In the end each tenant's balance is its
grants minus its settled charges, to the token, on board and on the ground."""

from __future__ import annotations

import os
import random
import re
import secrets
import signal
import sqlite3
import threading
import time

from orbithil.flight.ground import Ground, MemorySequence
from orbithil.flight.ledger_store import check
from tests.test_ground_browser import start
from tests.test_ground_server import start_serve, wait_until

SEED = 20261201
KILLS = 4  # of the flight stack
SERVER_KILLS = 3  # of the ground server (each start imports the web stack: seconds)
POWER = {"battery_wh": 10_000.0, "initial_soc": 1.0}  # compute never waits for power here
TENANTS_TOML = (
    '[[tenants]]\nname = "acme"\nkey_ids = [2]\n[[tenants]]\nname = "bolt"\nkey_ids = [3]\n'
)
HOLD = re.compile(r"job \d+: .* holds \d+ tokens for it \(hold (\d+)\)")


def balances(path) -> dict[str, int]:
    """Each account's balance in a ledger store or archive: the sum of its postings."""
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT account, SUM(amount) FROM ledger_postings GROUP BY account"))


def reserves(path) -> set[int]:
    with sqlite3.connect(path) as db:
        return {n for (n,) in db.execute("SELECT txn FROM ledger_txns WHERE kind = 'reserve'")}


class Submitter:
    """Tenants' jobs submitted one after another from a thread until ``stop``; the holds the
    stack acknowledged (a SUBMIT_JOB completed: the hold is on disk)."""

    def __init__(self, grounds: dict[str, Ground], seed: int) -> None:
        self.grounds, self.rng = grounds, random.Random(seed)
        self.acknowledged: list[tuple[str, int]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            tenant = self.rng.choice(sorted(self.grounds))
            try:
                text = self.grounds[tenant].command_result(
                    "SUBMIT_JOB", first=self.rng.randrange(100), count=2, timeout=3
                )
            except Exception as exc:  # the stack killed under it, or a refusal
                self.errors.append(str(exc))
                if self._stop.wait(0.2):
                    return
                continue
            self.acknowledged.append((tenant, int(HOLD.match(text).group(1))))
            if self._stop.wait(self.rng.uniform(0.05, 0.25)):  # paced: the pool keeps up
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=20)
        assert not self._thread.is_alive()


def test_orbithil_fly_killed_at_random_moments_never_loses_or_charges_a_token_twice(tmp_path):
    print(f"seed {SEED}")
    rng = random.Random(SEED)
    keys = {n: secrets.token_bytes(32) for n in (1, 2, 3)}  # the operators', acme's, bolt's
    (tmp_path / "keys").write_text("".join(f"{k} {v.hex()}\n" for k, v in keys.items()))
    store = tmp_path / "ledger.sqlite"
    power = "".join(f"{k} = {v}\n" for k, v in POWER.items())
    (tmp_path / "fly.toml").write_text(f'hk_period_ms = 100\n{TENANTS_TOML}[ledger]\n'
                                       f'store = "{store}"\n[power]\n{power}')  # fmt: skip
    env = {**os.environ, "ORBITHIL_STATE_DIR": str(tmp_path / "state")}
    numbers = MemorySequence(1)  # each start of the stack has a fresh replay window
    acknowledged: list[tuple[str, int]] = []
    for round_ in range(KILLS + 1):
        ready = tmp_path / f"fly{round_}.json"
        fly, info = start(["fly", "--chip", "model://", "--chip", "model://?harden=0",
                           "--config", str(tmp_path / "fly.toml"), "--keys",
                           str(tmp_path / "keys"), "--port", "0", "--ready-file", str(ready)],
                          ready, tmp_path / f"fly{round_}.log", env)  # fmt: skip
        address = tuple(info["udp"])
        try:
            with Ground(address, key_id=1, key=keys[1], sequence=numbers) as op, \
                    Ground(address, key_id=2, key=keys[2], sequence=numbers) as acme, \
                    Ground(address, key_id=3, key=keys[3], sequence=numbers) as bolt:  # fmt: skip
                if round_ == 0:
                    op.command("GRANT_TOKENS", tenant=0, tokens=100_000)
                    op.command("GRANT_TOKENS", tenant=1, tokens=50_000)
                op.command("SET_MODE", mode="NOMINAL")
                op.command("SET_MODE", mode="COMPUTE")
                jobs = Submitter({"acme": acme, "bolt": bolt}, rng.randrange(2**32))
                if round_ < KILLS:
                    wait_until(lambda j=jobs: len(j.acknowledged) >= 2, timeout=30,
                               what="two jobs held")  # fmt: skip
                    time.sleep(rng.uniform(0.0, 1.0))  # a random moment, jobs under way
                    os.kill(fly.pid, signal.SIGKILL)
                    fly.wait(10)
                    jobs.stop()
                else:  # the last run: every job done, then a clean stop
                    wait_until(lambda j=jobs: len(j.acknowledged) >= 4, timeout=30,
                               what="four jobs held")  # fmt: skip
                    jobs.stop()
                    op.wait_telemetry("HOLDS_OPEN", lambda v: v == 0, timeout=30)
                    fly.send_signal(signal.SIGTERM)
                    assert fly.wait(20) == 0
                acknowledged += jobs.acknowledged
        finally:
            if fly.poll() is None:
                fly.kill()
                fly.wait(10)
        report = check(store)
        assert report.ok, (round_, report.problems)
        # nothing acknowledged was lost: every hold a SUBMIT_JOB reported is in the book
        assert {hold for _, hold in acknowledged} <= reserves(store)
    assert len(acknowledged) >= KILLS * 2 + 4
    with sqlite3.connect(store) as db:
        granted = dict(db.execute("SELECT tenant, SUM(amount) FROM ledger_postings JOIN "
                                  "ledger_txns USING (book, txn) WHERE kind = 'grant' AND "
                                  "account LIKE 'tenant:%' GROUP BY tenant"))  # fmt: skip
        closes = db.execute("SELECT COUNT(*), COUNT(DISTINCT hold) FROM ledger_txns WHERE kind "
                            "IN ('settle', 'release')").fetchone()  # fmt: skip
    assert granted == {"acme": 100_000, "bolt": 50_000}
    assert closes[0] == closes[1] == len(reserves(store))  # every hold closed, once
    money = balances(store)
    for tenant in ("acme", "bolt"):  # what is left is the grants minus the settled charges
        assert money.get(f"held:{tenant}", 0) == 0
        assert money[f"tenant:{tenant}"] == granted[tenant] - money[f"earned:{tenant}"]
        assert money[f"earned:{tenant}"] > 0


def test_ground_serve_killed_at_random_moments_keeps_a_copy_that_agrees(flight_stack, tmp_path):
    print(f"seed {SEED}")
    rng = random.Random(SEED + 1)
    store = tmp_path / "ledger.sqlite"
    (tmp_path / "tenants.toml").write_text(TENANTS_TOML)
    fs = flight_stack(["model://", "model://?harden=0"], hk_period_ms=100,
                      tenants=[{"name": "acme", "key_ids": [2]}, {"name": "bolt", "key_ids": [3]}],
                      ledger={"store": str(store)}, power=POWER)  # fmt: skip
    (tmp_path / "keys").write_text(f"1 {fs.keys[1].hex()}\n")
    fs.ground.command("GRANT_TOKENS", tenant=0, tokens=100_000)
    fs.ground.command("GRANT_TOKENS", tenant=1, tokens=50_000)
    fs.ground.command("SET_MODE", mode="NOMINAL")
    fs.ground.command("SET_MODE", mode="COMPUTE")
    archive = tmp_path / "ground.sqlite"
    options = ("--tenants", str(tmp_path / "tenants.toml"), "--ledger-check-s", "0.3")
    jobs = Submitter({"acme": fs.ground_for(2), "bolt": fs.ground_for(3)}, rng.randrange(2**32))
    try:
        for round_ in range(SERVER_KILLS):
            server, _, log = start_serve(tmp_path, fs.stack.link.udp_address, archive,
                                         f"serve{round_}", options)  # fmt: skip
            try:
                had = fs.stack.ledger.transactions
                wait_until(lambda h=had: fs.stack.ledger.transactions >= h + 2, timeout=30,
                           what="two more transactions")  # fmt: skip
                time.sleep(rng.uniform(0.0, 0.8))  # a random moment, events arriving
                server.send_signal(signal.SIGKILL)
                server.wait(10)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait(10)
                log.close()
            report = check(archive, against=store)
            assert report.ok, (round_, report.problems)
    finally:
        jobs.stop()
    fs.ground.wait_telemetry("HOLDS_OPEN", lambda v: v == 0, timeout=30)
    # the last start: what the archive missed while it was down is asked for again
    server, _, log = start_serve(tmp_path, fs.stack.link.udp_address, archive, "last", options)
    try:
        everything = fs.stack.ledger.transactions
        wait_until(lambda: check(archive, against=store).books[0]["txns"] == everything,
                   timeout=60, what="every transaction in the archive")  # fmt: skip
        server.send_signal(signal.SIGTERM)
        assert server.wait(20) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
        log.close()
    report = check(archive, against=store)
    assert report.ok and report.books[0]["missing"] == 0, report.problems
    assert balances(archive) == balances(store)  # the copy agrees, to the token
    assert len(jobs.acknowledged) >= 2 * SERVER_KILLS
