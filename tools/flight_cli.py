"""``orbithil fly``, ``orbithil ground`` and ``orbithil dict export``."""

from __future__ import annotations

import json
import math
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

from orbithil.errors import ConfigError

# Exit codes of `ground --send` (and `fly`): what a script can tell apart.
EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 1


def _seconds(value: float, option: str, *, zero_ok: bool) -> float:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ConfigError(f"{option} {value}: give a finite number of seconds {bound}")
    return value


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 < number < 65536:
        raise ConfigError(f"--stack {text!r}: give host:port, e.g. 127.0.0.1:47001")
    host = host or "127.0.0.1"
    try:
        socket.getaddrinfo(host, number, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ConfigError(f"--stack {text!r}: cannot resolve {host!r} ({exc})") from None
    return host, number


REPL_WORDS = "TM (telemetry), HELP (this list), QUIT or EXIT (or Ctrl-D)"


def _help_lines() -> list[str]:
    from orbithil.flight.dictionary import COMMANDS
    from orbithil.flight.ground import command_usage

    lines = []
    for c in COMMANDS:
        where = f" (in {', '.join(c.modes)})" if c.modes else ""
        lines.append(f"  {command_usage(c)}  -- {c.doc}{where}")
    lines.append(f"  console: {REPL_WORDS}; arguments are name=value, enumerated values in any "
                 "case; [name=...] may be left out (it has a default)")  # fmt: skip
    return lines


def _check_arg_names(command, given: dict) -> None:
    """Unknown or missing arguments, said once with what the command takes."""
    from orbithil.flight.ground import arg_usage

    unknown = sorted(set(given) - {a.name for a in command.args})
    missing = [a.name for a in command.args if a.default is None and a.name not in given]
    if unknown or missing:
        takes = " ".join(arg_usage(a) for a in command.args)
        problems = ([f"unknown argument {', '.join(unknown)}"] if unknown else []) + (
            [f"missing argument {', '.join(missing)}"] if missing else []
        )
        raise ValueError("; ".join(problems) + (f" (arguments: {takes})" if takes else
                                                " (it takes no arguments)"))  # fmt: skip


class _ServerConsole:
    """What the console REPL uses of ``flight.ground.Ground`` (send, wait_verification,
    telemetry, events, dict_mismatch), through a ground server's API: the server checks and
    signs each command, so this side holds no key. A request the server refuses raises
    ValueError with its status and reason (a viewer's command: 403)."""

    def __init__(self, client) -> None:
        from orbithil.tools.ground.archive import now_us

        self.client = client
        self._events: list = []
        self._since_us = now_us()  # events from now on, as the direct console shows them
        self._seen_ids: set[int] = set()
        self._polled = -math.inf
        self._mismatch = False

    def __enter__(self) -> _ServerConsole:
        return self

    def __exit__(self, *exc) -> None:
        import contextlib

        with contextlib.suppress(Exception):  # a session that ended already
            self.client.logout()
        self.client.close()

    def _call(self, method, *args, **kwargs):
        import httpx

        from orbithil.tools.ground.client import ApiError

        try:
            return method(*args, **kwargs)
        except httpx.HTTPError as exc:  # the server is gone, or did not answer in time
            raise OSError(f"{self.client.url}: {exc or type(exc).__name__}") from None
        except ApiError as exc:
            if exc.status == 503:
                raise OSError(f"the server could not send it: {exc.detail}") from None
            raise ValueError(f"the server refused it ({exc.status}): {exc.detail}") from None

    def send(self, name: str, **args) -> int:
        return int(self._call(self.client.send, name, **args)["seq"])

    def wait_verification(self, seq: int, *, timeout: float = 10.0):
        from orbithil.flight.ccsds import Stage

        deadline = time.monotonic() + timeout
        while True:
            record = self._call(self.client.command_state, seq)
            if record["state"] in ("COMPLETED", "FAILED"):
                final = next(s for s in reversed(record["stages"]) if s["stage"] == record["state"])
                return Stage[record["state"]], final["reason"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"telecommand {seq}: {record['state']} after {timeout:g} s")
            time.sleep(0.05)

    @property
    def telemetry(self) -> dict[str, float]:
        latest = self._call(self.client.latest)
        return {k: (math.nan if v["value"] is None else v["value"]) for k, v in latest.items()}

    @property
    def events(self) -> list:
        """Events the server received since this console started (polled at most 2/s)."""
        import contextlib
        from types import SimpleNamespace

        if time.monotonic() - self._polled >= 0.5:
            self._polled = time.monotonic()
            rows = self._call(self.client.events, since=f"{self._since_us / 1e6:.6f}", limit=10_000)
            for row in rows:
                if row["id"] not in self._seen_ids:
                    self._seen_ids.add(row["id"])
                    self._events.append(SimpleNamespace(name=row["name"], text=row["text"]))
            with contextlib.suppress(ValueError):  # a tenant user does not see the status
                self._mismatch = bool(self._call(self.client.status).get("dict_mismatch"))
        return self._events

    @property
    def dict_mismatch(self) -> bool:
        return self._mismatch


def _server_console(args) -> _ServerConsole:
    """Log in to the ground server of ``--server`` (password: ORBITHIL_GROUND_PASSWORD, the
    prompt, or one line of standard input)."""
    import getpass

    import httpx

    from orbithil.tools.ground.client import ApiError, GroundClient

    url = args.server.strip()
    if "://" not in url:
        url = "http://" + url
    user = args.user or os.environ.get("ORBITHIL_GROUND_USER") or getpass.getuser()
    password = os.environ.get("ORBITHIL_GROUND_PASSWORD")
    if password is None:
        if sys.stdin.isatty():
            password = getpass.getpass(f"password for {user} at {url}: ")
        else:
            line = sys.stdin.readline()
            if not line:
                raise ConfigError(
                    "no password: set ORBITHIL_GROUND_PASSWORD or give it as the first line "
                    "of standard input"
                )
            password = line.rstrip("\r\n")
    client = GroundClient(url, timeout=10.0)
    try:
        client.login(user, password)
    except ApiError as exc:
        client.close()
        raise ConfigError(f"--server {url}: login as {user} refused ({exc.detail})") from None
    except (httpx.HTTPError, OSError) as exc:  # connection refused, timeout, a bad URL
        client.close()
        raise ConfigError(f"--server {url}: cannot reach it ({exc})") from None
    return _ServerConsole(client)


def ground_main(args) -> int:
    from orbithil.flight import ccsds
    from orbithil.flight.ccsds import Stage
    from orbithil.flight.dictionary import CHANNEL_BY_NAME, COMMAND_BY_NAME
    from orbithil.flight.ground import CommandRejected, Ground, show_value

    timeout = _seconds(args.timeout, "--timeout", zero_ok=False)
    watch = _seconds(args.watch, "--watch", zero_ok=True)
    results: list[dict] = []
    quitting = threading.Event()
    if getattr(args, "server", None):
        if args.keys or args.key_id is not None:
            raise ConfigError("--server: the server signs the commands; give no --keys/--key-id")
        link = _server_console(args)
        where = f"the server {link.client.url}"
        unreachable = (
            f"no completion within {timeout:g} s: the server sent it, but the stack did not "
            "answer (is it running, and does the server hear it? see its /api/status); the "
            "command may still run"
        )
    else:
        if getattr(args, "user", None):
            raise ConfigError("--user: only with --server (the server's login)")
        stack = _address(args.stack)
        keys = ccsds.load_keys(args.keys)
        if args.key_id is not None and args.key_id not in keys:
            raise ConfigError(
                f"--key-id {args.key_id}: no such key; the keys have ids {sorted(keys)}"
            )
        key_id = args.key_id if args.key_id is not None else min(keys)
        link = Ground(stack, key_id=key_id, key=keys[key_id])
        where = f"{stack[0]}:{stack[1]}"
        unreachable = (
            f"no completion within {timeout:g} s: the stack is not running at "
            f"{stack[0]}:{stack[1]}, or it could not authenticate the command (wrong "
            "key or key id, or a sequence number it refused as a replay: another "
            "machine sending with this key id?); the command may still run"
        )
    with link as g:

        def run(line: str) -> bool:
            """Run one console line; False when a command did not complete."""
            try:
                words = shlex.split(line)
            except ValueError as exc:
                print(f"{line!r}: {exc}", file=sys.stderr)
                results.append({"line": line, "status": "refused", "reason": str(exc)})
                return False
            if not words:
                return True
            name, pairs = words[0].upper(), words[1:]
            if name in ("QUIT", "EXIT"):
                quitting.set()
                return True
            if name in ("TM", "TELEMETRY"):
                if args.json:
                    return True  # the JSON object carries the telemetry
                for k, v in sorted(g.telemetry.items()):
                    channel = CHANNEL_BY_NAME.get(k)
                    out = channel is not None and (
                        (channel.high is not None and v > channel.high)
                        or (channel.low is not None and v < channel.low)
                    )
                    units = channel.units if channel else ""
                    print(f"  {k:24} {show_value(k, v):>14} {units:8}"
                          + ("  OUT OF LIMITS" if out else ""))  # fmt: skip
                return True
            if name == "HELP":
                print("\n".join(_help_lines()))
                return True
            record = {"command": name, "args": pairs}
            try:
                command = COMMAND_BY_NAME.get(name)
                if command is None:
                    raise ValueError("no command of that name; HELP lists the commands")
                if any("=" not in p for p in pairs):
                    raise ValueError(f"arguments are name=value, got {' '.join(pairs)!r}")
                kwargs = dict(p.split("=", 1) for p in pairs)
                _check_arg_names(command, kwargs)
                seq = g.send(name, **kwargs)  # values checked against the dictionary first
                stage, reason = g.wait_verification(seq, timeout=timeout)
                if stage is Stage.FAILED:
                    raise CommandRejected(name, reason)
            except ValueError as exc:  # an unknown command or an argument the dictionary refuses
                record.update(status="refused", reason=str(exc))
            except CommandRejected as exc:  # the stack ran it and it failed
                record.update(status="failed", reason=exc.reason)
            except TimeoutError:
                record.update(status="timeout", reason=unreachable)
            except OSError as exc:  # the network refused the packet (after TimeoutError,
                record.update(status="unsent", reason=str(exc))  # which is an OSError too)
            else:  # the completion's text, if any: what it made (SUBMIT_JOB's job, a quote)
                record.update(status="completed", reason=reason)
            results.append(record)
            if not args.json:
                detail = f": {record['reason']}" if record["reason"] else ""
                stream = sys.stdout if record["status"] == "completed" else sys.stderr
                print(f"{name}: {record['status']}{detail}", file=stream)
            return record["status"] == "completed"

        seen = 0

        def show_events() -> None:
            nonlocal seen
            events = list(g.events)
            for e in events[seen:]:
                print(f"[event {e.name}] {e.text}")
            seen = len(events)

        if args.send:
            ok = True
            for line in args.send:
                ok = run(line) and ok
                if quitting.is_set():
                    break
            if args.json:
                time.sleep(watch)
                events = [{"name": e.name, "text": e.text} for e in g.events]
                print(json.dumps({"commands": results, "events": events,
                                  "telemetry": dict(g.telemetry)}))  # fmt: skip
            else:
                time.sleep(watch)
                show_events()
                if watch:
                    run("tm")
            return EXIT_OK if ok else EXIT_FAILED
        print(f"orbithil ground ({where}): commands by name; {REPL_WORDS}; events print as "
              "they arrive; telemetry comes after the first command (NOOP will do)")  # fmt: skip
        stop = threading.Event()

        def live() -> None:  # events and a changed dictionary, as they arrive
            warned = False
            while not stop.wait(0.2):
                try:
                    show_events()
                except (OSError, ValueError) as exc:  # through a server that went away
                    print(f"warning: {exc}", file=sys.stderr)
                    stop.wait(5)
                    continue
                if g.dict_mismatch and not warned:
                    print("warning: the stack's dictionary differs from this one (hash)")
                    warned = True

        threading.Thread(target=live, daemon=True).start()
        try:
            while not quitting.is_set():
                try:
                    line = input("ground> ")
                except EOFError:
                    return 0
                run(line)
            return 0
        finally:
            stop.set()


def dict_main(args) -> int:
    from orbithil.flight.dictionary import export_json

    text = export_json()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def fly_main(args) -> int:
    import contextlib
    import signal

    from orbithil import hal
    from orbithil.flight import ccsds
    from orbithil.flight.stack import Config, FlightStack

    config = Config.load(args.config) if args.config else Config()
    if args.port is not None:
        if not 0 <= args.port < 65536:
            raise ConfigError(f"--port {args.port}: use 0..65535 (0 picks a free port)")
        config.udp_port = args.port
    keys = ccsds.load_keys(args.keys or config.keys_file or None)
    from orbithil.flight.dictionary import MAX_CHIPS

    if len(args.chip) > MAX_CHIPS:
        raise ConfigError(f"{len(args.chip)} --chip options: the payload takes 1..{MAX_CHIPS}")
    with contextlib.ExitStack() as opened:
        chips = [(url, opened.enter_context(hal.open(url, fec=args.fec))) for url in args.chip]
        try:
            stack = FlightStack(chips, config, keys)
        except OSError as exc:
            ports = f"udp {config.udp_port}" + (
                f" / tcp {config.tcp_port}" if config.tcp_port is not None else ""
            )
            raise ConfigError(
                f"cannot open the ground link ({ports}): {exc.strerror or exc}; another "
                "stack may be running there: choose another --port (0 picks a free one)"
            ) from None
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        with stack:
            host, port = stack.link.udp_address
            tcp = stack.link.tcp_address
            ready = {
                "chip": args.chip[0],
                "chips": args.chip,
                "udp": [host, port],
                "tcp": list(tcp) if tcp else None,
                "pid": os.getpid(),
            }
            if args.ready_file:
                target = Path(args.ready_file)
                staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
                staging.write_text(json.dumps(ready) + "\n")
                staging.replace(target)  # appears whole: a script waits for it to exist
            if args.json:
                print(json.dumps(ready), flush=True)
            else:
                chips = ", ".join(args.chip)
                print(f"flight stack up: chip {chips}, telecommands on udp://{host}:{port}"
                      + (f" and tcp://{host}:{tcp[1]}" if tcp else "") + "; Ctrl-C stops",
                      flush=True)  # fmt: skip
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                if args.ready_file:
                    Path(args.ready_file).unlink(missing_ok=True)
    print("flight stack stopped", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    f = subparsers.add_parser("fly", help="run the flight stack against a chip (any HAL URL)")
    f.add_argument(
        "--chip",
        required=True,
        action="append",
        help="HAL URL: model://, sim://verilator, /dev/tty...; repeat for a pool of chips "
        "(numbered 0, 1, ... in this order)",
    )
    f.add_argument(
        "--fec",
        choices=["auto", "on", "off"],
        default="auto",
        help="link forward error correction to the chip (default auto: while the line is noisy)",
    )
    f.add_argument("--config", help="TOML file of flight.stack.Config fields")
    f.add_argument(
        "--port", type=int, help="UDP port for telecommands (default 47001; 0: a free one)"
    )
    f.add_argument("--keys", help="key file (lines 'id hexkey'); default ORBITHIL_TC_KEYS")
    f.add_argument(
        "--ready-file",
        help="write the bound ports as JSON to this file once the stack is up (removed at "
        "exit); a script waits for the file instead of racing the start-up",
    )
    f.add_argument(
        "--json", action="store_true", help="print the bound ports as one JSON line when up"
    )
    f.set_defaults(func=fly_main)

    g = subparsers.add_parser("ground", help="ground console: commands, telemetry, events")
    g.add_argument("--stack", default="127.0.0.1:47001", help="host:port of the flight stack")
    g.add_argument(
        "--server",
        metavar="URL",
        help="go through a ground server (orbithil ground serve), e.g. http://127.0.0.1:8080: "
        "it signs the commands, so no --keys; password from ORBITHIL_GROUND_PASSWORD, the "
        "prompt, or the first line of standard input",
    )
    g.add_argument(
        "--user",
        metavar="NAME",
        help="with --server: the user to log in as (default ORBITHIL_GROUND_USER or your "
        "login name)",
    )
    g.add_argument("--keys", help="key file; default ORBITHIL_TC_KEYS")
    g.add_argument(
        "--key-id",
        type=int,
        help="which key signs the commands (default: lowest id); its sequence numbers are "
        "kept per user in ORBITHIL_STATE_DIR (default ~/.local/state/orbithil), so give each "
        "machine or operator its own key id",
    )
    g.add_argument(
        "--send",
        action="append",
        help='send one command and wait for it, e.g. "SET_MODE mode=NOMINAL" (repeatable; '
        'also "HELP", "TM", "QUIT"); exits 1 if any did not complete',
    )
    g.add_argument("--watch", type=float, default=0.0, help="with --send: seconds to listen after")
    g.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each command to complete"
    )
    g.add_argument(
        "--json", action="store_true", help="with --send: print the results as one JSON object"
    )
    g.set_defaults(func=ground_main)

    d = subparsers.add_parser("dict", help="the command/telemetry/event dictionary")
    d.add_argument("action", choices=["export"], help="export: the dictionary as JSON")
    d.add_argument("-o", "--output", help="write to this file instead of stdout")
    d.set_defaults(func=dict_main)
