"""The ground server (tools/ground): the archive (decoding, segments, queries, retention,
surviving kill -9), users and sessions, the HTTP + WebSocket API against a flight stack on
the model, the Python client, and the CLI (serve, query, user; the REPL's options intact)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from spacepackets.ccsds.spacepacket import PacketType

from orbithil.flight import ccsds
from orbithil.flight.dictionary import (
    APID_EVENT,
    APID_HK,
    APID_VERIFY,
    CHANNEL_BY_NAME,
    CHANNELS,
    DICT_HASH32,
    EVENT_BY_NAME,
)
from orbithil.flight.ground import MemorySequence
from orbithil.tools.cli import build_parser, main
from orbithil.tools.ground.api import HttpThread
from orbithil.tools.ground.archive import (
    SEGMENT_SAMPLES,
    US,
    Archive,
    ArchiveError,
    decode_batch,
    parse_time,
)
from orbithil.tools.ground.auth import AuthError, Role, Users
from orbithil.tools.ground.client import ApiError, GroundClient
from orbithil.tools.ground.server import GroundServer, ServerConfig

T0 = 1_750_000_000 * US  # a fixed reception time: results do not depend on the clock
HK_CHANNELS = [c.id for c in CHANNELS[:40]]
UPTIME = CHANNEL_BY_NAME["UPTIME_S"].id


def hk_packet(index: int, value: float | None = None, channels=HK_CHANNELS) -> bytes:
    """A housekeeping packet whose every channel holds ``value`` (default: ``index``)."""
    v = float(index) if value is None else value
    data = ccsds.hk_data(index * 1000, DICT_HASH32, [(c, v) for c in channels])
    return ccsds.pack(PacketType.TM, APID_HK, index, data)


def event_packet(index: int, name: str = "MODE_CHANGED", text: str = "mode SAFE -> NOMINAL"):
    data = ccsds.event_data(index * 1000, EVENT_BY_NAME[name].id, 1, text)
    return ccsds.pack(PacketType.TM, APID_EVENT, index, data)


def verify_packet(index: int, seq: int, stage: ccsds.Stage, reason: str = "") -> bytes:
    return ccsds.pack(
        PacketType.TM, APID_VERIFY, index, ccsds.verify_data(index * 1000, seq, 0x01, stage, reason)
    )


# --- decoding -------------------------------------------------------------------------------
@given(
    st.lists(
        st.tuples(st.sampled_from([3, 40, 7]), st.floats(allow_nan=False, width=64)),
        min_size=1,
        max_size=30,
    )
)
def test_batch_decoder_gives_what_ccsds_parse_hk_gives(packets):
    """The vectorised decoder (one layout at a time) equals the reference parser, packet by
    packet, for mixed layouts and any values."""
    batch, expected = [], {}
    for i, (n, value) in enumerate(packets):
        raw = hk_packet(i, value, channels=HK_CHANNELS[:n])
        batch.append((T0 + i, raw))
        t, _, values = ccsds.parse_hk(ccsds.unpack(raw)[1])
        for channel, v in values.items():
            expected.setdefault(channel, []).append((T0 + i, t, v))
    decoded = decode_batch(batch)
    assert not decoded.malformed
    assert set(decoded.samples) == set(expected)
    for channel, rows in expected.items():
        rx, onboard, value = decoded.samples[channel]
        assert rx.tolist() == [r[0] for r in rows]
        assert onboard.tolist() == [r[1] for r in rows]
        assert value.tolist() == [r[2] for r in rows]


def test_malformed_packets_are_reported_with_the_reason_not_dropped_silently():
    good = hk_packet(1)
    batch = [
        (T0, b"\x08\x10\xc0"),  # shorter than a header
        (T0 + 1, good[:-3]),  # length field disagrees
        (T0 + 2, ccsds.pack(PacketType.TM, 0x033, 0, b"\x00")),  # not a telemetry APID
        (T0 + 3, good),
    ]
    decoded = decode_batch(batch)
    reasons = dict(decoded.malformed)
    assert "shorter than a space packet" in reasons[0]
    assert "length field says" in reasons[1]
    assert "APID 0x033 is not telemetry" in reasons[2]
    assert len(decoded.packets) == 2  # a readable header is archived raw all the same
    assert decoded.samples[UPTIME][2].tolist() == [1.0]


# --- the archive ----------------------------------------------------------------------------
def test_archive_stores_every_kind_and_queries_a_channel_by_time(tmp_path):
    archive = Archive(tmp_path / "a.sqlite")
    index = 0
    for size in (1, 7, SEGMENT_SAMPLES + 5, 1, 300, 1, *[1] * 200):  # live and burst sizes
        batch = []
        for _ in range(size):
            batch.append((T0 + index * US, hk_packet(index)))
            index += 1
        archive.ingest(batch)
    archive.ingest(
        [
            (T0 + index * US, event_packet(index)),
            (T0 + index * US, verify_packet(index, 42, ccsds.Stage.ACCEPTED)),
            (T0 + index * US, verify_packet(index, 42, ccsds.Stage.COMPLETED)),
        ]
    )
    everything = archive.query("UPTIME_S")
    assert everything.values.tolist() == [float(i) for i in range(index)]
    assert everything.rx_us.tolist() == [T0 + i * US for i in range(index)]
    assert everything.onboard_us.tolist() == [i * 1000 for i in range(index)]
    part = archive.query("UPTIME_S", T0 + 100 * US, T0 + 199 * US)
    assert part.values.tolist() == [float(i) for i in range(100, 200)]
    assert archive.query("UPTIME_S", T0 + 10**9 * US).values.tolist() == []
    counts = archive.counts()
    assert counts["packets"] == index + 3
    assert counts["samples"] == index * len(HK_CHANNELS)
    # 206 batches, but small segments are merged once a channel has SEGMENT_SAMPLES in them:
    # per channel the burst's full segment, the merged one, and 3 samples since, one by one
    assert counts["segments"] == len(HK_CHANNELS) * 5
    assert [e["text"] for e in archive.events(0)] == ["mode SAFE -> NOMINAL"]
    assert [v["stage"] for v in archive.verifications(42)] == ["ACCEPTED", "COMPLETED"]
    assert [r for r, _ in archive.raw_packets()][:3] == [T0, T0 + US, T0 + 2 * US]
    assert archive.integrity_check() == "ok"
    with pytest.raises(ArchiveError, match="no telemetry channel 'UPTIME'; did you mean UPTIME_S"):
        archive.query("UPTIME")


def test_a_day_of_housekeeping_at_1_hz_is_few_rows_and_reads_back_whole(tmp_path):
    archive = Archive(tmp_path / "a.sqlite")
    day = 86_400
    for start in range(0, day, 3600):  # an hour per transaction keeps the test quick
        archive.ingest(
            [(T0 + i * US, hk_packet(i, channels=[UPTIME])) for i in range(start, start + 3600)]
        )
    series = archive.query("UPTIME_S", T0, T0 + day * US)
    assert len(series) == day
    assert np.array_equal(series.values, np.arange(day, dtype=float))
    assert archive.counts()["segments"] <= day // SEGMENT_SAMPLES + 24


def test_retention_deletes_what_is_older_and_keeps_the_rest(tmp_path):
    archive = Archive(tmp_path / "a.sqlite")
    old, new = T0 - 10 * 86400 * US, T0
    archive.ingest([(old + i, hk_packet(i)) for i in range(3)] + [(old, event_packet(0))])
    archive.ingest([(new + i, hk_packet(100 + i)) for i in range(3)] + [(new, event_packet(1))])
    deleted = archive.retain(5, now=T0)
    assert deleted["packets"] == 4 and deleted["events"] == 1
    assert deleted["samples"] == len(HK_CHANNELS)  # one segment per channel
    assert archive.query("UPTIME_S").values.tolist() == [100.0, 101.0, 102.0]
    assert len(archive.events(0)) == 1
    assert archive.integrity_check() == "ok"


def test_times_are_read_as_ages_iso_or_epoch_and_errors_say_the_forms():
    now = T0
    assert parse_time("now", now=now) == now
    assert parse_time("90s", now=now) == now - 90 * US
    assert parse_time("2h", now=now) == now - 7200 * US
    assert parse_time("-1d", now=now) == now - 86400 * US
    assert parse_time("1750000000", now=now) == T0
    assert parse_time("2025-06-15T15:06:40", now=now) == T0  # UTC unless a zone is given
    assert parse_time("2025-06-15T17:06:40+02:00", now=now) == T0
    with pytest.raises(ArchiveError, match=r"give an age \(30s, 10m, 2h, 1d\), an ISO"):
        parse_time("yesterday-ish")


def test_an_archive_that_is_not_sqlite_is_refused_with_the_reason(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(ArchiveError, match="not a usable SQLite file"):
        Archive(bad)
    with pytest.raises(ArchiveError, match="does not exist; `orbithil ground serve --archive"):
        Archive(tmp_path / "missing.sqlite", create=False)


# --- users ----------------------------------------------------------------------------------
def test_users_passwords_roles_and_sessions(tmp_path):
    users = Users(Archive(tmp_path / "a.sqlite"))
    users.add("ada", "operator", "correct horse")
    users.add("vic", Role.VIEWER, "battery staple")
    assert users.authenticate("ada", "correct horse") is Role.OPERATOR
    assert users.authenticate("ada", "wrong horse") is None
    assert users.authenticate("nobody", "correct horse") is None
    row = users.archive.connect().execute("SELECT hash, kdf FROM users WHERE name='ada'").fetchone()
    assert b"correct horse" not in row[0] and row[1] == "scrypt:n=131072,r=8,p=1,dklen=32"

    token, _ = users.open_session("vic", Role.VIEWER)
    assert users.session(token).role is Role.VIEWER
    assert users.session("forged") is None
    stored = users.archive.connect().execute("SELECT token_hash FROM sessions").fetchall()
    assert all(token.encode() not in row[0] for row in stored)  # only the hash is kept
    expired, _ = users.open_session("vic", Role.VIEWER, hours=-1)
    assert users.session(expired) is None
    users.add("vic", "operator", "new password", replace=True)  # ends vic's sessions
    assert users.session(token) is None

    with pytest.raises(AuthError, match=r"user 'ada' exists; .* --replace"):
        users.add("ada", "viewer", "whatever123")
    with pytest.raises(AuthError, match="shorter than 8 characters"):
        users.add("bob", "viewer", "short")
    with pytest.raises(AuthError, match="role 'admin': use viewer, operator or tenant"):
        users.add("bob", "admin", "long enough")
    with pytest.raises(AuthError, match="user name 'a b'"):
        users.add("a b", "viewer", "long enough")


# --- the server and its API against a flight stack on the model --------------------------
@pytest.fixture
def ground_server(flight_stack, tmp_path):
    """A flight stack on the model, a ground server in this process, users ada (operator)
    and vic (viewer); yields (stack handle, server, base URL)."""
    fs = flight_stack("model://", hk_period_ms=100)
    config = ServerConfig(
        stack=fs.stack.link.udp_address,
        keys={1: fs.ground.key},
        archive=tmp_path / "g.sqlite",
        sequence=MemorySequence(1_000_000),  # above the fixture's own client's numbers
    )
    server = GroundServer(config)
    server.users.add("ada", "operator", "ada-password")
    server.users.add("vic", "viewer", "vic-password")
    server.start()
    http = HttpThread(server).start()
    try:
        yield fs, server, http.url
    finally:
        http.stop()
        server.stop()


def wait_until(check, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.02)


def test_api_needs_a_session_and_only_operators_command(ground_server):
    _, server, url = ground_server
    with httpx.Client(base_url=url, timeout=10) as http:
        for path in (
            "/api/me",
            "/api/dictionary",
            "/api/status",
            "/api/telemetry",
            "/api/telemetry/UPTIME_S/history",
            "/api/events",
            "/api/commands",
        ):
            assert http.get(path).status_code == 401, path
        answer = http.post("/api/commands", json={"name": "NOOP"})
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"] == "Bearer"
        assert http.get("/api/me", headers={"authorization": "Bearer forged"}).status_code == 401
        wrong = http.post("/api/login", json={"username": "ada", "password": "nope-nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong user name or password"
        assert http.get("/api/openapi.json").status_code == 200  # the API's description is public
        page = http.get("/")
        assert page.status_code == 200 and "orbithil ground" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]

    viewer = GroundClient(url)
    viewer.login("vic", "vic-password")
    assert viewer.me()["role"] == "viewer"
    with pytest.raises(ApiError) as refused:
        viewer.send("NOOP")
    assert refused.value.status == 403
    assert refused.value.detail == "vic is a viewer: only operators send telecommands"
    assert server.stats["commands"] <= 1  # at most the server's own claim: nothing was sent
    viewer.logout()
    with pytest.raises(ApiError) as ended:
        viewer.me()
    assert ended.value.status == 401


def test_an_operator_commands_through_the_server_and_sees_every_stage(ground_server):
    _, server, url = ground_server
    ada = GroundClient(url)
    login = ada.login("ada", "ada-password")
    assert login["role"] == "operator" and login["expires_us"] > time.time() * US
    dictionary = ada.dictionary()
    assert {"NOOP", "SET_MODE"} <= {c["name"] for c in dictionary["commands"]}
    assert dictionary["channel_enums"]["MODE"] == ["SAFE", "NOMINAL", "COMPUTE"]

    record = ada.command("set_mode", mode="nominal", wait_s=10)  # names in any case
    assert record["name"] == "SET_MODE" and record["args"] == {"mode": "NOMINAL"}
    assert record["state"] == "COMPLETED"
    assert [s["stage"] for s in record["stages"]] == ["ACCEPTED", "STARTED", "COMPLETED"]
    assert ada.command_state(record["seq"])["state"] == "COMPLETED"
    wait_until(
        lambda: ada.latest().get("MODE", {}).get("value") == 1,
        timeout=5,
        what="MODE 1 in the latest telemetry",
    )
    assert ada.status()["mode"] == "NOMINAL"

    failed = ada.command("RUN_INFERENCE", index=3, wait_s=10)  # the stack refuses it
    assert failed["state"] == "FAILED" and failed["seq"] > record["seq"]
    assert failed["stages"][-1]["reason"] == "not allowed in NOMINAL (allowed in COMPUTE)"

    with pytest.raises(ApiError) as bad:
        ada.send("CHIP_INJECT", kind="mem", index=5, bit=39, copy=0)
    assert bad.value.status == 422 and bad.value.detail == "argument bit=39: allowed 0..38"
    with pytest.raises(ApiError) as unknown:
        ada.send("LAUNCH")
    assert unknown.value.status == 422 and "no command 'LAUNCH'" in unknown.value.detail

    # what went by is in the archive: the mode change event, UPTIME_S history, commands
    events = wait_until(
        lambda: [e for e in ada.events(since="1m") if e["name"] == "MODE_CHANGED"],
        timeout=5,
        what="MODE_CHANGED in the archive",
    )
    assert events[0]["text"] == "mode SAFE -> NOMINAL"
    history = ada.history("UPTIME_S", since="1m")
    assert len(history["values"]) >= 3 and history["values"] == sorted(history["values"])
    assert [(c["user"], c["name"]) for c in server.archive.commands()] == [
        ("(server)", "NOOP"),
        ("ada", "SET_MODE"),
        ("ada", "RUN_INFERENCE"),
    ]
    with pytest.raises(ApiError) as missing:
        ada.history("NOT_A_CHANNEL")
    assert missing.value.status == 404


def test_the_stream_carries_telemetry_and_a_commands_verification(ground_server):
    _, _, url = ground_server
    ada = GroundClient(url)
    ada.login("ada", "ada-password")
    seen: dict[str, list] = {"telemetry": [], "verification": [], "hello": []}
    sent: list[int] = []

    def send_when_streaming():
        wait_until(lambda: seen["telemetry"], timeout=10, what="streamed telemetry")
        sent.append(GroundClient(url, token=ada.token).send("NOOP")["seq"])

    sender = threading.Thread(target=send_when_streaming, daemon=True)
    sender.start()
    deadline = time.monotonic() + 15
    for message in ada.stream(timeout=5):
        seen.setdefault(message["type"], []).append(message)
        stages = [m["stage"] for m in seen["verification"] if sent and m["seq"] == sent[0]]
        if "COMPLETED" in stages or time.monotonic() > deadline:
            break
    sender.join(5)
    assert seen["hello"][0]["user"] == "ada"
    uptimes = [m["values"]["UPTIME_S"] for m in seen["telemetry"] if "UPTIME_S" in m["values"]]
    assert len(uptimes) >= 1 and uptimes == sorted(uptimes)
    assert [m["stage"] for m in seen["verification"] if m["seq"] == sent[0]] == [
        "ACCEPTED",
        "STARTED",
        "COMPLETED",
    ]
    assert {m["command"] for m in seen["verification"] if m["seq"] == sent[0]} == {"NOOP"}


def test_a_websocket_without_a_session_is_refused(ground_server):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    _, _, url = ground_server
    with pytest.raises(InvalidStatus) as refused:
        connect("ws" + url[4:] + "/api/stream", open_timeout=5)
    assert refused.value.response.status_code == 401


# --- the command line -----------------------------------------------------------------------
def test_serve_query_and_user_are_sub_commands_beside_the_repl_options():
    parser = build_parser()
    repl = parser.parse_args(["ground", "--stack", "10.0.0.1:47001", "--send", "NOOP"])
    assert repl.func.__name__ == "ground_main" and repl.send == ["NOOP"]
    assert parser.parse_args(["ground"]).func.__name__ == "ground_main"
    serve = parser.parse_args(["ground", "--stack", "h:1", "serve", "--archive", "a.sqlite"])
    assert serve.func.__name__ == "serve_main" and serve.stack == "h:1"  # kept from before
    serve = parser.parse_args(["ground", "serve", "--stack", "h:2", "--archive", "a.sqlite"])
    assert serve.stack == "h:2" and serve.http == "127.0.0.1:8080"
    query = parser.parse_args(["ground", "query", "SOC", "--archive", "a", "--csv"])
    assert query.func.__name__ == "query_main" and query.channel == "SOC"


def test_query_prints_a_channel_as_csv(tmp_path, capsys):
    archive = Archive(tmp_path / "a.sqlite")
    archive.ingest([(T0 + i * US, hk_packet(i)) for i in range(5)])
    code = main(
        [
            "ground",
            "query",
            "uptime_s",
            "--archive",
            str(archive.path),
            "--since",
            str(T0 // US + 1),
            "--until",
            str(T0 // US + 3),
            "--csv",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines == [
        "time_utc,rx_us,onboard_s,value",
        "2025-06-15T15:06:41.000000+00:00,1750000001000000,0.001000,1.0",
        "2025-06-15T15:06:42.000000+00:00,1750000002000000,0.002000,2.0",
        "2025-06-15T15:06:43.000000+00:00,1750000003000000,0.003000,3.0",
    ]
    assert main(["ground", "query", "UPTIME", "--archive", str(archive.path)]) == 2
    assert "did you mean UPTIME_S" in capsys.readouterr().err


def test_user_add_reads_the_password_from_stdin(tmp_path):
    archive = tmp_path / "a.sqlite"
    cli = [sys.executable, "-m", "orbithil.tools.cli", "ground", "user"]
    added = subprocess.run(
        [*cli, "add", "ada", "--role", "operator", "--archive", str(archive)],
        input="s3cret-pass\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"user ada (operator) added in {archive}"
    listed = subprocess.run(
        [*cli, "list", "--archive", str(archive)], capture_output=True, text=True, timeout=60
    )
    assert listed.stdout.split()[:2] == ["ada", "operator"]
    assert Users(Archive(archive)).authenticate("ada", "s3cret-pass") is Role.OPERATOR
    again = subprocess.run(
        [*cli, "add", "ada", "--archive", str(archive)],
        input="another-pass\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "user 'ada' exists" in again.stderr


# --- surviving kill -9 ----------------------------------------------------------------------
def start_serve(tmp_path: Path, stack: tuple[str, int], archive: Path, name: str,
                extra: tuple[str, ...] = ()):  # fmt: skip
    """`orbithil ground serve` as a user runs it (``extra``: more options); (process, its
    ready-file contents, its log file)."""
    ready = tmp_path / f"{name}.json"
    keys = tmp_path / "keys"
    if not keys.exists():
        keys.write_text(f"1 {os.urandom(32).hex()}\n")
    env = {**os.environ, "ORBITHIL_STATE_DIR": str(tmp_path / "state")}
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orbithil.tools.cli",
            "ground",
            "serve",
            "--stack",
            f"{stack[0]}:{stack[1]}",
            "--keys",
            str(keys),
            "--archive",
            str(archive),
            "--http",
            "127.0.0.1:0",
            "--ready-file",
            str(ready),
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(
                f"ground serve did not start: {(tmp_path / f'{name}.log').read_text()}"
            )
        time.sleep(0.05)
    return process, json.loads(ready.read_text()), log


def archived(archive: Path) -> tuple[int, int]:
    """(packets, UPTIME_S samples) committed in the archive, read as another process would."""
    db = sqlite3.connect(archive, timeout=10)
    try:
        packets = db.execute("SELECT COUNT(*) FROM packets").fetchone()[0]
        samples = db.execute(
            "SELECT COALESCE(SUM(n), 0) FROM samples WHERE channel = ?", (UPTIME,)
        ).fetchone()[0]
        return packets, samples
    finally:
        db.close()


def test_killed_mid_ingest_and_restarted_the_archive_keeps_everything_committed(tmp_path):
    archive = tmp_path / "g.sqlite"
    stack = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a stand-in for the stack
    stack.bind(("127.0.0.1", 0))
    stack.settimeout(10)
    try:
        server, ready, log = start_serve(tmp_path, stack.getsockname(), archive, "first")
        claim, _ = stack.recvfrom(ccsds.MAX_PACKET)  # the server claims the downlink: a NOOP
        assert struct.unpack_from(">BIH", claim, 6)[2] == 0x01
        downlink = tuple(ready["downlink"])
        stop = threading.Event()
        sent = [0]

        def blast():  # housekeeping as fast as this thread can make it, until told to stop
            while not stop.is_set():
                for _ in range(200):
                    stack.sendto(hk_packet(sent[0]), downlink)
                    sent[0] += 1
                time.sleep(0.001)

        blaster = threading.Thread(target=blast, daemon=True)
        blaster.start()
        try:
            wait_until(lambda: archived(archive)[0] >= 5000, timeout=60, what="5000 archived")
            committed, _ = archived(archive)
            server.send_signal(signal.SIGKILL)  # mid-ingest: packets still arriving
            server.wait(10)
        finally:
            stop.set()
            blaster.join(5)
            log.close()
        packets, samples = archived(archive)
        assert packets >= committed
        assert samples == packets  # each packet's samples committed with it, or neither
        db = sqlite3.connect(archive)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw_values = sorted(
            ccsds.parse_hk(ccsds.unpack(raw)[1])[2][UPTIME]
            for (raw,) in db.execute("SELECT raw FROM packets")
        )
        db.close()
        before = Archive(archive).query("UPTIME_S").values
        assert sorted(before.tolist()) == raw_values  # samples are exactly the packets' values

        # restarted: what was stored is there, and ingest goes on
        server, ready, log = start_serve(tmp_path, stack.getsockname(), archive, "second")
        downlink = tuple(ready["downlink"])
        for i in range(1000):  # paced: none lost on loopback
            stack.sendto(hk_packet(10**6 + i), downlink)
            if i % 50 == 49:
                time.sleep(0.005)
        wait_until(
            lambda: archived(archive)[0] >= packets + 1000,
            timeout=30,
            what="the second server's 1000 packets archived",
        )
        server.send_signal(signal.SIGTERM)
        assert server.wait(20) == 0
        log.close()
        after = Archive(archive)
        values = after.query("UPTIME_S").values
        assert np.array_equal(values[: len(before)], before)
        assert values[len(before) :].tolist() == [float(10**6 + i) for i in range(1000)]
        assert after.integrity_check() == "ok"
        assert not (tmp_path / "second.json").exists()  # removed at a clean exit
    finally:
        stack.close()


# --- the benchmark's pieces, at small sizes (nothing timed is asserted) ------------------
def test_bench_ground_pieces_run_and_lose_nothing_at_a_gentle_rate(tmp_path):
    from orbithil.tools.bench import BENCHMARKS
    from orbithil.tools.bench import ground as bench

    assert BENCHMARKS["ground"][0] == "orbithil.tools.bench.ground"
    assert bench.archive_ingest(tmp_path, 2000, batch=500) > 0
    rate, lost = bench.server_ingest(tmp_path, 2000, rate=5000)
    assert rate > 0 and lost == 0
    live = bench.latency(tmp_path, 1.0, browser=False)
    assert live["ws_updates"] >= 5 and live["ws_latency_ms_median"] >= 0


# --- station passes -------------------------------------------------------------------------
def _same_plan(got, plan):
    """The endpoint's stations, passes and windows are ``plan``'s, to the millisecond."""
    assert [s["name"] for s in got["stations"]] == [s.name for s in plan.stations]
    for station in got["stations"]:
        want = plan.passes[station["name"]]
        assert [p["rise_s"] for p in station["passes"]] == pytest.approx(
            [p.rise_s for p in want], abs=1e-3
        )
        assert [p["set_s"] for p in station["passes"]] == pytest.approx(
            [p.set_s for p in want], abs=1e-3
        )
    assert [t for w in got["windows"] for t in (w["start_s"], w["end_s"])] == pytest.approx(
        [t for w in plan.windows for t in (w.start_s, w.end_s)], abs=1e-3
    )


def test_the_passes_endpoint_gives_what_pass_plan_gives_for_the_same_window(ground_server):
    from orbithil.payload.orbit import Orbit
    from orbithil.payload.passes import DEFAULT_STATIONS, pass_plan

    _, _server, url = ground_server
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/api/passes").status_code == 401
    client = GroundClient(url)
    client.login("vic", "vic-password")  # a viewer may see the passes
    got = client.passes(hours=6)
    orbit = Orbit.default()
    assert got["satellite"] == orbit.name and got["hours"] == 6
    assert got["start_s"] <= got["now_s"] < got["start_s"] + 60  # from now, minute-aligned
    assert abs(got["now_s"] - (time.time() - orbit.epoch.timestamp())) < 60
    assert got["tle_age_days"] == pytest.approx(got["now_s"] / 86400, abs=1e-3)
    assert got["stale"] is True  # the bundled ISS TLE is from 2018
    _same_plan(got, pass_plan(orbit, DEFAULT_STATIONS, got["start_s"], 6))
    upcoming = [w for w in got["windows"] if w["end_s"] > got["now_s"]]
    assert got["next_window"] == (upcoming[0] if upcoming else None)
    if upcoming:
        assert got["next_in_s"] == pytest.approx(
            max(0.0, upcoming[0]["start_s"] - got["now_s"]), abs=1e-3
        )
    # A plan from a given start does not depend on the wall clock: from the TLE's epoch
    # (2018-10-02 18:03:36 UTC, minute-aligned down) the ISS sees a station within 6 h.
    epoch_s = orbit.epoch.timestamp()
    pinned = client.passes(hours=6, start=orbit.epoch.isoformat())
    assert pinned["start_s"] == pytest.approx(math.floor(epoch_s / 60) * 60 - epoch_s)
    _same_plan(pinned, pass_plan(orbit, DEFAULT_STATIONS, pinned["start_s"], 6))
    assert pinned["windows"], "the ISS sees one of four stations within 6 h of its epoch"
    assert pinned["now_s"] == pytest.approx(time.time() - epoch_s, abs=60)  # still now
    assert client.passes(hours=6, start=epoch_s)["windows"] == pinned["windows"]
    with pytest.raises(ApiError) as bad:
        client.passes(hours=6, start="yesterday-ish")
    assert bad.value.status == 422 and "ISO" in str(bad.value)
    with pytest.raises(ApiError) as bad:
        client.passes(hours=0)
    assert bad.value.status == 422


def test_serve_takes_stations_and_a_tle(tmp_path):
    from orbithil.payload.passes import load_stations

    (tmp_path / "st.toml").write_text('[[stations]]\nname = "Here"\nlat = 10\nlon = 20\n')
    args = build_parser().parse_args(
        ["ground", "serve", "--archive", "a", "--stations", str(tmp_path / "st.toml")]
    )
    assert [s.name for s in load_stations(args.stations)] == ["Here"] and args.tle is None
    keys = tmp_path / "keys"
    keys.write_text(f"1 {os.urandom(32).hex()}\n")
    (tmp_path / "bad.toml").write_text("not toml [")
    base = ["ground", "serve", "--keys", str(keys), "--archive", str(tmp_path / "a.sqlite")]
    base += ["--http", "127.0.0.1:0"]
    for extra, said in (
        (["--stations", str(tmp_path / "bad.toml")], "is not readable TOML"),
        (["--tle", str(tmp_path / "missing.tle")], "does not exist"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "orbithil.tools.cli", *base, *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 2 and said in run.stderr, run.stderr
    assert not (tmp_path / "a.sqlite").exists()  # refused before anything was made


def test_ground_usage_does_not_make_the_sub_command_look_required(capsys):
    with pytest.raises(SystemExit):
        main(["ground", "--help"])
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "ACTION ..." not in usage.replace("ACTION --help", "")
    assert "--server URL" in usage and "{serve,query,user,ledger,passes}" in usage


# --- the REPL through the server ------------------------------------------------------------
def ground_via_server(url: str, user: str, password: str, *lines: str, extra=()):
    env = {**os.environ, "ORBITHIL_GROUND_PASSWORD": password}
    env.pop("ORBITHIL_TC_KEYS", None)  # no keys needed: the server signs
    command = [sys.executable, "-m", "orbithil.tools.cli", "ground", "--server", url]
    command += ["--user", user, *extra]
    for line in lines:
        command += ["--send", line]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)


def test_the_repl_commands_through_the_server_without_keys(ground_server):
    fs, server, url = ground_server
    done = ground_via_server(url, "ada", "ada-password", "SET_MODE mode=nominal")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SET_MODE: completed" in done.stdout
    assert fs.ground.wait_telemetry("MODE", lambda v: v == 1, timeout=10)
    assert [r["user"] for r in server.command_records() if r["name"] == "SET_MODE"] == ["ada"]

    as_json = ground_via_server(
        url, "ada", "ada-password", "NOOP", "SET_HK_PERIOD ms=5", extra=["--json", "--watch", "0.5"]
    )
    assert as_json.returncode == 1, as_json.stderr
    report = json.loads(as_json.stdout)
    assert [c["status"] for c in report["commands"]] == ["completed", "refused"]
    assert "ms" in report["commands"][1]["reason"] and "(422)" in report["commands"][1]["reason"]
    assert report["telemetry"]["MODE"] == 1

    failed = ground_via_server(url, "ada", "ada-password", "SET_MODE mode=NOMINAL")  # already
    assert failed.returncode in (0, 1)  # the stack decides; the REPL reports it either way
    assert "SET_MODE: " in failed.stdout + failed.stderr


def test_through_the_server_a_viewer_is_refused_with_the_reason_and_exit_1(ground_server):
    _, server, url = ground_server
    refused = ground_via_server(url, "vic", "vic-password", "NOOP")
    assert refused.returncode == 1
    assert (
        "NOOP: refused: the server refused it (403): vic is a viewer: only operators send "
        "telecommands" in refused.stderr
    )
    assert all(r["user"] != "vic" for r in server.command_records())  # nothing sent
    wrong = ground_via_server(url, "vic", "not-vics-password", "NOOP")
    assert wrong.returncode == 2 and "login as vic refused (wrong user name or password)" in (
        wrong.stderr
    )


def test_the_repl_through_the_server_reads_the_password_from_stdin(ground_server):
    _, _server, url = ground_server
    env = {k: v for k, v in os.environ.items() if k != "ORBITHIL_GROUND_PASSWORD"}
    done = subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", "ground", "--server", url, "--user", "ada"],
        input="ada-password\nNOOP\ntm\nquit\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "NOOP: completed" in done.stdout and "MODE" in done.stdout


def test_an_expired_session_is_refused_by_the_api_and_ends_its_stream(ground_server, monkeypatch):
    """Session expiry on a clock the test moves (the server's now_us), not on waiting."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    from orbithil.tools.ground import api as api_mod
    from orbithil.tools.ground import auth as auth_mod

    _, _, url = ground_server
    ada = GroundClient(url)
    login = ada.login("ada", "ada-password")
    assert ada.me()["user"] == "ada"
    headers = {"authorization": f"Bearer {ada.token}"}
    with connect("ws" + url[4:] + "/api/stream", open_timeout=5,
                 additional_headers=headers) as stream:  # fmt: skip
        assert json.loads(stream.recv(timeout=5))["type"] == "hello"
        later = login["expires_us"] + 1  # one microsecond past the session's end
        monkeypatch.setattr(auth_mod, "now_us", lambda: later)
        monkeypatch.setattr(api_mod, "now_us", lambda: later)
        with pytest.raises(ApiError) as ended:
            ada.me()
        assert ended.value.status == 401
        with pytest.raises(ApiError) as refused:
            ada.send("NOOP")
        assert refused.value.status == 401
        with pytest.raises(ConnectionClosed) as closed:  # the open stream ends at its next message
            for _ in range(1000):
                stream.recv(timeout=10)
        assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "session expired"
    with pytest.raises(InvalidStatus) as again:  # and a new stream is refused
        connect("ws" + url[4:] + "/api/stream", open_timeout=5, additional_headers=headers)
    assert again.value.response.status_code == 401
    monkeypatch.undo()
    fresh = GroundClient(url)
    fresh.login("ada", "ada-password")  # a new login opens a new session
    assert fresh.me()["user"] == "ada"
