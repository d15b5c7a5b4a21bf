"""The cocotb side of ``sim://``: relays a TCP connection to chip_tb's UART byte queues.

Started by ``sim.backend``: listens on 127.0.0.1 (an ephemeral port, written to the file
named by ORBITHIL_BRIDGE_PORT_FILE), accepts one connection, then moves bytes both ways.
Simulated time advances in steps: short while bytes are moving, doubling while the link
is quiet (so an idle chip keeps running without Python waking per byte). Once the chip
has answered every frame the host sent, it is waiting for the host: the bridge then
sleeps in ``select`` until the host's next bytes come (at once) or a wait runs out (1 ms,
doubling to 20 ms), and only then moves the chip on by a step. So a chip nobody talks to
costs a few percent of a core, not a whole one (its clock runs slower meanwhile: UPTIME,
the watchdog and the scrubber advance about 0.12 M cycles a second instead of ~2.6 M).
The test ends, and the simulator with it, when the host closes the connection or never
connects.
"""

from __future__ import annotations

import os
import select
import socket
import time

import cocotb
from cocotb.triggers import Timer

from orbithil.sim.tb_link import RING, TbLink, params

ACCEPT_TIMEOUT_S = 120.0
IDLE_WAIT_S = (0.001, 0.02)  # first and longest wait for the host while nothing is owed
RESYNC_S = 0.2  # unanswered and quiet this long: the chip dropped a frame, nothing is owed


class FrameCount:
    """Frames that ended in a byte stream: runs of non-zero bytes closed by a 0x00 (the
    ICD's delimiter; empty runs between delimiters are not frames)."""

    def __init__(self) -> None:
        self.frames = 0
        self._open = False  # the current run holds bytes

    def feed(self, data: bytes) -> None:
        runs = data.split(b"\0")
        for i, run in enumerate(runs[:-1]):
            if run or (i == 0 and self._open):
                self.frames += 1
        self._open = bool(runs[-1]) or (len(runs) == 1 and self._open)


@cocotb.test()
async def bridge(dut):
    link = TbLink(dut, clks_per_bit=params()["CLKS_PER_BIT"])
    await link.reset()
    server = socket.create_server(("127.0.0.1", 0))
    port_file = os.environ["ORBITHIL_BRIDGE_PORT_FILE"]
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)  # appears whole, never half-written
    server.settimeout(ACCEPT_TIMEOUT_S)
    try:
        conn, _ = server.accept()
    except TimeoutError:
        dut._log.error("no host connected within %.0f s; stopping", ACCEPT_TIMEOUT_S)
        return
    finally:
        server.close()
    conn.setblocking(False)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    min_step = 2 * link.byte_ns
    # The longest idle step bounds how long a host's bytes wait in the socket: 64 byte
    # times is ~1 ms of wall time at Verilator's speed (256 made resends wait ~4 ms), and
    # a chip that still owes an answer runs at full speed (a wake-up per 2,500 cycles).
    max_step = 64 * link.byte_ns
    step = min_step
    wait = IDLE_WAIT_S[0]
    sent, answered = FrameCount(), FrameCount()  # frames from the host, and from the chip
    backlog = b""
    started = last_traffic = time.monotonic()
    while True:
        try:
            data = conn.recv(65536)
            if data == b"":
                dut._log.info("host closed the link after %.1f s", time.monotonic() - started)
                break
        except BlockingIOError:
            data = b""
        except OSError:
            break
        backlog += data
        sent.feed(data)
        in_flight = link.queued - int(dut.txq_pos.value)
        room = RING - 64 - in_flight
        if backlog and room > 0:
            link.send_bytes(backlog[:room])
            backlog = backlog[room:]
        out = link.take_received()
        answered.feed(out)
        if out:
            try:
                conn.sendall(out)
            except OSError:
                break
        busy = data or out or backlog or in_flight > 0
        now = time.monotonic()
        if busy:
            step, wait, last_traffic = min_step, IDLE_WAIT_S[0], now
        else:
            step = min(step * 2, max_step)
            if answered.frames < sent.frames and now - last_traffic > RESYNC_S:
                answered.frames = sent.frames
            if answered.frames >= sent.frames:  # the chip waits for the host: so do we
                if select.select([conn], [], [], wait)[0]:
                    step = min_step  # the host's bytes are here: take them at once
                wait = min(wait * 2, IDLE_WAIT_S[1])
        await Timer(step, "ns")
    conn.close()
