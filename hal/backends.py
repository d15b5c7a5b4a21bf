"""The port and backend interfaces of ``hal.open``, and the registry of URL schemes.

A backend turns a URL into a byte port the HAL's ``FrameLink`` speaks frames over. Each
backend parses its own URL options, as pyserial's ``protocol_*.py`` handlers do, and is
registered by its package through an entry point in the ``orbithil.backends`` group (as
fprime-gds loads its plug-ins)::

    # the user's pyproject.toml
    [project.entry-points."orbithil.backends"]
    myboard = "myboard.backend:BACKEND"

after which ``hal.open("myboard://...")`` opens it. orbithil's own schemes (``model``,
``sim``, ``fault``, ``serial``, ``socket``, ``loop``, ``rfc2217``) are registered the same way
in its ``pyproject.toml``; the HAL therefore imports no simulator code: ``sim://`` is found
through its entry point, which names ``orbithil.sim.backend``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from orbithil.hal.errors import HalError

GROUP = "orbithil.backends"


@runtime_checkable
class Port(Protocol):
    """What the HAL needs of a byte port: pyserial's ``Serial`` has all of it."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int: ...

    def close(self) -> None: ...


class Closable(Protocol):
    def close(self) -> None: ...


class Opened(NamedTuple):
    """A backend's port, and what owns it (closed with the chip; None: the port itself)."""

    port: Port
    owner: Closable | None = None


class Backend(Protocol):
    """One URL scheme. ``options`` documents and checks the URL's query (``parse_options``);
    ``open`` returns the port, or raises ``HalError`` saying what was wrong."""

    scheme: str
    description: str
    options: Mapping[str, Option]

    def open(self, url: str) -> Opened: ...


@dataclass(frozen=True)
class Option:
    """One URL option: its type, what values are valid, and what it does."""

    type: Callable[[str], Any]
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    above: float | None = None  # exclusive lower bound (e.g. a timeout > 0)
    power_of_two: bool = False

    def valid(self) -> str:
        """The valid values, in words."""
        name = getattr(self.type, "__name__", "value")
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = []
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        kind = f"a power of two {name}" if self.power_of_two else f"a finite {name}"
        return kind + (" " + " and ".join(parts) if parts else "")

    def parse(self, key: str, raw: str, url: str) -> Any:
        bad = HalError(f"option {key}={raw!r} in {url!r} is not valid: use {self.valid()}")
        try:
            value = self.type(raw)
        except (TypeError, ValueError):
            raise bad from None
        if isinstance(value, float) and not math.isfinite(value):
            raise bad
        if self.choices is not None and value not in self.choices:
            raise bad
        if self.min is not None and value < self.min:
            raise bad
        if self.max is not None and value > self.max:
            raise bad
        if self.above is not None and value <= self.above:
            raise bad
        if self.power_of_two and (value <= 0 or value & (value - 1)):
            raise bad
        return value


def parse_options(query: str, options: Mapping[str, Option], url: str) -> dict[str, Any]:
    """The options of ``query``, each checked against ``options``; HalError on any that is
    unknown, repeated or out of range, listing what is valid."""
    out: dict[str, Any] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key not in options:
            valid = ", ".join(sorted(options)) or "none"
            raise HalError(f"unknown option {key!r} in {url!r}; valid options: {valid}")
        if key in out:
            raise HalError(f"option {key!r} is given twice in {url!r}")
        out[key] = options[key].parse(key, raw, url)
    return out


def scheme_of(url: str) -> str:
    """The URL's scheme; "" for a device path such as /dev/ttyUSB1. HalError for a URL
    that cannot be split (``model://[``: an unclosed IPv6 bracket)."""
    if "://" not in url:
        return ""
    try:
        return urlsplit(url).scheme
    except ValueError as exc:
        raise HalError(f"{url!r} is not a valid URL ({exc}); e.g. model://?harden=1") from None


@functools.cache
def _registered() -> dict[str, importlib.metadata.EntryPoint]:
    """The entry points of ``orbithil.backends`` by scheme (not loaded yet)."""
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry in importlib.metadata.entry_points(group=GROUP):
        found.setdefault(entry.name, entry)  # the first on sys.path wins, as for imports
    if not found:
        raise HalError(
            "no orbithil backends are registered: orbithil is not installed in this Python "
            "(pip install orbithil, or make setup in a checkout)"
        )
    return found


@functools.cache
def load(scheme: str) -> Backend:
    """The backend registered for ``scheme``, imported on first use only (so opening
    ``model://`` imports no simulator code). A plug-in that fails to load raises HalError
    naming its package."""
    registered = _registered()
    if scheme not in registered:
        raise HalError(
            f"unknown URL scheme {scheme!r}; registered: {', '.join(sorted(registered))}, "
            "or a device path such as /dev/ttyUSB1"
        )
    entry = registered[scheme]
    try:
        return entry.load()
    except Exception as exc:
        dist = entry.dist.name if entry.dist is not None else "?"
        raise HalError(
            f"the {scheme}:// backend of package {dist!r} ({entry.value}) failed to load: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc


def schemes() -> list[str]:
    """Every registered scheme."""
    return sorted(_registered())


def backends() -> dict[str, Backend]:
    """Every registered backend by scheme, loaded."""
    return {scheme: load(scheme) for scheme in schemes()}


def forget() -> None:
    """Forget what was loaded, so entry points are read again (after installing a plug-in
    in a running process, and in tests)."""
    _registered.cache_clear()
    load.cache_clear()


def backend_for(url: str) -> Backend:
    """The backend for ``url``'s scheme (a bare device path is ``serial``)."""
    scheme = scheme_of(url) or "serial"
    try:
        return load(scheme)
    except HalError as exc:
        if scheme in _registered():
            raise
        raise HalError(f"{exc} (in {url!r})") from None


def open_port(url: str) -> Opened:
    """The port for ``url`` from its scheme's backend."""
    return backend_for(url).open(url)


def describe() -> list[tuple[str, str, dict[str, str]]]:
    """(scheme, description, {option: "help (valid values)"}) of every backend."""
    return [
        (
            scheme,
            b.description,
            {key: f"{opt.help} ({opt.valid()})" for key, opt in sorted(b.options.items())},
        )
        for scheme, b in sorted(backends().items())
    ]
