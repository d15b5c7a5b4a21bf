"""Where the simulator layer finds its inputs and puts its builds.

Inputs are package data, so an installed orbithil finds them as a checkout does: the RTL in
``orbithil.fpga`` and the testbenches in ``orbithil.sim``'s ``tb/``. Every build, netlist
and cache goes under orbithil's cache directory (``ORBITHIL_CACHE_DIR``, else the user
cache directory), never into the installed package or the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from orbithil.fpga import BOARD_DIR, RTL_DIR
from orbithil.settings import cache_dir

__all__ = [
    "BOARD_DIR",
    "RTL_DIR",
    "TB_DIR",
    "bench_dir",
    "fpga_dir",
    "rtl_sources",
    "sim_build_dir",
    "write_atomically",
]

TB_DIR = Path(__file__).resolve().parent / "tb"


def rtl_sources() -> list[Path]:
    return sorted(RTL_DIR.glob("*.v"))


def sim_build_dir() -> Path:
    """Root of the cocotb builds, one folder per build key."""
    return cache_dir("sim_build")


def fpga_dir(harden: int) -> Path:
    """Netlists, target lists, Verilator configs and bitstreams of one build."""
    return cache_dir("fpga", f"h{harden}")


def bench_dir(name: str) -> Path:
    """Scratch builds of a benchmark."""
    return cache_dir("bench", name)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so readers (other
    processes sharing a build cache) never see half a file."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)
