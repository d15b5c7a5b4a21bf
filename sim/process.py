"""Simulator child processes: started in their own session with a deadline, read as they
write, ended with their whole process group.

``launch_engine`` runs one job of the injection engine (``sim.cocotb_tests.inject_engine``)
in a child ``python -m orbithil.sim.process`` and passes each JSON line it appends to the
caller as soon as it is complete. The simulator backend (``sim.backend``) and the injection
orchestration (``sim.inject``) share ``kill_group`` and ``tail`` from here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from orbithil.sim import harness

ENGINE_MODULE = "orbithil.sim.cocotb_tests.inject_engine"


class EngineError(RuntimeError):
    """The engine process failed as a whole (no golden run, a build error, a deadline);
    ``lines`` holds what it wrote before."""

    lines: list[dict]

    def __init__(self, message: str, lines: list[dict] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or []


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """End ``proc``'s process group (started with ``start_new_session``): TERM, then KILL."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue


def start_child(args: list[str], log: Path, *, cwd: Path) -> subprocess.Popen:
    """``python -m <args>`` in its own session, output to ``log``, no stdin."""
    with open(log, "wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=cwd,
        )  # fmt: skip


class LineReader:
    """Complete JSON lines appended to a file since the last call (a line still being
    written, or cut short by a killed process, is left for later or dropped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def new_lines(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        out = []
        for raw in data[:end].splitlines():
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return out


def launch_engine(
    spec: harness.Build,
    job: dict,
    *,
    timeout_s: float,
    describe: str,
    on_line: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run one engine process on ``job`` (its JSON lines go to ``job["out"]``, set here);
    returns the lines, each also passed to ``on_line`` as soon as it is written. Raises
    EngineError if the process failed or missed its deadline (with the lines it wrote)."""
    with tempfile.TemporaryDirectory(prefix="orbithil-inject-") as tmp:
        job_path = Path(tmp) / "job.json"
        out = Path(tmp) / "out.jsonl"
        job_path.write_text(json.dumps({**job, "out": str(out), "parent_pid": os.getpid()}))
        log = Path(tmp) / "engine.log"
        config = {"sim": spec.sim, "params": dict(spec.parameters)}
        proc = start_child(
            ["orbithil.sim.process", json.dumps(config), str(job_path)], log, cwd=Path(tmp)
        )
        lines: list[dict] = []

        def take(new: list[dict]) -> None:
            for line in new:
                lines.append(line)
                if on_line is not None:
                    on_line(line)

        reader = LineReader(out)
        deadline = time.monotonic() + timeout_s
        problem = None
        try:
            while proc.poll() is None:
                take(reader.new_lines())
                if time.monotonic() > deadline:
                    problem = f"the engine process did not finish in {timeout_s:.0f} s"
                    break
                time.sleep(0.02)
            else:
                if proc.returncode != 0:
                    problem = f"the engine process exited with code {proc.returncode}"
        finally:
            kill_group(proc, grace_s=1.0)  # the simulator too (its own process group)
        take(reader.new_lines())
        if problem is not None:
            raise EngineError(f"{problem} ({describe}); log tail:\n{tail(log, 25)}", lines)
        return lines


def _child(argv: list[str]) -> int:
    """Child process: run the engine's cocotb module on the (cached) build."""
    config = json.loads(argv[0])
    spec = harness.chip_build(config["sim"], engine=True, **config["params"])
    results = harness.run(spec, ENGINE_MODULE, extra_env={"ORBITHIL_ENGINE_JOB": argv[1]}, seed=1)
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
