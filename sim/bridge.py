"""The cocotb side of ``sim://``: relays a TCP connection to chip_tb's UART byte queues.

Started by ``sim.backend``: listens on 127.0.0.1 (an ephemeral port, written to the file
named by ORBITHIL_BRIDGE_PORT_FILE), accepts one connection, then moves bytes both ways.
Python wakes as seldom as it can without delaying a byte anyone waits for (a wake-up costs
about as much CPU as simulating the 80 cycles of two byte times, which is how often the
bridge used to wake while bytes moved):

- bytes queued to the chip: one step over all of them (they are certain to go out);
- the chip sending a frame: one step to the earliest time its closing delimiter can land
  (its header gives the length, ``ChipFrames.certain``), then a wake-up on that byte; the
  host gets the frame in one piece (half a frame and then a pause would look to it like
  a lost delimiter on a slow simulator such as Icarus);
- the chip owing an answer (computing, nothing moving): a wake-up on its first byte, or
  after 64 byte times to look at the host's socket;
- the chip has answered every frame the host sent, so it waits for the host: the bridge
  then sleeps in ``select`` until the host's next bytes come (at once) or a wait runs out
  (1 ms, doubling to 20 ms, and longer when a step costs more than ``IDLE_DUTY`` of
  the time: on Icarus, up to 1 s), and only then moves the chip on by a step (2 byte
  times, doubling to 64). So a chip nobody talks to costs about 5 % of a core, not a
  whole one (its clock runs slower meanwhile: UPTIME, the watchdog and the scrubber
  advance about 0.12 M cycles a second instead of ~2.6 M on Verilator, and about 2,000
  cycles a second on Icarus).

The test ends, and the simulator with it, when the host closes the connection or never
connects.
"""

from __future__ import annotations

import os
import select
import socket
import time

import cocotb
from cocotb.triggers import First, Timer

from orbithil.hal.codec.frame_format import (
    HEADER_LEN,
    MAX_ENCODED,
    MIN_BODY,
    body_len_from_header,
)
from orbithil.sim.tb_link import RING, TbLink, params

ACCEPT_TIMEOUT_S = 120.0
IDLE_WAIT_S = (0.001, 0.02)  # first and longest wait for the host while nothing is owed
# An idle step's CPU time over the wait after it at most: a step of 64 byte times is ~1 ms
# of Verilator but ~60 ms of Icarus, which with a 20 ms wait kept an idle Icarus chip at
# 80 % of a core; the wait grows to hold an idle chip near 5 % on either simulator, up to
# IDLE_WAIT_MAX_S, so an idle chip's clock still moves (an idle Icarus chip: ~2,500
# cycles, 64 byte times, every ~1.2 s at most).
IDLE_DUTY = 0.05
IDLE_WAIT_MAX_S = 1.0
RESYNC_S = 0.2  # quiet this long: a frame the chip owes or began is not coming (dropped, stuck)
_HEAD = 2 * HEADER_LEN  # encoded bytes that always hold a frame's decoded header


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


class ChipFrames:
    """The frame the chip is sending, as far as it came: how many more of its bytes are
    certain to come. The chip sends ``00 | COBS(body) | 00`` (fpga/rtl/frame_tx.v) at most
    one byte per byte time, and a body's header gives its length, so once a frame has
    begun, its closing delimiter cannot land sooner than ``certain - 1`` byte times."""

    def __init__(self) -> None:
        self._head = bytearray()  # the first encoded bytes of the current run
        self._run = 0  # encoded bytes in the current run (since the last delimiter)
        self._leading = False  # the last byte was a delimiter after an empty run
        self._body: int | None = None  # the current frame's body length, once decoded

    def feed(self, data: bytes) -> None:
        runs = data.split(b"\0")
        self._extend(runs[0])
        for run in runs[1:]:
            # A delimiter after an empty run opens a frame (the chip sends one ahead of
            # every frame); one after bytes closes the frame they were.
            leading = self._run == 0
            self.abandon()
            self._leading = leading
            self._extend(run)

    def abandon(self) -> None:
        """Expect nothing more of the current frame (the chip stopped in the middle)."""
        self._head.clear()
        self._run = 0
        self._leading = False
        self._body = None

    @property
    def certain(self) -> int:
        """Bytes of the current frame, closing delimiter included, still certain to come
        (0: no frame under way)."""
        if self._run == 0:
            return MIN_BODY + 2 if self._leading else 0  # a code byte, a body, a delimiter
        body = self._body or MIN_BODY
        return max(min(body + 1, MAX_ENCODED) - self._run, 0) + 1

    def _extend(self, run: bytes) -> None:
        if not run:
            return
        self._run += len(run)
        if self._body is None and len(self._head) < _HEAD:
            self._head += run[: _HEAD - len(self._head)]
            self._body = body_len_from_header(self._head)


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
    byte_ns = link.byte_ns
    min_step = 2 * byte_ns
    # The longest step while nothing is certain to move bounds how long a host's bytes
    # wait in the socket: 64 byte times is ~1 ms of wall time at Verilator's speed (256
    # made resends wait ~4 ms); a chip's answer ends such a step at once.
    max_step = 64 * byte_ns
    chip_sent = dut.rxq_len.value_change  # the chip's next byte has landed in rxq
    idle_step = min_step
    wait = IDLE_WAIT_S[0]
    sent, answered = FrameCount(), FrameCount()  # frames from the host, and from the chip
    sending = ChipFrames()
    backlog = unsent = b""  # bytes for the chip that do not fit its queue; for the host
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
            in_flight += min(len(backlog), room)
            backlog = backlog[room:]
        out = link.take_received()
        answered.feed(out)
        sending.feed(out)
        now = time.monotonic()
        if data or out or in_flight > 0:
            idle_step, wait, last_traffic = min_step, IDLE_WAIT_S[0], now
        elif now - last_traffic > RESYNC_S:  # what the chip owes or began is not coming
            answered.frames = sent.frames
            sending.abandon()
        coming = sending.certain
        # The host gets whole frames: the bytes of a frame under way wait here for its
        # closing delimiter (a host takes half a frame and then silence for a lost
        # delimiter, and a step over the rest may be long on a slow simulator).
        unsent += out
        held = len(unsent) - unsent.rfind(b"\0") - 1 if coming else 0
        if held > MAX_ENCODED:  # no frame is that long: these bytes are not one
            held = 0
        if len(unsent) > held:
            try:
                conn.sendall(unsent[: len(unsent) - held])
            except OSError:
                break
            unsent = unsent[len(unsent) - held :]
        moving = [n for n in (in_flight, coming - 1) if n > 0]
        if moving:  # bytes certain to move: step over them (a full queue implies moving)
            step, watch = min(moving) * byte_ns, coming == 1
        else:
            if coming or answered.frames < sent.frames:  # the chip owes bytes
                step, watch = max_step, True
            else:  # the chip waits for the host: so do we
                if select.select([conn], [], [], wait)[0]:
                    continue  # the host's bytes are here: take them at once
                step, watch, idle_step = idle_step, False, min(idle_step * 2, max_step)
                cpu = time.process_time()
                await Timer(step, "ns")
                spent = time.process_time() - cpu
                wait = max(min(wait * 2, IDLE_WAIT_S[1]),
                           min(spent * (1 / IDLE_DUTY - 1), IDLE_WAIT_MAX_S))  # fmt: skip
                continue
        if watch:
            await First(Timer(step, "ns"), chip_sent)
        else:
            await Timer(step, "ns")
    conn.close()
