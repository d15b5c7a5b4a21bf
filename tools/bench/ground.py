"""``orbithil bench ground``: the ground server's archive and its live path.

- archive ingest: housekeeping packets (the stack's one-chip layout, 59 channels) decoded
  and committed by ``Archive.ingest`` in the batches the server's writer takes under a
  flood (group commit), packets/s; and the same through a running server: packets sent over
  UDP by another process at a paced rate, counted once committed (and any lost);
- query: 24 h of housekeeping at 1 Hz (the last 10 minutes committed one packet per
  transaction, as the live server does), one channel's whole day read back, median and
  worst of repeated queries; the same through the HTTP API (JSON, every point) for scale;
- update latency: a packet's arrival at the server to its value on the page (Debian's
  Chromium driven by Playwright; the page notes each render) and to a WebSocket client,
  median and p99, housekeeping at 20 Hz.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from spacepackets.ccsds.spacepacket import PacketType

from orbithil.flight import ccsds
from orbithil.flight.dictionary import APID_HK, CHANNELS, DICT_HASH32
from orbithil.flight.ground import MemorySequence
from orbithil.tools.ground.archive import SEGMENT_SAMPLES, US, Archive, now_us

from . import BenchResult

CHROMIUM = "/usr/bin/chromium"
# the housekeeping of a one-chip stack: every channel but those of chips 1..7
ONE_CHIP = [
    c.id for c in CHANNELS if not c.name.startswith(tuple(f"CHIP{n}_" for n in range(1, 8)))
]


def hk(index: int, onboard_us: int | None = None) -> bytes:
    t = index * 1000 if onboard_us is None else onboard_us
    data = ccsds.hk_data(t, DICT_HASH32, [(c, float(index)) for c in ONE_CHIP])
    return ccsds.pack(PacketType.TM, APID_HK, index, data)


def archive_ingest(folder: Path, packets: int, batch: int) -> float:
    """Packets/s through Archive.ingest (decode + one transaction per batch)."""
    archive = Archive(folder / "ingest.sqlite")
    t0 = now_us()
    raws = [(t0 + i * 50, hk(i)) for i in range(packets)]
    start = time.perf_counter()
    for first in range(0, packets, batch):
        archive.ingest(raws[first : first + batch])
    elapsed = time.perf_counter() - start
    if archive.counts()["packets"] != packets:
        raise RuntimeError("the archive lost packets while being measured")
    archive.close()
    return packets / elapsed


_SENDER = """
import socket, sys, time
host, port, count, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
packet = bytes.fromhex(sys.stdin.read().strip())
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print(time.time(), flush=True)  # when sending starts
start = time.perf_counter()
for i in range(0, count, 100):
    for _ in range(min(100, count - i)):
        sock.sendto(packet, (host, port))
    ahead = (i + 100) / rate - (time.perf_counter() - start)
    if ahead > 0:
        time.sleep(ahead)
"""


def _server(folder: Path, name: str):
    from orbithil.tools.ground.server import GroundServer, ServerConfig

    stack = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # absorbs what the server sends
    stack.bind(("127.0.0.1", 0))
    config = ServerConfig(
        stack=stack.getsockname(),
        keys={1: secrets.token_bytes(32)},
        archive=folder / f"{name}.sqlite",
        claim=False,
        sequence=MemorySequence(),
    )
    return GroundServer(config), stack


def server_ingest(folder: Path, packets: int, rate: float) -> tuple[float, int]:
    """(committed packets/s, packets lost) through a running server, offered ``rate``/s
    by another process over UDP."""
    server, stack = _server(folder, "server-ingest")
    server.start()
    try:
        host, port = server.downlink_address
        sent = subprocess.run(
            [sys.executable, "-c", _SENDER, host, str(port), str(packets), str(rate)],
            input=hk(1).hex(),
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        start = float(sent.stdout.split()[0])
        # committed: wait until the count stops growing (a lost packet never comes)
        last, still = -1, 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = server.stats["archived"]
            if done >= packets:
                break
            still = still + 1 if done == last else 0
            if still >= 20:  # 1 s without progress
                break
            last = done
            time.sleep(0.05)
        finished = server.last_commit_s or time.time()
        committed = server.stats["archived"]
        return committed / (finished - start), packets - committed
    finally:
        server.stop()
        stack.close()


def query_day(folder: Path, repeats: int) -> tuple[list[float], int, Archive]:
    """Query times (ms) of one channel over 24 h of 1 Hz housekeeping."""
    archive = Archive(folder / "day.sqlite")
    day = 86_400
    live = 600  # the last 10 minutes as the live server commits them: a packet at a time
    t0 = now_us() - day * US
    for start in range(0, day - live, 3600):
        end = min(start + 3600, day - live)
        archive.ingest([(t0 + i * US, hk(i, i * US)) for i in range(start, end)])
    for i in range(day - live, day):
        archive.ingest([(t0 + i * US, hk(i, i * US))])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        series = archive.query("UPTIME_S", t0, t0 + day * US)
        times.append((time.perf_counter() - start) * 1e3)
        if len(series) != day:
            raise RuntimeError(f"the day's query returned {len(series)} samples, not {day}")
    segments = archive.counts()["segments"] // len(ONE_CHIP)
    return times, segments, archive


STREAM_WAIT_S = 30.0


def latency(folder: Path, seconds: float, *, browser: bool) -> dict:
    """Arrival at the server -> WebSocket client and -> the page, in ms."""
    from orbithil.tools.ground.api import HttpThread
    from orbithil.tools.ground.client import GroundClient

    server, stack = _server(folder, "latency")
    password = secrets.token_hex(12)
    server.users.add("bench", "viewer", password)
    server.start()
    http = HttpThread(server).start()
    out: dict = {}
    stop = threading.Event()
    streaming = threading.Event()  # the WebSocket client has its first telemetry
    ws_ms: list[float] = []

    def send() -> None:  # housekeeping at 20 Hz from a thread of its own
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        index = 0
        while not stop.wait(0.05):
            sender.sendto(hk(index), server.downlink_address)
            index += 1
        sender.close()

    def listen() -> None:
        client = GroundClient(http.url)
        client.login("bench", password)
        for message in client.stream(timeout=2):
            if message["type"] == "telemetry":
                if streaming.is_set():
                    ws_ms.append((time.time_ns() // 1000 - message["rx_us"]) / 1e3)
                streaming.set()
            if stop.is_set():
                break

    try:
        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        # the window starts once the client streams (its login and connection can take
        # longer than the window on a busy machine); the first, connecting, sample is not
        # counted
        if not streaming.wait(STREAM_WAIT_S):
            raise RuntimeError(
                f"no telemetry reached the WebSocket client within {STREAM_WAIT_S:.0f} s"
            )
        page_ms: list[float] = []
        if browser:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                chromium = p.chromium.launch(executable_path=CHROMIUM)
                try:
                    page = chromium.new_page()
                    page.set_default_timeout(30_000)
                    page.goto(http.url)
                    page.fill("#login-user", "bench")
                    page.fill("#login-password", password)
                    page.click("#login-submit")
                    page.wait_for_selector("#tm-UPTIME_S td.value")
                    page.evaluate("window.orbithilLatency.length = 0")
                    time.sleep(seconds)
                    page_ms = page.evaluate("window.orbithilLatency.slice()")
                finally:
                    chromium.close()
        else:
            time.sleep(seconds)
        stop.set()
        sender.join(5)
        listener.join(5)
    finally:
        http.stop()
        server.stop()
        stack.close()
    for name, values in (("ws", ws_ms), ("browser", page_ms)):
        if values:
            out[f"{name}_latency_ms_median"] = round(float(np.median(values)), 2)
            out[f"{name}_latency_ms_p99"] = round(float(np.percentile(values, 99)), 2)
            out[f"{name}_updates"] = len(values)
    return out


def api_query_ms(archive: Archive, repeats: int) -> float:
    """Median time of the day's query through the HTTP API (every point, as JSON)."""
    import httpx

    from orbithil.tools.ground.api import HttpThread
    from orbithil.tools.ground.server import GroundServer, ServerConfig

    stack = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stack.bind(("127.0.0.1", 0))
    server = GroundServer(
        ServerConfig(
            stack=stack.getsockname(),
            keys={1: secrets.token_bytes(32)},
            archive=archive.path,
            claim=False,
            sequence=MemorySequence(),
        )
    )
    password = secrets.token_hex(12)
    server.users.add("bench-api", "viewer", password, replace=True)
    server.start()
    http = HttpThread(server).start()
    try:
        with httpx.Client(base_url=http.url, timeout=60) as client:
            token = client.post(
                "/api/login", json={"username": "bench-api", "password": password}
            ).json()["token"]
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                answer = client.get(
                    "/api/telemetry/UPTIME_S/history",
                    params={"since": "25h", "max_points": 0},
                    headers={"authorization": f"Bearer {token}"},
                )
                answer.raise_for_status()
                times.append((time.perf_counter() - start) * 1e3)
                if len(answer.json()["values"]) != 86_400:
                    raise RuntimeError("the API's day query did not return the whole day")
        return float(np.median(times))
    finally:
        http.stop()
        server.stop()
        stack.close()


def run(*, quick: bool = False) -> BenchResult:
    packets = 50_000 if quick else 200_000
    browser = os.access(CHROMIUM, os.X_OK)
    try:
        import playwright  # noqa: F401
    except ImportError:
        browser = False
    with tempfile.TemporaryDirectory(prefix="orbithil-bench-ground-") as tmp:
        folder = Path(tmp)
        ingest = archive_ingest(folder, packets, batch=5000)
        served, lost = server_ingest(folder, packets, rate=40_000)
        times, segments, archive = query_day(folder, repeats=5 if quick else 20)
        api_ms = api_query_ms(archive, repeats=2 if quick else 5)
        archive.close()
        live = latency(folder, 5.0 if quick else 20.0, browser=browser)
    metrics = {
        "ingest_packets_per_s": round(ingest),
        "server_ingest_packets_per_s": round(served),
        "server_ingest_lost": lost,
        "query_24h_1hz_ms_median": round(float(np.median(times)), 2),
        "query_24h_1hz_ms_max": round(max(times), 2),
        "query_24h_segments_per_channel": segments,
        "query_24h_api_json_ms_median": round(api_ms, 1),
        **live,
    }
    targets = {
        "ingest_packets_per_s": (">=", 20_000),
        "server_ingest_packets_per_s": (">=", 20_000),
        "query_24h_1hz_ms_median": ("<", 100.0),
    }
    return BenchResult(
        metrics,
        targets=targets,
        params={
            "packets": packets,
            "channels_per_packet": len(ONE_CHIP),
            "archive_batch": 5000,
            "server_offered_per_s": 40_000,
            "segment_samples": SEGMENT_SAMPLES,
            "latency_hk_hz": 20,
            "latency_to": "browser (Chromium) and WebSocket" if browser else "WebSocket only",
            "cpu_cores": os.cpu_count(),
        },
    )
