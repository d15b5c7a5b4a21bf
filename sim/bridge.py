"""The cocotb side of ``sim://``: relays a TCP connection to chip_tb's UART byte queues.

Started by ``sim.backend``: listens on 127.0.0.1 (an ephemeral port, written to the file
named by ORBITHIL_BRIDGE_PORT_FILE), accepts one connection, then moves bytes both ways.
Simulated time advances in steps: short while bytes are moving, doubling while the link
is quiet (so an idle chip keeps running without Python waking per byte). The test ends,
and the simulator with it, when the host closes the connection or never connects.
"""

from __future__ import annotations

import os
import socket
import time

import cocotb
from cocotb.triggers import Timer

from orbithil.sim.tb_link import RING, TbLink, params

ACCEPT_TIMEOUT_S = 120.0


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
    # the idle chip still runs at full speed (a wake-up per 2,500 cycles).
    max_step = 64 * link.byte_ns
    step = min_step
    backlog = b""
    started = time.monotonic()
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
        in_flight = link.queued - int(dut.txq_pos.value)
        room = RING - 64 - in_flight
        if backlog and room > 0:
            link.send_bytes(backlog[:room])
            backlog = backlog[room:]
        out = link.take_received()
        if out:
            try:
                conn.sendall(out)
            except OSError:
                break
        busy = data or out or backlog or in_flight > 0
        step = min_step if busy else min(step * 2, max_step)
        await Timer(step, "ns")
    conn.close()
