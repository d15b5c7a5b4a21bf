"""Synthesis for the iCE40 UP5K (yosys synth_ice40, nextpnr-ice40, icepack) and the
resource table for both builds. The tool runners and the fault-injection target list live
in ``sim.netlist`` (the injection engine needs them; sim/ does not reach up into tools/).

Tools: the YoWASP builds from PyPI (pinned in pyproject.toml, installed by make setup),
else Debian's yosys / nextpnr-ice40 / icepack on PATH (``sim.toolchain`` finds either).
Every tool run has a deadline. Output goes to the cache (``sim.paths.fpga_dir``); the
bitstream's path is in the result.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from orbithil.sim.netlist import (  # noqa: F401  (ToolMissing: raised from here, part of this API)
    ToolMissing,
    rel_path,
    run_tool,
    run_tool_path,
    yosys_sources,
)
from orbithil.sim.paths import BOARD_DIR, RTL_DIR, fpga_dir

UP5K = {"LC": 5280, "RAM": 30, "SPRAM": 4, "DSP": 8, "IO": 39}  # UP5K-SG48 capacities


@dataclass
class SynthResult:
    """Resources and timing of one build, as placed and routed on the UP5K."""

    harden: int
    luts: int  # SB_LUT4 after synthesis
    ffs: int  # flip-flops (SB_DFF*) after synthesis
    carries: int
    logic_cells: int  # ICESTORM_LC used by nextpnr (a LUT, a FF or both per cell)
    ebr: int  # 4 kbit block RAMs
    spram: int
    dsp: int
    fmax_mhz: float
    bitstream: str

    def fits(self) -> bool:
        return (
            self.logic_cells <= UP5K["LC"]
            and self.ebr <= UP5K["RAM"]
            and self.spram <= UP5K["SPRAM"]
            and self.dsp <= UP5K["DSP"]
        )


def synthesize(harden: int, *, timeout_s: float = 1800) -> SynthResult:
    """yosys -> nextpnr -> icepack for one build; returns its resource figures."""
    out = fpga_dir(harden)
    yosys, nextpnr, icepack = (
        run_tool_path("yosys"),
        run_tool_path("nextpnr-ice40"),
        run_tool_path("icepack"),
    )
    sources = yosys_sources(out, (BOARD_DIR / "icebreaker_top.v",))
    script = (
        f"read_verilog -I{rel_path(RTL_DIR, out)} {sources}; "
        f"chparam -set HARDEN {harden} icebreaker_top; "
        "synth_ice40 -top icebreaker_top -dsp -json chip.json; "
        "tee -o stat.txt stat"
    )
    run_tool([yosys, "-q", "-p", script], cwd=out, timeout_s=timeout_s, log=out / "yosys.log")
    # Totals including submodules (the TMR copies are kept as separate modules).
    stat = (out / "stat.txt").read_text().split("=== design hierarchy ===")[-1]

    def count(cell_pattern: str) -> int:
        return sum(int(n) for n in re.findall(rf"^\s+(\d+)\s+{cell_pattern}$", stat, re.M))

    run_tool(
        [
            nextpnr, "--up5k", "--package", "sg48", "--json", "chip.json",
            "--pcf", rel_path(BOARD_DIR / "icebreaker.pcf", out), "--asc", "chip.asc",
            "--freq", "12", "--report", "report.json", "--seed", "1",
        ],
        cwd=out, timeout_s=timeout_s, log=out / "nextpnr.log",
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    used = {k: v["used"] for k, v in report["utilization"].items()}
    fmax = min(v["achieved"] for v in report["fmax"].values()) if report.get("fmax") else 0.0
    run_tool([icepack, "chip.asc", "chip.bin"], cwd=out, timeout_s=600, log=out / "icepack.log")
    return SynthResult(
        harden=harden,
        luts=count("SB_LUT4"),
        ffs=count(r"SB_DFF\w*"),
        carries=count("SB_CARRY"),
        logic_cells=used.get("ICESTORM_LC", 0),
        ebr=used.get("ICESTORM_RAM", 0),
        spram=used.get("ICESTORM_SPRAM", 0),
        dsp=used.get("ICESTORM_DSP", 0),
        fmax_mhz=round(float(fmax), 2),
        bitstream=str(out / "chip.bin"),
    )
