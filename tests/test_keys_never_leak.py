"""Security of the keys and the bindings, end to end as a user runs it: with -vv (debug
logs, every event, tracebacks), through commands, refusals, forged and malformed
telecommands, the ground server and every key-file mistake, no output holds any part of
a key; and the stack and the ground server bind to loopback unless told otherwise."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orbithil.flight import ccsds

KEY = random.Random(19).randbytes(32)  # fixed: the same search strings on every run
OTHER = random.Random(20).randbytes(32)


def key_forms(key: bytes) -> list[str]:
    """Ways a key could be printed, each cut to 8 bytes' worth (a part is a leak too)."""
    part = key[:8]
    return [part.hex(), part.hex().upper(), repr(part)[2:-1],
            base64.b64encode(key).decode()[:11], base64.urlsafe_b64encode(key).decode()[:11],
            " ".join(f"{b:02x}" for b in part), str(list(part))[1:-1]]  # fmt: skip


def assert_no_key(text: str, where: str) -> None:
    for form in key_forms(KEY):
        assert form not in text, f"a form of the key ({form!r}) in {where}"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ORBITHIL_TC_KEYS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orbithil.tools.cli", *args]


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return json.loads(path.read_text())


def _sigint_default() -> None:
    """In the child: SIGINT as from a terminal (a shell's background job, as a CI runner's
    may be, starts its children with it ignored, and _stop would wait out its timeout)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_keys_never_appear_in_logs_events_tracebacks_or_verbose_output(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"# the ops key\n1 {KEY.hex()}  # trailing comment\n")
    config = tmp_path / "fly.toml"
    config.write_text("tcp_port = 0\nhk_period_ms = 100\n")
    env = _env(tmp_path)
    fly_log, serve_log = tmp_path / "fly.log", tmp_path / "serve.log"
    with open(fly_log, "wb") as out:
        fly = subprocess.Popen(
            _cli("-vv", "fly", "--chip", "model://", "--keys", str(keys), "--config",
                 str(config), "--port", "0", "--ready-file", str(tmp_path / "fly.json")),
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, preexec_fn=_sigint_default,
        )  # fmt: skip
    serve = None
    outputs = {}
    try:
        ready = _wait_for(tmp_path / "fly.json", fly, fly_log)
        # loopback unless told otherwise: UDP and TCP
        assert ready["udp"][0] == "127.0.0.1" and ready["tcp"][0] == "127.0.0.1", ready
        stack = f"127.0.0.1:{ready['udp'][1]}"
        # a console at -vv: a command that completes, one the stack refuses, telemetry
        console = subprocess.run(
            _cli("-vv", "ground", "--stack", stack, "--keys", str(keys), "--send", "NOOP",
                 "--send", "SET_MODE mode=COMPUTE", "--send", "TM", "--json"),
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert console.returncode == 1, console.stderr  # SET_MODE COMPUTE failed, as meant
        outputs["ground console"] = console.stdout + console.stderr
        # forged (another key), unknown key id, malformed: refused, counted, logged as events
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for raw in (ccsds.telecommand(1, OTHER, 10**6, 0, b""),
                        ccsds.telecommand(9, KEY, 1, 0, b""), b"\x10\x20\x00"):  # fmt: skip
                udp.sendto(raw, ("127.0.0.1", ready["udp"][1]))
        # the ground server at -vv: it signs with the key, archives, serves on loopback
        with open(serve_log, "wb") as out:
            serve = subprocess.Popen(
                _cli("-vv", "ground", "serve", "--stack", stack, "--keys", str(keys),
                     "--archive", str(tmp_path / "g.sqlite"), "--http", "127.0.0.1:0",
                     "--ready-file", str(tmp_path / "serve.json")),
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                preexec_fn=_sigint_default,
            )  # fmt: skip
        served = _wait_for(tmp_path / "serve.json", serve, serve_log)
        assert "127.0.0.1" in json.dumps(served) and "0.0.0.0" not in json.dumps(served)
        deadline = time.monotonic() + 30
        while "TC_REJECTED" not in fly_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        if serve is not None:
            _stop(serve)
        _stop(fly)
    outputs["fly -vv"] = fly_log.read_text()
    outputs["ground serve -vv"] = serve_log.read_text()
    assert outputs["fly -vv"].count("event TC_REJECTED") >= 3, outputs["fly -vv"][-3000:]
    assert "DEBUG" in outputs["fly -vv"] and "event " in outputs["fly -vv"]
    archive = (tmp_path / "g.sqlite").read_bytes()
    assert KEY not in archive and KEY.hex().encode() not in archive
    for where, text in outputs.items():
        assert_no_key(text, where)


@pytest.mark.parametrize(
    "line",
    [
        "1 {hex} extra words",
        "x {hex}",
        "1 {odd}",
        "1={hex}",
        "1 {hex}zz",
        "300 {hex}",
    ],
)
def test_a_bad_key_line_never_shows_the_key_even_with_a_traceback(tmp_path, line):
    keys = tmp_path / "keys"
    keys.write_text(line.format(hex=KEY.hex(), odd=KEY.hex()[:-1]) + "\n")
    env = _env(tmp_path)
    for verbose in ((), ("-vv",)):
        done = subprocess.run(_cli(*verbose, "fly", "--chip", "model://", "--keys", str(keys),
                                   "--port", "0"),
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=60)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert_no_key(done.stdout + done.stderr, f"{line!r} {verbose}")


@pytest.mark.parametrize("value", ["1={hex}", "1:{hex}:2", "1:{hex}zz", "{hex}"])
def test_a_bad_key_in_the_environment_never_shows_either(tmp_path, value):
    env = {**_env(tmp_path), "ORBITHIL_TC_KEYS": value.format(hex=KEY.hex())}
    for verbose in ((), ("-vv",)):
        done = subprocess.run(_cli(*verbose, "fly", "--chip", "model://", "--port", "0"),
                              capture_output=True, text=True, env=env, cwd=tmp_path,
                              timeout=60)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "Traceback" in done.stderr if verbose else "Traceback" not in done.stderr
        assert_no_key(done.stdout + done.stderr, f"{value!r} {verbose}")
