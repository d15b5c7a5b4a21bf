"""The flip-flops and memories of the chip, from its netlist (yosys), for fault injection;
and running the yosys / nextpnr tools with deadlines.

Tools: the YoWASP builds from PyPI (pinned in pyproject.toml, installed by make setup),
else Debian's yosys / nextpnr-ice40 / icepack on PATH (``sim.toolchain`` finds either).
Output goes to the cache (``sim.paths.fpga_dir``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from orbithil.errors import OrbithilError
from orbithil.sim.paths import RTL_DIR, fpga_dir, rtl_sources, write_atomically
from orbithil.sim.toolchain import TOOLS_BY_KEY, find_executable, tool_env


class ToolMissing(OrbithilError, RuntimeError):
    """A synthesis tool is not installed; the message says how to get it."""


def run_tool_path(key: str) -> str:
    tool = TOOLS_BY_KEY[key]
    for name in tool.names:
        path = find_executable(name)
        if path:
            return path
    raise ToolMissing(f"{key} not found; install it with: {tool.install}")


def run_tool(cmd: list[str], *, cwd: Path, timeout_s: float, log: Path) -> str:
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


def rel_path(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd``. The YoWASP tools run in a WebAssembly sandbox that
    reliably sees the working directory and its parents ("..", "../..") but not every
    absolute path (a clone under /tmp was invisible), so every file goes in relative."""
    return os.path.relpath(path, cwd)


def yosys_sources(cwd: Path, extra: tuple[Path, ...] = ()) -> str:
    return " ".join(rel_path(p, cwd) for p in [*rtl_sources(), *extra])


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


def _is_ff(kind: str) -> bool:
    return re.fullmatch(r"\$(a|s|)dff\w*|\$dffe\w*|\$sdff\w*|\$aldff\w*", kind) is not None


def _src_files(attributes: dict) -> str:
    """The source files in a yosys ``src`` attribute ("a.v:1.2-3.4|b.v:..."), joined by |."""
    src = attributes.get("src", "")
    return "|".join(
        sorted({part.split(":", 1)[0].rsplit("/", 1)[-1] for part in src.split("|") if part})
    )


def _declared_reg(attributes: dict, lines: dict[str, list[str]]) -> bool:
    """Whether the net's declaration (its ``src``: "file.v:line.col-line.col") says ``reg``:
    a register can be flipped, a ``wire`` aliasing it is rewritten by its driver. (``lines``
    caches the RTL files' lines by name.)"""
    src = attributes.get("src", "").split("|")[0]
    match = re.fullmatch(r"(?:.*/)?([^/:]+):(\d+)\.(\d+)-.*", src)
    if match is None:
        return False
    name, line, column = match[1], int(match[2]), int(match[3])
    if name not in lines:
        path = RTL_DIR / name
        lines[name] = path.read_text().splitlines() if path.is_file() else []
    text = lines[name]
    return 0 < line <= len(text) and re.search(r"\breg\b", text[line - 1][: column - 1]) is not None


def _block(name: str) -> str:
    return name.split(".", 1)[0] if "." in name else "top"


def targets_path(harden: int, *, clks_per_bit: int = 104, mem_words: int = 2048) -> Path:
    """Where ``list_targets`` writes the list for these build parameters."""
    return fpga_dir(harden) / f"targets-c{clks_per_bit}-m{mem_words}.json"


def list_targets(
    harden: int, *, clks_per_bit: int = 104, mem_words: int = 2048, timeout_s: float = 600
) -> dict:
    """Every flip-flop bit and memory of ``orbithil_chip`` for one build, from yosys.

    The parameters must be those of the build the targets are used on: register widths
    follow them (a UART counter for CLKS_PER_BIT=4 is 3 bits, for 104 it is 7).

    The RTL is elaborated and optimised (constant and unused flip-flops go, as in
    synthesis) but not mapped to cells, so names stay the RTL's and map to simulator
    handles. TMR copies are kept (keep_hierarchy is lifted only to flatten the names).
    A memory's registered read port stays a flip-flop (``-nordff``: yosys would otherwise
    fold the register into the memory cell and its name would be lost): it is state, a
    target, and a checkpoint taken while the chip works must hold it.
    """
    out = fpga_dir(harden)
    out.mkdir(parents=True, exist_ok=True)
    yosys = run_tool_path("yosys")
    # its own file: processes listing targets for other parameters share the folder
    netlist_file = out / f"targets-netlist.{os.getpid()}-{threading.get_ident()}.json"
    script = (
        f"read_verilog -I{rel_path(RTL_DIR, out)} {yosys_sources(out)}; "
        f"chparam -set HARDEN {harden} -set CLKS_PER_BIT {clks_per_bit} "
        f"-set MEM_WORDS {mem_words} orbithil_chip; hierarchy -top orbithil_chip; "
        "setattr -mod -unset keep_hierarchy *; proc; flatten; opt; wreduce; opt_clean; "
        f"memory -nomap -nordff; opt_clean; write_json {netlist_file.name}"
    )
    try:
        run_tool([yosys, "-q", "-p", script], cwd=out, timeout_s=timeout_s,
                 log=out / "targets.log")  # fmt: skip
        netlist = json.loads(netlist_file.read_text())
        netlist_file.replace(out / "targets-netlist.json")  # the last one made, to look at
    finally:
        netlist_file.unlink(missing_ok=True)
    module = netlist["modules"]["orbithil_chip"]
    # A flip-flop's output net carries every name it has after flattening: the register's
    # own and the wires it drives (ports of other instances, slices, aliases). Only the
    # register's own name is a handle a simulator can flip: a Deposit on a wire is undone
    # by its driver. The flip-flop cell's ``src`` names the file of the always block that
    # makes it, and each net's ``src`` the file it is declared in, so a name declared in
    # the cell's own file wins; tests/test_targets_sim.py checks every choice by flipping
    # it on both simulators.
    names_of_bit: dict[int, list[tuple[str, int, int, str]]] = {}
    ports = set(module["ports"])
    rtl_lines: dict[str, list[str]] = {}
    regs = {
        name
        for name, net in module["netnames"].items()
        if _declared_reg(net.get("attributes", {}), rtl_lines)
    }
    for name, net in module["netnames"].items():
        if net.get("hide_name"):
            continue
        width = len(net["bits"])
        offset = net.get("offset", 0)
        files = _src_files(net.get("attributes", {}))
        for i, bit in enumerate(net["bits"]):
            if isinstance(bit, int):
                names_of_bit.setdefault(bit, []).append((name, i + offset, width, files))

    ff_bits = {
        bit
        for cell in module["cells"].values()
        if _is_ff(cell["type"])
        for bit in cell["connections"]["Q"]
    }
    all_ff = {
        name
        for name, net in module["netnames"].items()
        if all(isinstance(b, int) and b in ff_bits for b in net["bits"])
    }

    def best(bit: int, cell: dict) -> tuple[str, int, int] | None:
        home = _src_files(cell.get("attributes", {}))

        def rank(entry: tuple[str, int, int, str]) -> tuple:
            # declared where the flip-flop is made; every bit a flip-flop (a register, not
            # a wire mixing it with logic); declared `reg` (a wire that only carries it,
            # such as a memory's read data, is rewritten by its driver); a plain name; not a
            # top port; deepest (a block's output port sits above the register it
            # carries); widest (a slice is narrower)
            name, _, width, files = entry
            same_file = bool(set(home.split("|")) & set(files.split("|"))) if home else False
            return (
                same_file,
                name in all_ff,
                name in regs,
                "$" not in name,
                name not in ports,
                name.count("."),
                width,
            )

        candidates = names_of_bit.get(bit, [])
        if not candidates:
            return None
        name, index, width, _ = max(candidates, key=rank)
        return name, index, width

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
        elif _is_ff(kind):
            for bit in cell["connections"]["Q"]:
                chosen = best(bit, cell)
                if chosen is not None:
                    name, index, width = chosen
                    flops.append(FlipFlopBit(name, index, width, _block(name)))
    flops.sort(key=lambda f: (f.name, f.bit))
    result = {
        "harden": harden,
        "clks_per_bit": clks_per_bit,
        "mem_words": mem_words,
        "flip_flops": [asdict(f) for f in flops],
        "memories": [asdict(m) for m in memories],
        "flip_flop_bits": len(flops),
        "memory_bits": sum(m.bits for m in memories),
    }
    path = targets_path(harden, clks_per_bit=clks_per_bit, mem_words=mem_words)
    write_atomically(path, json.dumps(result, indent=1))
    return result


def load_targets(harden: int, *, clks_per_bit: int = 104, mem_words: int = 2048) -> dict:
    """``list_targets`` for these parameters, reusing the list on disk while it is newer
    than every RTL source and this module (yosys takes seconds; campaigns ask for it
    often)."""
    path = targets_path(harden, clks_per_bit=clks_per_bit, mem_words=mem_words)
    sources = [*RTL_DIR.glob("*.v"), *RTL_DIR.glob("*.vh"), Path(__file__)]
    if path.exists() and path.stat().st_mtime > max(s.stat().st_mtime for s in sources):
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass  # a half-written file from a killed run: make it again
    return list_targets(harden, clks_per_bit=clks_per_bit, mem_words=mem_words)


def verilator_config(harden: int, *, clks_per_bit: int = 104, mem_words: int = 2048) -> Path:
    """A Verilator configuration file that makes just the chip's state visible to cocotb.

    cocotb's runner builds with ``--public-flat-rw``, which keeps every net of the design
    (wires included) in memory and runs chip_tb about 7x slower than a plain build. The
    simulation build turns that off and instead makes public, by name, every flip-flop
    register and memory the netlist lists (what injection, checkpoints and the tests
    touch) and the testbench's own variables: about 2.5x faster than ``--public-flat-rw``.
    Names are matched in every module, so a wire sharing a register's name in another
    module is public too (harmless, and rare).
    """
    targets = load_targets(harden, clks_per_bit=clks_per_bit, mem_words=mem_words)
    leaves = sorted(
        {f["name"].rsplit(".", 1)[-1] for f in targets["flip_flops"]}
        | {m["name"].rsplit(".", 1)[-1] for m in targets["memories"]}
    )
    lines = ["`verilator_config", "// generated by sim/netlist.py: verilator_config()"]
    lines += [f'public_flat_rw -module "*" -var "{leaf}"' for leaf in leaves]
    lines += ['public_flat_rw -module "chip_tb" -var "*"']
    path = fpga_dir(harden) / f"public-c{clks_per_bit}-m{mem_words}.vlt"
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        write_atomically(path, text)
    return path
