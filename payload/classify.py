"""The outcome of one injection, decided against the golden run: one pure function.

| outcome | when |
|---|---|
| tool_error | the tool failed (not the chip); never counted, retried once, reported |
| hang | no answer within the deadline |
| detected | the chip or the HAL reported an error the golden run did not: a NAK, |
|          | the uncorrectable-data flag, a job error (MAC mismatch), a watchdog expiry |
| sdc | an output differs and nothing was reported: silent data corruption |
| corrected | outputs right and a correction counter moved (SECDED, TMR, MAC retry, |
|           | a frame buffer's parity or the link's FEC, a resend on the link) |
| latent | outputs right, nothing corrected, but the end state differs |
| masked | nothing differs |

Misclassified: an ``sdc`` whose answer changed. For a workload that ends in a decision
(``digits``: the on-board model's logits, ``inference``: the small network's 8 outputs)
the answer is the predicted class, the argmax of its last layer's outputs; an sdc that
leaves it alone changed numbers but not the answer. It is a property of some sdc results,
not an outcome of its own: the outcomes stay one partition of the injections (their
shares add up to one), and ``misclassified`` answers the question beside it (None for a
workload with no answer: ``control``, ``memory``).

``resident_words`` are the SRAM words a deployment keeps loaded between runs (the model's
weights and its constant bias inputs): an upset there outlives the run it hit, so a rerun
on the same chip reads it again (``tools.campaign.stats.policy_answers``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import cache

import numpy as np

from orbithil.hal import protocol as p
from orbithil.hal.errors import ProtocolError
from orbithil.hal.icd import MAX_MEM_WORDS_PER_FRAME


class Outcome(StrEnum):
    MASKED = "masked"
    CORRECTED = "corrected"
    LATENT = "latent"
    DETECTED = "detected"
    SDC = "sdc"
    HANG = "hang"
    TOOL_ERROR = "tool_error"


# LINK_RETRIES: the host resent a request the chip had refused as damaged, or answered
# with a damaged frame (the error was caught and recovered on the link); PARITY_ERRORS: a
# frame buffer's parity found a flip (the request NAKed and resent, or the answer spoilt
# and asked again); FEC_CORRECTED: the chip's link decoder repaired a received byte
CORRECTION_COUNTERS = (
    "ECC_CORRECTED", "TMR_MISMATCH", "MAC_RETRIES", "LINK_RETRIES", "PARITY_ERRORS",
    "FEC_CORRECTED",
)  # fmt: skip
DETECTION_COUNTERS = ("ECC_UNCORRECTABLE", "WDT_EXPIRIES")


@dataclass(frozen=True)
class Observation:
    """What a run showed: its outputs, end-state hash, counters and reported errors."""

    outputs: tuple = ()
    end_state: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    naks: int = 0  # command NAKs the HAL saw (reasons beyond the golden run's)
    job_errors: int = 0  # MAC jobs that ended with a non-zero status
    hang: bool = False
    tool_error: str | None = None


def classify(golden: Observation, run: Observation) -> Outcome:
    """The outcome of ``run`` against ``golden`` (the table in this module's docstring)."""
    if run.tool_error is not None:
        return Outcome.TOOL_ERROR
    if run.hang:
        return Outcome.HANG

    def rose(name: str) -> bool:
        return run.counters.get(name, 0) > golden.counters.get(name, 0)

    if (
        run.naks > golden.naks
        or run.job_errors > golden.job_errors
        or any(rose(name) for name in DETECTION_COUNTERS)
    ):
        return Outcome.DETECTED
    if run.outputs != golden.outputs:
        return Outcome.SDC
    if any(rose(name) for name in CORRECTION_COUNTERS):
        return Outcome.CORRECTED
    if run.end_state != golden.end_state:
        return Outcome.LATENT
    return Outcome.MASKED


# Workloads whose outputs end in a decision (the predicted class).
ANSWERING_WORKLOADS = ("digits", "inference")
SRAM_TARGET = "u_mem.mem"  # the data SRAM among the netlist's injection targets


def predicted_class(workload: str, outputs: tuple) -> int | None:
    """The class a run of ``workload`` decided (the argmax of its last layer's int32
    outputs, the first on a tie as numpy's), or None: the workload decides nothing, or the
    outputs hold no readable last layer (refused, cut short)."""
    if workload not in ANSWERING_WORKLOADS:
        return None
    last = _last_layer(workload)
    frames = -(-last.words // MAX_MEM_WORDS_PER_FRAME)  # the READ_MEMs of the last layer
    if len(outputs) < frames:
        return None
    try:
        words = [p.parse_mem(bytes.fromhex(out))[1] for out in outputs[-frames:]]
    except (ValueError, TypeError, struct.error, ProtocolError):
        return None  # "nak", or an answer that is not a READ_MEM's
    data = np.concatenate(words) if words else np.zeros(0, np.uint32)
    if len(data) != last.words:
        return None
    return int(np.argmax(last.gather(data)))


def misclassified(golden: Observation, run: Observation, workload: str) -> bool | None:
    """Whether ``run`` silently changed ``workload``'s answer: its outcome is ``sdc`` and
    its predicted class is not the golden run's (an sdc whose class cannot be read counts
    as changed). False for every other outcome; None when the workload decides nothing."""
    if workload not in ANSWERING_WORKLOADS:
        return None
    if classify(golden, run) is not Outcome.SDC:
        return False
    return predicted_class(workload, run.outputs) != predicted_class(workload, golden.outputs)


def resident_words(workload: str) -> frozenset[int]:
    """SRAM words that ``workload``'s model keeps resident between runs: its weights and
    constant bias inputs (empty for a workload without a model)."""
    if workload not in ANSWERING_WORKLOADS:
        return frozenset()
    return _resident(workload)


@dataclass(frozen=True)
class _LastLayer:
    words: int  # words the last layer's outputs take (one int32 per row per tile)
    gather: Callable  # words -> the layer's int32 outputs


@cache
def _last_layer(workload: str) -> _LastLayer:
    if workload == "digits":
        from orbithil.payload.model import default_model, plan_layout  # trains on first use

        model = default_model()
        layout = plan_layout(model)
        last = len(model.weights) - 1
        rows = model.weights[last].shape[0]
        return _LastLayer(layout.out_words[last], lambda words: layout.gather(last, words, rows))
    from orbithil.payload.workloads import LAYERS  # (workloads imports this module)

    return _LastLayer(LAYERS[-1][0], p.unpack_int32)


@cache
def _resident(workload: str) -> frozenset[int]:
    if workload == "digits":
        from orbithil.payload.model import default_model, plan_layout

        model = default_model()
        layout = plan_layout(model)
        bias = {
            a + w.shape[1] // 4 - 1 for a, w in zip(layout.act_addr, model.weights, strict=True)
        }
        return frozenset(range(layout.base, layout.base + len(layout.weights))) | bias
    from orbithil.payload.workloads import LAYERS

    return frozenset(range(sum(rows * cols // 4 for rows, cols in LAYERS)))


def observation_to_dict(observation: Observation) -> dict:
    out = asdict(observation)
    out["outputs"] = list(observation.outputs)
    return out


def observation_from_dict(data: dict) -> Observation:
    return Observation(**{**data, "outputs": tuple(data.get("outputs", ()))})
