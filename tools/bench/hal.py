"""``orbithil bench hal``: the Chip API per backend, and over a corrupting link.

Per backend (model, RTL on Verilator and on Icarus, HARDEN=1): round-trip times of
READ_REG (median, p99), commands/s, and payload bytes/s moving 60-word blocks both ways.
Under ``fault://`` with 1% of bytes corrupted in each direction, on Verilator: a seeded
mix of commands whose every result is checked (``fault_correct_share``; a wrong result
is counted, never accepted), and the throughput kept against the clean link measured in
the same run (``fault_throughput_ratio``), with the link's default forward error
correction (``fec="auto"``: Reed-Solomon frames once the line proves noisy). The same mix
with FEC off gives ``fault_throughput_ratio_arq`` (retransmission alone), and
``fault_arq_ceiling`` is what a perfect retransmission scheme could keep: each attempt
costing its clean time, succeeding only when every byte both ways survives.
"""

from __future__ import annotations

import time

import numpy as np

import hal
from hal.icd import ACK_FLAG, Cmd

from . import BenchResult

BACKENDS = {
    "model": "model://?harden=1",
    "verilator": "sim://verilator?harden=1",
    "icarus": "sim://icarus?harden=1",
}


def _per_backend(chip, n_rtt: int, n_blocks: int) -> dict[str, float]:
    chip.identify()
    times = []
    for _ in range(n_rtt):
        start = time.perf_counter()
        chip.read_reg("SCRATCH0")
        times.append(time.perf_counter() - start)
    rtt = np.array(times)
    words = np.arange(60, dtype=np.uint32)
    start = time.perf_counter()
    for i in range(n_blocks):
        chip.write_mem(i * 60 % 1900, words)
        chip.read_mem(i * 60 % 1900, 60)
    block_s = time.perf_counter() - start
    return {
        "rtt_median_ms": float(np.median(rtt) * 1e3),
        "rtt_p99_ms": float(np.percentile(rtt, 99) * 1e3),
        "commands_per_s": float(n_rtt / rtt.sum()),
        "payload_bytes_per_s": float(n_blocks * 2 * 240 / block_s),
    }


def _mixed(chip, n: int, seed: int) -> dict[str, float]:
    """A seeded mix of commands, every result checked: commands sent, checks, correct,
    wrong (a result that came back but differs) and failed (a HalError), and seconds."""
    rng = np.random.default_rng(seed)
    out = dict.fromkeys(("commands", "checks", "correct", "wrong", "failed"), 0)
    op_seconds = [0.0, 0.0, 0.0]
    op_count = [0, 0, 0]
    scratch = chip.read_reg("SCRATCH1")
    start = time.perf_counter()
    for _ in range(n):
        op = int(rng.integers(0, 3))
        out["checks"] += 1
        op_started = time.perf_counter()
        op_count[op] += 1
        try:
            if op == 0:
                value = int(rng.integers(0, 2**32))
                ok = chip.write_reg("SCRATCH1", value) == value
                scratch = value
                out["commands"] += 1
            elif op == 1:
                ok = chip.read_reg("SCRATCH1") == scratch
                out["commands"] += 1
            else:
                addr = int(rng.integers(0, 1900))
                words = rng.integers(0, 2**32, 16, dtype=np.uint64).astype(np.uint32)
                chip.write_mem(addr, words)
                ok = bool(np.array_equal(chip.read_mem(addr, 16), words))
                out["commands"] += 2
        except hal.HalError:
            out["failed"] += 1
            continue
        finally:
            op_seconds[op] += time.perf_counter() - op_started
        out["correct" if ok else "wrong"] += 1
    out["seconds"] = time.perf_counter() - start
    out["op_seconds"], out["op_count"] = op_seconds, op_count
    return out


def _wire_bytes(cmd: int, request_len: int, answer_len: int) -> int:
    """Bytes on the wire, both ways, of one request and its answer (random payloads)."""
    rng = np.random.default_rng(0)
    request = hal.codec.frame_encode(1, cmd, rng.bytes(request_len))
    answer = hal.codec.frame_encode(1, cmd | ACK_FLAG, rng.bytes(answer_len))
    return len(request) + len(answer)


def arq_ceiling(clean: dict, flip: float) -> float:
    """The best throughput ratio any retransmission scheme can keep on this mix when each
    byte is corrupted with probability ``flip``: every attempt of a command costs its clean
    time and succeeds only if all its bytes, both ways, arrive intact."""
    sizes = [  # per op of the mix: the wire bytes of each of its commands
        [_wire_bytes(Cmd.WRITE_REG, 5, 5)],
        [_wire_bytes(Cmd.READ_REG, 1, 5)],
        [_wire_bytes(Cmd.WRITE_MEM, 3 + 64, 3), _wire_bytes(Cmd.READ_MEM, 3, 3 + 64)],
    ]
    clean_total = faulty_total = 0.0
    for seconds, commands in zip(clean["op_seconds"], sizes, strict=True):
        share = seconds / len(commands)  # each command of the op: an equal part of its time
        clean_total += seconds
        faulty_total += sum(share / (1 - flip) ** size for size in commands)
    return clean_total / faulty_total


def run(*, quick: bool = False) -> BenchResult:
    n_rtt, n_blocks, n_mixed = (50, 5, 100) if quick else (300, 30, 400)
    metrics: dict[str, float | int | str] = {}
    for name, url in BACKENDS.items():
        with hal.open(url, timeout=5.0) as chip:
            for key, value in _per_backend(chip, n_rtt, n_blocks).items():
                metrics[f"{name}_{key}"] = round(value, 3)
    with hal.open(BACKENDS["verilator"], timeout=0.1, retries=20) as clean:
        base = _mixed(clean, n_mixed, seed=5)
    url = f"fault://{BACKENDS['verilator']}?flip=0.01&seed=3"
    with hal.open(url, timeout=0.1, retries=20, fec="off") as faulty:
        arq = _mixed(faulty, n_mixed, seed=5)
    with hal.open(url, timeout=0.1, retries=20) as faulty:
        hit = _mixed(faulty, n_mixed, seed=5)
        stats = faulty.link.stats
        corrupted = faulty.link.port.corrupted
        repaired = faulty.link.deframer.bytes_corrected
    metrics |= {
        "fault_commands": hit["commands"],
        "fault_correct_share": round(hit["correct"] / hit["checks"], 4),
        "fault_wrong_results": hit["wrong"],
        "fault_failed_commands": hit["failed"],
        "fault_bytes_corrupted": corrupted,
        "fault_retries": stats.retries,
        "fault_timeouts": stats.timeouts,
        "fault_throughput_ratio": round(
            (hit["commands"] / hit["seconds"]) / (base["commands"] / base["seconds"]), 3
        ),
        "fault_fec_requests": stats.fec_requests,
        "fault_bytes_repaired_by_host": repaired,
        "fault_throughput_ratio_arq": round(
            (arq["commands"] / arq["seconds"]) / (base["commands"] / base["seconds"]), 3
        ),
        "fault_correct_share_arq": round(arq["correct"] / arq["checks"], 4),
        "clean_correct_share": round(base["correct"] / base["checks"], 4),
        "fault_arq_ceiling": round(arq_ceiling(base, 0.01), 3),
    }
    return BenchResult(
        metrics=metrics,
        targets={
            "fault_correct_share": (">=", 1.0),
            "fault_correct_share_arq": (">=", 1.0),
            "fault_throughput_ratio": (">=", 0.5),
        },
        params={"rtt_samples": n_rtt, "blocks": n_blocks, "mixed_ops": n_mixed, "flip": 0.01},
    )
