"""The board path of fault injection: the same plan as ``sim.inject`` on a chip behind the
HAL (a board; also model:// and sim://), through the chip's debug-injection command."""

from __future__ import annotations

from collections.abc import Callable

from orbithil.hal.errors import NotInBuild
from orbithil.hal.icd import RW_REGISTERS
from orbithil.payload.classify import classify, misclassified
from orbithil.payload.workloads import run_on_chip
from orbithil.sim.faults import FaultModel, Injection, TargetSpace
from orbithil.sim.inject import Result, Setup, golden
from orbithil.sim.targets import split_name

__all__ = ["board_space", "inject_command", "run_plan_on_chip"]


def board_space(targets: dict) -> TargetSpace:
    """The targets the INJECT command reaches: every register-file copy bit and every SRAM
    codeword bit (not the SRAM controller's own flip-flops)."""
    return TargetSpace(
        {
            "flip_flops": [f for f in targets["flip_flops"] if f["name"].startswith("u_regs.")],
            "memories": [m for m in targets["memories"] if m["name"] == "u_mem.mem"],
        }
    )


def inject_command(injection: Injection) -> list[tuple[str, int, int, int]]:
    """The INJECT commands (kind, index, bit, copy) that make ``injection`` on a chip."""
    if injection.model is FaultModel.STUCK:
        raise ValueError("the INJECT command flips bits; a stuck-at fault needs the simulator")
    if injection.word is not None:
        if injection.target != "u_mem.mem":
            raise ValueError(f"INJECT cannot reach memory {injection.target}")
        return [("mem", injection.word, bit, 0) for bit in injection.bits]
    parts = split_name(injection.target)  # u_regs.g_reg[i].g_tmr.u_c<copy>.q
    if parts[0] != "u_regs" or len(parts) < 5:
        raise ValueError(f"INJECT cannot reach {injection.target}; it reaches u_regs and u_mem")
    index, copy = parts[2], int(str(parts[4])[-1])
    return [("reg", RW_REGISTERS[index].addr, bit, copy) for bit in injection.bits]


def run_plan_on_chip(
    chip,
    setup: Setup,
    injections: list[Injection],
    *,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run ``injections`` on a chip behind the HAL (a board; also model:// and sim://).

    Each run starts from a soft reset with the SRAM cleared; the injection is made through
    INJECT just before the workload step the simulated golden run was at when the
    injection's cycle came (a board cannot stop at a cycle). The golden run is made on the
    same chip first, and the same classifier decides.
    """
    if injections and not chip.identity.inject:  # a flight bitstream: say so before the runs
        raise NotInBuild(
            f"{getattr(chip, 'url', '') or 'the chip'} was built without the INJECT command "
            "(INJECT=0, a flight bitstream); run board campaigns on a bench build "
            "(orbithil synth --inject 1)",
            feature="INJECT",
        )
    checkpoints = golden(setup).checkpoints  # the step boundaries' cycles in simulation
    chip.reset(clear_memory=True)
    reference = run_on_chip(chip, setup.workload, setup.seed)
    results = []
    for index, injection in enumerate(injections):
        commands = inject_command(injection)
        step = max(
            (k for k, cycle in enumerate(checkpoints) if cycle <= injection.cycle), default=0
        )

        def flip(commands=commands) -> None:
            chip.arm_injection()
            for kind, where, bit, copy in commands:
                chip.inject(kind, where, bit, copy)
            chip.write_reg("INJ_ARM", 0)  # disarm: the end state is compared with golden

        chip.reset(clear_memory=True)
        observation = run_on_chip(chip, setup.workload, setup.seed, before_step={step: flip})
        result = Result(
            index,
            injection,
            classify(reference, observation),
            observation,
            {"step": step},
            misclassified(reference, observation, setup.workload),
        )
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
