"""What a new user trips on, at the command line: one clear line and exit 2 for their
errors (a traceback with -v), help on every option, JSON for what scripts parse, and
`ground --send` that says (with its exit code) whether each command completed."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbithil.tools.cli import build_parser


def orbithil(*args: str, env: dict | None = None, cwd=None, timeout=120):
    environ = {k: v for k, v in os.environ.items() if k != "ORBITHIL_TC_KEYS"}
    return subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**environ, **(env or {})},
        cwd=cwd, check=False,
    )  # fmt: skip


def user_error(done, *fragments: str) -> str:
    """The run failed as a user's error: exit 2, one line, no traceback; returns it."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orbithil: error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def keys(tmp_path) -> Path:
    path = tmp_path / "keys"
    path.write_text(f"# the ops key\n4 {secrets.token_hex(32)}  # trailing comment\n")
    return path


def _walk(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", "(the command itself)", helps.get(name)
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield path, "/".join(action.option_strings) or action.dest, action.help


def test_every_command_and_option_has_help():
    missing = [f"{cmd}: {opt}" for cmd, opt, text in _walk(build_parser(), "orbithil")
               if not text]  # fmt: skip
    assert not missing, "no help text:\n" + "\n".join(missing)


def test_a_missing_key_file_is_one_line_and_exit_2(tmp_path):
    done = orbithil("fly", "--chip", "model://", "--keys", str(tmp_path / "nope"))
    user_error(done, "key file", "does not exist", "secrets.token_hex")
    verbose = orbithil("-v", "fly", "--chip", "model://", "--keys", str(tmp_path / "nope"))
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_no_keys_at_all_says_how_to_make_one():
    user_error(orbithil("fly", "--chip", "model://"), "no telecommand keys", "--keys")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("4 zz{}\n", "line 1: key 4 is not hexadecimal"),
        ("four {}\n", "line 1: the key id is not a number"),
        ("# c\n4 {}\n4 {}\n", "line 3: key id 4 is given twice"),
        ("4\n", "line 1: write each key as 'id hexkey'"),
    ],
)
def test_a_malformed_key_file_names_the_line_and_never_prints_the_key(tmp_path, text, fragment):
    secret = secrets.token_hex(32)
    path = tmp_path / "keys"
    path.write_text(text.format(secret, secret))
    line = user_error(orbithil("fly", "--chip", "model://", "--keys", str(path)), fragment)
    assert secret not in line and secret[:16] not in line


def test_a_key_in_the_environment_is_never_printed_either():
    secret = secrets.token_hex(32)
    done = orbithil("fly", "--chip", "model://", env={"ORBITHIL_TC_KEYS": f"1={secret}"})
    line = user_error(done, "ORBITHIL_TC_KEYS, entry 1: write each key as 'id:hexkey'")
    assert secret not in line


@pytest.mark.parametrize("url", ["model://?harden=2", "sim://verilator?harden=2"])
def test_harden_2_is_refused_at_the_command_line(keys, url):
    user_error(orbithil("fly", "--chip", url, "--keys", str(keys)), "harden='2'", "one of 0, 1")


def test_a_port_in_use_is_one_line(keys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        done = orbithil("fly", "--chip", "model://", "--keys", str(keys), "--port", str(port))
    user_error(done, f"udp {port}", "choose another --port")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--timeout", "nan"], "--timeout nan"),
        (["--timeout", "inf"], "--timeout inf"),
        (["--timeout", "0"], "--timeout 0"),
        (["--watch", "-1"], "--watch -1"),
        (["--stack", "localhost"], "give host:port"),
        (["--key-id", "9"], "--key-id 9: no such key"),
        (["--stack", "nohost.invalid:47001"], "cannot resolve 'nohost.invalid'"),
    ],
)
def test_ground_refuses_bad_options_at_once(keys, args, fragment):
    started = time.monotonic()
    user_error(orbithil("ground", "--keys", str(keys), "--send", "NOOP", *args), fragment)
    assert time.monotonic() - started < 30  # refused, not waited out


@pytest.fixture
def stack(tmp_path, keys):
    """`orbithil fly` on the model, started as a script would: wait for its ready file."""
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orbithil.tools.cli", "fly", "--chip", "model://",
         "--keys", str(keys), "--port", "0", "--ready-file", str(ready), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no ready file within 60 s"
        time.sleep(0.05)
    info = json.loads(ready.read_text())
    assert info == json.loads(proc.stdout.readline())  # --json prints the same, once up
    yield f"{info['udp'][0]}:{info['udp'][1]}"
    proc.terminate()
    proc.wait(timeout=30)
    assert not ready.exists()  # removed at exit: a stale file never says "ready"


def test_ground_send_exit_codes_say_whether_commands_completed(stack, keys, tmp_path):
    ok = orbithil("ground", "--stack", stack, "--keys", str(keys), "--send", "NOOP",
                  "--send", "SET_MODE mode=NOMINAL", "--json")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert [c["status"] for c in result["commands"]] == ["completed", "completed"]

    unknown = orbithil("ground", "--stack", stack, "--keys", str(keys), "--send", "FLY_TO_MARS")
    assert unknown.returncode == 1 and "FLY_TO_MARS: refused: no command" in unknown.stderr

    bad_arg = orbithil("ground", "--stack", stack, "--keys", str(keys),
                       "--send", "SET_MODE mode=BANANA", "--json")  # fmt: skip
    assert bad_arg.returncode == 1
    [record] = json.loads(bad_arg.stdout)["commands"]
    assert record["status"] == "refused" and "BANANA" in record["reason"]

    clash = orbithil("ground", "--stack", stack, "--keys", str(keys), "--send", "NOOP timeout=3")
    assert clash.returncode == 1 and "NOOP: refused" in clash.stderr, clash.stderr

    wrong = tmp_path / "wrong"
    wrong.write_text(f"4 {secrets.token_hex(32)}\n")
    started = time.monotonic()
    denied = orbithil("ground", "--stack", stack, "--keys", str(wrong), "--send", "NOOP",
                      "--timeout", "1.5")  # fmt: skip
    assert denied.returncode == 1 and "wrong key" in denied.stderr
    assert time.monotonic() - started < 30


def test_scripts_get_json_from_selftest_and_campaign_commands(tmp_path):
    selftest = orbithil("selftest", "--json")
    assert selftest.returncode == 0 and json.loads(selftest.stdout)["ok"] is True
    plan = orbithil("campaign", "plan", "--margin", "0.01", "--json")
    assert json.loads(plan.stdout)["sample_size"] == 9604
    missing = orbithil("campaign", "status", str(tmp_path / "none.sqlite"), "--json")
    user_error(missing, "no campaign store")


def test_piped_tables_are_not_cut_to_80_columns():
    done = orbithil("doctor")
    assert done.returncode == 0
    widths = [len(line) for line in done.stdout.splitlines()]
    assert max(widths) > 100  # the table keeps its width when piped
    assert sys.executable in done.stdout.replace("\n", "")  # a long path, on one line
    assert any(sys.executable in line for line in done.stdout.splitlines())


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ('contact_passes = "x"', "contact_passes = 'x' is not allowed; use a list of [start_s"),
        ("contact_passes = [[2.0, 1.0]]", "contact_passes = [[2.0, 1.0]] is not allowed"),
        ("chip_poll_ms = -1", "chip_poll_ms = -1 is not allowed; use an integer 1..60000"),
        ("hk_period_ms = 0", "hk_period_ms = 0 is not allowed"),
        ('policy = "best"', "policy = 'best' is not allowed; use none | rerun | dmr | tmr"),
        ('clock = "sundial"', "clock = 'sundial' is not allowed"),
        ("time_factor = nan", "time_factor = nan is not allowed"),
        ("udp_port = 70000", "udp_port = 70000 is not allowed; use a port 0..65535"),
        ('pipeline = "yes"', "pipeline = 'yes' is not allowed; use true or false"),
        ("stations = 3", "stations = 3 is not allowed"),
    ],
)
def test_a_bad_flight_config_value_is_refused_at_load(tmp_path, keys, setting, fragment):
    config = tmp_path / "fly.toml"
    config.write_text(setting + "\n")
    done = orbithil("fly", "--chip", "model://", "--keys", str(keys), "--config", str(config),
                    timeout=60)  # fmt: skip
    user_error(done, f"{config}: {fragment}")


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """``orbithil dict export | head -1``: the reader closes the pipe; the command stops
    with the shell's code for it (141), not a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orbithil.tools.cli", "dict", "export"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # gone before the first byte: every write meets a closed pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
