"""The ground console in a real browser: Playwright driving Debian's Chromium against
`orbithil fly` (on the model) and `orbithil ground serve`, both run as a user runs them.

An operator logs in, watches telemetry change live, sees the station passes' timeline, has
a bad argument caught in the page, sends a command and sees its verification stages to
completion, while a second operator commands from the REPL with a key of their own; the
server is killed (-9) and restarted and the page finds the archive, its session and the
command history intact and telemetry live again; a viewer's command is refused by the
server. A screenshot of the console is kept under pytest's tmp dir (its path is printed).

Chromium comes from Debian (`apt-get install chromium`, done by scripts/bootstrap.sh);
Playwright's own browser download is not used. Without Chromium the test is skipped, except
in CI (CI=true), where it must run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from orbithil.tools.ground.archive import Archive
from orbithil.tools.ground.auth import Users

CHROMIUM = "/usr/bin/chromium"
START_S = 60.0
WAIT_MS = 15_000


def chromium_or_skip():
    """The Playwright module, or a skip saying what is missing (a failure in CI)."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"no Chromium at {CHROMIUM} (apt-get install chromium; make setup does)")
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing.append("the playwright package is not installed (pip install -e .[dev])")
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    return sync_api


def start(command: list[str], ready: Path, log: Path, env: dict) -> tuple[subprocess.Popen, dict]:
    """Run an orbithil command that writes a ready file once up; (process, the file's JSON)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "orbithil.tools.cli", *command],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + START_S
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{' '.join(command[:2])} did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return process, json.loads(ready.read_text())


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Console:
    """`orbithil fly` and `orbithil ground serve` running as a user runs them, and a
    Chromium page on the console (``open_console``)."""

    page: object
    expect: object
    errors: list[str]
    tmp_path: Path
    env: dict
    keys: Path
    archive: Path
    stack: str  # host:port of the flight stack
    serving: dict  # the server's ready file
    serve_args: list[str]
    processes: list[subprocess.Popen]

    def restart_serve(self, name: str) -> None:
        """Kill the ground server (-9) and start it again on the same archive."""
        serve = self.processes.pop()
        serve.kill()
        serve.wait(10)
        self.serving = self._serve(name)

    def _serve(self, name: str) -> dict:
        ready = self.tmp_path / f"{name}.json"
        serve, serving = start([*self.serve_args, "--ready-file", str(ready)], ready,
                               self.tmp_path / f"{name}.log", self.env)  # fmt: skip
        self.processes.append(serve)
        return serving

    def log_in(self, user: str, password: str, who: str) -> None:
        self.page.fill("#login-user", user)
        self.page.fill("#login-password", password)
        self.page.click("#login-submit")
        self.expect(self.page.locator("#who")).to_have_text(who)

    def send(self, name: str, **args) -> None:
        """Fill the command form and send."""
        page = self.page
        page.select_option("#cmd-name", name)
        for arg, value in args.items():
            if page.locator(f"select#arg-{arg}").count():
                page.select_option(f"#arg-{arg}", value)
            else:
                page.fill(f"#arg-{arg}", str(value))
        page.click("#cmd-send")


@pytest.fixture
def open_console(tmp_path):
    """``open_console(fly_toml=..., chips=[...], keys=..., users=[(name, role, password,
    tenant)], serve_args=[...])``: the stack, the server and a Chromium page on the
    console, all stopped after the test."""
    with contextlib.ExitStack() as cleanup:

        def opener(*, fly_toml: str, chips=("model://",), keys: str, users,
                   serve_args=()) -> Console:  # fmt: skip
            return cleanup.enter_context(
                _console(
                    tmp_path,
                    fly_toml=fly_toml,
                    chips=chips,
                    keys=keys,
                    users=users,
                    serve_args=serve_args,
                )
            )

        yield opener


@contextlib.contextmanager
def _console(tmp_path: Path, *, fly_toml: str, chips, keys: str, users, serve_args):
    sync_api = chromium_or_skip()
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    env = {**os.environ, "ORBITHIL_STATE_DIR": str(tmp_path / "state")}
    key_file = tmp_path / "keys"
    key_file.write_text(keys)
    (tmp_path / "fly.toml").write_text(fly_toml)
    archive = tmp_path / "ground.sqlite"
    known = Users(Archive(archive))
    for name, role, password, tenant in users:
        known.add(name, role, password, tenant=tenant)
    processes: list[subprocess.Popen] = []
    try:
        fly, flying = start(
            ["fly", *(a for url in chips for a in ("--chip", url)), "--keys", str(key_file),
             "--port", "0", "--config", str(tmp_path / "fly.toml"), "--ready-file",
             str(tmp_path / "fly.json")],
            tmp_path / "fly.json", tmp_path / "fly.log", env,
        )  # fmt: skip
        processes.append(fly)
        stack = f"{flying['udp'][0]}:{flying['udp'][1]}"
        args = ["ground", "serve", "--stack", stack, "--keys", str(key_file), "--key-id", "1",
                "--archive", str(archive), "--http", "127.0.0.1:0", *serve_args]  # fmt: skip
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                page.set_default_timeout(WAIT_MS)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                console = Console(page, expect, errors, tmp_path, env, key_file, archive, stack,
                                  {}, args, processes)  # fmt: skip
                console.serving = console._serve("serve")
                page.goto(console.serving["http"])
                yield console
            finally:
                browser.close()
    finally:
        for process in reversed(processes):
            stop(process)


def test_console_in_chromium_logs_in_watches_commands_and_refuses_a_viewer(open_console):
    c = open_console(
        fly_toml="hk_period_ms = 200\n",
        keys=f"1 {secrets.token_hex(32)}\n2 {secrets.token_hex(32)}\n",  # server, REPL
        users=[("ada", "operator", "ada-password", None), ("vic", "viewer", "vic-password", None)],
    )
    page, expect, errors = c.page, c.expect, c.errors
    # logging in: a wrong password is refused, the right one opens the console
    expect(page.locator("#login-form")).to_be_visible()
    page.fill("#login-user", "ada")
    page.fill("#login-password", "not-the-password")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password.")
    page.fill("#login-password", "ada-password")
    page.click("#login-submit")
    expect(page.locator("#who")).to_have_text("ada (operator)")

    # telemetry changes live
    uptime = page.locator("#tm-UPTIME_S td.value")
    expect(uptime).not_to_have_text("—")
    first = float(uptime.inner_text())
    expect(uptime).not_to_have_text(uptime.inner_text())
    assert float(uptime.inner_text()) > first
    expect(page.locator("#mode")).to_have_text("mode: SAFE")
    expect(page.locator("#link-state")).to_have_text("link: receiving")
    expect(page.locator("#tm-MODE td.value")).to_have_text("SAFE")
    expect(page.locator("#power [data-channel=POOL_CHIPS] .v")).to_have_text("1")
    expect(page.locator("#chip-0 td").nth(1)).to_have_text("healthy")

    # the station passes over the next hours: a bar per pass, now marked, the
    # next contact's countdown; the bundled 2018 TLE is said to be stale
    expect(page.locator("#pass-next")).to_contain_text(
        re.compile(r"(next contact: .+ in \d+(h\d\d)?m\d\ds)|(in contact: .+ ends in)")
    )
    expect(page.locator("#pass-timeline .pass-row")).to_have_count(5)  # 4 + merged
    assert page.locator("#pass-timeline .pass-bar").count() >= 1
    expect(page.locator("#pass-timeline .pass-now").first).to_be_visible()
    expect(page.locator("#pass-stale")).to_contain_text("days old")
    countdown = page.locator("#pass-next").inner_text()
    expect(page.locator("#pass-next")).not_to_have_text(countdown)  # it ticks

    # an argument outside the dictionary's range is caught in the page
    page.select_option("#cmd-name", "SET_HK_PERIOD")
    page.fill("#arg-ms", "5")
    page.click("#cmd-send")
    expect(page.locator("#cmd-error")).to_have_text("not sent: ms: an integer in 10..60000")

    # a command, with its verification stages as they arrive
    page.select_option("#cmd-name", "SET_MODE")
    page.select_option("#arg-mode", "NOMINAL")
    page.click("#cmd-send")
    done = page.locator("#cmd-list li[data-state=COMPLETED]", has_text="SET_MODE")
    expect(done).to_have_count(1)
    expect(done.locator(".stage")).to_have_text(["accepted", "started", "completed"])
    expect(page.locator("#mode")).to_have_text("mode: NOMINAL")
    expect(page.locator("#event-list")).to_contain_text("mode SAFE -> NOMINAL")

    # a second operator commands from the REPL with their own key meanwhile
    repl = subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", "ground", "--stack", c.stack,
         "--keys", str(c.keys), "--key-id", "2", "--send", "SET_SCRUB period=128"],
        capture_output=True, text=True, timeout=60, env=c.env,
    )  # fmt: skip
    assert repl.returncode == 0, repl.stdout + repl.stderr
    assert "SET_SCRUB: completed" in repl.stdout
    expect(page.locator("#event-list")).to_contain_text("scrubber period 128 cycles (commanded)")
    expect(page.locator("#tm-SCRUB_PERIOD td.value")).to_have_text("128")
    # and ada from the REPL through the server (it signs: no keys on that side)
    via = subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", "ground", "--server",
         c.serving["http"], "--user", "ada", "--send", "SET_SCRUB period=512"],
        capture_output=True, text=True, timeout=60,
        env={**c.env, "ORBITHIL_GROUND_PASSWORD": "ada-password"},
    )  # fmt: skip
    assert via.returncode == 0, via.stdout + via.stderr
    assert "SET_SCRUB: completed" in via.stdout
    by_repl = page.locator("#cmd-list li[data-state=COMPLETED]", has_text="SET_SCRUB")
    expect(by_repl).to_have_count(1)  # the page sees the server's command live
    expect(page.locator("#tm-SCRUB_PERIOD td.value")).to_have_text("512")
    expect(uptime).not_to_have_text(uptime.inner_text())  # still live

    shot = c.tmp_path / "ground-console.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot of the ground console: {shot}")

    # the server killed and restarted: the archive and the session are intact
    c.restart_serve("serve2")
    page.goto(c.serving["http"])  # still logged in: sessions live in the archive
    expect(page.locator("#who")).to_have_text("ada (operator)")
    restored = page.locator("#cmd-list li[data-state=COMPLETED]", has_text="SET_MODE")
    expect(restored).to_have_count(1)
    expect(page.locator("#event-list")).to_contain_text("mode SAFE -> NOMINAL")
    expect(uptime).not_to_have_text("—")
    expect(uptime).not_to_have_text(uptime.inner_text())  # live again
    history = page.request.get(
        f"{c.serving['http']}/api/telemetry/UPTIME_S/history?since=10m&max_points=0"
    ).json()["values"]
    assert min(history) <= first < max(history)  # before the kill, and after

    # a viewer's command is refused by the server
    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    page.fill("#login-user", "vic")
    page.fill("#login-password", "vic-password")
    page.click("#login-submit")
    expect(page.locator("#who")).to_have_text("vic (viewer)")
    expect(page.locator("#cmd-role")).to_contain_text("logged in as a viewer")
    page.select_option("#cmd-name", "NOOP")
    page.click("#cmd-send")
    expect(page.locator("#cmd-error")).to_have_text(
        "NOOP refused (403): vic is a viewer: only operators send telecommands"
    )
    assert errors == []
    assert shot.stat().st_size > 10_000
    assert Archive(c.archive).integrity_check() == "ok"


def tenants_console(open_console, tmp_path) -> Console:
    """The console of a stack with tenant acme (key 2) on two model chips: users ada
    (operator) and bob (tenant acme)."""
    return open_console(
        fly_toml=('hk_period_ms = 200\n[[tenants]]\nname = "acme"\nkey_ids = [2]\n'
                  f'[ledger]\nstore = "{tmp_path / "ledger.sqlite"}"\n'),
        chips=["model://", "model://?harden=0"],
        keys=f"1 {secrets.token_hex(32)}\n2 {secrets.token_hex(32)}\n",  # operators, acme
        users=[("ada", "operator", "ada-password", None),
               ("bob", "tenant", "bob-password", "acme")],
        serve_args=["--tenants", str(tmp_path / "fly.toml")],
    )  # fmt: skip


def test_console_shows_the_tenants_tokens_and_a_tenant_submits_and_sees_only_its_own(
    open_console, tmp_path
):
    """An operator grants a tenant tokens from the page and sees its account; the tenant's
    user logs in, is offered only a tenant's commands, submits a job (signed by the server
    with the tenant's key) and sees it held, settled and charged, and nothing of the rest."""
    c = tenants_console(open_console, tmp_path)
    page, expect, errors, log_in, send = c.page, c.expect, c.errors, c.log_in, c.send
    # the operator tops acme up from the tenants panel and opens compute
    log_in("ada", "ada-password", "ada (operator)")
    expect(page.locator("#ledger-state")).to_have_text("ledger: no transactions yet")
    expect(page.locator("#topup-tenant option")).to_have_text(["acme"])  # every tenant
    page.select_option("#topup-tenant", label="acme")
    page.fill("#topup-tokens", "5000")
    page.click("#topup-send")
    expect(page.locator("#topup-status")).to_have_text(re.compile(r"GRANT_TOKENS sent \(#\d+\)"))
    granted = page.locator("#cmd-list li[data-state=COMPLETED]", has_text="GRANT")
    expect(granted.locator(".stage").last).to_have_text(
        re.compile(r"completed: acme: 5000 tokens available \(txn 1\)")
    )
    expect(page.locator("#tenant-acme td").nth(1)).to_have_text("5000")
    expect(page.locator("#ledger-state")).to_contain_text("1 transactions")
    send("SET_MODE", mode="NOMINAL")
    send("SET_MODE", mode="COMPUTE")
    expect(page.locator("#mode")).to_have_text("mode: COMPUTE")

    # the tenant's user: a tenant's commands only, its own account and jobs
    page.click("#logout")
    log_in("bob", "bob-password", "bob (tenant acme)")
    expect(page.locator("#cmd-role")).to_contain_text("You act for tenant acme")
    options = page.locator("#cmd-name option").all_inner_texts()
    assert options == ["NOOP", "RUN_INFERENCE", "SUBMIT_JOB", "QUOTE_JOB"]
    expect(page.locator("section.payload")).to_be_hidden()
    expect(page.locator("#cmd-list li")).to_have_count(0)  # ada's are not shown
    send("SUBMIT_JOB", first=0, count=5, policy="dmr")
    job = page.locator("#cmd-list li[data-state=COMPLETED]", has_text="SUBMIT_JOB")
    expect(job.locator(".stage").last).to_have_text(re.compile(
        r"completed: job 1: 5 images under dmr; acme holds \d+ tokens for it "
        r"\(hold 2\), \d+ available"
    ))  # fmt: skip
    expect(page.locator("#event-list")).to_contain_text("job 1 of acme settled")
    expect(page.locator("#ledger-list li[data-kind=settle]")).to_have_count(1)
    expect(page.locator("#tenant-acme td").nth(4)).to_have_text("1")  # jobs
    cells = page.locator("#tenant-acme td").all_inner_texts()
    available, held, spent = (int(c) for c in cells[1:4])
    assert spent > 0 and held == 0 and available + spent == 5000
    expect(page.locator("#tenants tbody tr")).to_have_count(1)  # its own only
    expect(page.locator("#tm-TENANT0_AVAILABLE td.value")).to_have_text(str(available))
    expect(page.locator("#tm-SOC")).to_have_count(0)  # not a tenant's channel
    assert "mode SAFE -> NOMINAL" not in page.locator("#event-list").inner_text()
    # its statement: the period's transactions with the balances at both ends
    page.fill("#statement-from", "1d")
    page.click("#statement-show")
    expect(page.locator("#statement-summary")).to_contain_text(
        f"opening 0 available, 0 held, 0 spent; closing {available} available, 0 held, "
        f"{spent} spent"
    )
    expect(page.locator("#statement tbody tr td:nth-child(3)")).to_have_text(
        ["grant", "reserve", "settle"]
    )
    expect(page.locator("#statement-csv")).to_have_attribute("href", re.compile(r"format=csv"))
    # an operator's action is refused, visibly: a tenant cannot top itself up
    page.fill("#topup-tokens", "1000000")
    page.click("#topup-send")
    expect(page.locator("#topup-status")).to_have_text(re.compile(
        r"top-up refused \(403\): GRANT_TOKENS is the operators'; a tenant sends NOOP"
    ))  # fmt: skip
    expect(page.locator("#tenant-acme td").nth(1)).to_have_text(str(available))  # unchanged
    shot = tmp_path / "ground-console-tenant.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot of a tenant's console: {shot}")
    assert errors == []
