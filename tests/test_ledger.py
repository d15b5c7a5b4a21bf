"""The compute-token ledger (flight/ledger.py): a balanced double-entry book, holds closed
exactly once, the tariff, the SQLite store surviving restarts and crashes, tenants' config, and
each transaction read back from its event as the ground reads it."""

from __future__ import annotations

import collections
import sqlite3
import string
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orbithil.errors import ConfigError
from orbithil.flight.dictionary import COMMANDS, EVENT_BY_NAME, EVENTS, parse_format
from orbithil.flight.ledger import (
    ISSUED,
    Kind,
    Ledger,
    LedgerConfig,
    LedgerError,
    Tariff,
    Tenant,
    check_tenant_keys,
    event_of,
    tenants_from_data,
    txn_from_event,
)
from orbithil.flight.ledger_store import check as check_store

ACME, BOLT = Tenant(0, "acme", (2,)), Tenant(1, "bolt", (3, 4))


def book(**kwargs) -> Ledger:
    return Ledger([ACME, BOLT], clock=lambda: 1_750_000_000.0, **kwargs)


def test_a_job_is_reserved_then_settled_once_in_a_book_that_balances():
    ledger = book()
    ledger.grant("acme", 1000)
    hold = ledger.reserve("acme", 300, job=7)
    assert hold.kind is Kind.RESERVE and hold.hold == hold.number == 2 and hold.available == 700
    assert ledger.totals("acme").held == 300
    settled = ledger.settle(hold.number, 120, cycles=119_500, runs=6)
    assert settled.tokens == 120 and settled.available == 880 and settled.job == 7
    assert ledger.balances() == {ISSUED: -1000, "tenant:acme": 880, "earned:acme": 120}
    totals = ledger.totals("acme")
    assert (totals.available, totals.held, totals.spent) == (880, 0, 120)
    assert (totals.cycles, totals.runs, totals.jobs) == (119_500, 6, 1)
    for close in (lambda: ledger.settle(hold.number, 10), lambda: ledger.release(2, "late")):
        with pytest.raises(LedgerError, match=r"hold 2 is not open .*nothing was charged"):
            close()
    assert ledger.transactions == 3  # the refused ones posted nothing
    ledger.check()


def test_a_settle_never_charges_more_than_the_hold_and_a_release_returns_it_all():
    ledger = book()
    ledger.grant("bolt", 500)
    over = ledger.settle(ledger.reserve("bolt", 200).number, 999)
    assert over.tokens == 200 and over.amount("tenant:bolt") == 0
    released = ledger.release(ledger.reserve("bolt", 100).number, "no image completed")
    assert released.tokens == 100 and released.why == "no image completed"
    assert ledger.available("bolt") == 300 and ledger.summary() == {
        "txns": 5, "issued": 500, "held": 0, "earned": 200, "holds": 0}  # fmt: skip
    ledger.check()


def test_a_reservation_beyond_the_tenants_tokens_is_refused_and_books_nothing():
    ledger = book()
    ledger.grant("acme", 40)
    with pytest.raises(LedgerError, match=r"tenant acme has 40 tokens available and this job's "
                                          r"quote is 64: ask an operator for a grant"):  # fmt: skip
        ledger.reserve("acme", 64)
    with pytest.raises(LedgerError, match=r"no tenant 'zed' \(tenants: acme, bolt\)"):
        ledger.grant("zed", 5)
    with pytest.raises(LedgerError, match="give 1 or more"):
        ledger.grant("acme", 0)
    assert ledger.transactions == 1 and ledger.available("acme") == 40


operations = st.lists(
    st.tuples(
        st.sampled_from(["grant", "reserve", "settle", "release"]),
        st.sampled_from(["acme", "bolt"]),
        st.integers(0, 300),
        st.integers(0, 6),  # which hold to close (possibly closed already)
    ),
    max_size=60,
)


@given(operations)
def test_any_sequence_of_operations_keeps_the_book_balanced_and_charges_each_hold_once(ops):
    """Against a plain model of the accounts: each operation either applies exactly or is
    refused and changes nothing; the invariants hold after every step."""
    ledger = book()
    available = {"acme": 0, "bolt": 0}
    open_holds: dict[int, tuple[str, int]] = {}
    holds: list[int] = []
    spent = 0
    for op, tenant, amount, pick in ops:
        before = ledger.transactions
        try:
            if op == "grant":
                ledger.grant(tenant, amount)
                available[tenant] += amount
            elif op == "reserve":
                txn = ledger.reserve(tenant, amount)
                available[tenant] -= amount
                open_holds[txn.number] = (tenant, amount)
                holds.append(txn.number)
            elif holds:
                number = holds[pick % len(holds)]
                if op == "settle":
                    txn = ledger.settle(number, amount)
                    owner, held = open_holds.pop(number)
                    available[owner] += held - min(amount, held)
                    spent += min(amount, held)
                else:
                    ledger.release(number, "test")
                    owner, held = open_holds.pop(number)
                    available[owner] += held
        except LedgerError:
            assert ledger.transactions == before  # refused: nothing posted
            refused_rightly = (
                (op == "grant" and amount < 1)
                or (op == "reserve" and amount > available[tenant])
                or (op in ("settle", "release") and number not in open_holds)
            )
            assert refused_rightly, (op, tenant, amount)
        ledger.check()
        for name in available:
            assert ledger.available(name) == available[name] >= 0
        assert ledger.summary()["earned"] == spent
        assert {h.number for h in ledger.holds()} == set(open_holds)


def test_the_tariff_charges_started_tokens_and_quotes_the_worst_case():
    tariff = Tariff(1000)
    assert [tariff.tokens(c) for c in (0, 1, 1000, 1001)] == [0, 1, 1, 2]
    assert tariff.hold(10, 5, 20_720) == 1036  # ten images, five runs each at most
    with pytest.raises(ConfigError, match="cycles_per_token=0: give a whole number"):
        Tariff(0)
    assert LedgerConfig.from_mapping({"cycles_per_token": 500}).cycles_per_token == 500
    with pytest.raises(ConfigError, match=r"unknown ledger setting\(s\) price; valid"):
        LedgerConfig.from_mapping({"price": 5})


# --- the store ------------------------------------------------------------------------------
def rows(path, sql):
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_the_store_keeps_the_book_across_restarts_and_releases_holds_left_open(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first = book(store=path)
    first.grant("acme", 1000)
    first.settle(first.reserve("acme", 100, job=1).number, 60, cycles=59_000, runs=3)
    left_open = first.reserve("acme", 250, job=2)  # the stack stops before job 2 is done
    first.close()
    assert rows(path, "SELECT value FROM ledger_meta WHERE key = 'book'") == [(first.book_id,)]
    assert rows(path, "SELECT COUNT(*) FROM ledger_txns") == [(4,)]
    # one row per posting, with its transaction's number; balances are sums
    assert rows(path, "SELECT account, SUM(amount) FROM ledger_postings GROUP BY account "
                      "ORDER BY account") == [("earned:acme", 60), ("held:acme", 250),
                                              ("issued", -1000), ("tenant:acme", 690)]  # fmt: skip

    again = book(store=path)
    assert again.book_id == first.book_id  # the same book, continued
    [released] = again.restart_releases
    assert released.kind is Kind.RELEASE and released.hold == left_open.number
    assert released.job == 2 and released.why == "the stack stopped before the job finished"
    assert again.available("acme") == 940 and again.totals("acme").cycles == 59_000
    assert again.transactions == 5 and not again.holds()
    again.check()
    again.close()
    assert rows(path, "SELECT txn, kind, why FROM ledger_txns WHERE txn = 5") == [
        (5, "release", "the stack stopped before the job finished")
    ]  # the release is stored too, and released once: a third start has nothing to release
    third = book(store=path)
    assert third.restart_releases == [] and third.transactions == 5
    third.close()
    assert check_store(path).ok


def test_a_damaged_store_refuses_the_book_and_check_lists_what_is_wrong(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = book(store=path)
    ledger.grant("acme", 10)
    ledger.settle(ledger.reserve("acme", 4, job=1).number, 3)
    ledger.close()
    with sqlite3.connect(path) as db:  # a posting changed on disk
        db.execute("UPDATE ledger_postings SET amount = -9 WHERE txn = 1 AND account = 'issued'")
    with pytest.raises(ConfigError, match=r"is damaged \(transaction 1's postings do not sum "
                                          r"to zero\).*orbithil ledger check"):  # fmt: skip
        book(store=path)
    report = check_store(path)
    assert not report.ok
    assert any("transaction 1: its postings sum to 1, not 0" in p for p in report.problems)
    (tmp_path / "other.sqlite").write_bytes(b"hello, not a database" * 100)
    with pytest.raises(ConfigError, match=r"other.sqlite: file is not a database"):
        book(store=tmp_path / "other.sqlite")


def test_old_transactions_are_read_back_from_the_store(tmp_path):
    ledger = book(store=tmp_path / "ledger.sqlite")
    made = [ledger.grant("acme", n) for n in range(1, 6)]
    assert ledger.history(4, 9) == made[3:]  # from memory
    ledger.recent = collections.deque(list(ledger.recent)[-2:], maxlen=2)  # the rest aged out
    assert ledger.history(2, 3) == made[1:3]  # from the store, with their balances
    assert [t.available for t in ledger.history(1, 5)] == [1, 3, 6, 10, 15]
    assert ledger.history(6, 8) == [] and ledger.history(3, 2) == []
    ledger.close()


def test_one_store_serves_one_stack_at_a_time(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first = book(store=path)
    with pytest.raises(ConfigError, match="is in use by another flight stack"):
        book(store=path)
    first.close()
    book(store=path).close()


def test_the_old_journal_setting_is_refused_with_the_new_one_named():
    with pytest.raises(ConfigError, match=r'replaced by a SQLite store; write store = "ledger'):
        LedgerConfig.from_mapping({"journal": "ledger.jsonl"})
    assert LedgerConfig.from_mapping({"store": "x.sqlite"}).store == "x.sqlite"


def test_settlements_arriving_together_share_commits_and_all_are_kept(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = book(store=path)
    ledger.grant("acme", 100_000)

    def settle_some(offset):
        for job in range(offset, offset + 50):
            ledger.settle(ledger.reserve("acme", 10, job=job).number, 7)

    threads = [threading.Thread(target=settle_some, args=(i * 100,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    ledger.check()
    assert ledger.available("acme") == 100_000 - 200 * 7
    ledger.close()
    report = check_store(path)
    assert report.ok and report.books[0]["txns"] == 401
    assert report.books[0]["balances"]["earned:acme"] == 1400


# --- tenants ------------------------------------------------------------------------------
def test_tenants_come_from_tables_and_each_key_has_one_owner():
    tenants = tenants_from_data([{"name": "acme", "key_ids": [2]}, {"name": "bolt", "key_id": 3}])
    assert tenants == (Tenant(0, "acme", (2,)), Tenant(1, "bolt", (3,)))
    for data, message in (
        ([{"name": "a b", "key_ids": [2]}], "name 'a b': use 1..32 letters"),
        ([{"name": "acme"}], r"give key_ids = \[..\]"),
        ([{"name": "acme", "key_ids": [2]}, {"name": "bolt", "key_ids": [2]}],
         "key id 2 is tenant acme's already"),
        ([{"name": "acme", "key_ids": [2]}, {"name": "acme", "key_ids": [3]}], "given twice"),
        ([{"name": "acme", "key_ids": [300]}], r"key id 300 is not in 0\.\.255"),
        ([{"name": "acme", "key_ids": [2], "tokens": 5}], r"unknown keys \['tokens'\]"),
        ([{"name": f"t{n}", "key_ids": [n]} for n in range(9)], "9 tenants; at most 8"),
        ({"name": "acme"}, r"give \[\[tenants\]\] tables"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            tenants_from_data(data)
    check_tenant_keys(tenants, [1, 2, 3])
    with pytest.raises(ConfigError, match=r"tenant bolt: key id\(s\) \[3\] are not in"):
        check_tenant_keys(tenants, [1, 2])
    with pytest.raises(ConfigError, match="is a tenant's: keep at least one for the operators"):
        check_tenant_keys(tenants, [2, 3])


# --- events: what the ground reads back ----------------------------------------------------------
def test_every_transaction_reads_back_from_its_event_with_the_same_postings():
    ledger = book()
    txns = [ledger.grant("acme", 500)]
    txns.append(ledger.reserve("acme", 200, job=4))
    txns.append(ledger.settle(txns[-1].number, 150, cycles=149_001, runs=9))
    txns.append(ledger.reserve("acme", 50, job=5))
    txns.append(ledger.release(txns[-1].number, "no image completed: the pool stopped"))
    for txn in txns:
        name, fields = event_of(txn, ledger.book_id)
        text = EVENT_BY_NAME[name].format.format(**fields)
        book_id, back = txn_from_event(name, EVENT_BY_NAME[name].parse(text), txn.time_s)
        assert book_id == ledger.book_id
        assert back == txn  # number, kind, tenant, postings, job, hold, metering, why


def test_every_event_and_completion_text_can_be_read_back_into_its_fields():
    """Ground tools parse texts by the dictionary's formats: each must be unambiguous."""
    formats = [e.format for e in EVENTS] + [c.result for c in COMMANDS if c.result]
    for fmt in formats:
        names = [n for n in string.Formatter().parse(fmt) if n[1]]
        fields = {name: f"v{i}" for i, (_, name, _, _) in enumerate(names)}
        text = fmt.replace(":.1f}", "}").replace(":.3f}", "}").format(**fields)
        assert parse_format(fmt, text) == fields, fmt
    assert parse_format("job {job} done", "something else") is None


def test_bench_ledger_pieces_run_at_small_sizes(tmp_path):
    """(nothing timed is asserted: `orbithil bench ledger` measures)"""
    from orbithil.tools.bench import BENCHMARKS
    from orbithil.tools.bench import ledger as bench

    assert BENCHMARKS["ledger"][0] == "orbithil.tools.bench.ledger"
    rate, each = bench.book_rate(20, tmp_path / "j.sqlite")
    assert rate > 0 and len(each) == 40
    assert bench.replay_seconds(tmp_path / "j.sqlite") > 0
    settled, commits = bench.settle_rate(tmp_path / "s.sqlite", 40, settlers=4)
    assert settled > 0 and 1 <= commits <= 40
    assert bench.synthetic_store(tmp_path / "c.sqlite", 1000) == 1 + 2 * 199
    seconds, ok = bench.check_seconds(tmp_path / "c.sqlite")
    assert ok and seconds > 0
    assert all(r > 0 for r in bench.booking_rates(tmp_path, 40))
    tenant, operator = bench.submit_round_trips(tmp_path, 1)
    assert len(tenant) == len(operator) == 1


def test_a_store_that_cannot_be_written_refuses_the_transaction_and_all_after(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = book(store=path)
    ledger.grant("acme", 100)

    def full_disk(batch):
        raise sqlite3.OperationalError("database or disk is full")

    ledger._store.write = full_disk
    with pytest.raises(LedgerError, match=r"cannot be written \(database or disk is full\)"):
        ledger.grant("acme", 5)
    with pytest.raises(LedgerError, match=r"takes no more transactions.*restart the stack"):
        ledger.reserve("acme", 10)
    ledger.close()
    again = book(store=path)  # only what was acknowledged is in the book
    assert again.available("acme") == 100 and again.transactions == 1
    again.close()
