"""``orbithil ground serve``, ``orbithil ground query``, ``orbithil ground user`` and
``orbithil ground ledger``.

``orbithil ground`` itself is the console REPL of tools/flight_cli.py (``orbithil ground
[--stack ...] [--send ...]``). These are sub-commands of that same parser: an optional
sub-command, so ``orbithil ground`` with options alone still runs the REPL, and ``orbithil
ground serve ...`` runs the server. Options both share (``--stack``, ``--keys``,
``--key-id``) may stand before or after the sub-command's name.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import json
import os
import sys
from pathlib import Path

from orbithil.errors import ConfigError

DEFAULT_HTTP = "127.0.0.1:8080"


def _host_port(text: str, option: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 <= number < 65536:
        raise ConfigError(f"{option} {text!r}: give host:port, e.g. 127.0.0.1:8080 (port 0: any)")
    return (host.strip("[]") or default_host), number


def serve_main(args) -> int:
    import signal

    from orbithil.flight import ccsds
    from orbithil.tools.ground.api import bind_http, uvicorn_server
    from orbithil.tools.ground.server import GroundServer, ServerConfig

    stack = _host_port(getattr(args, "stack", None) or "127.0.0.1:47001", "--stack")
    if stack[1] == 0:
        raise ConfigError("--stack: give the flight stack's port (orbithil fly prints it)")
    keys = ccsds.load_keys(getattr(args, "keys", None))
    key_id = getattr(args, "key_id", None)
    if key_id is not None and key_id not in keys:
        raise ConfigError(f"--key-id {key_id}: no such key; the keys have ids {sorted(keys)}")
    if args.retention_days < 0:
        raise ConfigError("--retention-days: give a number of days >= 0 (0: keep everything)")
    if not args.ledger_check_s > 0:
        raise ConfigError("--ledger-check-s: give a number of seconds > 0 (default 15)")
    if not 0 < args.session_hours <= 24 * 30:
        raise ConfigError("--session-hours: give a number of hours in (0, 720]")
    http = _host_port(args.http, "--http")
    from orbithil.payload.passes import load_stations
    from orbithil.tools.passes_cli import _orbit

    stations = load_stations(args.stations) if args.stations else ()
    orbit = _orbit(args.tle) if args.tle else None
    tenants = ()
    if args.tenants:
        from orbithil.flight.ledger import tenants_from_file

        tenants = tenants_from_file(args.tenants)
        unsigned = [t.name for t in tenants if not set(t.key_ids) & set(keys)]
        if unsigned:
            print(
                f"warning: --keys holds no key of tenant(s) {', '.join(unsigned)}: their users "
                "cannot send commands through this server",
                file=sys.stderr,
            )
    config = ServerConfig(
        stack=stack,
        keys=keys,
        key_id=key_id,
        archive=Path(args.archive),
        downlink=_host_port(args.downlink, "--downlink"),
        retention_days=args.retention_days,
        session_hours=args.session_hours,
        claim=not args.no_claim,
        orbit=orbit,
        stations=stations,
        tle=str(args.tle or ""),
        tenants=tenants,
        ledger_check_s=args.ledger_check_s,
    )
    try:
        sock = bind_http(*http)
    except OSError as exc:
        raise ConfigError(
            f"--http {args.http}: cannot listen there ({exc.strerror or exc}); "
            "choose another port (0 picks a free one)"
        ) from None
    server = GroundServer(config)
    if not server.users.list():
        print(
            f"warning: {args.archive} has no users yet; add one with `orbithil ground user add "
            f"NAME --role operator --archive {args.archive}`",
            file=sys.stderr,
        )
    try:
        server.start()
    except OSError as exc:
        why = exc.strerror or exc
        raise ConfigError(f"--downlink {args.downlink}: cannot bind ({why})") from None
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    down = server.downlink_address
    ready = {
        "http": url,
        "downlink": [down[0], down[1]],
        "stack": list(stack),
        "archive": str(args.archive),
        "pid": os.getpid(),
    }
    if host not in ("127.0.0.1", "::1", "localhost"):
        print(
            f"warning: the console listens on {host}, not loopback: put it behind TLS "
            "(a reverse proxy) before anyone logs in over a network",
            file=sys.stderr,
        )
    uv = uvicorn_server(server, log_level="info" if getattr(args, "verbose", 0) else "warning")
    target = Path(args.ready_file) if args.ready_file else None
    try:
        if target:
            staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            staging.write_text(json.dumps(ready) + "\n")
            staging.replace(target)
        if args.json:
            print(json.dumps(ready), flush=True)
        else:
            print(
                f"ground server: console and API on {url} (OpenAPI: {url}/api/openapi.json), "
                f"stack {stack[0]}:{stack[1]}, telemetry received on udp://{down[0]}:{down[1]}, "
                f"archive {args.archive}; Ctrl-C stops",
                flush=True,
            )
        signal.signal(signal.SIGTERM, lambda *a: setattr(uv, "should_exit", True))
        uv.run(sockets=[sock])
    finally:
        server.stop()
        sock.close()
        if target:
            target.unlink(missing_ok=True)
    print("ground server stopped", file=sys.stderr)
    return 0


def query_main(args) -> int:
    try:
        return _query(args)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _query(args) -> int:
    from orbithil.tools.ground.archive import Archive, iso, parse_time

    archive = Archive(args.archive, create=False)
    series = archive.query(args.channel.upper(), parse_time(args.since), parse_time(args.until))
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["time_utc", "rx_us", "onboard_s", "value"])
        for rx, onboard, value in zip(
            series.rx_us.tolist(), series.onboard_us.tolist(), series.values.tolist(), strict=True
        ):
            writer.writerow([iso(rx), rx, f"{onboard / 1e6:.6f}", repr(value)])
        return 0
    if args.json:
        print(
            json.dumps(
                {
                    "channel": series.channel,
                    "rx_us": series.rx_us.tolist(),
                    "onboard_us": series.onboard_us.tolist(),
                    "values": [v if v == v else None for v in series.values.tolist()],
                }
            )
        )
        return 0
    for rx, value in zip(series.rx_us.tolist(), series.values.tolist(), strict=True):
        print(f"{iso(rx)}  {value:.10g}")
    print(f"{len(series)} samples of {series.channel}", file=sys.stderr)
    return 0


def _password(args) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("the two passwords differ; nothing was changed")
        return first
    line = sys.stdin.readline()
    if not line:
        raise ConfigError("no password on standard input (give it as one line)")
    return line.rstrip("\r\n")


def user_main(args) -> int:
    from orbithil.tools.ground.archive import Archive, iso
    from orbithil.tools.ground.auth import Users

    users = Users(Archive(args.archive, create=args.action == "add"))
    if args.action == "add":
        users.add(args.name, args.role, _password(args), tenant=args.tenant, replace=args.replace)
        done = "set" if args.replace else "added"
        of = f" of tenant {args.tenant}" if args.tenant else ""
        print(f"user {args.name} ({args.role}{of}) {done} in {args.archive}")
    elif args.action == "remove":
        users.remove(args.name)
        print(f"user {args.name} removed; their sessions ended")
    else:
        for user in users.list():
            of = f" {user['tenant']}" if user["tenant"] else ""
            print(f"{user['name']:24} {user['role'] + of:20} since {iso(user['created_us'])}")
    return 0


def ledger_main(args) -> int:
    """The ledger as the archive booked it: each tenant's account, then the transactions."""
    from orbithil.tools.ground import ledger
    from orbithil.tools.ground.archive import Archive, iso

    db = Archive(args.archive, create=False).connect()
    known = ledger.books(db)
    book = args.book or (known[0]["book"] if known else None)
    if book is not None and book not in {b["book"] for b in known}:
        raise ConfigError(f"--book {book}: no such ledger in {args.archive}; ledgers: "
                          f"{', '.join(b['book'] for b in known) or 'none'}")  # fmt: skip
    tenants = [args.tenant] if args.tenant else []
    accounts = ledger.accounts(db, book, tenants) if book else {}
    if args.tenant:
        accounts = {args.tenant: accounts[args.tenant]}
    rows = ledger.statement(db, book, tenant=args.tenant, limit=args.limit) if book else []
    if args.json:
        print(json.dumps({"book": book, "books": known, "accounts": accounts,
                          "transactions": rows}))  # fmt: skip
        return 0
    if book is None:
        print(f"no ledger transactions in {args.archive} yet")
        return 0
    this = next(b for b in known if b["book"] == book)
    gaps = f", {this['missing']} missing: {this['missing_txns']}" if this["missing"] else ""
    print(f"ledger {book}: {this['txns']} transactions{gaps}"
          + ("" if this["balanced"] else "; ITS POSTINGS DO NOT SUM TO ZERO"))  # fmt: skip
    print(f"  {'tenant':16} {'available':>10} {'held':>8} {'spent':>8} {'jobs':>6} {'cycles':>12}")
    for name, a in accounts.items():
        differs = "" if a["agrees"] else f"  (on board: {a['onboard_available']} available)"
        print(f"  {name:16} {a['available']:>10} {a['held']:>8} {a['spent']:>8} {a['jobs']:>6} "
              f"{a['cycles']:>12}{differs}")  # fmt: skip
    for t in rows:
        moved = ", ".join(f"{account} {amount:+d}" for account, amount in t["postings"])
        job = f" job {t['job']}" if t["job"] is not None else ""
        why = f" ({t['why']})" if t["why"] else ""
        when = iso(t["rx_us"])
        print(f"{when}  txn {t['txn']:>5} {t['kind']:7} {t['tenant']}{job}: {moved}{why}")
    return 0


def register(subparsers) -> None:
    ground = subparsers.choices.get("ground")
    if ground is None:  # the REPL is not registered (yet): the sub-commands stand alone
        ground = subparsers.add_parser("ground", help="ground segment: server, archive, users")
    actions = ground.add_subparsers(
        title="ground segment (without one of these: the console REPL)",
        metavar="ACTION",
        dest="ground_action",
        required=False,
    )
    # argparse writes an optional sub-command into the usage line as if it were required
    # ("... ACTION ..."): say both forms instead
    prog = ground.prog
    ground.usage = (
        f"{prog} [--server URL [--user NAME] | --stack HOST:PORT --keys FILE] "
        f"[--send LINE ...] [options]\n       {prog} {{serve,query,user,ledger,passes}} ... "
        f"(see {prog} ACTION --help)"
    )
    shared = argparse.ArgumentParser(add_help=False)
    # default SUPPRESS: the REPL parser's own values (given before the name) stay
    shared.add_argument(
        "--stack",
        default=argparse.SUPPRESS,
        help="host:port of the flight stack (default 127.0.0.1:47001)",
    )
    shared.add_argument(
        "--keys", default=argparse.SUPPRESS, help="telecommand key file; default ORBITHIL_TC_KEYS"
    )
    shared.add_argument(
        "--key-id",
        type=int,
        default=argparse.SUPPRESS,
        help="which key signs the commands (default: the lowest id)",
    )

    s = actions.add_parser(
        "serve",
        parents=[shared],
        help="link, archive, API and browser console in one process",
        description="Hold the link to a flight stack, archive every packet in SQLite and serve "
        "the HTTP + WebSocket API and the browser console (loopback by default).",
    )
    s.add_argument("--archive", required=True, help="SQLite archive file (created if missing)")
    s.add_argument(
        "--http",
        default=DEFAULT_HTTP,
        help=f"host:port of the console and API (default {DEFAULT_HTTP}; port 0: any)",
    )
    s.add_argument(
        "--downlink",
        default="127.0.0.1:0",
        help="host:port where telemetry is received (default: a free loopback port); "
        "the stack's ground_host/ground_port may name it",
    )
    s.add_argument(
        "--retention-days",
        type=float,
        default=30.0,
        help="delete what was received longer ago (default 30; 0: keep everything)",
    )
    s.add_argument(
        "--session-hours",
        type=float,
        default=8.0,
        help="console sessions end after this long (default 8)",
    )
    s.add_argument(
        "--ledger-check-s",
        type=float,
        default=15.0,
        help="how often the archive's ledger is compared with the stack's: transactions "
        "missing asked again (LEDGER_RESEND), balances reconciled (LEDGER_MISMATCH) (default 15)",
    )
    s.add_argument(
        "--no-claim",
        action="store_true",
        help="never send a command on the server's own: no NOOP to make the stack send "
        "telemetry here, no LEDGER_RESEND for ledger transactions the archive missed",
    )
    s.add_argument(
        "--stations",
        metavar="FILE",
        help="TOML file of [[stations]] tables for the console's passes (name, lat, lon, "
        "alt_m, min_elevation_deg); default: Svalbard, Wallops, Malindi, Hartebeesthoek",
    )
    s.add_argument(
        "--tle",
        metavar="FILE",
        help="the spacecraft's TLE (two lines, or a name line and two); default: the bundled "
        "ISS element set (from 2018: passes from it show the geometry, not real times)",
    )
    s.add_argument(
        "--tenants",
        metavar="FILE",
        help="TOML file whose [[tenants]] tables (name, key_ids) are the stack's (its flight "
        "config will do): tenant users' commands are signed with their tenant's key (give it "
        "in --keys)",
    )
    s.add_argument(
        "--ready-file", help="write the URLs and ports as JSON here once serving (removed at exit)"
    )
    s.add_argument("--json", action="store_true", help="print the URLs as one JSON line")
    s.set_defaults(func=serve_main)

    q = actions.add_parser("query", help="a channel's archived samples (table, CSV or JSON)")
    q.add_argument("channel", help="telemetry channel, e.g. UPTIME_S (orbithil dict export)")
    q.add_argument("--archive", required=True, help="SQLite archive of `orbithil ground serve`")
    q.add_argument(
        "--since",
        default="1h",
        help="age (90s, 10m, 2h, 1d), ISO time (UTC unless zoned), epoch s; default 1h",
    )
    q.add_argument("--until", default="now", help="as --since; default now")
    form = q.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="CSV: time_utc, rx_us, onboard_s, value")
    form.add_argument("--json", action="store_true", help="one JSON object")
    q.set_defaults(func=query_main)

    u = actions.add_parser("user", help="console users: add, list, remove")
    u.add_argument(
        "action",
        choices=["add", "list", "remove"],
        help="add (password from the prompt or one line of stdin), list, remove",
    )
    u.add_argument("name", nargs="?", help="user name (add, remove)")
    u.add_argument(
        "--role",
        choices=["operator", "viewer", "tenant"],
        default="viewer",
        help="operator: may send telecommands; viewer: reads only (default); tenant: submits "
        "and quotes its tenant's jobs (signed with the tenant's key) and sees its own account",
    )
    u.add_argument(
        "--tenant", metavar="NAME", help="with --role tenant: the tenant it acts for ([[tenants]])"
    )
    u.add_argument("--archive", required=True, help="the server's archive file (holds users)")
    u.add_argument(
        "--replace",
        action="store_true",
        help="add: set a new password and role for an existing user",
    )
    u.set_defaults(func=_user_checked)

    led = actions.add_parser(
        "ledger",
        help="tenants' accounts and ledger transactions, as the archive booked them",
        description="The compute-token ledger the stack reported in its events, as the ground "
        "server booked it: each tenant's tokens available, held and spent, and the "
        "transactions with their postings.",
    )
    led.add_argument("--archive", required=True, help="SQLite archive of `orbithil ground serve`")
    led.add_argument("--tenant", metavar="NAME", help="one tenant's account and transactions")
    led.add_argument("--book", metavar="ID", help="a ledger id (default: the latest reported)")
    led.add_argument("--limit", type=int, default=50, help="transactions shown (default 50)")
    led.add_argument("--json", action="store_true", help="one JSON object")
    led.set_defaults(func=ledger_main)

    from orbithil.tools import passes_cli

    passes_cli.add_arguments(
        actions.add_parser("passes", help=passes_cli.HELP, description=passes_cli.__doc__)
    )


def _user_checked(args) -> int:
    if args.action in ("add", "remove") and not args.name:
        raise ConfigError(f"user {args.action}: give the user's name")
    if args.action == "add" and (args.role == "tenant") != bool(args.tenant):
        raise ConfigError(
            "user add --role tenant: give --tenant NAME (the tenant it acts for)"
            if args.role == "tenant"
            else "--tenant: only with --role tenant"
        )
    return user_main(args)
