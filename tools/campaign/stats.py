"""Statistics for fault-injection campaigns (pure functions).

- ``sample_size``: injections needed for an error margin at a confidence, over a fault
  space of N (Leveugle, Hubert, Cheynet, Velazco, "Statistical fault injection:
  quantified error and confidence", DATE 2009): n = N / (1 + e^2 (N-1) / (t^2 p (1-p))).
- ``wilson`` and ``clopper_pearson`` intervals for a share k/n; ``zero_failure_upper``,
  the exact one-sided bound when nothing was seen (about 3/n at 95%, the rule of three).
- ``stratified``: an estimate over blocks weighted by their bit counts, with its interval.
- ``in_orbit``: expected SDC and DUE events per day for a chip in a given environment.
- ``extrapolate``: a share scaled to an absolute count of faults over a build's fault
  space (Schirmeier, Borchert, Spinczyk, "Avoiding pitfalls in fault-injection based
  comparison of program susceptibility to soft errors", DSN 2015).
- ``policy_answers``: what one build's upsets do to the answer the payload delivers under
  each reliability policy of ``payload.pool`` (none, rerun, dmr, tmr), composed from the
  per-chip outcomes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, norm

# Upset rates per bit per day. LEO: the order of magnitude of SRAM upset rates measured
# in low Earth orbit (~4e-7 /bit/day, quiet Sun, behind typical shielding); GEO and
# solar-flare conditions are harsher. A user value can always be given instead.
ORBIT_PRESETS: dict[str, float] = {
    "leo": 4e-7,
    "leo-saa": 2e-6,  # passes through the South Atlantic Anomaly weighed in
    "geo": 1e-6,
    "solar-flare": 1e-4,
}


def z_value(confidence: float) -> float:
    """The two-sided normal cut-off t for a confidence level (1.96 for 0.95)."""
    _check_confidence(confidence)
    return float(norm.ppf(0.5 + confidence / 2))


def sample_size(
    margin: float, confidence: float = 0.95, population: float = math.inf, p: float = 0.5
) -> int:
    """Injections for error ``margin`` at ``confidence`` over ``population`` faults."""
    if not 0 < margin < 1:
        raise ValueError(f"margin must be in (0, 1), got {margin}")
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    t = z_value(confidence)
    infinite = t * t * p * (1 - p) / (margin * margin)
    if math.isinf(population):
        return math.ceil(infinite)
    n = population / (1 + margin * margin * (population - 1) / (t * t * p * (1 - p)))
    return min(math.ceil(n - 1e-9), int(population))


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.2%} [{self.low:.2%}, {self.high:.2%}]"


def wilson_bounds(k, n, confidence: float = 0.95) -> tuple:
    """Wilson score bounds (low, high) for k successes in n > 0 trials; k and n may be
    numpy arrays (a whole series at once, as the report's convergence plot needs)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    t = z_value(confidence)
    phat = k / n
    denom = 1 + t * t / n
    centre = (phat + t * t / (2 * n)) / denom
    half = t * np.sqrt(phat * (1 - phat) / n + t * t / (4 * n * n)) / denom
    # clamp: at k = 0 or k = n rounding can put a bound a hair past the estimate
    low = np.minimum(np.maximum(0.0, centre - half), phat)
    high = np.maximum(np.minimum(1.0, centre + half), phat)
    return low, high


def wilson(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for k successes in n trials."""
    _check_counts(k, n)
    if n == 0:
        return Interval(0.0, 0.0, 1.0)
    low, high = wilson_bounds(k, n, confidence)
    return Interval(k / n, float(low), float(high))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> Interval:
    """The exact (Clopper-Pearson) interval for k successes in n trials."""
    _check_counts(k, n)
    if n == 0:
        return Interval(0.0, 0.0, 1.0)
    alpha = 1 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return Interval(k / n, low, high)


def zero_failure_upper(n: int, confidence: float = 0.95) -> float:
    """The one-sided upper bound on a rate when 0 of n trials failed: 1 - (1-c)^(1/n)."""
    _check_confidence(confidence)
    if n <= 0:
        return 1.0
    return 1 - (1 - confidence) ** (1 / n)


def stratified(strata: dict[str, tuple[int, int, int]], confidence: float = 0.95) -> Interval:
    """A share over the whole chip from per-block samples.

    ``strata`` maps block -> (k, n, bits): k hits in n injections into a block of ``bits``
    bits. Each block's share is weighted by its share of the chip's bits; the interval is
    the normal approximation of the weighted sum (Wilson-adjusted shares, so a block with
    k = 0 still carries variance).
    """
    total_bits = sum(bits for _, _, bits in strata.values())
    if total_bits <= 0:
        raise ValueError("the strata hold no bits")
    t = z_value(confidence)
    estimate, variance = 0.0, 0.0
    for k, n, bits in strata.values():
        _check_counts(k, n)
        w = bits / total_bits
        if n == 0:
            variance += w * w * 0.25  # nothing known: the widest a share can vary
            continue
        estimate += w * k / n
        p_adj = (k + 2) / (n + 4)  # Agresti-Coull: no zero variance at k = 0 or k = n
        variance += w * w * p_adj * (1 - p_adj) / n
    half = t * math.sqrt(variance)
    return Interval(estimate, max(0.0, estimate - half), min(1.0, estimate + half))


@dataclass(frozen=True)
class OrbitRates:
    """Expected events per day for the whole chip in an environment."""

    upsets_per_day: float
    sdc_per_day: Interval
    due_per_day: Interval  # detected unrecoverable errors: detected + hang


def in_orbit(bits: int, rate_per_bit_day: float | str, sdc: Interval, due: Interval) -> OrbitRates:
    """Upsets per day = rate x bits; SDC and DUE per day scale the shares' intervals."""
    if isinstance(rate_per_bit_day, str):
        try:
            rate_per_bit_day = ORBIT_PRESETS[rate_per_bit_day]
        except KeyError:
            raise ValueError(
                f"no orbit preset {rate_per_bit_day!r}; presets: {', '.join(ORBIT_PRESETS)}"
                " (or give a rate per bit per day as a number)"
            ) from None
    if rate_per_bit_day < 0 or bits < 0:
        raise ValueError("the upset rate and the bit count must be >= 0")
    upsets = rate_per_bit_day * bits

    def scale(i: Interval) -> Interval:
        return Interval(upsets * i.estimate, upsets * i.low, upsets * i.high)

    return OrbitRates(upsets, scale(sdc), scale(due))


def extrapolate(share: Interval, fault_space: int) -> Interval:
    """The number of faults of a fault space of ``fault_space`` (bit, cycle) pairs that end
    in the outcome ``share`` measured, with the share's interval scaled the same.

    Valid for a sample drawn uniformly over that fault space. Unlike shares, these counts
    compare builds or programs of different sizes (Schirmeier et al., DSN 2015): a build
    with more bits can show a smaller share and still fail on more faults."""
    if fault_space < 0:
        raise ValueError(f"the fault space must be >= 0 (bits x cycles), got {fault_space}")
    return Interval(share.estimate * fault_space, share.low * fault_space, share.high * fault_space)


@dataclass(frozen=True)
class AnswerTally:
    """What one build's upsets did to a workload's answer on the chip they hit (counted
    injections: tool errors excluded). ``resident``: the upset sat in an SRAM word the
    model keeps between runs (``payload.classify.resident_words``)."""

    n: int
    sdc: int  # the output changed silently
    misclassified: int  # of those, the predicted class changed
    sdc_resident: int = 0
    misclassified_resident: int = 0

    def __post_init__(self) -> None:
        if not (
            0 <= self.misclassified <= self.sdc <= self.n
            and 0 <= self.sdc_resident <= self.sdc
            and 0 <= self.misclassified_resident <= min(self.misclassified, self.sdc_resident)
        ):
            raise ValueError(
                "need 0 <= misclassified <= sdc <= n and the resident counts within them, got "
                f"{self}"
            )

    def __add__(self, other: AnswerTally) -> AnswerTally:
        return AnswerTally(
            self.n + other.n,
            self.sdc + other.sdc,
            self.misclassified + other.misclassified,
            self.sdc_resident + other.sdc_resident,
            self.misclassified_resident + other.misclassified_resident,
        )


@dataclass(frozen=True)
class PolicyAnswer:
    """Per policy, of ``n`` upsets: how many deliver a changed output, a changed answer
    (class), and how many the vote outvoted (a disagreement, maybe an extra run)."""

    policy: str
    n: int
    output_changed: int
    answer_changed: int
    outvoted: int
    by_vote: bool  # the delivered counts are 0 by the vote's construction, not by sampling
    lower_bound: bool = False  # the delivered counts may be higher (see policy_answers)

    def share(self, k: int, confidence: float = 0.95) -> Interval:
        return wilson(k, self.n, confidence)


POLICIES = ("none", "rerun", "dmr", "tmr")


def policy_answers(tally: AnswerTally) -> list[PolicyAnswer]:
    """The answer each policy delivers per upset, composed from the outcomes of the runs
    the upsets hit (one chip's run each). The composition assumes:

    1. an upset hits one run of one item on one chip and every other run of that item is
       fault-free (upsets are independent and rare: two in one item are second order);
    2. runs are deterministic (a fault-free run gives the golden output) and the pool
       votes on whole outputs, so a changed output disagrees with golden ones even when
       its class is right;
    3. a detected or hung run delivers nothing: the pool fences the chip (a reset reloads
       the model) and runs the item elsewhere, or fails it; never a wrong answer;
    4. ``rerun`` runs the item again on the same chip: an upset in a resident word (the
       model's weights and bias inputs) is read again, so the rerun repeats the faulty
       output, the runs agree and it is delivered; any other upset is gone (the run's
       inputs and outputs are rewritten), the runs disagree and a third run outvotes it.

    So: ``none`` delivers the hit run (output changed: sdc; answer changed:
    misclassified); ``rerun`` delivers the resident ones; ``dmr`` (the other chip
    disagrees, a third decides) and ``tmr`` (two golden of three) deliver none and outvote
    every sdc.

    Per upset, the item it hit. Two effects are left out: a resident upset that landed
    after the hit run had read its word (latent there) can still change a rerun, so
    ``rerun``'s figures are lower bounds; and under ``none`` and ``rerun`` a resident
    upset keeps changing later items on that chip until a reset (``dmr`` and ``tmr``
    outvote each of them)."""
    t = tally
    return [
        PolicyAnswer("none", t.n, t.sdc, t.misclassified, 0, by_vote=False),
        PolicyAnswer(
            "rerun",
            t.n,
            t.sdc_resident,
            t.misclassified_resident,
            t.sdc - t.sdc_resident,
            by_vote=False,
            lower_bound=True,
        ),
        PolicyAnswer("dmr", t.n, 0, 0, t.sdc, by_vote=True),
        PolicyAnswer("tmr", t.n, 0, 0, t.sdc, by_vote=True),
    ]


def _check_counts(k: int, n: int) -> None:
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
