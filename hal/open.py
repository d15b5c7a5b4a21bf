"""``hal.open(url)``: a Chip on any backend, chosen by URL (pyserial's serial_for_url habit).

| URL | backend |
|---|---|
| ``/dev/ttyUSB1``, ``serial:///dev/ttyUSB1?baud=115200`` | a board on a serial port |
| ``socket://host:port``, ``loop://``, ``rfc2217://...`` | pyserial's own URL handlers |
| ``model://?harden=1`` | the numpy behavioural model (``hal.model``) |
| ``sim://verilator?harden=1``, ``sim://icarus?harden=0`` | the RTL under cocotb (``sim.backend``) |
| ``fault://<url>?drop=..&flip=..`` | any of these behind a link that corrupts |

Each scheme is a backend registered through an entry point (``hal.backends``); a user's
package can add its own. ``orbithil ports --schemes`` lists them with their options.
"""

from __future__ import annotations

import math

from orbithil.hal.backends import open_port
from orbithil.hal.chip import Chip
from orbithil.hal.errors import HalError
from orbithil.hal.link import DEFAULT_RETRIES, FrameLink, check_fec_mode

MAX_RETRIES = 100

__all__ = ["open", "open_port"]


def open(
    url: str, *, timeout: float = 1.0, retries: int = DEFAULT_RETRIES, fec: str = "auto"
) -> Chip:
    """A Chip on the backend ``url`` names; every call has a ``timeout`` per attempt.
    ``fec``: forward error correction on the link, ``auto`` (while the line is noisy),
    ``on`` or ``off`` (``hal.link``)."""
    # Checked before a simulator is started for nothing.
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
        raise HalError(f"timeout={timeout!r}: use a finite number of seconds > 0")
    if not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise HalError(f"retries={retries!r}: use a whole number from 0 to {MAX_RETRIES}")
    try:
        check_fec_mode(fec)
    except ValueError as exc:
        raise HalError(str(exc)) from None
    port, backend = open_port(url)
    try:
        link = FrameLink(port, timeout_s=timeout, retries=retries, fec=fec)
        return Chip(link, url=url, backend=backend)
    except Exception:
        (backend or port).close()
        raise
