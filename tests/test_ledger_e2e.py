"""Compute sold as a metered service, end to end: two tenants with their own keys buy
inference on ``orbithil fly`` (a subprocess), acme through the ground server's API and
bolt by its own authenticated telecommands. A job fails and is released, one is refused as
over budget, the flight stack is killed (-9) with a job held and restarted; in the end
each balance is its grants minus its settled charges, to the token, on board and on the
ground, and ``orbithil ledger check`` passes on both books."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3

import pytest

from orbithil.flight.dictionary import EVENT_BY_NAME, MAX_JOB_ITEMS
from orbithil.flight.ground import CommandRejected, Ground, MemorySequence
from orbithil.flight.ledger import tenants_from_file
from orbithil.tools.cli import main
from orbithil.tools.ground.api import HttpThread
from orbithil.tools.ground.client import ApiError, GroundClient
from orbithil.tools.ground.server import GroundServer, ServerConfig
from tests.test_ground_browser import start
from tests.test_ground_server import wait_until
from tests.test_ledger_crash import POWER, TENANTS_TOML


def settled_charges(archive) -> dict[str, int]:
    """Per tenant, the tokens its settled jobs were charged, from the archived events."""
    charged: dict[str, int] = {}
    with sqlite3.connect(archive) as db:
        for (text,) in db.execute("SELECT text FROM events WHERE name = 'JOB_SETTLED'"):
            fields = EVENT_BY_NAME["JOB_SETTLED"].parse(text)
            charged[fields["tenant"]] = charged.get(fields["tenant"], 0) + int(fields["charged"])
    return charged


def test_two_tenants_buy_compute_through_the_api_and_by_telecommand_to_the_token(tmp_path):
    keys = {n: secrets.token_bytes(32) for n in (1, 2, 3)}  # the operators', acme's, bolt's
    (tmp_path / "keys").write_text("".join(f"{k} {v.hex()}\n" for k, v in keys.items()))
    store, archive = tmp_path / "ledger.sqlite", tmp_path / "ground.sqlite"
    power = "".join(f"{k} = {v}\n" for k, v in POWER.items())
    (tmp_path / "fly.toml").write_text(f'hk_period_ms = 100\n{TENANTS_TOML}[ledger]\n'
                                       f'store = "{store}"\n[power]\n{power}')  # fmt: skip
    env = {**os.environ, "ORBITHIL_STATE_DIR": str(tmp_path / "state")}

    def fly(name: str, port: int = 0):
        ready = tmp_path / f"{name}.json"
        return start(["fly", "--chip", "model://", "--config", str(tmp_path / "fly.toml"),
                      "--keys", str(tmp_path / "keys"), "--port", str(port), "--ready-file",
                      str(ready)], ready, tmp_path / f"{name}.log", env)  # fmt: skip

    stack, info = fly("fly1")
    address = tuple(info["udp"])
    server = GroundServer(ServerConfig(
        stack=address, keys={1: keys[1], 2: keys[2]}, archive=archive,
        sequence=MemorySequence(1_000_000), tenants=tenants_from_file(tmp_path / "fly.toml"),
        ledger_check_s=0.3,
    ))  # fmt: skip
    server.users.add("ada", "operator", "ada-password")
    server.users.add("bob", "tenant", "bob-password", tenant="acme")
    server.start()
    http = HttpThread(server).start()
    bolt_numbers = MemorySequence(1)
    try:
        ada, bob = GroundClient(http.url), GroundClient(http.url)
        ada.login("ada", "ada-password")
        bob.login("bob", "bob-password")
        for tenant, tokens in ((0, 3000), (1, 400)):
            assert ada.command("GRANT_TOKENS", tenant=tenant, tokens=tokens,
                               wait_s=10)["state"] == "COMPLETED"  # fmt: skip
        ada.command("SET_MODE", mode="NOMINAL", wait_s=10)
        ada.command("SET_MODE", mode="COMPUTE", wait_s=10)
        with Ground(address, key_id=3, key=keys[3], sequence=bolt_numbers) as bolt:
            # acme through the API, bolt by telecommand: both run and settle
            job = bob.command("SUBMIT_JOB", first=0, count=3, wait_s=10)
            assert job["state"] == "COMPLETED" and job["key_id"] == 2
            since = len(bolt.events)
            bolt.command_result("SUBMIT_JOB", first=5, count=2)
            bolt.wait_event("JOB_SETTLED", lambda e: "tenant bolt" in e.text or "bolt" in e.text,
                            timeout=30, since=since)  # fmt: skip
            # a tenant cannot grant itself tokens, by either road
            with pytest.raises(ApiError, match="GRANT_TOKENS is the operators'"):
                bob.send("GRANT_TOKENS", tenant=0, tokens=10**6)
            with pytest.raises(CommandRejected):
                bolt.command_result("GRANT_TOKENS", tenant=1, tokens=10**6)
            # over budget: refused with the balance and the quote, nothing booked
            with pytest.raises(CommandRejected, match=r"tenant bolt has \d+ tokens available "
                                                      r"and this job's quote is \d+"):  # fmt: skip
                bolt.command_result("SUBMIT_JOB", first=0, count=200)
            # a job that fails (no chip left to run it) is released whole: it waits behind
            # an operator's long job (not charged) when the only chip is taken out
            ada.command("SUBMIT_JOB", first=0, count=MAX_JOB_ITEMS, wait_s=10)
            failing = bob.command("SUBMIT_JOB", first=9, count=2, wait_s=10)
            assert failing["state"] == "COMPLETED", failing["stages"]
            ada.command("CHIP_OUT", chip=0, wait_s=10)
            released = wait_until(
                lambda: [e for e in bob.events(since="5m") if e["name"] == "TOKENS_RELEASED"],
                timeout=30, what="the failed job's hold released",
            )  # fmt: skip
            assert "no image completed" in released[0]["text"]
            ada.command("CHIP_IN", chip=0, wait_s=10)
            # killed mid-job: bolt's job held (acknowledged: on disk), queued behind another
            # long operator's job, when the stack dies
            ada.command("SUBMIT_JOB", first=0, count=MAX_JOB_ITEMS, policy="rerun", wait_s=10)
            bolt.command_result("SUBMIT_JOB", first=20, count=2)
            os.kill(stack.pid, signal.SIGKILL)
        stack.wait(10)
        stack, info = fly("fly2", port=address[1])  # the same address: the server stays
        # the restart releases the dead job's hold; the server asks for what it missed
        ada.command("SET_MODE", mode="NOMINAL", wait_s=10)
        ada.command("SET_MODE", mode="COMPUTE", wait_s=10)
        bob.command("SUBMIT_JOB", first=30, count=2, wait_s=10)
        book = wait_until(lambda: (lambda d: d if d["books"][0]["missing"] == 0 and not any(
            a["held"] for a in d["accounts"].values()) and d["accounts"]["acme"]["jobs"] == 2
            else None)(server.ledger_json()), timeout=60,
            what="every transaction on the ground, no hold open")  # fmt: skip
        statement = bob.statement(csv=True)  # acme's own, from the ground's books
        assert statement.splitlines()[0].startswith("tenant,time_utc,txn,kind")
        assert sum(",settle," in line for line in statement.splitlines()) == 2
        with pytest.raises(ApiError, match="sees tenant acme's statement only"):
            bob.statement(tenant="bolt")
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(20) == 0
    finally:
        http.stop()
        server.stop()
        if stack.poll() is None:
            stack.kill()
            stack.wait(10)
    charged = settled_charges(archive)
    assert set(charged) == {"acme", "bolt"} and all(charged.values())
    for tenant, granted in (("acme", 3000), ("bolt", 400)):
        account = book["accounts"][tenant]
        assert account["available"] == granted - charged[tenant]  # to the token
        assert account["spent"] == charged[tenant] and account["agrees"]
    with sqlite3.connect(store) as db:
        onboard = dict(db.execute("SELECT account, SUM(amount) FROM ledger_postings "
                                  "GROUP BY account"))  # fmt: skip
        whys = [w for (w,) in db.execute("SELECT why FROM ledger_txns WHERE kind = 'release'")]
    assert onboard["tenant:acme"] == 3000 - charged["acme"]
    assert onboard["tenant:bolt"] == 400 - charged["bolt"]
    assert any(w.startswith("no image completed") for w in whys)
    assert "the stack stopped before the job finished" in whys  # the killed job's hold
    assert main(["ledger", "check", str(store), "--against", str(archive)]) == 0
    assert main(["ledger", "check", str(archive)]) == 0
