"""Netlist targets (``sim.netlist.list_targets``) as simulator handles inside chip_tb.

A flip-flop name from yosys, e.g. ``u_regs.g_reg[0].g_tmr.u_c0.q``, is a path below the
chip instance (``chip_tb.dut``); ``g_reg[0]`` is a generate scope, indexed the same way on
Icarus and Verilator. A memory is ``u_mem.mem`` and its words ``mem[i]``.
"""

from __future__ import annotations

import re

_PART = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")


def split_name(name: str) -> list[str | int]:
    """``a.b[3].c`` -> ["a", "b", 3, "c"] (names and indices, in order)."""
    parts: list[str | int] = []
    for match in _PART.finditer(name):
        parts.append(match.group(1))
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
    return parts


def handle_for(chip, name: str):
    """The handle of ``name`` below the chip instance; AttributeError/IndexError if absent."""
    handle = chip
    for part in split_name(name):
        handle = handle[part] if isinstance(part, int) else getattr(handle, part)
    return handle
