"""The compute-token ledger on disk: one SQLite file, the book of record, and the checks
that prove a book balances (``orbithil ledger check``).

The flight stack's store and the ground archive's copy share one schema, so one check
reads both:

- ``ledger_txns``: one row per transaction (its book, number, kind, tenant, job, hold,
  metered cycles and runs, reason, the tenant's available balance just after it, times);
- ``ledger_postings``: one row per posting (book, transaction number, account, amount);
- ``ledger_meta`` (the store only): the book's id and when it was created.

A balance is a ``SUM`` over postings, never a stored number. The store is in WAL mode with
``synchronous=FULL``: a transaction the ledger acknowledges was committed (fsync'd) first.
Several transactions that arrive together share one commit (``Ledger`` groups them), none
acknowledged before the commit that holds it.
"""

from __future__ import annotations

import fcntl
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from orbithil.errors import ConfigError

STORE_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_txns (
    book TEXT NOT NULL, txn INTEGER NOT NULL, kind TEXT NOT NULL, tenant TEXT NOT NULL,
    job INTEGER, hold INTEGER, cycles INTEGER NOT NULL, runs INTEGER NOT NULL,
    why TEXT NOT NULL, available INTEGER NOT NULL, rx_us INTEGER NOT NULL,
    onboard_us INTEGER NOT NULL, PRIMARY KEY (book, txn));
CREATE INDEX IF NOT EXISTS ledger_txns_tenant ON ledger_txns (tenant, rx_us);
CREATE TABLE IF NOT EXISTS ledger_postings (
    book TEXT NOT NULL, txn INTEGER NOT NULL, account TEXT NOT NULL, amount INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_postings_txn ON ledger_postings (book, txn);
"""
META = "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
PROBLEMS_LISTED = 50  # problems listed per check (all are counted)


class LedgerStore:
    """The SQLite file of one flight stack's book (``[ledger] store``); one stack at a time
    (a lock file next to it). ``write`` puts transactions on disk, a batch in one commit."""

    def __init__(self, path: str | Path, *, book_id: str) -> None:
        self.path = Path(path)
        self._lockfile = None
        self.db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lockfile = open(f"{self.path}.lock", "a")  # noqa: SIM115 (held until close)
            try:
                fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.close()
                raise ConfigError(
                    f"ledger store {self.path} is in use by another flight stack; give each "
                    "stack its own ([ledger] store)"
                ) from None
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
            if tables and "ledger_meta" not in tables:
                self.close()
                raise ConfigError(
                    f"ledger store {self.path} is a SQLite file but not an orbithil ledger "
                    "store (no ledger_meta table); give another file ([ledger] store)"
                )
            self.db.executescript(META + SCHEMA)
            meta = dict(self.db.execute("SELECT key, value FROM ledger_meta"))
            if not meta:
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                self.db.executemany(
                    "INSERT INTO ledger_meta (key, value) VALUES (?, ?)",
                    [("version", str(STORE_VERSION)), ("book", book_id), ("created", created)],
                )
                meta = {"version": str(STORE_VERSION), "book": book_id}
            if meta.get("version") != str(STORE_VERSION):
                self.close()
                raise ConfigError(
                    f"ledger store {self.path} is of version {meta.get('version')}; this "
                    f"orbithil keeps version {STORE_VERSION}"
                )
            self.book_id = meta["book"]
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ConfigError(
                f"ledger store {self.path}: {exc}; give an orbithil ledger store or a new file "
                "([ledger] store)"
            ) from None
        except OSError as exc:
            self.close()
            raise ConfigError(
                f"ledger store {self.path}: {exc.strerror or exc}; give a writable file "
                "([ledger] store)"
            ) from None

    def rows(self, first: int = 1, last: int | None = None) -> Iterator[tuple]:
        """Transactions ``first``..``last`` in order: (txn, kind, tenant, job, hold, cycles,
        runs, why, available, onboard_us, [(account, amount), ...])."""
        assert self.db is not None
        last = 2**62 if last is None else last
        postings = self.db.execute(
            "SELECT txn, account, amount FROM ledger_postings WHERE book = ? AND txn BETWEEN ? "
            "AND ? ORDER BY txn, rowid",
            (self.book_id, first, last),
        )
        pending = next(postings, None)
        for row in self.db.execute(
            "SELECT txn, kind, tenant, job, hold, cycles, runs, why, available, onboard_us "
            "FROM ledger_txns WHERE book = ? AND txn BETWEEN ? AND ? ORDER BY txn",
            (self.book_id, first, last),
        ):
            mine = []
            while pending is not None and pending[0] == row[0]:
                mine.append((pending[1], pending[2]))
                pending = next(postings, None)
            yield (*row, mine)

    def write(self, batch: list[tuple]) -> None:
        """Write transactions in one SQLite transaction, on disk (WAL, synchronous=FULL)
        before this returns; ``batch``: (row, postings) each, a row being (txn, kind,
        tenant, job, hold, cycles, runs, why, available, time us)."""
        assert self.db is not None
        if not batch:
            return
        txns = [(self.book_id, number, *rest, time_us, time_us)
                for (number, *rest, time_us), _ in batch]  # fmt: skip
        posts = [(self.book_id, row[0], account, amount)
                 for row, postings in batch for account, amount in postings]  # fmt: skip
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT INTO ledger_txns (book, txn, kind, tenant, job, hold, cycles, runs, "
                "why, available, rx_us, onboard_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                txns,
            )
            self.db.executemany(
                "INSERT INTO ledger_postings (book, txn, account, amount) VALUES (?, ?, ?, ?)",
                posts,
            )
            self.db.execute("COMMIT")
        except sqlite3.Error:
            self.rollback()
            raise

    def rollback(self) -> None:
        if self.db is not None and self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def close(self) -> None:
        if self.db is not None:
            self.rollback()
            self.db.close()
            self.db = None
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None


# --- the check ------------------------------------------------------------------------------
@dataclass
class CheckReport:
    """What ``check`` found: per book its transactions, postings and balances; ``problems``
    (the books do not balance) and ``notes`` (facts that are not errors, such as
    transactions the ground never received)."""

    path: str
    kind: str  # "store" (a flight stack's) or "archive" (a ground server's)
    books: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEMS_LISTED:
            self.problems.append(text)

    def as_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "ok": self.ok, "books": self.books,
                "problem_count": self.problem_count, "problems": self.problems,
                "notes": self.notes, "seconds": round(self.seconds, 3)}  # fmt: skip


def open_readonly(path: str | Path) -> tuple[sqlite3.Connection, str]:
    """(connection, "store" or "archive") for a ledger store or a ground archive;
    ConfigError when the file is neither."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file; give a ledger store ([ledger] store) or a "
                          "ground archive (ground serve --archive)")  # fmt: skip
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: {exc}; give a ledger store or a ground archive") from None
    if not {"ledger_txns", "ledger_postings"} <= tables:
        db.close()
        raise ConfigError(
            f"{path} holds no ledger (no ledger_txns table); give a ledger store "
            "([ledger] store) or a ground archive (ground serve --archive)"
        )
    return db, ("store" if "ledger_meta" in tables else "archive")


def check(path: str | Path, *, against: str | Path | None = None) -> CheckReport:
    """Prove the books of ``path`` (a store or an archive) balance: every transaction's
    postings sum to zero, every hold is closed at most once and by a transaction of its
    tenant, no settle or release moves more than its hold, tenants' accounts never go below
    zero, the held accounts equal the open holds, each recorded available balance equals
    the running sum, a store's numbers run 1..N without a gap. With ``against`` (the ground
    archive of a store, or the other way round), the copy's transactions equal the
    store's."""
    start = time.perf_counter()
    db, kind = open_readonly(path)
    report = CheckReport(str(path), kind)
    try:
        for (book,) in db.execute("SELECT DISTINCT book FROM ledger_txns ORDER BY book").fetchall():
            _check_book(db, book, report)
        if against is not None:
            other, other_kind = open_readonly(against)
            try:
                store, archive = (db, other) if kind == "store" else (other, db)
                if kind == other_kind:
                    raise ConfigError(f"{path} and {against} are both {kind}s; compare a flight "
                                      "store with a ground archive")  # fmt: skip
                _compare(store, archive, report)
            finally:
                other.close()
    finally:
        db.close()
    report.seconds = time.perf_counter() - start
    return report


def _check_book(db: sqlite3.Connection, book: str, report: CheckReport) -> None:
    where = f"book {book}"
    count, low, high = db.execute(
        "SELECT COUNT(*), MIN(txn), MAX(txn) FROM ledger_txns WHERE book = ?", (book,)
    ).fetchone()
    postings = db.execute("SELECT COUNT(*) FROM ledger_postings WHERE book = ?", (book,))
    summary = {"book": book, "txns": count, "postings": postings.fetchone()[0],
               "last_txn": high, "missing": high - count if high else 0}  # fmt: skip
    report.books.append(summary)
    if count and (low != 1 or high != count):
        text = f"{where}: transactions 1..{high} hold {count} (numbers missing)"
        if report.kind == "store":
            report.problem(text + ": the store lost transactions")
        else:
            report.notes.append(text + ": never received by the ground (LEDGER_RESEND asks again)")
    for txn, total in db.execute(
        "SELECT txn, SUM(amount) FROM ledger_postings WHERE book = ? GROUP BY txn "
        "HAVING SUM(amount) != 0",
        (book,),
    ):
        report.problem(f"{where}, transaction {txn}: its postings sum to {total}, not 0")
    for (txn,) in db.execute(
        "SELECT txn FROM ledger_txns t WHERE book = ? AND NOT EXISTS (SELECT 1 FROM "
        "ledger_postings p WHERE p.book = t.book AND p.txn = t.txn)",
        (book,),
    ):
        report.problem(f"{where}, transaction {txn}: no postings")
    for (txn,) in db.execute(
        "SELECT DISTINCT txn FROM ledger_postings p WHERE book = ? AND NOT EXISTS (SELECT 1 "
        "FROM ledger_txns t WHERE t.book = p.book AND t.txn = p.txn)",
        (book,),
    ):
        report.problem(f"{where}: postings of transaction {txn}, which is not in the book")
    # holds: each reserve opens one (its own number); a settle or release closes one
    holds: dict[int, tuple[str, int]] = {}
    for txn, tenant, tokens in db.execute(
        "SELECT t.txn, t.tenant, p.amount FROM ledger_txns t JOIN ledger_postings p ON "
        "p.book = t.book AND p.txn = t.txn AND p.account = 'held:' || t.tenant "
        "WHERE t.book = ? AND t.kind = 'reserve'",
        (book,),
    ):
        holds[txn] = (tenant, tokens)
    closed: dict[int, int] = {}
    for txn, kind, tenant, hold, moved, earned, back in db.execute(
        "SELECT t.txn, t.kind, t.tenant, t.hold, "
        "(SELECT COALESCE(-SUM(amount), 0) FROM ledger_postings p WHERE p.book = t.book AND "
        " p.txn = t.txn AND p.account = 'held:' || t.tenant), "
        "(SELECT COALESCE(SUM(amount), 0) FROM ledger_postings p WHERE p.book = t.book AND "
        " p.txn = t.txn AND p.account = 'earned:' || t.tenant), "
        "(SELECT COALESCE(SUM(amount), 0) FROM ledger_postings p WHERE p.book = t.book AND "
        " p.txn = t.txn AND p.account = 'tenant:' || t.tenant) "
        "FROM ledger_txns t WHERE t.book = ? AND t.kind IN ('settle', 'release') ORDER BY t.txn",
        (book,),
    ):
        label = f"{where}, transaction {txn} ({kind} of hold {hold})"
        if hold in closed:
            report.problem(f"{label}: the hold was closed already by transaction {closed[hold]}"
                           " (charged twice)")  # fmt: skip
            continue
        closed[hold] = txn
        opened = holds.get(hold)
        if opened is None:
            if report.kind == "store" or hold is None or hold <= 0:
                report.problem(f"{label}: no reserve opened this hold")
            continue
        if opened[0] != tenant:
            report.problem(f"{label}: the hold is tenant {opened[0]}'s, not {tenant}'s")
        if moved != opened[1]:
            report.problem(f"{label}: it closes {moved} tokens of a hold of {opened[1]}")
        if earned < 0 or back < 0 or (kind == "release" and earned):
            report.problem(f"{label}: charged {earned} and gave back {back}")
        if earned > opened[1]:
            report.problem(f"{label}: charged {earned}, above its hold of {opened[1]}")
    open_holds: dict[str, int] = {}
    for number, (tenant, tokens) in holds.items():
        if number not in closed:
            open_holds[tenant] = open_holds.get(tenant, 0) + tokens
    # balances: sums of postings; tenants' accounts never below zero at any transaction
    balances = dict(
        db.execute(
            "SELECT account, SUM(amount) FROM ledger_postings WHERE book = ? GROUP BY account",
            (book,),
        ).fetchall()
    )
    summary["balances"] = {a: v for a, v in sorted(balances.items()) if v}
    summary["open_holds"] = len(holds) - len(closed.keys() & holds.keys())
    if sum(balances.values()) != 0:
        report.problem(f"{where}: the balances sum to {sum(balances.values())}, not 0")
    gaps = summary["missing"] > 0
    for account, value in balances.items():
        if account.startswith("held:") and not gaps:
            expected = open_holds.get(account[5:], 0)
            if value != expected:
                report.problem(f"{where}: {account} is {value}; its open holds sum to {expected}")
    if gaps:  # running balances need every transaction
        return
    running: dict[str, int] = {}
    posts = db.execute(
        "SELECT txn, account, amount FROM ledger_postings WHERE book = ? ORDER BY txn", (book,)
    )
    pending = next(posts, None)
    for txn, tenant, available in db.execute(
        "SELECT txn, tenant, available FROM ledger_txns WHERE book = ? ORDER BY txn", (book,)
    ):
        while pending is not None and pending[0] == txn:
            _, account, amount = pending
            value = running[account] = running.get(account, 0) + amount
            if value < 0 and account != "issued":
                report.problem(f"{where}, transaction {txn}: {account} goes to {value}")
            pending = next(posts, None)
        own = running.get(f"tenant:{tenant}", 0)
        if available != own:
            report.problem(f"{where}, transaction {txn}: it records {tenant}'s available "
                           f"balance as {available}; the postings sum to {own}")  # fmt: skip


def _compare(store: sqlite3.Connection, archive: sqlite3.Connection, report: CheckReport) -> None:
    """The archive's copy of the store's book holds the store's transactions, unchanged."""
    (book,) = store.execute("SELECT value FROM ledger_meta WHERE key = 'book'").fetchone()
    count = store.execute("SELECT COUNT(*) FROM ledger_txns WHERE book = ?", (book,)).fetchone()[0]
    query = ("SELECT txn, kind, tenant, job, hold, cycles, runs, available FROM ledger_txns "
             "WHERE book = ? ORDER BY txn")  # fmt: skip
    ours = {r[0]: r for r in store.execute(query, (book,))}
    copied = {r[0]: r for r in archive.execute(query, (book,))}
    posts = (
        "SELECT txn, account, SUM(amount) FROM ledger_postings WHERE book = ? GROUP BY txn, account"
    )
    our_posts = {(t, a): v for t, a, v in store.execute(posts, (book,))}
    their_posts = {(t, a): v for t, a, v in archive.execute(posts, (book,))}
    for number, row in copied.items():
        if ours.get(number) != row:
            report.problem(
                f"book {book}, transaction {number}: the archive's copy {row[1:]} "
                f"differs from the store's {ours.get(number, ('none',))[1:]}"
            )
    for (number, account), value in their_posts.items():
        if number in ours and our_posts.get((number, account)) != value:
            report.problem(
                f"book {book}, transaction {number}: the archive posts {value} to "
                f"{account}, the store {our_posts.get((number, account), 0)}"
            )
    lacking = count - len(copied.keys() & ours.keys())
    report.notes.append(f"book {book}: the archive holds {len(copied)} of the store's {count} "
                        f"transactions ({lacking} not received)")  # fmt: skip
