"""``orbithil bench hal``: the Chip API per backend, and over a corrupting link.

Per backend (model, RTL on Verilator and on Icarus, HARDEN=1): round-trip times of
READ_REG (median, p99), commands/s, and payload bytes/s moving 60-word blocks both ways.
Under ``fault://`` with 1% of bytes corrupted in each direction, on Verilator: a seeded
mix of commands whose every result is checked (``fault_correct_share``; a wrong result
is counted, never accepted), and the throughput kept against the clean link measured in
the same run (``fault_throughput_ratio``), with the link's default forward error
correction (``fec="auto"``: Reed-Solomon frames once the line proves noisy). The same mix
with FEC off gives ``fault_throughput_ratio_arq`` (retransmission alone). The three links
run on three simulated chips and take turns over the mix's blocks, so the machine's noise
falls on them alike.
"""

from __future__ import annotations

import time

import numpy as np

from orbithil import hal

from . import BenchResult

BACKENDS = {
    "model": "model://?harden=1",
    "verilator": "sim://verilator?harden=1",
    "icarus": "sim://icarus?harden=1",
}


# swing with what else the machine runs: `bench all` takes the median of three runs
NOISY = ("fault_throughput_ratio", "fault_throughput_ratio_arq", "verilator_rtt_median_ms")
REPEATS = 3


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
    scratch = chip.read_reg("SCRATCH1")
    start = time.perf_counter()
    for _ in range(n):
        op = int(rng.integers(0, 3))
        out["checks"] += 1
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
        out["correct" if ok else "wrong"] += 1
    out["seconds"] = time.perf_counter() - start
    return out


ROUNDS = 4  # turns the three links take over the mix


def run(*, quick: bool = False) -> BenchResult:
    n_rtt, n_blocks, n_mixed = (50, 5, 100) if quick else (300, 30, 400)
    metrics: dict[str, float | int | str] = {}
    for name, url in BACKENDS.items():
        with hal.open(url, timeout=5.0) as chip:
            for key, value in _per_backend(chip, n_rtt, n_blocks).items():
                metrics[f"{name}_{key}"] = round(value, 3)
    # The clean link, the corrupting link with FEC (auto) and without it, each on its own
    # simulated chip, take turns over the same blocks of the mix: a machine's slow moment
    # falls on all three alike instead of on whichever ran then.
    url = f"fault://{BACKENDS['verilator']}?flip=0.01&seed=3"
    runs = {"base": [], "arq": [], "hit": []}
    with (
        hal.open(BACKENDS["verilator"], timeout=0.1, retries=20) as clean,
        hal.open(url, timeout=0.1, retries=20, fec="off") as arq_chip,
        hal.open(url, timeout=0.1, retries=20) as faulty,
    ):
        chips = {"base": clean, "arq": arq_chip, "hit": faulty}
        for chip in chips.values():
            chip.identify()
        for block in range(ROUNDS):
            for name, chip in chips.items():
                runs[name].append(_mixed(chip, n_mixed // ROUNDS, seed=5 + block))
        stats = faulty.link.stats
        corrupted = faulty.link.port.corrupted
        repaired = faulty.link.deframer.bytes_corrected
    base, arq, hit = ({k: sum(r[k] for r in runs[name]) for k in runs[name][0]} for name in runs)
    metrics |= {
        "fault_commands": hit["commands"],
        "fault_correct_share": round(hit["correct"] / hit["checks"], 4),
        "fault_wrong_results": hit["wrong"],
        "fault_failed_commands": hit["failed"],
        "fault_bytes_corrupted": corrupted,
        "fault_retries": stats.retries,
        "fault_timeouts": stats.timeouts,
        "fault_frame_naks": stats.frame_naks,
        "fault_damaged_answers": stats.damaged_answers,
        "fault_lost_delimiters": stats.lost_delimiters,
        "fault_unclaimed_naks": stats.unclaimed_naks,
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
        "clean_commands_per_s": round(base["commands"] / base["seconds"], 1),
        "fault_commands_per_s": round(hit["commands"] / hit["seconds"], 1),
    }
    return BenchResult(
        metrics=metrics,
        targets={
            "fault_correct_share": (">=", 1.0),
            "fault_correct_share_arq": (">=", 1.0),
            "fault_throughput_ratio": (">=", 0.7),
        },
        params={"rtt_samples": n_rtt, "blocks": n_blocks, "mixed_ops": n_mixed, "flip": 0.01},
    )
