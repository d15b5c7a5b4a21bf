"""``sim://``: the chip RTL under cocotb in its own process, reached through a TCP socket
with pyserial (``socket://``), the same path as a board.

``SimBackend.start`` builds (cached), starts the simulator in a new process group, waits
for the bridge's port with a deadline, and connects. A simulator that dies or fails to
start raises ``BackendError`` with the tail of its log. ``close`` (and a finalizer at
interpreter exit) ends the process group; if the parent is killed, its socket closes and
the bridge ends the simulation, so no simulator is left behind.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import serial

from orbithil.hal.backends import Opened, Option, parse_options
from orbithil.hal.errors import BackendError, HalError
from orbithil.hal.model import CHIP_OPTIONS
from orbithil.hal.ports import no_delay
from orbithil.hal.portwrap import PortWrapper
from orbithil.sim import harness
from orbithil.sim.process import kill_group, start_child, tail


class SimPort(PortWrapper):
    """pyserial's socket port, turning a dead simulator into BackendError."""

    def __init__(self, backend: SimBackend, port) -> None:
        super().__init__(port)
        self._backend = backend

    @property
    def in_waiting(self) -> int:
        try:
            return self.inner.in_waiting
        except (serial.SerialException, OSError) as exc:
            raise self._backend.failure(f"the link to the simulator broke: {exc}") from exc

    def write(self, data: bytes) -> int:
        try:
            return self.inner.write(data)
        except (serial.SerialException, OSError) as exc:
            raise self._backend.failure(f"writing to the simulator failed: {exc}") from exc

    def read(self, size: int = 1) -> bytes:
        try:
            data = self.inner.read(size)
        except (serial.SerialException, OSError) as exc:
            raise self._backend.failure(f"reading from the simulator failed: {exc}") from exc
        if not data and self._backend.proc.poll() is not None:
            raise self._backend.failure("the simulator exited")
        return data


class SimBackend:
    """One running simulator with the chip, and its socket."""

    def __init__(self, spec: harness.Build, proc: subprocess.Popen, log: Path, workdir) -> None:
        self.spec = spec
        self.proc = proc
        self.log = log
        self._workdir = workdir
        self._finalizer = weakref.finalize(self, kill_group, proc)
        self.port: SimPort | None = None

    @classmethod
    def start(
        cls,
        simulator: str = "verilator",
        *,
        harden: int = 1,
        clks_per_bit: int = 4,
        mem_words: int = 2048,
        fec: int = 1,
        inject: int = 1,
        spram: int = 0,
        quick: int = 0,
        start_timeout: float = 300.0,
    ) -> SimBackend:
        if simulator not in harness.SIMULATORS:
            raise BackendError(
                f"sim://{simulator}: unknown simulator; use one of {', '.join(harness.SIMULATORS)}"
            )
        spec = harness.chip_build(
            simulator,
            HARDEN=harden,
            CLKS_PER_BIT=clks_per_bit,
            MEM_WORDS=mem_words,
            FEC=fec,
            INJECT=inject,
            MEM_SPRAM=spram,
            quick=bool(quick),
        )
        workdir = tempfile.TemporaryDirectory(prefix="orbithil-sim-")
        port_file = Path(workdir.name) / "port"
        log = Path(workdir.name) / "sim.log"
        config = json.dumps(
            {"sim": simulator, "params": dict(spec.parameters), "quick": spec.quick}
        )
        proc = start_child(
            ["orbithil.sim.backend", config, str(port_file)], log, cwd=Path(workdir.name)
        )
        backend = cls(spec, proc, log, workdir)
        deadline = time.monotonic() + start_timeout
        while not port_file.exists():
            if proc.poll() is not None:
                raise backend.failure(
                    f"the {simulator} simulator exited while starting (code {proc.returncode})"
                )
            if time.monotonic() > deadline:
                backend.close()
                raise BackendError(
                    f"the {simulator} simulator did not become ready in {start_timeout:.0f} s",
                    log_tail=tail(log),
                )
            time.sleep(0.05)
        tcp_port = int(port_file.read_text())
        try:
            raw = no_delay(serial.serial_for_url(f"socket://127.0.0.1:{tcp_port}", timeout=0.05))
        except serial.SerialException as exc:
            backend.close()
            raise BackendError(
                f"cannot connect to the simulator: {exc}", log_tail=tail(log)
            ) from exc
        backend.port = SimPort(backend, raw)
        return backend

    def failure(self, message: str) -> BackendError:
        return BackendError(f"sim://{self.spec.sim}: {message}", log_tail=tail(self.log))

    def close(self) -> None:
        if self.port is not None:
            self.port.close()  # the bridge sees EOF and ends the simulation
            self.port = None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)  # the bridge ends on EOF; then make sure
        kill_group(self.proc)
        self._finalizer.detach()
        self._workdir.cleanup()


def _serve(argv: list[str]) -> int:
    """Child process: run the bridge test on the (cached) build."""
    config = json.loads(argv[0])
    spec = harness.chip_build(config["sim"], quick=config["quick"], **config["params"])
    env = {"ORBITHIL_BRIDGE_PORT_FILE": argv[1]}
    results = harness.run(spec, "orbithil.sim.bridge", extra_env=env)
    return 0 if results.ok else 1


def _sim_options() -> dict[str, Option]:
    return {
        **CHIP_OPTIONS,
        "start_timeout": Option(float, "seconds to wait for the simulator to start", above=0),
        "spram": Option(
            int,
            "1: the data SRAM on the board's SPRAM path (a model of SB_SPRAM256KA); "
            "0: the block-RAM array that injection flips bits of",
            (0, 1),
        ),
        "quick": Option(
            int,
            "1: a Verilator build that compiles in a quarter of the time and runs ~25% "
            "slower (for a short check of a variant); 0: built to run fast",
            (0, 1),
        ),
    }


@dataclass(frozen=True)
class SimBackendPlugin:
    """``sim://verilator?harden=1``: the RTL under a simulator in its own process."""

    scheme: str = "sim"
    description: str = (
        "the chip's RTL under a simulator: sim://verilator?harden=1, sim://icarus?harden=0"
    )
    options: dict = field(default_factory=_sim_options)

    def open(self, url: str) -> Opened:
        parts = urlsplit(url)
        simulator = parts.netloc or "verilator"
        if simulator not in harness.SIMULATORS or parts.path not in ("", "/"):
            raise HalError(
                f"{url!r}: unknown simulator {simulator + parts.path!r}; use "
                + " or ".join(f"sim://{s}" for s in harness.SIMULATORS)
            )
        opts = parse_options(parts.query, self.options, url)
        backend = SimBackend.start(simulator, **opts)
        assert backend.port is not None
        return Opened(backend.port, backend)


BACKEND = SimBackendPlugin()


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
