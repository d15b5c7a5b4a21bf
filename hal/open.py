"""``hal.open(url)``: a Chip on any backend, chosen by URL (pyserial's serial_for_url habit).

| URL | backend |
|---|---|
| ``/dev/ttyUSB1``, ``serial:///dev/ttyUSB1?baud=115200`` | a board on a serial port |
| ``socket://host:port``, ``loop://``, ``rfc2217://...`` | pyserial's own URL handlers |
| ``model://?harden=1`` | the numpy behavioural model (``hal.model``) |
| ``sim://verilator?harden=1``, ``sim://icarus?harden=0`` | the RTL under cocotb (``sim.backend``) |
| ``fault://<url>?drop=..&flip=..&delay=..&seed=..`` | any of these behind a link that corrupts |
"""

from __future__ import annotations

import socket
from urllib.parse import parse_qsl, urlsplit

from hal.chip import Chip
from hal.errors import HalError
from hal.link import FrameLink, check_fec_mode

SCHEMES = ("serial", "socket", "loop", "rfc2217", "model", "sim", "fault")
LINK_OPTIONS = {"timeout": float, "retries": int}


def _options(query: str, allowed: dict[str, type], url: str) -> dict:
    out = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            valid = ", ".join(sorted(allowed)) or "none"
            raise HalError(f"unknown option {key!r} in {url!r}; valid options: {valid}")
        try:
            out[key] = allowed[key](raw)
        except ValueError:
            raise HalError(
                f"option {key}={raw!r} in {url!r} is not a valid {allowed[key].__name__}"
            ) from None
    return out


def _split_fault(url: str) -> tuple[str, str]:
    """fault://<inner url>?<fault options>: the fault options are the last query."""
    inner = url[len("fault://") :]
    if "?" in inner and not inner.rsplit("?", 1)[1].count("/"):
        inner, query = inner.rsplit("?", 1)
        if any(key in ("drop", "flip", "delay", "seed") for key, _ in parse_qsl(query)):
            return inner, query
        inner = f"{inner}?{query}"
    return inner, ""


def no_delay(port):
    """Turn off Nagle's algorithm on a pyserial ``socket://`` port and return it.

    pyserial leaves it on, so a write that follows another before the chip has answered
    (a resend) waits for the peer's delayed ACK: about 40 ms on Linux, where a UART would
    have sent the bytes at once. pyserial has no option for it; its socket is
    ``_socket`` (pyserial 3.5, pinned)."""
    sock = getattr(port, "_socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return port


def open_port(url: str):
    """The pyserial-like port (and the backend object that owns it) for ``url``."""
    parts = urlsplit(url)
    scheme = parts.scheme if "://" in url else ""
    if scheme == "fault":
        from hal.fault import FAULT_OPTIONS, FaultPort

        inner_url, query = _split_fault(url)
        port, backend = open_port(inner_url)
        return FaultPort(port, **_options(query, FAULT_OPTIONS, url)), backend
    if scheme == "model":
        from hal.model import ChipModel, ModelPort

        allowed = {"harden": int, "mem_words": int, "clks_per_bit": int, "fec": int}
        opts = _options(parts.query, allowed, url)
        return ModelPort(ChipModel(**opts)), None
    if scheme == "sim":
        from sim.backend import SimBackend

        allowed = {
            "harden": int,
            "clks_per_bit": int,
            "mem_words": int,
            "fec": int,
            "start_timeout": float,
        }
        backend = SimBackend.start(
            parts.netloc or "verilator", **_options(parts.query, allowed, url)
        )
        return backend.port, backend
    import serial

    if scheme in ("", "serial"):
        opts = _options(parts.query, {"baud": int}, url)
        device = parts.path if scheme == "serial" else url
        try:
            return serial.serial_for_url(device, opts.get("baud", 115200), timeout=0.05), None
        except (serial.SerialException, ValueError) as exc:
            raise HalError(f"cannot open serial port {device!r}: {exc}") from exc
    if scheme in ("socket", "loop", "rfc2217"):
        try:
            return no_delay(serial.serial_for_url(url, timeout=0.05)), None
        except (serial.SerialException, ValueError) as exc:
            raise HalError(f"cannot open {url!r}: {exc}") from exc
    raise HalError(
        f"unknown URL scheme {scheme!r} in {url!r}; valid: {', '.join(SCHEMES)} or a device path"
    )


def open(url: str, *, timeout: float = 1.0, retries: int = 3, fec: str = "auto") -> Chip:
    """A Chip on the backend ``url`` names; every call has a ``timeout`` per attempt.
    ``fec``: forward error correction on the link, ``auto`` (while the line is noisy),
    ``on`` or ``off`` (``hal.link``)."""
    try:
        check_fec_mode(fec)  # before a simulator is started for nothing
    except ValueError as exc:
        raise HalError(str(exc)) from None
    port, backend = open_port(url)
    try:
        link = FrameLink(port, timeout_s=timeout, retries=retries, fec=fec)
        return Chip(link, url=url, backend=backend)
    except Exception:
        (backend or port).close()
        raise
