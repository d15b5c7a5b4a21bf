"""``orbithil ledger check`` proves a flight store or a ground archive balances and lists
what is wrong when it does not; ``orbithil ledger statement`` gives a tenant's period as
text, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import pytest

from orbithil.flight.ledger import Ledger, tenants_from_data
from orbithil.flight.ledger_store import check
from orbithil.tools.cli import main
from orbithil.tools.ground.archive import US, Archive
from tests.test_ground_tenants import TENANTS, ledger_events

DAY_S = 86_400
T_START = 1_764_547_200  # 2025-12-01T00:00:00Z


def stored_book(path, *, left_open=True) -> Ledger:
    """A book over three days: acme granted, a job settled, one released, one held."""
    now = [T_START + 3600.0]
    ledger = Ledger(tenants_from_data(TENANTS), store=path, clock=lambda: now[0])
    ledger.grant("acme", 1000)  # day 1
    ledger.grant("bolt", 50)
    now[0] += DAY_S  # day 2
    ledger.settle(ledger.reserve("acme", 300, job=1).number, 120, cycles=119_000, runs=6)
    ledger.release(ledger.reserve("acme", 40, job=2).number, "no image completed: test")
    now[0] += DAY_S  # day 3
    if left_open:
        ledger.reserve("acme", 80, job=3)
    return ledger


def test_a_store_that_balances_passes_the_check(tmp_path, capsys):
    path = tmp_path / "ledger.sqlite"
    stored_book(path).close()
    assert main(["ledger", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "store" in out and "7 transactions, 15 postings, 1 holds open" in out
    assert "ledger check: the books balance" in out
    assert main(["ledger", "check", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["kind"] == "store"
    assert report["books"][0]["balances"] == {"earned:acme": 120, "held:acme": 80,
                                              "issued": -1050, "tenant:acme": 800,
                                              "tenant:bolt": 50}  # fmt: skip


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("UPDATE ledger_postings SET amount = 121 WHERE txn = 4 AND account = 'earned:acme'",
         "transaction 4: its postings sum to 1, not 0"),
        ("INSERT INTO ledger_txns SELECT book, 8, kind, tenant, job, hold, cycles, runs, why, "
         "available, rx_us, onboard_us FROM ledger_txns WHERE txn = 4",
         "transaction 8 (settle of hold 3): the hold was closed already by transaction 4"),
        ("UPDATE ledger_postings SET amount = amount * 10 WHERE txn = 4",
         "charged 1200, above its hold of 300"),
        ("DELETE FROM ledger_txns WHERE txn = 2", "transactions 1..7 hold 6 (numbers missing)"),
        ("UPDATE ledger_txns SET available = 5 WHERE txn = 1",
         "transaction 1: it records acme's available balance as 5; the postings sum to 1000"),
        ("UPDATE ledger_postings SET amount = amount * 100 WHERE txn = 5",
         "transaction 5: tenant:acme goes to -3120"),
    ],
    ids=["unbalanced", "charged-twice", "above-hold", "lost", "available", "negative"],
)  # fmt: skip
def test_a_damaged_store_fails_the_check_saying_what_is_wrong(tmp_path, capsys, damage, expected):
    path = tmp_path / "ledger.sqlite"
    stored_book(path).close()
    with sqlite3.connect(path) as db:
        db.execute(damage)
    assert main(["ledger", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "ledger check: " in out and "problem(s):" in out
    assert expected in out, out


def test_the_archive_copy_is_checked_and_compared_with_the_store(tmp_path, capsys):
    store = tmp_path / "ledger.sqlite"
    ledger = stored_book(store)
    ledger.close()
    restarted = Ledger(tenants_from_data(TENANTS), store=store)  # releases the open hold
    txns = restarted.history(1, 8)
    restarted.close()
    archive = Archive(tmp_path / "ground.sqlite")  # the ground heard all but the release
    packets = ledger_events(ledger, txns[:7])
    archive.ingest([(T_START * US + i, p) for i, p in enumerate(packets)])
    archive.close()
    assert main(["ledger", "check", str(tmp_path / "ground.sqlite"), "--against", str(store)]) == 0
    out = capsys.readouterr().out
    assert "archive" in out and "the archive holds 7 of the store's 8 transactions" in out
    # a copy that differs from the book of record is a problem, never corrected
    with sqlite3.connect(tmp_path / "ground.sqlite") as db:
        db.execute("UPDATE ledger_txns SET cycles = 1 WHERE txn = 4")
    report = check(tmp_path / "ground.sqlite", against=store)
    assert not report.ok
    assert "transaction 4: the archive's copy" in report.problems[0]
    assert main(["ledger", "check", str(store), "--against", str(store)]) == 2
    assert "are both stores" in capsys.readouterr().err


def test_a_statement_covers_a_period_with_opening_and_closing_balances(tmp_path, capsys):
    path = tmp_path / "ledger.sqlite"
    stored_book(path).close()
    day2, day3 = "2025-12-02", "2025-12-03T00:00:00Z"
    assert main(["ledger", "statement", str(path), "--tenant", "acme", "--from", day2,
                 "--to", day3, "--json"]) == 0  # fmt: skip
    statement = json.loads(capsys.readouterr().out)
    assert statement["opening"] == {"available": 1000, "held": 0, "spent": 0}
    assert [t["kind"] for t in statement["transactions"]] == ["reserve", "settle", "reserve",
                                                              "release"]  # fmt: skip
    assert statement["closing"] == {"available": 880, "held": 0, "spent": 120}
    out = tmp_path / "acme.csv"
    assert main(["ledger", "statement", str(path), "--tenant", "acme", "--from", day2,
                 "--csv", str(out)]) == 0  # fmt: skip
    assert "closing: 800 available, 80 held, 120 spent" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["kind"] for r in rows] == ["opening", "reserve", "settle", "reserve", "release",
                                         "reserve", "closing"]  # fmt: skip
    assert rows[2]["spent_change"] == "120" and rows[2]["cycles"] == "119000"
    assert rows[4]["why"] == "no image completed: test" and rows[-1]["available_after"] == "800"


def test_bad_statement_input_says_what_was_wrong(tmp_path, capsys):
    path = tmp_path / "ledger.sqlite"
    stored_book(path).close()
    base = ["ledger", "statement", str(path)]
    assert main([*base, "--tenant", "acme", "--from", "yesterday"]) == 2
    assert "--from time 'yesterday': give an age (30s, 10m, 2h, 1d), an ISO date/time" in (
        capsys.readouterr().err
    )
    assert main([*base, "--tenant", "zed"]) == 2
    assert "no transactions of that tenant" in capsys.readouterr().err
    assert main([*base, "--tenant", "acme", "--from", "2025-12-03", "--to", "2025-12-02"]) == 2
    assert "is not after --from" in capsys.readouterr().err
    assert main(["ledger", "check", str(tmp_path / "none.sqlite")]) == 2
    assert "no such file; give a ledger store" in capsys.readouterr().err
