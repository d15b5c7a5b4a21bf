"""Tenants on a running flight stack (model chips): each tenant commands with its own key
and may only quote and submit; a job is quoted, its quote held from the tenant's tokens,
and settled once at the cycles its images ran; operators' jobs are not charged; a job the
stack stops before it runs is released, and the book survives a restart."""

from __future__ import annotations

import json
import math
import re
import sqlite3

import pytest

from orbithil.flight.dictionary import EVENT_BY_NAME
from orbithil.flight.ground import CommandRejected
from orbithil.flight.ledger import Ledger, tenants_from_data
from orbithil.flight.ledger_store import check as check_store
from orbithil.payload.orbit import Orbit

TENANTS = [{"name": "acme", "key_ids": [2]}, {"name": "bolt", "key_ids": [3]}]
HARDENED_INFERENCE = 20_720  # MAC cycles of one digits inference on the hardened model chip


def fields(event) -> dict:
    return EVENT_BY_NAME[event.name].parse(event.text)


def test_a_tenants_job_is_quoted_held_and_settled_once_for_the_cycles_its_images_ran(
    flight_stack,
):
    fs = flight_stack(["model://?harden=1", "model://?harden=0", "model://?harden=0"],
                      hk_period_ms=50, tenants=TENANTS)  # fmt: skip
    g = fs.ground
    assert g.command_result("GRANT_TOKENS", tenant=0, tokens=1000) == (
        "acme: 1000 tokens available (txn 1)"
    )
    g.command("SET_MODE", mode="NOMINAL")
    g.command("SET_MODE", mode="COMPUTE")
    acme = fs.ground_for(2)
    # before any run the quote assumes the hardened build's cycles; dmr on three chips may
    # run an image three times (a third chip on a mismatch), two when both agree
    quote = acme.command_result("QUOTE_JOB", count=4, policy="dmr")
    hold = math.ceil(4 * 3 * HARDENED_INFERENCE / 1000)
    assert quote == (f"quote: hold {hold} tokens (about {math.ceil(hold * 2 / 3)}) for 4 "
                     "images under dmr; acme has 1000 tokens available")  # fmt: skip
    since = len(acme.events)
    submitted = acme.command_result("SUBMIT_JOB", first=10, count=4, policy="dmr")
    assert submitted == (f"job 1: 4 images under dmr; acme holds {hold} tokens for it "
                         f"(hold 2), {1000 - hold} available")  # fmt: skip
    done = fields(acme.wait_event("JOB_DONE", timeout=30, since=since))
    settled = fields(acme.wait_event("JOB_SETTLED", timeout=10, since=since))
    assert done["policy"] == "dmr" and done["tenant"] == "acme" and done["completed"] == "4"
    cycles = int(done["cycles"])
    charged = math.ceil(cycles / 1000)  # every image completed: every run is charged
    assert settled == {"book": fs.stack.ledger.book_id, "txn": "3", "job": "1", "tenant": "acme",
                       "hold": "2", "charged": str(charged), "cycles": str(cycles),
                       "runs": done["runs"], "released": str(hold - charged),
                       "available": str(1000 - charged)}  # fmt: skip
    assert int(done["runs"]) == 8 and charged < hold  # two runs an image, not all hardened
    g.wait_telemetry("TENANT0_SPENT", lambda v: v == charged, timeout=5)
    t = g.telemetry
    assert (t["TENANT0_AVAILABLE"], t["TENANT0_HELD"], t["TENANT0_CYCLES"]) == (
        1000 - charged, 0, cycles)  # fmt: skip
    assert (t["TENANT0_JOBS"], t["TENANT1_AVAILABLE"], t["TOKENS_ISSUED"]) == (1, 0, 1000)
    assert (t["TOKENS_EARNED"], t["HOLDS_OPEN"], t["LEDGER_TXNS"]) == (charged, 0, 3)
    assert "TENANT2_AVAILABLE" not in t  # only configured tenants have telemetry
    assert sum(e.name == "JOB_SETTLED" for e in g.events) == 1  # exactly once
    fs.stack.ledger.check()

    # a single inference is a job of one image, charged the same way
    since = len(acme.events)
    assert acme.command_result("RUN_INFERENCE", index=3).startswith("job 2: 1 images under none")
    acme.wait_event("INFERENCE_DONE", timeout=10, since=since)
    one = fields(acme.wait_event("JOB_SETTLED", timeout=10, since=since))
    assert one["job"] == "2" and one["runs"] == "1"

    # more than the tenant has: refused, and nothing is booked
    txns = fs.stack.ledger.transactions
    with pytest.raises(CommandRejected, match=r"tenant acme has \d+ tokens available and this "
                                              r"job's quote is \d+: ask an operator"):  # fmt: skip
        acme.command("SUBMIT_JOB", first=0, count=256, policy="tmr")
    assert fs.stack.ledger.transactions == txns


def test_a_tenants_key_may_only_quote_and_submit_and_operators_jobs_are_not_charged(
    flight_stack,
):
    fs = flight_stack("model://?harden=0", hk_period_ms=50, tenants=TENANTS)
    g = fs.ground
    bolt = fs.ground_for(3)
    bolt.command("NOOP")
    operators = {"SET_MODE": {"mode": "NOMINAL"}, "GRANT_TOKENS": {"tenant": 1, "tokens": 5},
                 "CHIP_RESET": {}, "SET_POLICY": {"policy": "rerun"}}  # fmt: skip
    for name, args in operators.items():
        with pytest.raises(CommandRejected, match=f"key 3 is tenant bolt's: a tenant may send "
                           f"NOOP, RUN_INFERENCE, SUBMIT_JOB, QUOTE_JOB; {name} is the "
                           "operators'"):  # fmt: skip
            bolt.command(name, **args)
    with pytest.raises(CommandRejected, match="not allowed in SAFE"):
        bolt.command("SUBMIT_JOB", first=0, count=1)
    with pytest.raises(CommandRejected, match="no tenant 5: the tenants are 0 acme, 1 bolt"):
        g.command("GRANT_TOKENS", tenant=5, tokens=10)
    with pytest.raises(CommandRejected, match="policy tmr needs 3 chips; the pool has 1"):
        g.command("QUOTE_JOB", count=1, policy="tmr")
    assert g.command_result("QUOTE_JOB", count=2).endswith(
        "for 2 images under none; operators' jobs are not charged"
    )
    g.command("SET_MODE", mode="NOMINAL")
    g.command("SET_MODE", mode="COMPUTE")
    since = len(g.events)
    assert g.command_result("SUBMIT_JOB", first=0, count=3, policy="rerun") == (
        "job 1: 3 images under rerun; an operator's job, not charged"
    )
    done = fields(g.wait_event("JOB_DONE", timeout=30, since=since))
    assert done["tenant"] == "-" and done["policy"] == "rerun" and done["runs"] == "6"
    assert float(done["joules"]) > 0
    assert fs.stack.ledger.transactions == 0  # nothing booked
    assert g.wait_telemetry("LEDGER_TXNS", lambda v: v == 0, timeout=5) == 0

    # a ground that missed transactions asks for them again
    g.command("GRANT_TOKENS", tenant=1, tokens=7)
    g.command("GRANT_TOKENS", tenant=0, tokens=9)
    book = fs.stack.ledger.book_id
    assert g.wait_telemetry("LEDGER_ID", lambda v: v == int(book, 16), timeout=5)
    assert g.command_result("LEDGER_RESEND", first=2, count=5) == (
        f"resent 1 transactions 2..2 of ledger {book}"
    )
    txn2 = {"book": book, "txn": "2", "tenant": "acme", "tokens": "9", "available": "9"}
    second = g.wait_event("TOKENS_GRANTED", lambda e: fields(e) == txn2, timeout=5)
    g.wait_event(
        "TOKENS_GRANTED",
        lambda e: fields(e) == txn2,
        timeout=5,
        since=list(g.events).index(second) + 1,
    )  # fmt: skip  (sent, then sent again)
    with pytest.raises(CommandRejected, match=f"no transaction 3..3: ledger {book} has "
                                              r"transactions 1\.\.2"):  # fmt: skip
        g.command("LEDGER_RESEND", first=3, count=1)


# a battery that cannot carry the bus through an eclipse above its floor: compute waits
POWER = {"battery_wh": 5.0, "soc_floor": 0.3, "initial_soc": 0.5, "bus_load_w": 1.0,
         "chip_idle_w": 0.5}  # fmt: skip


def test_a_job_the_stack_stops_before_it_runs_is_released_and_the_book_survives_a_restart(
    flight_stack, tmp_path
):
    store = tmp_path / "ledger.sqlite"
    eclipse = Orbit.default().timeline().next_eclipse(0.0)
    settings = {"hk_period_ms": 50, "tenants": TENANTS, "ledger": {"store": str(store)},
                "power": POWER}  # fmt: skip
    fs = flight_stack("model://?harden=0", orbit_start_s=eclipse.entry_s + 60, **settings)
    g = fs.ground
    g.command("GRANT_TOKENS", tenant=0, tokens=1000)
    g.command("SET_MODE", mode="NOMINAL")
    g.command("SET_MODE", mode="COMPUTE")
    text = fs.ground_for(2).command_result("SUBMIT_JOB", first=0, count=5)
    held = int(re.fullmatch(r"job 1: 5 images under none; acme holds (\d+) tokens for it "
                            r"\(hold 2\), \d+ available", text).group(1))  # fmt: skip
    g.wait_event("JOBS_DEFERRED", timeout=10)  # the battery cannot pay for it in eclipse
    assert g.wait_telemetry("HOLDS_OPEN", lambda v: v == 1, timeout=5) == 1
    assert g.telemetry["TENANT0_HELD"] == held
    fs.stack.stop()  # (the fixture stops it again after the test: harmless)
    with sqlite3.connect(store) as db:
        last = db.execute(
            "SELECT kind, hold, job, why FROM ledger_txns ORDER BY txn DESC"
        ).fetchone()
    assert last == ("release", 2, 1, "the stack stopped before the job finished")

    # a stack killed with a job under way leaves its hold open in the store
    killed = Ledger(tenants_from_data(TENANTS), store=store)
    killed.reserve("acme", 100, job=9)
    killed.close()
    again = flight_stack("model://?harden=0", **settings)
    [released] = again.stack.ledger.restart_releases
    assert released.job == 9 and released.why == "the stack stopped before the job finished"
    assert again.ground.wait_telemetry("TENANT0_AVAILABLE", lambda v: v == 1000, timeout=5)
    assert again.stack.ledger.book_id == fs.stack.ledger.book_id
    again.stack.ledger.check()


def test_orbithil_fly_killed_with_a_job_held_releases_it_when_it_flies_again(tmp_path):
    """``orbithil fly`` as a user runs it, killed (-9) while a tenant's job waits for power:
    the store keeps the grant and the hold, and the next start releases the hold, so the
    tenant has every token back and nothing was charged."""
    import os
    import secrets
    import signal
    import subprocess
    import sys

    from orbithil.flight.ground import Ground, MemorySequence

    keys = {1: secrets.token_bytes(32), 2: secrets.token_bytes(32)}
    (tmp_path / "keys").write_text("".join(f"{k} {v.hex()}\n" for k, v in keys.items()))
    eclipse = Orbit.default().timeline().next_eclipse(0.0)
    power = "\n".join(f"{k} = {v}" for k, v in POWER.items())
    (tmp_path / "fly.toml").write_text(
        f'hk_period_ms = 100\norbit_start_s = {eclipse.entry_s + 60}\n[[tenants]]\nname = "acme"\n'
        f'key_ids = [2]\n[ledger]\nstore = "{tmp_path / "ledger.sqlite"}"\n[power]\n{power}\n'
    )
    numbers = MemorySequence(1)  # the restarted stack has a fresh replay window

    def fly() -> tuple[subprocess.Popen, tuple[str, int]]:
        process = subprocess.Popen(
            [sys.executable, "-m", "orbithil.tools.cli", "fly", "--chip", "model://?harden=0",
             "--config", str(tmp_path / "fly.toml"), "--keys", str(tmp_path / "keys"),
             "--port", "0", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )  # fmt: skip
        line = process.stdout.readline()
        assert line.startswith("{"), line
        return process, tuple(json.loads(line)["udp"])

    first, address = fly()
    try:
        with Ground(address, key_id=1, key=keys[1], sequence=numbers) as g, \
                Ground(address, key_id=2, key=keys[2], sequence=numbers) as acme:  # fmt: skip
            g.command("GRANT_TOKENS", tenant=0, tokens=800)
            g.command("SET_MODE", mode="NOMINAL")
            g.command("SET_MODE", mode="COMPUTE")
            acme.command("SUBMIT_JOB", first=0, count=4)
            g.wait_event("JOBS_DEFERRED", timeout=10)
            assert g.wait_telemetry("TENANT0_HELD", lambda v: v > 0, timeout=5) > 0
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    again, address = fly()
    try:
        with Ground(address, key_id=1, key=keys[1], sequence=numbers) as g:
            g.command("NOOP")  # telemetry comes here from now on
            assert g.wait_telemetry("TENANT0_AVAILABLE", lambda v: v == 800, timeout=10)
            assert g.telemetry["TENANT0_HELD"] == 0 and g.telemetry["TENANT0_SPENT"] == 0
            assert g.wait_telemetry("LEDGER_TXNS", lambda v: v == 3, timeout=5)
    finally:
        again.terminate()
        assert again.wait(20) == 0
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM ledger_txns ORDER BY txn")]
    assert kinds == ["grant", "reserve", "release"]
    assert check_store(tmp_path / "ledger.sqlite").ok


def test_the_price_table_prices_a_job_by_build_and_policy_and_eclipse_costs_more(flight_stack):
    """``[ledger]`` prices: an unhardened chip's ``none`` runs at 0.75 of the cycle price,
    and in eclipse everything costs twice as much: the job is settled at its measured
    cycles times both, and its hold covered that."""
    eclipse = Orbit.default().timeline().next_eclipse(0.0)
    ledger = {"eclipse_multiplier": 2.0, "prices": {"unhardened": {"none": 0.75, "dmr": 3.0}}}
    fs = flight_stack("model://?harden=0", orbit_start_s=eclipse.entry_s + 60, hk_period_ms=50,
                      tenants=TENANTS, ledger=ledger)  # fmt: skip
    g = fs.ground
    g.command("GRANT_TOKENS", tenant=0, tokens=1000)
    g.command("SET_MODE", mode="NOMINAL")
    g.command("SET_MODE", mode="COMPUTE")
    acme = fs.ground_for(2)
    hold = math.ceil(4 * HARDENED_INFERENCE / 1000 * 0.75 * 2)  # before any run: the prior
    assert acme.command_result("QUOTE_JOB", count=4, policy="none").startswith(
        f"quote: hold {hold} tokens (about {hold}) for 4 images under none"
    )
    since = len(acme.events)
    acme.command_result("SUBMIT_JOB", first=0, count=4, policy="none")
    done = fields(acme.wait_event("JOB_DONE", timeout=30, since=since))
    settled = fields(acme.wait_event("JOB_SETTLED", timeout=10, since=since))
    charged = math.ceil(int(done["cycles"]) / 1000 * 0.75 * 2)
    assert settled["charged"] == str(charged) and int(settled["released"]) == hold - charged
    assert charged > math.ceil(int(done["cycles"]) / 1000)  # more than in sunlight at 1.0
    fs.stack.ledger.check()


def test_the_price_table_is_checked_and_prices_cycles_energy_build_and_eclipse():
    from orbithil.errors import ConfigError
    from orbithil.flight.ledger import LedgerConfig

    tariff = LedgerConfig.from_mapping({
        "cycles_per_token": 1000, "tokens_per_joule": 10.0, "eclipse_multiplier": 1.5,
        "prices": {"hardened": {"tmr": 2.0}, "unhardened": {"tmr": 1.0}},
    }).tariff  # fmt: skip
    runs = [(1, 2000, 0.1), (0, 2000, 0.1)]  # (harden, cycles, joules): 3 tokens each at 1.0
    assert tariff.price(runs, "tmr", eclipse=False) == 9  # 3 x 2.0 + 3 x 1.0
    assert tariff.price(runs, "tmr", eclipse=True) == 14  # 9 x 1.5, a started token paid
    assert tariff.price(runs, "none", eclipse=False) == 6  # no factor for none: 1.0
    for bad, message in [
        ({"prices": {"rad-hard": {"none": 1}}}, "'rad-hard' is not a build; use unhardened or"),
        ({"prices": {"hardened": {"quad": 1}}}, "prices.hardened.quad: not a policy; use none"),
        ({"prices": {"hardened": {"dmr": -1}}}, "prices.hardened.dmr=-1: give a number >= 0"),
        ({"eclipse_multiplier": 0.5}, "eclipse_multiplier=0.5: give a number >= 1"),
        ({"prices": 3}, "give [ledger.prices.hardened] and/or"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            LedgerConfig.from_mapping(bad)
