"""The campaign report: a table on the terminal, one self-contained HTML file with
matplotlib figures, and CSV / JSON exports.

Everything is computed from the store with aggregate queries and numpy, so 100,000
results report in seconds.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orbithil.payload.classify import (
    ANSWERING_WORKLOADS,
    SRAM_TARGET,
    Observation,
    Outcome,
    misclassified,
    resident_words,
)
from orbithil.sim import prune
from orbithil.tools.campaign import stats
from orbithil.tools.campaign.store import Store

COUNTED = [o.value for o in Outcome if o is not Outcome.TOOL_ERROR]
DUE = ("detected", "hang")  # detected unrecoverable errors: the chip or the HAL noticed
# The words the report uses for the two failure classes, defined once (HTML and figures).
SDC_WORDS = "SDC (silent data corruption): outcome sdc, an output changed and nothing noticed"
DUE_WORDS = (
    "DUE (detected unrecoverable error): outcomes detected + hang, the chip or the HAL "
    "noticed the upset but nothing corrected it"
)
# Blocks with fewer counted injections than this are greyed out in the per-block figure
# and table: below 30 a block's 95% Wilson interval spans more than 11 percentage points
# even when no injection failed (3/n, the rule of three), too wide to rank blocks by.
MIN_BLOCK_N = 30
FEW_COLOUR = "#b0b0b0"  # a block sampled too little to read (n < MIN_BLOCK_N)
SDC_COLOUR = "#d32f2f"
DUE_COLOUR = "#ef6c00"
BUILD_COLOURS = ("#1f77b4", "#e66100", "#2ca02c", "#9467bd")  # HARDEN=0, 1, ...
COLOURS = {
    "masked": "#9e9e9e",
    "corrected": "#4caf50",
    "latent": "#90caf9",
    "detected": "#ff9800",
    "sdc": "#d32f2f",
    "hang": "#6a1b9a",
    "tool_error": "#000000",
}


@dataclass
class BuildSummary:
    harden: int
    sim: str
    workload: str
    n: int  # counted results (tool errors excluded)
    tool_errors: int
    outcomes: Counter
    per_block: dict[str, Counter]
    bits: dict[str, int]
    planned: int
    # what the upsets did to the workload's answer; None: the workload gives no answer
    answers: stats.AnswerTally | None = None
    golden_cycles: int | None = None  # cycles of the golden run (None: not known)

    @property
    def fault_space(self) -> int | None:
        """(bit, cycle) pairs one flip can hit in a run of the workload: injectable bits
        x golden-run cycles, the space the campaign's injections are drawn from uniformly;
        None when the golden run's length is not known."""
        if not self.golden_cycles:
            return None
        return sum(self.bits.values()) * self.golden_cycles

    @classmethod
    def from_results(cls, harden: int, sim: str, workload: str, results) -> BuildSummary:
        """A summary of ``sim.inject.Result``s that never went through a store."""
        summary = cls(harden, sim, workload, 0, 0, Counter(), {}, {}, len(results))
        sdc = []
        for r in results:
            if r.outcome == Outcome.TOOL_ERROR:
                summary.tool_errors += 1
                continue
            summary.n += 1
            summary.outcomes[r.outcome.value] += 1
            summary.per_block.setdefault(r.injection.block, Counter())[r.outcome.value] += 1
            if r.outcome == Outcome.SDC:
                sdc.append((r.injection.target, r.injection.word, r.misclassified))
        known = all(changed is not None for _, _, changed in sdc)
        if workload in ANSWERING_WORKLOADS and known:  # (a board's results do not say)
            summary.answers = _tally(workload, summary.n, sdc)
        return summary

    def share(self, names, confidence=0.95) -> stats.Interval:
        k = sum(self.outcomes[name] for name in ([names] if isinstance(names, str) else names))
        return stats.wilson(k, self.n, confidence)

    def stratified(self, names) -> stats.Interval:
        names = [names] if isinstance(names, str) else names
        strata = {
            block: (sum(c[n] for n in names), sum(c[o] for o in COUNTED), self.bits.get(block, 0))
            for block, c in self.per_block.items()
        }
        for block, bits in self.bits.items():  # blocks no injection hit still hold bits
            strata.setdefault(block, (0, 0, bits))
        return stats.stratified(strata)

    def orbit(self, rate) -> stats.OrbitRates:
        """Expected SDC and DUE events per day for the whole chip at ``rate``."""
        return stats.in_orbit(sum(self.bits.values()), rate, self.stratified("sdc"),
                              self.stratified(DUE))  # fmt: skip


def answer_tally(
    workload: str, golden: Observation, n: int, sdc_results
) -> stats.AnswerTally | None:
    """What a build's upsets did to ``workload``'s answer: ``n`` counted results, and the
    (target, word, observation) of those that were sdc. None if the workload has no answer."""
    if workload not in ANSWERING_WORKLOADS:
        return None
    rows = [(t, w, misclassified(golden, obs, workload)) for t, w, obs in sdc_results]
    return _tally(workload, n, rows)


def _tally(workload: str, n: int, sdc: list[tuple[str, int | None, bool]]) -> stats.AnswerTally:
    resident = resident_words(workload)
    kept = [changed for target, word, changed in sdc if target == SRAM_TARGET and word in resident]
    return stats.AnswerTally(
        n=n,
        sdc=len(sdc),
        misclassified=sum(bool(changed) for _, _, changed in sdc),
        sdc_resident=len(kept),
        misclassified_resident=sum(bool(changed) for changed in kept),
    )


def summarise(store: Store) -> list[BuildSummary]:
    setups = {s["id"]: s for s in store.setups()}
    out = {}
    for sid, s in setups.items():
        out[sid] = BuildSummary(
            s["harden"],
            s["sim"],
            s["workload"],
            0,
            0,
            Counter(),
            {},
            s["bits"],
            0,
            golden_cycles=s["golden_cycles"],
        )
    for sid, n in store.db.execute("SELECT setup_id, COUNT(*) FROM plan GROUP BY 1"):
        out[sid].planned = n
    for sid, block, outcome, n in store.db.execute(
        "SELECT p.setup_id, p.block, r.outcome, COUNT(*) FROM result r JOIN plan p "
        "ON p.id = r.plan_id GROUP BY 1, 2, 3"
    ):
        summary = out[sid]
        if outcome == Outcome.TOOL_ERROR:
            summary.tool_errors += n
            continue
        summary.n += n
        summary.outcomes[outcome] += n
        summary.per_block.setdefault(block, Counter())[outcome] += n
    answering = {sid for sid, s in setups.items() if s["workload"] in ANSWERING_WORKLOADS}
    if answering:
        goldens = store.goldens()
        sdc: dict[int, list] = {sid: [] for sid in answering}
        for sid, target, word, observation in store.results_of(Outcome.SDC.value):
            if sid in answering:
                sdc[sid].append((target, word, observation))
        for sid in answering:
            summary = out[sid]
            summary.answers = answer_tally(summary.workload, goldens[sid], summary.n, sdc[sid])
    return [out[sid] for sid in sorted(out)]


ANSWERS_TITLE = "answers changed per upset, by reliability policy (95% Wilson intervals)"
ANSWERS_NOTE = (
    "Per upset, on the item it hit. none: the hit run is delivered. rerun: an upset in a "
    "resident word (the model's weights) repeats on the same chip and is delivered, any "
    "other is outvoted (>=: a resident upset landing after its word was read can still "
    "change the rerun). dmr, tmr: one chip's wrong output is outvoted (0 by the vote). "
    "Assumes independent upsets, one per item (tools/campaign/stats.py policy_answers)."
)


def answers_rows(summaries: list[BuildSummary]) -> list[tuple[BuildSummary, stats.PolicyAnswer]]:
    """(build, policy figures) for every build whose workload gives an answer."""
    return [
        (s, answer)
        for s in summaries
        if s.answers is not None
        for answer in stats.policy_answers(s.answers)
    ]


def _answer_cell(answer: stats.PolicyAnswer, k: int) -> str:
    if answer.by_vote:
        return "0 (vote)"
    if answer.n == 0:
        return ""
    i = answer.share(k)
    bound = ">=" if answer.lower_bound else ""
    return f"{bound}{k} {i.estimate:.1%} [{i.low:.1%},{i.high:.1%}]"


def answers_table(summaries: list[BuildSummary], *, title: str = ANSWERS_TITLE):
    """Per build and policy: upsets that deliver a changed output, a changed answer (the
    class), and that the vote outvoted; None if no build's workload gives an answer."""
    from rich.table import Table

    rows = answers_rows(summaries)
    if not rows:
        return None
    table = Table(title=title, caption=ANSWERS_NOTE, expand=False)
    for column in ("build", "workload", "policy"):
        table.add_column(column)
    for column in ("upsets", "output changed", "answer changed", "outvoted"):
        table.add_column(column, justify="right")
    last = None
    for s, a in rows:
        first = s is not last
        last = s
        table.add_row(
            f"HARDEN={s.harden}" if first else "",
            s.workload if first else "",
            a.policy,
            str(a.n),
            _answer_cell(a, a.output_changed),
            _answer_cell(a, a.answer_changed),
            str(a.outvoted) if a.outvoted else "",
            end_section=a.policy == stats.POLICIES[-1],
        )
    return table


def answers_json(summaries: list[BuildSummary]) -> list[dict]:
    """The answers table as data: per build, its tally and each policy's figures."""
    out = []
    for s in summaries:
        if s.answers is None:
            continue
        policies = {}
        for a in stats.policy_answers(s.answers):
            share = a.share(a.answer_changed)
            policies[a.policy] = {
                "output_changed": a.output_changed,
                "answer_changed": a.answer_changed,
                "answer_changed_share": share.estimate,
                "answer_changed_low": share.low,
                "answer_changed_high": share.high,
                "outvoted": a.outvoted,
                "by_vote": a.by_vote,
                "lower_bound": a.lower_bound,
            }
        out.append({
            "harden": s.harden, "sim": s.sim, "workload": s.workload, "upsets": s.answers.n,
            "sdc": s.answers.sdc, "misclassified": s.answers.misclassified,
            "sdc_resident": s.answers.sdc_resident,
            "misclassified_resident": s.answers.misclassified_resident, "policies": policies,
        })  # fmt: skip
    return out


ABSOLUTE_NOTE = (
    "Fault space: every (bit, cycle) pair a single bit flip can hit during one golden run "
    "of the workload, the build's injectable bits x the golden run's cycles; the "
    "injections are drawn uniformly from it. Extrapolated faults = share x fault space: "
    "how many of those possible flips would end in an SDC (or a DUE), with the share's "
    "95% Wilson interval scaled the same. Compare builds on these counts, not on the "
    "shares: a build with more bits (the hardened one: check bits, voters) offers more "
    "targets, so its share understates how many faults it fails on (Schirmeier et al., "
    "DSN 2015)."
)


@dataclass(frozen=True)
class AbsoluteCounts:
    """One build's SDC and DUE shares and the numbers of faults they extrapolate to over
    its fault space (None when the golden run's length is not known)."""

    summary: BuildSummary
    sdc_share: stats.Interval
    due_share: stats.Interval
    sdc_faults: stats.Interval | None
    due_faults: stats.Interval | None


def absolute_counts(summaries: list[BuildSummary]) -> list[AbsoluteCounts]:
    """Per build: shares of all counted injections and share x fault space."""
    out = []
    for s in summaries:
        sdc, due, space = s.share("sdc"), s.share(DUE), s.fault_space
        out.append(
            AbsoluteCounts(
                s,
                sdc,
                due,
                None if space is None else stats.extrapolate(sdc, space),
                None if space is None else stats.extrapolate(due, space),
            )
        )
    return out


def absolute_json(summaries: list[BuildSummary]) -> list[dict]:
    """The extrapolated absolute counts as data, one dict per build."""

    def interval(name: str, i: stats.Interval | None) -> dict:
        if i is None:
            return {name: None, f"{name}_low": None, f"{name}_high": None}
        return {name: i.estimate, f"{name}_low": i.low, f"{name}_high": i.high}

    return [
        {
            "harden": a.summary.harden,
            "sim": a.summary.sim,
            "workload": a.summary.workload,
            "n": a.summary.n,
            "bits": sum(a.summary.bits.values()),
            "golden_cycles": a.summary.golden_cycles,
            "fault_space": a.summary.fault_space,
            **interval("sdc_share", a.sdc_share),
            **interval("sdc_faults", a.sdc_faults),
            **interval("due_share", a.due_share),
            **interval("due_faults", a.due_faults),
        }
        for a in absolute_counts(summaries)
    ]


def _count(x: float) -> str:
    """A large count to three significant figures: 1.17e8, 5230, 0."""
    return f"{x:.3g}".replace("e+0", "e").replace("e+", "e")


def _faults(i: stats.Interval | None) -> str:
    if i is None:
        return "(golden run length unknown)"
    return f"{_count(i.estimate)} [{_count(i.low)}, {_count(i.high)}]"


def _absolute_html(summaries: list[BuildSummary]) -> str:
    """The absolute-count table and a sentence on what it shows."""
    counts = absolute_counts(summaries)
    rows = "".join(
        f"<tr><td>HARDEN={a.summary.harden}</td><td>{sum(a.summary.bits.values()):,}</td>"
        f"<td>{a.summary.golden_cycles or 0:,}</td><td>{a.summary.fault_space or 0:,}</td>"
        f"<td>{a.sdc_share}</td><td>{_faults(a.sdc_faults)}</td>"
        f"<td>{a.due_share}</td><td>{_faults(a.due_faults)}</td></tr>"
        for a in counts
    )
    known = [a for a in counts if a.summary.fault_space]
    comparison = ""
    if len(known) >= 2:
        base = known[0]
        comparison = " ".join(
            f"HARDEN={a.summary.harden} has {a.summary.fault_space / base.summary.fault_space:.2f}"
            f" times the fault space of HARDEN={base.summary.harden}, so equal shares would "
            f"mean {a.summary.fault_space / base.summary.fault_space:.2f} times as many "
            "failing faults."
            for a in known[1:]
        )
    return f"""<h2>Extrapolated absolute counts</h2>
<p>{html.escape(ABSOLUTE_NOTE)} {comparison}</p>
<table class="absolute"><tr><th>build</th><th>injectable bits</th><th>golden cycles</th>
<th>fault space (bits x cycles)</th><th>SDC share [95% CI]</th>
<th>extrapolated SDC faults [95% CI]</th><th>DUE share [95% CI]</th>
<th>extrapolated DUE faults [95% CI]</th></tr>{rows}</table>
"""


def _pruning_html(store: Store) -> str:
    """How many results were simulated, and how many their memory word's def/use class
    decided (``sim.prune``), per build."""
    builds = {s["id"]: s for s in store.setups()}
    rows = ""
    for sid, kinds in sorted(store.pruning().items()):
        simulated = prune.simulated(kinds)
        rows += (
            f"<tr><td>HARDEN={builds[sid]['harden']}</td><td>{sum(kinds.values()):,}</td>"
            f"<td>{simulated:,}</td><td>{kinds.get('overwritten', 0):,}</td>"
            f"<td>{kinds.get('unread', 0):,}</td><td>{kinds.get('reused', 0):,}</td></tr>"
        )
    return f"""<h2>How the results were decided</h2>
<p>A flip in a memory word has the same outcome at any cycle between two accesses of the
word, so the engine decides it from the golden run's access trace: a flip overwritten
before any read is masked; one never read again leaves the outputs golden (latent in the
SRAM); otherwise one flip per (word, bits, next read) is simulated and its result given to
every other flip of that class. This is exact (the benchmark compares it with simulating
every fault) and changes no sample: the plan stays uniform over bits and cycles.</p>
<table><tr><th>build</th><th>results</th><th>simulated</th><th>overwritten before a read</th>
<th>never read again</th><th>same class as a simulated one</th></tr>{rows}</table>
"""


def terminal_table(
    summaries: list[BuildSummary],
    *,
    title: str = "outcome shares with 95% Wilson intervals",
    counts: bool = False,
):
    """Outcomes per build and block: shares with intervals, or with ``counts`` the
    numbers (and the overall row's shares)."""
    from rich.table import Table

    if counts:

        def cell(k: int, n: int) -> str:
            return str(k or "")

        def total(k: int, n: int) -> str:
            return f"{k} ({k / n:.0%})" if k else ""
    else:
        cell = total = _cell
    table = Table(title=title, expand=False)
    table.add_column("build")
    table.add_column("block")
    table.add_column("n", justify="right")
    for name in COUNTED:
        table.add_column(name, justify="right")
    for s in summaries:
        label = f"HARDEN={s.harden}"
        for block, found in sorted(s.per_block.items()):
            n = sum(found.values())
            table.add_row(label, block, str(n), *(cell(found[o], n) for o in COUNTED))
            label = ""
        table.add_row(
            "",
            "[b]all[/]",
            f"[b]{s.n}[/]",
            *(f"[b]{total(s.outcomes[o], s.n)}[/]" for o in COUNTED),
            end_section=True,
        )
    return table


def _cell(k: int, n: int) -> str:
    if not k:
        return ""
    i = stats.wilson(k, n)
    return f"{i.estimate:.1%} [{i.low:.1%},{i.high:.1%}]"


# --- figures -----------------------------------------------------------------------------
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _counted(c: Counter) -> int:
    return sum(c[o] for o in COUNTED)


def _all_blocks(summaries: list[BuildSummary]) -> list[str]:
    """Every block any build sampled or holds bits in, in one order for every figure."""
    return sorted({b for s in summaries for b in (*s.per_block, *s.bits)})


def _pyplot():
    """pyplot on the Agg backend: figures are only written to PNG, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figures(store: Store, summaries: list[BuildSummary], rate) -> dict[str, str]:
    plt = _pyplot()
    figs = {}
    # 1. outcome shares per block, one panel per build, side by side
    fig, axes = plt.subplots(
        1, len(summaries), figsize=(6.5 * len(summaries), 4.4), squeeze=False, sharey=True
    )
    for ax, s in zip(axes[0], summaries, strict=True):
        blocks = sorted(s.per_block)
        bottom = np.zeros(len(blocks))
        for name in COUNTED:
            shares = np.array(
                [s.per_block[b][name] / max(_counted(s.per_block[b]), 1) for b in blocks]
            )
            ax.bar(blocks, shares, bottom=bottom, color=COLOURS[name], label=name)
            bottom += shares
        ax.set_title(f"HARDEN={s.harden}: outcome shares per block")
        ns = [_counted(s.per_block[b]) for b in blocks]
        ax.set_xticks(
            range(len(blocks)),
            [f"{b} (n={n:,})" for b, n in zip(blocks, ns, strict=True)],
            rotation=45,
            ha="right",
            rotation_mode="anchor",
        )
        _grey_few(ax.get_xticklabels(), ns)
    axes[0][0].set_ylabel("share of injections")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1, 1))
    figs["shares"] = _png(fig)

    figs["sdc_due"] = _png(sdc_due_figure(summaries))
    figs["convergence"] = _png(convergence_figure(store))
    figs["bits"] = _png(bits_figure(store, summaries))

    # 5. expected events per day in orbit
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, s in enumerate(summaries):
        orbit = s.orbit(rate)
        for j, iv in enumerate((orbit.sdc_per_day, orbit.due_per_day)):
            colour = SDC_COLOUR if j == 0 else DUE_COLOUR
            ax.bar(i * 3 + j, iv.estimate, color=colour, alpha=0.6, edgecolor=colour)
            ax.errorbar(
                i * 3 + j,
                iv.estimate,
                yerr=[[iv.estimate - iv.low], [iv.high - iv.estimate]],
                fmt="o" if j == 0 else "D",
                color=colour,
                capsize=4,
                ms=4,
            )
            ax.text(i * 3 + j, iv.high, f"{iv.estimate:.2e}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(
        [i * 3 + j for i in range(len(summaries)) for j in range(2)],
        [f"{lbl}\nHARDEN={s.harden}" for s in summaries for lbl in ("SDC", "DUE")],
    )
    ax.set_ylabel("events per day (95% interval)")
    ax.set_title(f"expected SDC and DUE events per day in orbit (rate {rate} /bit/day)")
    figs["orbit"] = _png(fig)
    return figs


def _grey_few(labels, ns) -> None:
    """Grey the tick labels of blocks sampled fewer than MIN_BLOCK_N times."""
    for label, n in zip(labels, ns, strict=True):
        if n < MIN_BLOCK_N:
            label.set_color(FEW_COLOUR)
            label.set_fontstyle("italic")


def sdc_due_figure(summaries: list[BuildSummary]):
    """SDC and DUE share per block with 95% intervals, one panel per build on one scale.
    Each bar carries its own whisker in its colour and a marker at the estimate (seen
    even when the bar has no height); blocks under MIN_BLOCK_N are grey, their intervals
    cut at the top of the scale, which the blocks that can be read set."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import PercentFormatter

    plt = _pyplot()
    blocks = _all_blocks(summaries)
    y = np.arange(len(blocks))
    kinds = ((("sdc",), SDC_COLOUR, "o", -0.2), (DUE, DUE_COLOUR, "D", 0.2))
    cells = {}  # (build index, kind index) -> (n, estimate, low, high) per block
    for i, s in enumerate(summaries):
        for j, (names, *_) in enumerate(kinds):
            rows = []
            for b in blocks:
                c = s.per_block.get(b, Counter())
                n = _counted(c)
                iv = stats.wilson(sum(c[name] for name in names), n)
                rows.append((n, iv.estimate, iv.low, iv.high))
            cells[i, j] = np.array(rows, dtype=float).reshape(-1, 4)
    readable = [row[3] for a in cells.values() for row in a if row[0] >= MIN_BLOCK_N]
    top = min(1.0, max(max(readable) * 1.2, 0.02)) if readable else 1.0

    fig, axes = plt.subplots(
        1,
        len(summaries),
        figsize=(6.2 * len(summaries), 0.42 * len(blocks) + 1.9),
        squeeze=False,
    )
    for i, (ax, s) in enumerate(zip(axes[0], summaries, strict=True)):
        ns = cells[i, 0][:, 0]
        for k, n in enumerate(ns):
            if n < MIN_BLOCK_N:
                ax.axhspan(k - 0.5, k + 0.5, color="#f3f3f3", zorder=0)
            if n == 0:
                ax.text(
                    top / 2, k, "not sampled", ha="center", va="center", fontsize=8, color="#757575"
                )
        for j, (_, colour, marker, offset) in enumerate(kinds):
            a = cells[i, j]
            few = a[:, 0] < MIN_BLOCK_N
            ax.barh(
                y + offset,
                a[:, 1],
                0.38,
                color=np.where(few, FEW_COLOUR, colour),
                alpha=0.45,
                edgecolor=np.where(few, FEW_COLOUR, colour),
                zorder=2,
            )
            sampled = a[:, 0] > 0
            # a readable block's marker at 0 sits on the axis, unclipped; a greyed one
            # past the right edge stays clipped (its numbers are written out instead)
            for group, c, lw in ((~few, colour, 1.3), (few & sampled, FEW_COLOUR, 0.8)):
                if not group.any():
                    continue
                est, low, high = a[group, 1], a[group, 2], a[group, 3]
                upper = np.maximum(np.minimum(high, top) - est, 0)
                ax.errorbar(
                    est,
                    y[group] + offset,
                    xerr=[est - low, upper],
                    fmt=marker,
                    color=c,
                    ecolor=c,
                    ms=4.5,
                    capsize=3,
                    lw=lw,
                    zorder=3,
                    clip_on=c == FEW_COLOUR,
                )
            for k in np.flatnonzero(sampled & (a[:, 3] > top)):
                ax.text(
                    top,
                    y[k] + offset,
                    f"{a[k, 1]:.0%} [{a[k, 2]:.0%}, {a[k, 3]:.0%}] ->",
                    ha="right",
                    va="center",
                    fontsize=7,
                    color="#616161",
                    zorder=4,
                )
        ax.set_yticks(y, [f"{b} (n={int(n):,})" for b, n in zip(blocks, ns, strict=True)])
        _grey_few(ax.get_yticklabels(), ns)
        ax.set_ylim(len(blocks) - 0.5, -0.5)
        ax.set_xlim(-0.01 * top, top)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(axis="x", color="#e0e0e0", zorder=1)
        ax.set_xlabel("share of the block's injections (95% Wilson interval)")
        ax.set_title(f"HARDEN={s.harden}")
    handles = [
        Line2D([], [], color=SDC_COLOUR, marker="o", lw=1.3, label="SDC (outcome sdc)"),
        Line2D([], [], color=DUE_COLOUR, marker="D", lw=1.3, label="DUE (detected + hang)"),
        Patch(color=FEW_COLOUR, label=f"n < {MIN_BLOCK_N}: too few injections to read"),
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.01), frameon=False
    )
    fig.suptitle("SDC and DUE share per block; n: the block's counted injections")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def convergence_figure(store: Store):
    """The SDC share of each build as results accumulate, with its 95% band: one colour
    per build, the band's edges drawn as lines and every band after the first hatched, so
    overlapping bands stay apart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.8))
    series = defaultdict(list)
    for harden, outcome in store.db.execute(
        "SELECT s.harden, r.outcome FROM result r JOIN plan p ON p.id = r.plan_id "
        "JOIN setup s ON s.id = p.setup_id WHERE r.outcome != 'tool_error' "
        "ORDER BY r.finished, r.plan_id"
    ):
        series[harden].append(outcome == "sdc")
    for i, (harden, hits) in enumerate(sorted(series.items())):
        colour = BUILD_COLOURS[i % len(BUILD_COLOURS)]
        hits = np.array(hits, dtype=float)
        n = np.arange(1, len(hits) + 1)
        k = np.cumsum(hits)
        low, high = stats.wilson_bounds(k, n)
        if i == 0:
            ax.fill_between(
                n, low, high, color=colour, alpha=0.18, lw=0, label=f"HARDEN={harden}: 95% band"
            )
        else:
            ax.fill_between(
                n,
                low,
                high,
                facecolor="none",
                edgecolor=colour,
                alpha=0.5,
                hatch="////"[: 2 + i % 3],
                lw=0,
                label=f"HARDEN={harden}: 95% band",
            )
        for bound in (low, high):
            ax.plot(n, bound, color=colour, lw=0.8, ls="--")
        ax.plot(n, k / n, color=colour, lw=1.8, label=f"HARDEN={harden}: SDC share")
    ax.set_xscale("log")
    ax.set_xlabel("injections")
    ax.set_ylabel("SDC share")
    ax.set_title("SDC share as injections accumulate (95% Wilson band, dashed edges)")
    ax.legend(ncol=2)
    return fig


def bits_figure(store: Store, summaries: list[BuildSummary]):
    """Share of SDC or DUE per block and bit position, one panel per build on one shared
    colour scale; cells no injection hit are hatched grey, apart from a measured 0."""
    from matplotlib.colors import PowerNorm
    from matplotlib.patches import Patch, Rectangle

    plt = _pyplot()
    width = 40
    blocks = _all_blocks(summaries)  # the same rows in every panel
    shown = []
    for s in summaries:
        index = {b: i for i, b in enumerate(blocks)}
        hits = np.zeros((len(blocks), width))
        total = np.zeros((len(blocks), width))
        for block, bit, outcome, n in store.db.execute(
            "SELECT p.block, p.bit, r.outcome, COUNT(*) FROM result r JOIN plan p "
            "ON p.id = r.plan_id JOIN setup s ON s.id = p.setup_id WHERE s.harden = ? "
            "AND r.outcome != 'tool_error' GROUP BY 1, 2, 3",
            (s.harden,),
        ):
            if block in index and bit < width:
                total[index[block], bit] += n
                if outcome in ("sdc", *DUE):
                    hits[index[block], bit] += n
        shown.append(np.where(total > 0, hits / np.maximum(total, 1), np.nan))
    vmax = max([0.01] + [float(np.nanmax(a)) for a in shown if np.isfinite(a).any()])
    norm = PowerNorm(gamma=0.5, vmin=0, vmax=vmax)
    # not sampled (NaN): transparent, the hatched grey underneath shows through
    cmap = plt.get_cmap("magma_r").with_extremes(bad=(0, 0, 0, 0))

    fig, axes = plt.subplots(
        1,
        len(summaries),
        figsize=(6.2 * len(summaries), 4.2),
        squeeze=False,
        layout="constrained",
    )
    for ax, s, values in zip(axes[0], summaries, shown, strict=True):
        ax.add_patch(
            Rectangle(
                (-0.5, -0.5),
                width,
                max(len(blocks), 1),
                facecolor="#d9d9d9",
                edgecolor="#9e9e9e",
                hatch="////",
                lw=0,
                zorder=0,
            )
        )
        im = ax.imshow(
            values, aspect="auto", cmap=cmap, norm=norm, zorder=1, interpolation="nearest"
        )
        ax.set_yticks(range(len(blocks)), blocks)
        ax.set_xlabel("bit position in the register or word")
        ax.set_title(f"HARDEN={s.harden}: share SDC or DUE per bit position")
    fig.colorbar(im, ax=axes[0].tolist(), label="share SDC or DUE (square-root scale)")
    fig.legend(
        handles=[
            Patch(
                facecolor="#d9d9d9",
                edgecolor="#9e9e9e",
                hatch="////",
                label="not sampled (no injection there, or no such bit)",
            ),
            Patch(
                facecolor=cmap(0.0),
                edgecolor="#9e9e9e",
                label="sampled, no SDC or DUE (measured 0)",
            ),
        ],
        loc="outside lower center",
        ncol=2,
        frameon=False,
    )
    return fig


# --- HTML --------------------------------------------------------------------------------
def write_html(store: Store, path: Path) -> Path:
    started = time.perf_counter()
    spec = store.meta("spec") or {}
    rate = spec.get("orbit_rate", "leo")
    summaries = summarise(store)
    figs = _figures(store, summaries, rate)
    rows = []
    for s in summaries:
        for block, counts in sorted(s.per_block.items()):
            n = sum(counts.values())
            rows.append((f"HARDEN={s.harden}", block, n, counts, n < MIN_BLOCK_N))
        rows.append((f"HARDEN={s.harden}", "<b>all</b>", s.n, s.outcomes, False))
    table = "".join(
        ('<tr class="few">' if few else "<tr>")
        + f"<td>{b}</td><td>{blk}</td><td>{n}</td>"
        + "".join(f"<td>{_cell(c[o], n)}</td>" for o in COUNTED)
        + f"<td>{_cell(sum(c[o] for o in DUE), n)}</td></tr>"
        for b, blk, n, c, few in rows
    )
    orbit_rows = ""
    for s in summaries:
        o = s.orbit(rate)
        orbit_rows += (
            f"<tr><td>HARDEN={s.harden}</td><td>{sum(s.bits.values()):,}</td>"
            f"<td>{o.upsets_per_day:.3g}</td><td>{s.stratified('sdc')}</td>"
            f"<td>{_range(o.sdc_per_day)}</td><td>{_range(o.due_per_day)}</td>"
            f"<td>{s.tool_errors}</td></tr>"
        )
    answer_rows = "".join(
        f"<tr><td>HARDEN={s.harden}</td><td>{html.escape(s.workload)}</td><td>{a.policy}</td>"
        f"<td>{a.n}</td><td>{html.escape(_answer_cell(a, a.output_changed))}</td>"
        f"<td>{html.escape(_answer_cell(a, a.answer_changed))}</td>"
        f"<td>{a.outvoted or ''}</td></tr>"
        for s, a in answers_rows(summaries)
    )
    answers = ""
    if answer_rows:
        answers = f"""<h2>Answers changed, by reliability policy</h2>
<p>Misclassified: an sdc whose predicted class (the argmax of the last layer) changed;
the share of upsets that change the answer each policy delivers. {html.escape(ANSWERS_NOTE)}</p>
<table><tr><th>build</th><th>workload</th><th>policy</th><th>upsets</th>
<th>output changed</th><th>answer changed</th><th>outvoted</th></tr>{answer_rows}</table>
"""
    counts = store.counts()
    title = html.escape(spec.get("name", "campaign"))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>orbithil campaign: {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
td:nth-child(-n+2), th:nth-child(-n+2) {{ text-align: left; }}
table.absolute td:nth-child(2), table.absolute th:nth-child(2) {{ text-align: right; }}
th {{ background: #f0f0f0; }} img {{ max-width: 100%; }} code {{ background: #f4f4f4; }}
tr.few td {{ color: #9e9e9e; font-style: italic; }} p.caption {{ color: #555; }}
</style></head><body>
<h1>Fault-injection campaign: {title}</h1>
<p>Workload <code>{html.escape(str(spec.get("workload")))}</code> on
<code>{html.escape(str(spec.get("simulator")))}</code>, fault model
<code>{html.escape(str(spec.get("model")))}</code>, plan seed {spec.get("seed")};
{counts["done"]:,} of {counts["planned"]:,} planned injections have results.
Shares are of injections, each a uniformly drawn (bit, cycle) of the chip; intervals are
95% Wilson intervals. Tool errors are not counted; n is the number of counted
injections.</p>
<ul class="words">
<li>{html.escape(SDC_WORDS)}.</li>
<li>{html.escape(DUE_WORDS)}.</li>
<li>The other outcomes are no failure. masked: nothing differs; corrected: outputs right
and a correction counter moved (SECDED, TMR, MAC retry, the link); latent: outputs right,
nothing corrected, but the end state differs.</li>
</ul>
<h2>Outcome shares</h2>
<p class="caption">Blocks in grey italics had fewer than {MIN_BLOCK_N} injections
(MIN_BLOCK_N): their intervals are too wide to compare blocks by.</p>
<table><tr><th>build</th><th>block</th><th>n</th>{"".join(f"<th>{o}</th>" for o in COUNTED)}
<th>DUE (detected + hang)</th></tr>
{table}</table>
<img alt="outcome shares per block" src="data:image/png;base64,{figs["shares"]}">
{_absolute_html(summaries)}{_pruning_html(store)}{answers}<h2>Hardened against unhardened</h2>
<img alt="SDC and DUE per block" src="data:image/png;base64,{figs["sdc_due"]}">
<p class="caption">SDC and DUE share per block and build; each whisker (95% Wilson
interval) has its bar's colour and a marker at the estimate, so a zero share still shows.
The label gives each block's n. Blocks with fewer than {MIN_BLOCK_N} injections
(MIN_BLOCK_N) are grey: a wide interval there is a small sample, not a finding; their
whiskers are cut at the right edge, which the readable blocks set, and the cut ones are
written out.</p>
<h2>Convergence</h2>
<img alt="SDC share convergence" src="data:image/png;base64,{figs["convergence"]}">
<p class="caption">Each build's SDC share over the injections so far, in the order they
finished, with its 95% Wilson band (dashed edges; the second build's band hatched).</p>
<h2>Vulnerability per bit position</h2>
<img alt="per-bit vulnerability map" src="data:image/png;base64,{figs["bits"]}">
<p class="caption">Share of SDC or DUE among the injections into each block and bit
position. Both builds use one colour scale (one colour bar, square-root scale so small
shares show). Hatched grey: not sampled, no injection landed there (or the block has no
such bit); the palest colour: sampled, and no injection there was an SDC or DUE
(measured 0). Cells hold few injections each; read rows and columns, not single
cells.</p>
<h2>In orbit</h2>
<p>Upset rate {html.escape(str(rate))} per bit per day. Chip-level shares are stratified
by block, each block weighted by its share of the chip's bits.</p>
<table><tr><th>build</th><th>bits</th><th>upsets/day</th><th>SDC share (stratified)</th>
<th>SDC/day</th><th>DUE/day</th><th>tool errors</th></tr>{orbit_rows}</table>
<img alt="expected events per day" src="data:image/png;base64,{figs["orbit"]}">
<p><small>orbithil report, built in {time.perf_counter() - started:.1f} s.</small></p>
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def _range(i: stats.Interval) -> str:
    return f"{i.estimate:.3g} [{i.low:.3g}, {i.high:.3g}]"


FIELDS = (
    "harden",
    "sim",
    "workload",
    "block",
    "target",
    "word",
    "bit",
    "cycle",
    "outcome",
    "finished",
)


def export_csv(store: Store, path: Path) -> int:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        n = 0
        for row in store.rows():
            w.writerow(row)
            n += 1
    return n


def export_json(store: Store, path: Path) -> int:
    """Every result, with the spec and each build's extrapolated absolute counts
    (``absolute``: see ``absolute_json``); returns the number of results."""
    rows = [dict(zip(FIELDS, row, strict=True)) for row in store.rows()]
    absolute = absolute_json(summarise(store))
    Path(path).write_text(
        json.dumps({"spec": store.meta("spec"), "absolute": absolute, "results": rows})
    )
    return len(rows)
