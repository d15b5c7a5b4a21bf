"""orbithil: hardware-in-the-loop flight software for orbital AI-compute payloads.

One import namespace over the repository's folders (``pyproject.toml`` maps them)::

    orbithil.hal      one Chip API over boards, the simulated chip and the model
    orbithil.sim      the cocotb harness and single-event-upset injection
    orbithil.payload  workloads, the on-board model, the outcome classifier
    orbithil.flight   the flight stack and the ground link
    orbithil.fpga     the chip's RTL, board files and ICD (package data)
    orbithil.tools    campaigns, reports, benchmarks and the ``orbithil`` command

Layers import downwards only: tools -> flight, sim -> payload -> hal (``tests/test_imports.py``
checks it). This package itself holds what every layer shares: settings and the error base.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orbithil")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0+unknown"
