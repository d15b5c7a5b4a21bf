"""Synthesis for the iCE40 UP5K (yosys synth_ice40, nextpnr-ice40, icepack), the resource
table for both builds, and the list of flip-flop and memory bits for fault injection.

Tools: the YoWASP builds from PyPI (pinned in pyproject.toml, installed by make setup),
else Debian's yosys / nextpnr-ice40 / icepack on PATH (``sim.toolchain`` finds either).
Every tool run has a deadline. Output goes to ``build/fpga/h<HARDEN>/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from sim.harness import ROOT, RTL_DIR, rtl_sources
from sim.toolchain import TOOLS_BY_KEY, find_executable, tool_env

BOARD_DIR = ROOT / "fpga" / "board"
OUT_ROOT = ROOT / "build" / "fpga"
UP5K = {"LC": 5280, "RAM": 30, "SPRAM": 4, "DSP": 8, "IO": 39}  # UP5K-SG48 capacities


class ToolMissing(RuntimeError):
    """A synthesis tool is not installed; the message says how to get it."""


def _tool(key: str) -> str:
    tool = TOOLS_BY_KEY[key]
    for name in tool.names:
        path = find_executable(name)
        if path:
            return path
    raise ToolMissing(f"{key} not found; install it with: {tool.install}")


def _run(cmd: list[str], *, cwd: Path, timeout_s: float, log: Path) -> str:
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=tool_env(),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{Path(cmd[0]).name} did not finish in {timeout_s:.0f} s") from exc
    log.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(
            f"{Path(cmd[0]).name} failed (exit {done.returncode}); log {log}:\n{tail}"
        )
    return done.stdout + done.stderr


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


def _rel(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd``. The YoWASP tools run in a WebAssembly sandbox that
    reliably sees the working directory and its parents ("..", "../..") but not every
    absolute path (a clone under /tmp was invisible), so every file goes in relative."""
    return os.path.relpath(path, cwd)


def _yosys_sources(cwd: Path, *, board: bool) -> str:
    files = [*rtl_sources(), *([BOARD_DIR / "icebreaker_top.v"] if board else [])]
    return " ".join(_rel(p, cwd) for p in files)


def synthesize(harden: int, *, timeout_s: float = 1800) -> SynthResult:
    """yosys -> nextpnr -> icepack for one build; returns its resource figures."""
    out = OUT_ROOT / f"h{harden}"
    out.mkdir(parents=True, exist_ok=True)
    yosys, nextpnr, icepack = _tool("yosys"), _tool("nextpnr-ice40"), _tool("icepack")
    script = (
        f"read_verilog -I{_rel(RTL_DIR, out)} {_yosys_sources(out, board=True)}; "
        f"chparam -set HARDEN {harden} icebreaker_top; "
        "synth_ice40 -top icebreaker_top -dsp -json chip.json; "
        "tee -o stat.txt stat"
    )
    _run([yosys, "-q", "-p", script], cwd=out, timeout_s=timeout_s, log=out / "yosys.log")
    # Totals including submodules (the TMR copies are kept as separate modules).
    stat = (out / "stat.txt").read_text().split("=== design hierarchy ===")[-1]

    def count(cell_pattern: str) -> int:
        return sum(int(n) for n in re.findall(rf"^\s+(\d+)\s+{cell_pattern}$", stat, re.M))

    _run(
        [
            nextpnr, "--up5k", "--package", "sg48", "--json", "chip.json",
            "--pcf", _rel(BOARD_DIR / "icebreaker.pcf", out), "--asc", "chip.asc",
            "--freq", "12", "--report", "report.json", "--seed", "1",
        ],
        cwd=out, timeout_s=timeout_s, log=out / "nextpnr.log",
    )  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    used = {k: v["used"] for k, v in report["utilization"].items()}
    fmax = min(v["achieved"] for v in report["fmax"].values()) if report.get("fmax") else 0.0
    _run([icepack, "chip.asc", "chip.bin"], cwd=out, timeout_s=600, log=out / "icepack.log")
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


# --- fault-injection targets ------------------------------------------------------------
@dataclass(frozen=True)
class FlipFlopBit:
    """One flip-flop bit: the RTL register (hierarchical name below the chip), its bit."""

    name: str
    bit: int
    width: int
    block: str


@dataclass(frozen=True)
class Memory:
    """One memory array: ``words`` x ``width`` bits, every bit a target."""

    name: str
    words: int
    width: int
    block: str

    @property
    def bits(self) -> int:
        return self.words * self.width


def _block(name: str) -> str:
    return name.split(".", 1)[0] if "." in name else "top"


def list_targets(harden: int, *, timeout_s: float = 600) -> dict:
    """Every flip-flop bit and memory of ``orbithil_chip`` for one build, from yosys.

    The RTL is elaborated and optimised (constant and unused flip-flops go, as in
    synthesis) but not mapped to cells, so names stay the RTL's and map to simulator
    handles. TMR copies are kept (keep_hierarchy is lifted only to flatten the names).
    """
    out = OUT_ROOT / f"h{harden}"
    out.mkdir(parents=True, exist_ok=True)
    yosys = _tool("yosys")
    script = (
        f"read_verilog -I{_rel(RTL_DIR, out)} {_yosys_sources(out, board=False)}; "
        f"chparam -set HARDEN {harden} orbithil_chip; hierarchy -top orbithil_chip; "
        "setattr -mod -unset keep_hierarchy *; proc; flatten; opt; wreduce; opt_clean; "
        "memory -nomap; opt_clean; write_json targets-netlist.json"
    )
    _run([yosys, "-q", "-p", script], cwd=out, timeout_s=timeout_s, log=out / "targets.log")
    netlist = json.loads((out / "targets-netlist.json").read_text())
    module = netlist["modules"]["orbithil_chip"]
    # A flip-flop's output net carries every name it has after flattening: the register's
    # own (deepest, inside its module) and the wires it drives in the parents. The
    # register's name is the one a simulator handle can flip, so the deepest name wins.
    bit_names: dict[int, tuple[str, int, int]] = {}

    ports = set(module["ports"])

    def rank(name: str) -> tuple[int, int, int]:  # higher is better
        return (-name.count("$"), name not in ports, name.count("."))

    for name, net in module["netnames"].items():
        if net.get("hide_name"):
            continue
        width = len(net["bits"])
        offset = net.get("offset", 0)
        for i, bit in enumerate(net["bits"]):
            if isinstance(bit, int) and (
                bit not in bit_names or rank(name) > rank(bit_names[bit][0])
            ):
                bit_names[bit] = (name, i + offset, width)
    flops: list[FlipFlopBit] = []
    memories: list[Memory] = []
    for cell in module["cells"].values():
        kind = cell["type"]
        if kind.startswith("$mem"):
            params = cell["parameters"]
            name = params["MEMID"].lstrip("\\")
            memories.append(
                Memory(name, int(params["SIZE"], 2), int(params["WIDTH"], 2), _block(name))
            )
        elif re.fullmatch(r"\$(a|s|)dff\w*|\$dffe\w*|\$sdff\w*|\$aldff\w*", kind):
            for bit in cell["connections"]["Q"]:
                if bit in bit_names:
                    name, index, width = bit_names[bit]
                    flops.append(FlipFlopBit(name, index, width, _block(name)))
    flops.sort(key=lambda f: (f.name, f.bit))
    result = {
        "harden": harden,
        "flip_flops": [asdict(f) for f in flops],
        "memories": [asdict(m) for m in memories],
        "flip_flop_bits": len(flops),
        "memory_bits": sum(m.bits for m in memories),
    }
    (out / "targets.json").write_text(json.dumps(result, indent=1))
    return result
