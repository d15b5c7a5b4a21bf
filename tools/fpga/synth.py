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
from dataclasses import asdict, dataclass
from pathlib import Path

from orbithil.sim.netlist import (  # noqa: F401  (ToolMissing: raised from here, part of this API)
    ToolMissing,
    rel_path,
    run_tool,
    run_tool_path,
    yosys_sources,
)
from orbithil.sim.paths import BOARD_DIR, RTL_DIR, fpga_dir

UP5K = {"LC": 5280, "RAM": 30, "SPRAM": 4, "DSP": 8, "IO": 39}  # UP5K-SG48 capacities
BOARD_CLOCK_MHZ = 12.0  # the iCEBreaker's oscillator: timing is met at or above it
# The board's default bitstream (icebreaker_top's defaults): the flight build.
FLIGHT = {"harden": 1, "fec": 1, "inject": 0, "spram": 1}


@dataclass
class SynthResult:
    """Resources and timing of one build, as placed and routed on the UP5K."""

    harden: int
    fec: int  # link forward error correction (the FEC decoder and encoder)
    inject: int  # the INJECT command and the per-bit flip logic (bench builds)
    spram: int  # 1: data SRAM in SPRAM; 0: in block RAM (EBR)
    luts: int  # SB_LUT4 after synthesis
    ffs: int  # flip-flops (SB_DFF*) after synthesis
    carries: int
    logic_cells: int  # ICESTORM_LC used by nextpnr (a LUT, a FF or both per cell)
    ebr: int  # 4 kbit block RAMs
    spram_blocks: int  # SB_SPRAM256KA used
    dsp: int
    fmax_mhz: float
    bitstream: str

    @property
    def lc_share(self) -> float:
        """The share of the UP5K's logic cells the build uses (0..1, above 1 if over)."""
        return round(self.logic_cells / UP5K["LC"], 4)

    def timing_met(self) -> bool:
        return self.fmax_mhz >= BOARD_CLOCK_MHZ

    def fits(self) -> bool:
        """Placed within the UP5K's resources (timing is ``timing_met``)."""
        return (
            self.logic_cells <= UP5K["LC"]
            and self.ebr <= UP5K["RAM"]
            and self.spram_blocks <= UP5K["SPRAM"]
            and self.dsp <= UP5K["DSP"]
        )

    @property
    def name(self) -> str:
        return f"h{self.harden}-f{self.fec}-i{self.inject}-s{self.spram}"

    def as_json(self) -> dict:
        """Every field, with lc_share, timing_met and fits (``orbithil synth --json``)."""
        return asdict(self) | {
            "lc_share": self.lc_share,
            "timing_met": self.timing_met(),
            "fits": self.fits(),
        }


def build_dir(*, harden: int, fec: int, inject: int, spram: int) -> Path:
    """The cache folder of one board build (netlist, reports, logs, bitstream)."""
    path = fpga_dir(harden) / f"board-f{fec}-i{inject}-s{spram}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def synthesize(
    harden: int,
    *,
    fec: int = FLIGHT["fec"],
    inject: int = FLIGHT["inject"],
    spram: int = FLIGHT["spram"],
    timeout_s: float = 1800,
) -> SynthResult:
    """yosys -> nextpnr -> icepack for one build of ``icebreaker_top``; its resources.

    Place and route failing for want of room raises ``DoesNotFit`` with the figures."""
    for name, value in (("harden", harden), ("fec", fec), ("inject", inject), ("spram", spram)):
        if value not in (0, 1):
            raise ValueError(f"{name}={value!r}: a build parameter is 0 or 1")
    out = build_dir(harden=harden, fec=fec, inject=inject, spram=spram)
    yosys, nextpnr, icepack = (
        run_tool_path("yosys"),
        run_tool_path("nextpnr-ice40"),
        run_tool_path("icepack"),
    )
    sources = yosys_sources(out, (BOARD_DIR / "icebreaker_top.v",))
    script = (
        f"read_verilog -I{rel_path(RTL_DIR, out)} {sources}; "
        f"chparam -set HARDEN {harden} -set FEC {fec} -set INJECT {inject} "
        f"-set MEM_SPRAM {spram} icebreaker_top; "
        "synth_ice40 -top icebreaker_top -dsp -json chip.json; "
        "tee -o stat.txt stat"
    )
    run_tool([yosys, "-q", "-p", script], cwd=out, timeout_s=timeout_s, log=out / "yosys.log")
    # Totals including submodules (the TMR copies are kept as separate modules).
    stat = (out / "stat.txt").read_text().split("=== design hierarchy ===")[-1]

    def count(cell_pattern: str) -> int:
        return sum(int(n) for n in re.findall(rf"^\s+(\d+)\s+{cell_pattern}$", stat, re.M))

    try:
        run_tool(
            [
                nextpnr, "--up5k", "--package", "sg48", "--json", "chip.json",
                "--pcf", rel_path(BOARD_DIR / "icebreaker.pcf", out), "--asc", "chip.asc",
                "--freq", f"{BOARD_CLOCK_MHZ:g}", "--report", "report.json", "--seed", "1",
            ],
            cwd=out, timeout_s=timeout_s, log=out / "nextpnr.log",
        )  # fmt: skip
    except RuntimeError as exc:
        needed = _cells_wanted(out / "nextpnr.log")
        if needed is None:
            raise
        raise DoesNotFit(
            f"HARDEN={harden} FEC={fec} INJECT={inject}: needs {needed} logic cells, the "
            f"UP5K has {UP5K['LC']}; log {out / 'nextpnr.log'}",
            logic_cells=needed,
        ) from exc
    report = json.loads((out / "report.json").read_text())
    used = {k: v["used"] for k, v in report["utilization"].items()}
    fmax = min(v["achieved"] for v in report["fmax"].values()) if report.get("fmax") else 0.0
    run_tool([icepack, "chip.asc", "chip.bin"], cwd=out, timeout_s=600, log=out / "icepack.log")
    return SynthResult(
        harden=harden,
        fec=fec,
        inject=inject,
        spram=spram,
        luts=count("SB_LUT4"),
        ffs=count(r"SB_DFF\w*"),
        carries=count("SB_CARRY"),
        logic_cells=used.get("ICESTORM_LC", 0),
        ebr=used.get("ICESTORM_RAM", 0),
        spram_blocks=used.get("ICESTORM_SPRAM", 0),
        dsp=used.get("ICESTORM_DSP", 0),
        fmax_mhz=round(float(fmax), 2),
        bitstream=str(out / "chip.bin"),
    )


class DoesNotFit(RuntimeError):
    """nextpnr could not place the build: it needs more logic cells than the UP5K has."""

    def __init__(self, message: str, *, logic_cells: int) -> None:
        super().__init__(message)
        self.logic_cells = logic_cells


def _cells_wanted(log: Path) -> int | None:
    """The logic cells nextpnr wanted, from its "Unable to place cell" / utilisation lines
    ("ICESTORM_LC: 5324/5280 100%"), or None when the failure was something else."""
    if not log.exists():
        return None
    text = log.read_text()
    found = re.findall(r"ICESTORM_LC:\s+(\d+)/\s*(\d+)", text)
    if found and int(found[-1][0]) > int(found[-1][1]):
        return int(found[-1][0])
    return None
