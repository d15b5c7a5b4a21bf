"""The ground's copy of the on-board compute-token ledger (flight/ledger.py), kept in the
archive: every ledger transaction the stack reports in an event is booked here again, with
the same postings, so operators and tenants can read balances and statements on the ground.

The stack's ledger is the book of record; this copy is built from its events only:

- exactly once: a transaction is named by its ledger (a random id the journal keeps) and
  its number, so an event that arrives twice (a re-sent store, two links) books once;
- in the same SQLite transaction as the event it came from (``Archive.store``), so the
  archive never holds one without the other;
- incomplete when events were lost (a store that overflowed, an event throttled): the
  numbers missing are listed per ledger, and each transaction carries the tenant's
  balance as the stack had it just after, so a tenant's ``onboard_available`` (the latest)
  can be compared with the ground's sum (``agrees``);
- never deleted by retention: a statement must stay whole.

Tables: ``ledger_txns`` (one row per transaction) and ``ledger_postings`` (its postings),
laid out as the flight stack's store (``flight/ledger_store.py`` SCHEMA).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable

from orbithil.flight.dictionary import EVENT_BY_NAME
from orbithil.flight.ledger import KIND_OF_EVENT, Kind, txn_from_event

log = logging.getLogger(__name__)

MISSING_LISTED = 20  # missing transaction numbers listed per ledger (all are counted)


def book_events(db: sqlite3.Connection, events: Iterable[tuple]) -> tuple[int, int]:
    """Book the ledger events among ``events`` (the archive's rows: rx us, on-board us,
    event id, name, severity, text) inside the caller's transaction; (booked, already
    booked). An event whose text does not parse is logged and skipped (it stays archived)."""
    booked = again = 0
    for rx_us, onboard_us, _event_id, name, _severity, text in events:
        if name not in KIND_OF_EVENT:
            continue
        fields = EVENT_BY_NAME[name].parse(text)
        try:
            if fields is None:
                raise ValueError("its text does not match the dictionary's format")
            book, txn = txn_from_event(name, fields, onboard_us / 1e6)
        except (ValueError, KeyError) as exc:
            log.warning("ledger event %s not booked (%s): %r", name, exc, text)
            continue
        inserted = db.execute(
            "INSERT OR IGNORE INTO ledger_txns (book, txn, kind, tenant, job, hold, cycles, "
            "runs, why, available, rx_us, onboard_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (book, txn.number, txn.kind.value, txn.tenant, txn.job, txn.hold, txn.cycles,
             txn.runs, txn.why, txn.available, rx_us, onboard_us),
        ).rowcount  # fmt: skip
        if not inserted:
            again += 1
            continue
        db.executemany(
            "INSERT INTO ledger_postings (book, txn, account, amount) VALUES (?, ?, ?, ?)",
            [(book, txn.number, account, amount) for account, amount in txn.postings],
        )
        booked += 1
    return booked, again


def books(db: sqlite3.Connection) -> list[dict]:
    """Each ledger the ground has heard of, the latest first: its transactions, the numbers
    missing (events never received), whether its postings sum to zero."""
    rows = db.execute(
        "SELECT book, COUNT(*), MAX(txn), MAX(rx_us) FROM ledger_txns GROUP BY book "
        "ORDER BY MAX(rx_us) DESC"
    ).fetchall()
    out = []
    for book, count, highest, last_rx in rows:
        lacking = missing(db, book, highest)
        total = db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger_postings WHERE book = ?", (book,)
        ).fetchone()[0]
        out.append({"book": book, "txns": count, "last_txn": highest, "last_rx_us": last_rx,
                    "missing": len(lacking), "missing_txns": lacking[:MISSING_LISTED],
                    "balanced": total == 0})  # fmt: skip
    return out


def missing(db: sqlite3.Connection, book: str, upto: int) -> list[int]:
    """The numbers among 1..``upto`` of ``book``'s transactions that were never booked."""
    rows = db.execute("SELECT txn FROM ledger_txns WHERE book = ? AND txn <= ?", (book, upto))
    have = {r[0] for r in rows}
    return [n for n in range(1, upto + 1) if n not in have]


def first_gap(db: sqlite3.Connection, book: str, count: int) -> tuple[int, int] | None:
    """The first run ``(first, last)`` of transactions 1..``count`` of ``book`` not booked,
    or None."""
    lacking = missing(db, book, count)
    if not lacking:
        return None
    first = last = lacking[0]
    for number in lacking[1:]:
        if number != last + 1:
            break
        last = number
    return first, last


def current_book(db: sqlite3.Connection) -> str | None:
    """The ledger the stack reported last (a stack without a journal starts a new one at
    each start)."""
    row = db.execute("SELECT book FROM ledger_txns ORDER BY rx_us DESC, txn DESC LIMIT 1")
    found = row.fetchone()
    return found[0] if found else None


def accounts(db: sqlite3.Connection, book: str, tenants: Iterable[str] = ()) -> dict[str, dict]:
    """Per tenant of ``book`` (and each of ``tenants``, even without a transaction): tokens
    available, held and spent by the ground's sum of postings; cycles, runs and jobs of its
    settled jobs; the available balance the stack reported last, and whether they agree."""
    out: dict[str, dict] = {}

    def tenant(name: str) -> dict:
        return out.setdefault(name, {"available": 0, "held": 0, "spent": 0, "cycles": 0,
                                     "runs": 0, "jobs": 0, "onboard_available": None,
                                     "agrees": True})  # fmt: skip

    for name in tenants:
        tenant(name)
    for account, total in db.execute(
        "SELECT account, SUM(amount) FROM ledger_postings WHERE book = ? GROUP BY account", (book,)
    ):
        kind, _, name = account.partition(":")
        column = {"tenant": "available", "held": "held", "earned": "spent"}.get(kind)
        if column:
            tenant(name)[column] = total
    for name, cycles, runs, jobs in db.execute(
        "SELECT tenant, SUM(cycles), SUM(runs), COUNT(*) FROM ledger_txns WHERE book = ? AND "
        "kind = ? GROUP BY tenant",
        (book, Kind.SETTLE.value),
    ):
        tenant(name).update(cycles=cycles, runs=runs, jobs=jobs)
    for name, available in db.execute(
        "SELECT tenant, available FROM ledger_txns t WHERE book = ? AND txn = (SELECT MAX(txn) "
        "FROM ledger_txns WHERE book = t.book AND tenant = t.tenant)",
        (book,),
    ):
        entry = tenant(name)
        entry["onboard_available"] = available
        entry["agrees"] = available == entry["available"]
    return out


def statement(db: sqlite3.Connection, book: str, *, tenant: str | None = None,
              limit: int = 100) -> list[dict]:  # fmt: skip
    """The last ``limit`` transactions of ``book`` (of one tenant), oldest first, each with
    its postings."""
    where, params = "book = ?", [book]
    if tenant is not None:
        where += " AND tenant = ?"
        params.append(tenant)
    rows = db.execute(
        f"SELECT txn, kind, tenant, job, hold, cycles, runs, why, available, rx_us, onboard_us "
        f"FROM ledger_txns WHERE {where} ORDER BY txn DESC LIMIT ?",
        (*params, limit),
    ).fetchall()
    postings: dict[int, list] = {}
    if rows:
        low, high = rows[-1][0], rows[0][0]
        for txn, account, amount in db.execute(
            "SELECT txn, account, amount FROM ledger_postings WHERE book = ? AND txn BETWEEN ? "
            "AND ? ORDER BY rowid",
            (book, low, high),
        ):
            postings.setdefault(txn, []).append([account, amount])
    keys = ("txn", "kind", "tenant", "job", "hold", "cycles", "runs", "why", "available",
            "rx_us", "onboard_us")  # fmt: skip
    return [
        {**dict(zip(keys, row, strict=True)), "postings": postings.get(row[0], [])}
        for row in reversed(rows)
    ]


STATEMENT_COLUMNS = (
    "time_utc",
    "txn",
    "kind",
    "job",
    "hold",
    "available_change",
    "held_change",
    "spent_change",
    "available_after",
    "cycles",
    "runs",
    "why",
)


def period_statement(db: sqlite3.Connection, book: str, tenant: str, *,
                     since_us: int | None = None, until_us: int | None = None) -> dict:  # fmt: skip
    """Tenant ``tenant``'s statement of ``book`` over a period (``since_us`` included,
    ``until_us`` excluded; None: open-ended) by each transaction's time (when the stack
    booked it, in a flight store; when the ground received it, in an archive): the
    balances at its start (sums of every earlier posting), each transaction in it with
    what it moved, and the balances at its end. One schema: works on both."""
    accounts = {f"tenant:{tenant}": "available", f"held:{tenant}": "held",
                f"earned:{tenant}": "spent"}  # fmt: skip
    low = -(2**62) if since_us is None else since_us
    high = 2**62 if until_us is None else until_us
    opening = dict.fromkeys(accounts.values(), 0)
    for account, total in db.execute(
        "SELECT p.account, SUM(p.amount) FROM ledger_postings p JOIN ledger_txns t ON "
        "t.book = p.book AND t.txn = p.txn WHERE p.book = ? AND t.tenant = ? AND "
        "t.rx_us < ? GROUP BY p.account",
        (book, tenant, low),
    ):
        if account in accounts:
            opening[accounts[account]] = total
    rows = db.execute(
        "SELECT txn, kind, job, hold, cycles, runs, why, available, rx_us FROM ledger_txns "
        "WHERE book = ? AND tenant = ? AND rx_us >= ? AND rx_us < ? ORDER BY txn",
        (book, tenant, low, high),
    ).fetchall()
    moved: dict[int, dict[str, int]] = {}
    if rows:
        for txn, account, amount in db.execute(
            "SELECT txn, account, amount FROM ledger_postings WHERE book = ? AND txn BETWEEN ? "
            "AND ?",
            (book, rows[0][0], rows[-1][0]),
        ):
            if account in accounts:
                entry = moved.setdefault(txn, dict.fromkeys(accounts.values(), 0))
                entry[accounts[account]] += amount
    closing = dict(opening)
    lines = []
    for txn, kind, job, hold, cycles, runs, why, available, rx_us in rows:
        change = moved.get(txn, dict.fromkeys(accounts.values(), 0))
        for column, amount in change.items():
            closing[column] += amount
        lines.append({
            "time_utc": _iso(rx_us), "txn": txn, "kind": kind, "job": job, "hold": hold,
            "available_change": change["available"], "held_change": change["held"],
            "spent_change": change["spent"], "available_after": available, "cycles": cycles,
            "runs": runs, "why": why,
        })  # fmt: skip
    return {"book": book, "tenant": tenant,
            "from": _iso(since_us) if since_us is not None else None,
            "to": _iso(until_us) if until_us is not None else None,
            "opening": opening, "closing": closing, "transactions": lines}  # fmt: skip


def _iso(us: int) -> str:
    import datetime as dt

    when = dt.datetime.fromtimestamp(us / 1e6, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def statement_csv(statement: dict, out) -> None:
    """``statement`` (``period_statement``) as CSV on ``out``: one row per transaction,
    framed by an ``opening`` and a ``closing`` row with the balances."""
    import csv

    writer = csv.writer(out)
    writer.writerow(("tenant", *STATEMENT_COLUMNS))
    o, c = statement["opening"], statement["closing"]
    writer.writerow(
        (
            statement["tenant"],
            statement["from"] or "",
            "",
            "opening",
            "",
            "",
            o["available"],
            o["held"],
            o["spent"],
            o["available"],
            "",
            "",
            "",
        )
    )
    for line in statement["transactions"]:
        writer.writerow((statement["tenant"], *(line[k] if line[k] is not None else ""
                                                for k in STATEMENT_COLUMNS)))  # fmt: skip
    writer.writerow(
        (
            statement["tenant"],
            statement["to"] or "",
            "",
            "closing",
            "",
            "",
            c["available"],
            c["held"],
            c["spent"],
            c["available"],
            "",
            "",
            "",
        )
    )
