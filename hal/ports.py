"""Backends over pyserial: a board on a serial device (``/dev/ttyUSB1``,
``serial:///dev/ttyUSB1?baud=115200``) and pyserial's own URL handlers (``socket://``,
``loop://``, ``rfc2217://``), which parse their own options."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import serial

from orbithil.hal.backends import Opened, Option, parse_options
from orbithil.hal.errors import HalError

READ_TIMEOUT_S = 0.05  # FrameLink sets its own per read; this is only the initial value
BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000, 2000000, 3000000)


def no_delay(port):
    """Turn off Nagle's algorithm on a pyserial ``socket://`` port and return it.

    pyserial leaves it on, so a write that follows another before the chip has answered
    (a resend) waits for the peer's delayed ACK: about 40 ms on Linux, where a UART would
    have sent the bytes at once. pyserial has no option for it; its socket is
    ``_socket`` (pyserial 3.5)."""
    sock = getattr(port, "_socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return port


@dataclass(frozen=True)
class SerialBackend:
    """A board on a serial port: a device path, or ``serial://<device>?baud=N``."""

    scheme: str = "serial"
    description: str = "a board on a serial port: /dev/ttyUSB1 or serial:///dev/ttyUSB1?baud=N"
    options: dict = field(
        default_factory=lambda: {
            "baud": Option(int, "line rate in baud (the board's bitstream sets it)", BAUDS)
        }
    )

    def open(self, url: str) -> Opened:
        if "://" in url:
            parts = urlsplit(url)
            device, opts = parts.path, parse_options(parts.query, self.options, url)
        else:
            device, opts = url, {}
        if not device:
            raise HalError(f"no device in {url!r}; e.g. serial:///dev/ttyUSB1?baud=115200")
        try:
            port = serial.Serial(device, opts.get("baud", 115200), timeout=READ_TIMEOUT_S)
        except (serial.SerialException, ValueError) as exc:
            raise HalError(
                f"cannot open serial port {device!r}: {exc} (orbithil ports lists the ports)"
            ) from exc
        return Opened(port)


@dataclass(frozen=True)
class PyserialUrlBackend:
    """One of pyserial's URL handlers; pyserial checks the URL's options itself."""

    scheme: str
    description: str
    options: dict = field(default_factory=dict)

    def open(self, url: str) -> Opened:
        try:
            return Opened(no_delay(serial.serial_for_url(url, timeout=READ_TIMEOUT_S)))
        except (serial.SerialException, ValueError, KeyError) as exc:
            # pyserial parses its handlers' options itself: loop://?logging=x is a KeyError
            raise HalError(f"cannot open {url!r}: {exc}") from exc


SERIAL_BACKEND = SerialBackend()
SOCKET_BACKEND = PyserialUrlBackend("socket", "TCP to a chip or bridge: socket://host:port")
LOOP_BACKEND = PyserialUrlBackend("loop", "pyserial's loopback (what is written is read back)")
RFC2217_BACKEND = PyserialUrlBackend("rfc2217", "a serial port shared over the network (RFC 2217)")
