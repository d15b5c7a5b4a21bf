"""``orbithil ledger check|statement``: prove a compute-token book balances, and a
tenant's statement over a period (CSV). Both read a flight stack's ``[ledger] store`` or a
ground server's archive (one schema: flight/ledger_store.py)."""

from __future__ import annotations

import json
import sys

from orbithil.errors import ConfigError


def parse_time(text: str, option: str) -> int:
    """Unix microseconds of a time given as the archive's queries take it: an age (``2h``,
    ``30d``: that long ago), an ISO 8601 date/time (UTC unless it names a zone), epoch
    seconds, or ``now``."""
    from orbithil.tools.ground.archive import ArchiveError
    from orbithil.tools.ground.archive import parse_time as archive_time

    try:
        return archive_time(text)
    except ArchiveError as exc:
        raise ConfigError(f"{option} {exc}") from None


def check_main(args) -> int:
    from orbithil.flight.ledger_store import check

    report = check(args.file, against=args.against)
    if args.json:
        print(json.dumps(report.as_json()))
        return 0 if report.ok else 1
    for book in report.books:
        holds = f", {book['open_holds']} holds open" if book.get("open_holds") else ""
        print(f"{report.kind} {report.path}, book {book['book']}: {book['txns']} transactions, "
              f"{book['postings']} postings{holds}")  # fmt: skip
    for note in report.notes:
        print(f"  note: {note}")
    if report.ok:
        print(f"ledger check: the books balance ({report.seconds:.2f} s)")
        return 0
    print(f"ledger check: {report.problem_count} problem(s):")
    for problem in report.problems:
        print(f"  {problem}")
    if report.problem_count > len(report.problems):
        print(f"  ... and {report.problem_count - len(report.problems)} more")
    return 1


def statement_main(args) -> int:
    from orbithil.flight.ledger_store import open_readonly
    from orbithil.tools.ground import ledger

    since = parse_time(args.since, "--from") if args.since else None
    until = parse_time(args.until, "--to") if args.until else None
    if since is not None and until is not None and until <= since:
        raise ConfigError(f"--to {args.until} is not after --from {args.since}; give a period")
    db, _kind = open_readonly(args.file)
    try:
        known = [b["book"] for b in ledger.books(db)]
        book = args.book or ledger.current_book(db)
        if book is None:
            raise ConfigError(f"{args.file} holds no ledger transactions yet")
        if book not in known:
            raise ConfigError(f"--book {book}: no such ledger in {args.file}; ledgers: "
                              f"{', '.join(known)}")  # fmt: skip
        tenants = {r[0] for r in db.execute("SELECT DISTINCT tenant FROM ledger_txns")}
        if args.tenant not in tenants:
            raise ConfigError(f"--tenant {args.tenant}: no transactions of that tenant in "
                              f"{args.file}; tenants: {', '.join(sorted(tenants))}")  # fmt: skip
        statement = ledger.period_statement(db, book, args.tenant, since_us=since, until_us=until)
    finally:
        db.close()
    if args.csv:
        if args.csv == "-":
            ledger.statement_csv(statement, sys.stdout)
        else:
            with open(args.csv, "w", newline="") as out:
                ledger.statement_csv(statement, out)
    if args.json:
        print(json.dumps(statement))
    elif args.csv != "-":
        o, c = statement["opening"], statement["closing"]
        period = f"{statement['from'] or 'the start'} to {statement['to'] or 'now'}"
        print(f"{args.tenant}, ledger {book}, {period}")
        print(f"  opening: {o['available']} available, {o['held']} held, {o['spent']} spent")
        for t in statement["transactions"]:
            job = f" job {t['job']}" if t["job"] is not None else ""
            why = f" ({t['why']})" if t["why"] else ""
            print(f"  {t['time_utc']}  txn {t['txn']:>5} {t['kind']:7}{job}: available "
                  f"{t['available_change']:+d}, held {t['held_change']:+d}, spent "
                  f"{t['spent_change']:+d}{why}")  # fmt: skip
        print(f"  closing: {c['available']} available, {c['held']} held, {c['spent']} spent")
        if args.csv:
            print(f"  written to {args.csv}")
    return 0


def register(subparsers) -> None:
    ledger = subparsers.add_parser(
        "ledger", help="the compute-token ledger: check the books, tenants' statements"
    )
    actions = ledger.add_subparsers(title="actions", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="prove a ledger store or a ground archive balances (exit 1 with what is wrong)",
    )
    check.add_argument("file", help="a flight stack's [ledger] store or a ground archive")
    check.add_argument(
        "--against", metavar="FILE",
        help="also compare the archive's copy with the store (give the other file)",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="the report as JSON")
    check.set_defaults(func=check_main)
    statement = actions.add_parser(
        "statement", help="a tenant's transactions and balances over a period, as text or CSV"
    )
    statement.add_argument("file", help="a flight stack's [ledger] store or a ground archive")
    statement.add_argument("--tenant", required=True, help="the tenant's name")
    statement.add_argument(
        "--from",
        dest="since",
        metavar="TIME",
        help="start (included): an ISO time (2026-12-01), an age (30d) or epoch seconds",
    )
    statement.add_argument("--to", dest="until", metavar="TIME", help="end (excluded), as --from")
    statement.add_argument("--book", help="a ledger id (default: the latest)")
    statement.add_argument("--csv", metavar="OUT", help="write CSV to OUT ('-': stdout)")
    statement.add_argument("--json", action="store_true", help="the statement as JSON")
    statement.set_defaults(func=statement_main)
