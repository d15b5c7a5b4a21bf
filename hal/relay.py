"""Expose any chip URL as a serial device (a pseudo-terminal) or a TCP port.

``orbithil sim serve --pty`` uses this to put the simulated chip behind ``/dev/pts/N``, so
anything that opens a serial port (``hal.open("/dev/pts/N")``, ``orbithil ports``, a
user's own tools, ``screen``) reaches the RTL through pyserial's real serial code:
``serial.Serial``, termios, chunked reads. It relays bytes only; the chip behind it
answers frames as it would on a board.

The pseudo-terminal's slave side is set raw (no echo, no line editing, 8 data bits) and
kept open here, so a client may close and reopen the device without the relay seeing an
end of file. Bytes the chip sends while no client reads are dropped and counted once the
terminal's buffer is full, as a UART with nobody listening loses them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from orbithil.hal.backends import open_port
from orbithil.hal.errors import HalError

log = logging.getLogger(__name__)

POLL_S = 0.05  # how long a relay thread waits for bytes before checking for stop


@dataclass
class RelayStats:
    to_chip: int = 0
    from_chip: int = 0
    dropped: int = 0  # chip bytes lost because no client was reading
    clients: int = 0


@dataclass
class Relay:
    """Bytes between one chip port and a pseudo-terminal (``pty=True``) or TCP clients."""

    url: str
    pty: bool = True
    host: str = "127.0.0.1"
    tcp_port: int = 0
    link: Path | None = None  # a symlink to the pty device, for a stable name
    stats: RelayStats = field(default_factory=RelayStats)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []
        self._master = self._slave = -1
        self._linked_to = ""
        self._server: socket.socket | None = None
        self._client: socket.socket | None = None
        self.device = ""

    # --- start / stop -----------------------------------------------------------------
    def start(self) -> Relay:
        """Open the chip, then the device or the listening socket; returns self."""
        self.port, self.owner = open_port(self.url)
        try:
            if self.pty:
                self._open_pty()
            else:
                self._open_tcp()
        except BaseException:
            self._close_fds()
            (self.owner or self.port).close()
            raise
        self._spawn(self._chip_to_host, "chip->host")
        self._spawn(self._host_to_chip, "host->chip")
        return self

    def _open_pty(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.device = os.ttyname(self._slave)
        if self.link is not None:
            link = Path(self.link)
            try:
                if link.is_symlink() or not link.exists():
                    link.unlink(missing_ok=True)
                else:
                    raise HalError(f"{link} exists and is not a symlink; choose another --link")
                link.symlink_to(self.device)
            except OSError as exc:
                raise HalError(f"cannot make the link {link}: {exc.strerror or exc}") from None
            self._linked_to = self.device
            self.device = str(link)

    def _open_tcp(self) -> None:
        try:
            self._server = socket.create_server((self.host, self.tcp_port))
        except OSError as exc:
            raise HalError(
                f"cannot listen on {self.host}:{self.tcp_port}: {exc.strerror or exc}; "
                "choose another --port (0 picks a free one)"
            ) from None
        self._server.settimeout(POLL_S)
        host, port = self._server.getsockname()[:2]
        self.device = f"socket://{host}:{port}"

    def _spawn(self, target, name: str) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by wait()/check()
                self._errors.append(exc)
                self._stop.set()

        thread = threading.Thread(target=run, name=f"relay {name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if any(thread.is_alive() for thread in self._threads):
            # a relay thread is stuck in a call to the chip: closing the fds under it could
            # hand them to another file; they are closed when the process ends
            log.warning("a relay thread did not stop; leaving its descriptors open")
        else:
            self._close_fds()
        for sock in (self._client, self._server):
            if sock is not None:
                sock.close()
        link = Path(self.link) if self.link is not None else None
        if link is not None and link.is_symlink() and os.readlink(link) == self._linked_to:
            link.unlink(missing_ok=True)  # only our own: another relay may have taken the name
        (self.owner or self.port).close()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until stopped (or ``timeout_s``); True if stopped. Re-raises a relay
        thread's error (e.g. the simulator died)."""
        stopped = self._stop.wait(timeout_s)
        if self._errors:
            raise self._errors[0]
        return stopped

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- the two directions ------------------------------------------------------------
    def _chip_to_host(self) -> None:
        self.port.timeout = POLL_S
        while not self._stop.is_set():
            data = self.port.read(1)
            if not data:
                continue
            waiting = self.port.in_waiting
            if waiting:
                data += self.port.read(waiting)
            self.stats.from_chip += len(data)
            self._to_host(data)

    def _to_host(self, data: bytes) -> None:
        if self.pty:
            while data:
                try:
                    sent = os.write(self._master, data)
                except BlockingIOError:
                    self.stats.dropped += len(data)  # nobody is reading the device
                    return
                data = data[sent:]
            return
        client = self._client
        if client is None:
            self.stats.dropped += len(data)
            return
        try:
            client.sendall(data)
        except OSError:
            self.stats.dropped += len(data)

    def _host_to_chip(self) -> None:
        while not self._stop.is_set():
            data = self._read_host()
            if data:
                self.stats.to_chip += len(data)
                self.port.write(data)

    def _read_host(self) -> bytes:
        if self.pty:
            ready, _, _ = select.select([self._master], [], [], POLL_S)
            if not ready:
                return b""
            try:
                return os.read(self._master, 4096)
            except BlockingIOError:
                return b""
            except OSError as exc:
                if exc.errno == errno.EIO:  # no slave open (we keep one, so only at stop)
                    time.sleep(POLL_S)
                    return b""
                raise
        if self._client is None:
            assert self._server is not None
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                return b""
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.settimeout(POLL_S)
            self._client = client
            self.stats.clients += 1
        try:
            data = self._client.recv(4096)
        except TimeoutError:
            return b""
        except OSError:
            data = b""
        if not data:  # the client went away: take the next one
            self._client.close()
            self._client = None
        return data
