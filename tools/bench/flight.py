"""``orbithil bench flight``: the flight stack's timing and link throughput (on the model).

- rate-group start jitter (p50, p99) at 100 Hz and slips, while housekeeping runs at
  100 Hz and a second thread pushes telemetry packets through the ground link as fast as
  it can (a busy telemetry load);
- telemetry packets/s through the ground link: packed, sent over UDP and parsed by the
  ground client, counted there;
- telecommand round trip to completion (NOOP, authenticated), median and p99.
"""

from __future__ import annotations

import secrets
import threading
import time

import numpy as np

from orbithil import hal
from orbithil.flight import ccsds
from orbithil.flight.dictionary import APID_HK, CHANNELS, DICT_HASH32
from orbithil.flight.ground import Ground
from orbithil.flight.stack import Config, FlightStack

from . import BenchResult


def run(*, quick: bool = False) -> BenchResult:
    seconds = 3.0 if quick else 10.0
    key = secrets.token_bytes(32)
    with hal.open("model://?harden=1") as chip:
        stack = FlightStack(chip, Config(udp_port=0, hk_period_ms=10), {1: key})
        with stack, Ground(stack.link.udp_address, key_id=1, key=key) as ground:
            stack.link.ground = ground.sock.getsockname()
            ground.command("NOOP")
            data = ccsds.hk_data(0, DICT_HASH32, [(c.id, 1.0) for c in CHANNELS])

            # telemetry throughput: send as fast as possible, count what the ground parsed
            stack.hk_period = 1e9  # the stack's own housekeeping paused: exact counts
            time.sleep(0.05)
            before = ground.packets["hk"]
            start = time.perf_counter()
            sent = 0
            while time.perf_counter() - start < seconds / 3:
                for _ in range(100):
                    stack.link.send(APID_HK, data)
                sent += 100
            deadline = time.monotonic() + 2
            while ground.packets["hk"] - before < sent and time.monotonic() < deadline:
                time.sleep(0.01)
            tm_s = time.perf_counter() - start
            received = ground.packets["hk"] - before
            tm_rate = received / tm_s

            # jitter under a busy telemetry load (a paced flood: 5,000 packets/s) with
            # housekeeping back at 100 Hz
            stack.hk_period = 0.01
            stack.scheduler.jitter_us.clear()
            slips0 = stack.scheduler.slips
            stop = threading.Event()

            def flood() -> None:
                while not stop.is_set():
                    for _ in range(50):
                        stack.link.send(APID_HK, data)
                    time.sleep(0.01)

            loader = threading.Thread(target=flood, daemon=True)
            loader.start()
            time.sleep(seconds / 3)
            p50, p99 = stack.scheduler.jitter()
            slips = stack.scheduler.slips - slips0
            ticks = len(stack.scheduler.jitter_us)

            # telecommand round trip, still under the load
            rtts = []
            for _ in range(50 if quick else 200):
                t = time.perf_counter()
                ground.command("NOOP")
                rtts.append((time.perf_counter() - t) * 1e3)
            stop.set()
            loader.join()
    return BenchResult(
        {
            "jitter_p50_ms": round(p50 / 1e3, 4),
            "jitter_p99_ms": round(p99 / 1e3, 4),
            "slips": slips,
            "ticks_measured": ticks,
            "tm_packets_per_s": round(tm_rate),
            "tm_packets_lost_in_burst": sent - received,
            "tc_round_trip_median_ms": round(float(np.median(rtts)), 3),
            "tc_round_trip_p99_ms": round(float(np.percentile(rtts, 99)), 3),
        },
        targets={
            "jitter_p99_ms": ("<", 1.0),
            "tm_packets_per_s": (">=", 10_000),
            "slips": ("<=", 0),
        },
        params={
            "rate_hz": 100,
            "hk_hz": 100,
            "load_packets_per_s": 5000,
            "chip": "model://?harden=1",
            "seconds": seconds,
        },
    )
