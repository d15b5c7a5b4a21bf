"""Tenants on the ground (tools/ground): the archive books the stack's ledger events once
each and says what is missing; a tenant user commands through the server with its
tenant's key and sees only its own; the server's keys share one sequence; the CLI's
tenant users and ``orbithil ground ledger``; an archive of schema 1 is upgraded."""

from __future__ import annotations

import json
import sqlite3

import pytest
from spacepackets.ccsds.spacepacket import PacketType

from orbithil.flight import ccsds
from orbithil.flight.dictionary import APID_EVENT, EVENT_BY_NAME
from orbithil.flight.ground import MemorySequence, SequenceFile, SharedSequence
from orbithil.flight.ledger import Ledger, event_of, tenants_from_data
from orbithil.tools.cli import main
from orbithil.tools.ground import ledger as ground_ledger
from orbithil.tools.ground.api import HttpThread
from orbithil.tools.ground.archive import US, Archive
from orbithil.tools.ground.auth import AuthError, Role, Users
from orbithil.tools.ground.client import ApiError, GroundClient
from orbithil.tools.ground.server import GroundServer, ServerConfig
from tests.test_ground_server import wait_until

T0 = 1_750_000_000 * US
TENANTS = [{"name": "acme", "key_ids": [2]}, {"name": "bolt", "key_ids": [3]}]


def ledger_events(ledger: Ledger, txns) -> list[bytes]:
    """The event packets a stack sends for ``txns``."""
    packets = []
    for i, txn in enumerate(txns):
        name, fields = event_of(txn, ledger.book_id)
        text = EVENT_BY_NAME[name].format.format(**fields)
        data = ccsds.event_data(i * 1000, EVENT_BY_NAME[name].id, 1, text)
        packets.append(ccsds.pack(PacketType.TM, APID_EVENT, i, data))
    return packets


def test_the_archive_books_each_ledger_event_once_and_says_what_is_missing(tmp_path):
    onboard = Ledger(tenants_from_data(TENANTS))
    txns = [onboard.grant("acme", 1000), onboard.grant("bolt", 50)]
    txns.append(onboard.reserve("acme", 300, job=1))
    txns.append(onboard.settle(txns[-1].number, 120, cycles=119_000, runs=6))
    txns.append(onboard.reserve("acme", 80, job=2))
    packets = ledger_events(onboard, txns)
    archive = Archive(tmp_path / "a.sqlite")
    archive.ingest([(T0 + i, p) for i, p in enumerate(packets[:3])])
    archive.ingest([(T0 + 10 + i, p) for i, p in enumerate(packets[1:])])  # 2 and 3 again
    db = archive.connect()
    assert db.execute("SELECT COUNT(*) FROM ledger_txns").fetchone()[0] == 5  # each once
    [book] = ground_ledger.books(db)
    assert book == {"book": onboard.book_id, "txns": 5, "last_txn": 5, "last_rx_us": T0 + 13,
                    "missing": 0, "missing_txns": [], "balanced": True}  # fmt: skip
    accounts = ground_ledger.accounts(db, onboard.book_id, ["acme", "bolt", "zed"])
    assert accounts["acme"] == {"available": 800, "held": 80, "spent": 120, "cycles": 119_000,
                                "runs": 6, "jobs": 1, "onboard_available": 800,
                                "agrees": True}  # fmt: skip
    assert accounts["bolt"]["available"] == 50 and accounts["zed"]["onboard_available"] is None
    rows = ground_ledger.statement(db, onboard.book_id, tenant="acme", limit=2)
    assert [(r["txn"], r["kind"]) for r in rows] == [(4, "settle"), (5, "reserve")]
    assert rows[0]["postings"] == [["held:acme", -300], ["earned:acme", 120], ["tenant:acme", 180]]

    # a lost event: the ground's sum no longer agrees with what the stack reported
    more = [onboard.release(txns[-1].number, "no image completed"), onboard.grant("acme", 5)]
    archive.ingest([(T0 + 20, ledger_events(onboard, more)[1])])  # txn 7 only
    db = archive.connect()
    [book] = ground_ledger.books(db)
    assert book["missing"] == 1 and book["missing_txns"] == [6]
    acme = ground_ledger.accounts(db, onboard.book_id)["acme"]
    assert acme["onboard_available"] == 885 and acme["available"] == 805 and not acme["agrees"]
    assert archive.retain(0.0001, now=T0 + 10**12)["events"] == 8  # events go, the books stay
    assert db.execute("SELECT COUNT(*) FROM ledger_txns").fetchone()[0] == 6


def test_an_archive_of_schema_1_is_upgraded_and_keeps_its_users(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, salt BLOB NOT NULL, "
        "hash BLOB NOT NULL, kdf TEXT NOT NULL, created_us INTEGER NOT NULL);"
    )
    db.close()
    users = Users(Archive(path))
    users.add("bob", "tenant", "bob-password", tenant="acme")
    assert [(u["name"], u["role"], u["tenant"]) for u in users.list()] == [("bob", "tenant",
                                                                             "acme")]  # fmt: skip
    assert Archive(path).connect().execute("SELECT value FROM meta").fetchone() == ("2",)
    with pytest.raises(AuthError, match="a tenant user needs --tenant NAME"):
        users.add("carl", "tenant", "carl-password")
    with pytest.raises(AuthError, match=r"only a tenant user \(--role tenant\) has a tenant"):
        users.add("dora", "viewer", "dora-password", tenant="acme")


def test_a_servers_keys_share_one_sequence_and_each_counter_stays_ahead(tmp_path):
    one, two = SequenceFile(tmp_path / "tc-1"), SequenceFile(tmp_path / "tc-2")
    one.store(500)
    two.store(900)
    shared = SharedSequence([two, one])
    assert [shared.take() for _ in range(3)] == [900, 901, 902]
    assert one.peek() == two.peek() == 903  # a console using either key alone goes on above
    assert SequenceFile(tmp_path / "tc-1").take() == 903
    shared.close()


@pytest.fixture
def tenant_server(flight_stack, tmp_path):
    """A stack with tenants acme (key 2) and bolt (key 3) on two model chips, and a ground
    server holding the operators' key and acme's (not bolt's), with users ada (operator),
    bob (tenant acme), carl (tenant bolt) and vic (viewer); yields (stack, server, URL)."""
    fs = flight_stack(["model://?harden=1", "model://?harden=0"], hk_period_ms=100,
                      tenants=TENANTS)  # fmt: skip
    config = ServerConfig(
        stack=fs.stack.link.udp_address,
        keys={1: fs.keys[1], 2: fs.keys[2]},
        archive=tmp_path / "g.sqlite",
        sequence=MemorySequence(1_000_000),  # above the fixture's own clients' numbers
        tenants=tenants_from_data(TENANTS),
    )
    server = GroundServer(config)
    server.users.add("ada", "operator", "ada-password")
    server.users.add("bob", "tenant", "bob-password", tenant="acme")
    server.users.add("carl", "tenant", "carl-password", tenant="bolt")
    server.users.add("vic", "viewer", "vic-password")
    server.start()
    http = HttpThread(server).start()
    try:
        yield fs, server, http.url
    finally:
        http.stop()
        server.stop()


def test_a_tenant_user_submits_with_its_tenants_key_and_sees_only_its_own(tenant_server):
    fs, _, url = tenant_server
    ada, bob, carl, vic = (GroundClient(url) for _ in range(4))
    ada.login("ada", "ada-password")
    assert bob.login("bob", "bob-password")["tenant"] == "acme"
    assert bob.me() == {**bob.me(), "role": "tenant", "tenant": "acme"}
    carl.login("carl", "carl-password")
    vic.login("vic", "vic-password")

    granted = ada.command("GRANT_TOKENS", tenant=0, tokens=2000, wait_s=10)
    assert granted["result"] == {"tenant": "acme", "available": "2000", "txn": "1"}
    ada.command("SET_MODE", mode="NOMINAL", wait_s=10)
    ada.command("SET_MODE", mode="COMPUTE", wait_s=10)
    with pytest.raises(ApiError) as refused:
        bob.send("SET_MODE", mode="SAFE")
    assert refused.value.status == 403 and refused.value.detail.startswith(
        "SET_MODE is the operators'; a tenant sends NOOP, RUN_INFERENCE, SUBMIT_JOB, QUOTE_JOB"
    )
    with pytest.raises(ApiError) as keyless:
        carl.send("QUOTE_JOB", count=1)
    assert keyless.value.status == 403
    assert keyless.value.detail == ("the server holds no key of tenant bolt (key ids [3]): add "
                                    "it to the server's --keys")  # fmt: skip
    with pytest.raises(ApiError) as viewer:
        vic.send("QUOTE_JOB", count=1)
    assert viewer.value.status == 403

    quote = bob.command("QUOTE_JOB", count=5, policy="dmr", wait_s=10)
    assert quote["key_id"] == 2 and quote["state"] == "COMPLETED"
    hold = int(quote["result"]["hold"])
    assert quote["result"]["account"] == "acme has 2000 tokens available"
    job = bob.command("SUBMIT_JOB", first=0, count=5, policy="dmr", wait_s=10)
    assert job["result"]["job"] == "1" and job["result"]["policy"] == "dmr"
    assert job["result"]["account"] == (f"acme holds {hold} tokens for it (hold 2), "
                                        f"{2000 - hold} available")  # fmt: skip

    # the settlement reaches the ground's books; both sides agree
    ledger = wait_until(lambda: (lambda d: d if len(d["transactions"]) == 3 else None)(
        bob.ledger()), timeout=30, what="the settlement in the ground's ledger")  # fmt: skip
    assert [t["kind"] for t in ledger["transactions"]] == ["grant", "reserve", "settle"]
    settle = ledger["transactions"][-1]
    assert settle["job"] == 1 and settle["hold"] == 2 and settle["runs"] == 10
    acme = ledger["accounts"]["acme"]
    assert acme["spent"] == -(-settle["cycles"] // 1000) and acme["held"] == 0
    assert acme["available"] == 2000 - acme["spent"] and acme["agrees"]
    assert acme["available"] == fs.stack.ledger.available("acme")
    assert list(ledger["accounts"]) == ["acme"]  # and of the books, only their ids and times
    assert set(ledger["books"][0]) == {"book", "last_rx_us"}
    [own] = bob.tenants()
    assert own["name"] == "acme" and own["signing"] and own["account"]["jobs"] == 1
    wait_until(lambda: bob.tenants()[0]["telemetry"].get("jobs") == 1, timeout=5,
               what="TENANT0_JOBS in the latest telemetry")  # fmt: skip

    # a tenant sees its own commands, events naming it, and public or its own channels
    assert {c["user"] for c in bob.commands()} == {"bob"}
    assert {c["user"] for c in ada.commands()} >= {"ada", "bob"}
    with pytest.raises(ApiError) as other:
        bob.command_state(granted["seq"])
    assert other.value.status == 404
    events = bob.events(since="5m")
    assert {e["name"] for e in events} == {"TOKENS_GRANTED", "JOB_SUBMITTED", "TOKENS_RESERVED",
                                           "JOB_DONE", "JOB_SETTLED"}  # fmt: skip
    assert "MODE_CHANGED" in {e["name"] for e in ada.events(since="5m")}
    latest = bob.latest()
    assert "MODE" in latest and "TENANT0_AVAILABLE" in latest
    assert "SOC" not in latest and "TENANT1_AVAILABLE" not in latest
    for forbidden in (bob.status, lambda: bob.history("SOC"), lambda: bob.ledger(tenant="bolt")):
        with pytest.raises(ApiError) as denied:
            forbidden()
        assert denied.value.status == 403
    assert bob.history("TENANT0_SPENT", since="5m")["values"][-1] == acme["spent"]

    # operators see every tenant and the whole book
    everyone = ada.ledger()
    assert set(everyone["accounts"]) == {"acme", "bolt"} and everyone["books"][0]["balanced"]
    assert everyone["books"][0]["missing"] == 0
    assert [t["name"] for t in vic.tenants()] == ["acme", "bolt"]


VISIBLE_TO_ACME = {"MODE", "POLICY", "POOL_CHIPS", "POOL_HEALTHY", "JOBS_QUEUED",
                   "JOBS_DEFERRED", "LINK_UP", "SUNLIT", "DICT_HASH", "UPTIME_S",
                   "TENANT0_AVAILABLE", "TENANT0_HELD", "TENANT0_SPENT", "TENANT0_CYCLES",
                   "TENANT0_JOBS"}  # fmt: skip


def test_a_tenant_users_stream_carries_only_its_own(tenant_server):
    _, _, url = tenant_server
    ada, bob = GroundClient(url), GroundClient(url)
    ada.login("ada", "ada-password")
    bob.login("bob", "bob-password")
    seen: list[dict] = []
    for message in bob.stream(timeout=2):
        seen.append(message)
        if message["type"] == "hello":
            ada.send("NOOP")
            quote = GroundClient(url, token=bob.token).send("QUOTE_JOB", count=2)
        if message["type"] == "verification" and message["stage"] == "COMPLETED":
            break
    assert seen[0]["type"] == "hello" and seen[0]["tenant"] == "acme"
    assert "MODE" in seen[0]["telemetry"] and set(seen[0]["telemetry"]) <= VISIBLE_TO_ACME
    verifications = [m for m in seen if m["type"] == "verification"]
    assert verifications and {m["seq"] for m in verifications} == {quote["seq"]}
    assert all(set(m["values"]) <= VISIBLE_TO_ACME for m in seen if m["type"] == "telemetry")


def test_tenant_users_and_the_ledger_from_the_command_line(tmp_path, capsys):
    archive = tmp_path / "a.sqlite"
    Users(Archive(archive)).add("bob", Role.TENANT, "bob-password", tenant="acme")
    assert main(["ground", "user", "list", "--archive", str(archive)]) == 0
    assert capsys.readouterr().out.split()[:3] == ["bob", "tenant", "acme"]
    assert main(["ground", "user", "add", "carl", "--role", "tenant", "--archive",
                 str(archive)]) == 2  # fmt: skip
    assert "give --tenant NAME" in capsys.readouterr().err
    assert main(["ground", "ledger", "--archive", str(archive)]) == 0
    assert capsys.readouterr().out.startswith("no ledger transactions in")

    onboard = Ledger(tenants_from_data(TENANTS))
    txns = [onboard.grant("acme", 100), onboard.reserve("acme", 40, job=3)]
    txns.append(onboard.settle(txns[-1].number, 25, cycles=24_100, runs=2))
    Archive(archive).ingest([(T0 + i, p) for i, p in enumerate(ledger_events(onboard, txns))])
    assert main(["ground", "ledger", "--archive", str(archive), "--tenant", "acme"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ledger {onboard.book_id}: 3 transactions"
    assert out[2].split() == ["acme", "75", "0", "25", "1", "24100"]
    assert out[-1].endswith("txn     3 settle  acme job 3: held:acme -40, earned:acme +25, "
                            "tenant:acme +15")  # fmt: skip
    assert main(["ground", "ledger", "--archive", str(archive), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["accounts"]["acme"]["spent"] == 25 and len(data["transactions"]) == 3
    assert main(["ground", "ledger", "--archive", str(archive), "--book", "nope"]) == 2
    assert "no such ledger" in capsys.readouterr().err


def test_the_server_asks_again_for_transactions_it_never_received(flight_stack, tmp_path):
    """A stack restarting releases the hold its killed predecessor left open, before any
    ground hears it; the server sees the ledger's count in telemetry and asks for what its
    archive lacks."""
    store = tmp_path / "ledger.sqlite"
    killed = Ledger(tenants_from_data(TENANTS), store=store)
    killed.grant("acme", 500)
    killed.reserve("acme", 100, job=9)
    killed.close()
    fs = flight_stack("model://", hk_period_ms=100, tenants=TENANTS,
                      ledger={"store": str(store)})  # fmt: skip
    server = GroundServer(ServerConfig(
        stack=fs.stack.link.udp_address, keys={1: fs.keys[1]}, archive=tmp_path / "g.sqlite",
        sequence=MemorySequence(1_000_000), tenants=tenants_from_data(TENANTS),
        ledger_check_s=0.3,
    ))  # fmt: skip
    server.start()
    try:
        books = wait_until(
            lambda: (lambda d: d if len(d["transactions"]) == 3 else None)(server.ledger_json()),
            timeout=20,
            what="the three transactions booked after a resend",
        )
    finally:
        server.stop()
    assert [t["kind"] for t in books["transactions"]] == ["grant", "reserve", "release"]
    assert books["transactions"][-1]["why"] == "the stack stopped before the job finished"
    assert books["book"] == fs.stack.ledger.book_id and books["books"][0]["missing"] == 0
    assert books["accounts"]["acme"]["available"] == 500 and books["accounts"]["acme"]["agrees"]
    resends = [c for c in server.archive.commands() if c["name"] == "LEDGER_RESEND"]
    assert resends and resends[0]["user"] == "(server)"
    assert json.loads(resends[0]["args"]) == {"first": 1, "count": 3}


def checks(server: GroundServer, n: int) -> None:
    """Wait for ``n`` more reconciliations of the server's ledger with the stack's."""
    target = server.stats["ledger_reconciled"] + n
    wait_until(lambda: server.stats["ledger_reconciled"] >= target, timeout=20,
               what=f"{n} ledger reconciliations")  # fmt: skip


def test_a_ledger_mismatch_is_an_event_and_never_corrected(flight_stack, tmp_path):
    """The archive's copy made to differ from the stack's book (as a lost or altered event
    would): the server raises LEDGER_MISMATCH once, archived and on the API, and leaves the
    archive's books as they are."""
    fs = flight_stack("model://", hk_period_ms=100, tenants=TENANTS)
    server = GroundServer(ServerConfig(
        stack=fs.stack.link.udp_address, keys={1: fs.keys[1]}, archive=tmp_path / "g.sqlite",
        sequence=MemorySequence(1_000_000), tenants=tenants_from_data(TENANTS),
        ledger_check_s=0.2,
    ))  # fmt: skip
    server.start()
    try:
        fs.ground.command("GRANT_TOKENS", tenant=0, tokens=500)
        wait_until(lambda: server.ledger_json()["accounts"].get("acme", {}).get("available")
                   == 500, timeout=20, what="the grant booked on the ground")  # fmt: skip
        checks(server, 3)  # nothing differs: nothing is raised
        assert server.stats["ledger_mismatches"] == 0
        with sqlite3.connect(tmp_path / "g.sqlite") as db:  # the copy altered, still balanced
            db.execute("UPDATE ledger_postings SET amount = amount + 7 WHERE account = "
                       "'tenant:acme'")  # fmt: skip
            db.execute("UPDATE ledger_postings SET amount = amount - 7 WHERE account = 'issued'")
        mismatches = wait_until(
            lambda: [e for e in server.archive.events() if e["name"] == "LEDGER_MISMATCH"],
            timeout=20, what="a LEDGER_MISMATCH event",
        )  # fmt: skip
        checks(server, 3)  # the same difference is raised once
        assert server.stats["ledger_mismatches"] == len(mismatches) == 2  # telemetry, event
    finally:
        server.stop()
    texts = sorted(e["text"] for e in mismatches)
    assert texts[0].startswith(
        f"book {fs.stack.ledger.book_id} tenant acme: the ground's sum is 507 available, its "
        "last transaction says 500; not corrected"
    )
    assert "its telemetry says 500" in texts[1]
    with sqlite3.connect(tmp_path / "g.sqlite") as db:  # the archive was not corrected
        assert db.execute("SELECT SUM(amount) FROM ledger_postings WHERE account = "
                          "'tenant:acme'").fetchone() == (507,)  # fmt: skip
    assert fs.stack.ledger.available("acme") == 500
