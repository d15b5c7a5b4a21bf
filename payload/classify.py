"""The outcome of one injection, decided against the golden run: one pure function.

| outcome | when |
|---|---|
| tool_error | the tool failed (not the chip); never counted, retried once, reported |
| hang | no answer within the deadline |
| detected | the chip or the HAL reported an error the golden run did not: a NAK, |
|          | the uncorrectable-data flag, a job error (MAC mismatch), a watchdog expiry |
| sdc | an output differs and nothing was reported: silent data corruption |
| corrected | outputs right and a correction counter moved (SECDED, TMR, MAC retry) |
| latent | outputs right, nothing corrected, but the end state differs |
| masked | nothing differs |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    MASKED = "masked"
    CORRECTED = "corrected"
    LATENT = "latent"
    DETECTED = "detected"
    SDC = "sdc"
    HANG = "hang"
    TOOL_ERROR = "tool_error"


# LINK_RETRIES: the host resent a request the chip had refused as damaged, or answered
# with a damaged frame (the error was caught and recovered on the link)
CORRECTION_COUNTERS = ("ECC_CORRECTED", "TMR_MISMATCH", "MAC_RETRIES", "LINK_RETRIES")
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


def observation_to_dict(observation: Observation) -> dict:
    out = asdict(observation)
    out["outputs"] = list(observation.outputs)
    return out


def observation_from_dict(data: dict) -> Observation:
    return Observation(**{**data, "outputs": tuple(data.get("outputs", ()))})
