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
from orbithil.tools.campaign import stats
from orbithil.tools.campaign.store import Store

COUNTED = [o.value for o in Outcome if o is not Outcome.TOOL_ERROR]
DUE = ("detected", "hang")  # detected unrecoverable errors: the chip or the HAL noticed
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
            s["harden"], s["sim"], s["workload"], 0, 0, Counter(), {}, s["bits"], 0
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


def _figures(store: Store, summaries: list[BuildSummary], rate) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    # 1. outcome shares per block, one panel per build, side by side
    fig, axes = plt.subplots(
        1, len(summaries), figsize=(6.5 * len(summaries), 4.2), squeeze=False, sharey=True
    )
    for ax, s in zip(axes[0], summaries, strict=True):
        blocks = sorted(s.per_block)
        bottom = np.zeros(len(blocks))
        for name in COUNTED:
            shares = np.array(
                [s.per_block[b][name] / max(sum(s.per_block[b].values()), 1) for b in blocks]
            )
            ax.bar(blocks, shares, bottom=bottom, color=COLOURS[name], label=name)
            bottom += shares
        ax.set_title(f"HARDEN={s.harden}: outcome shares per block")
        ax.tick_params(axis="x", rotation=45)
    axes[0][0].set_ylabel("share of injections")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1, 1))
    figs["shares"] = _png(fig)

    # 2. SDC and DUE shares with intervals, hardened vs unhardened, per block
    fig, ax = plt.subplots(figsize=(10, 4.2))
    blocks = sorted({b for s in summaries for b in s.per_block})
    width = 0.8 / max(len(summaries) * 2, 1)
    x = np.arange(len(blocks))
    for i, s in enumerate(summaries):
        for j, (names, label) in enumerate(((("sdc",), "SDC"), (DUE, "DUE"))):
            est, lo, hi = [], [], []
            for b in blocks:
                c = s.per_block.get(b, Counter())
                iv = stats.wilson(sum(c[n] for n in names), sum(c[o] for o in COUNTED))
                est.append(iv.estimate)
                lo.append(iv.estimate - iv.low)
                hi.append(iv.high - iv.estimate)
            offset = (i * 2 + j - len(summaries) + 0.5) * width
            ax.bar(
                x + offset,
                est,
                width,
                yerr=[lo, hi],
                capsize=2,
                label=f"{label}, HARDEN={s.harden}",
                color=COLOURS["sdc" if j == 0 else "detected"],
                alpha=1.0 if s.harden else 0.5,
                hatch="" if s.harden else "//",
            )
    ax.set_xticks(x, blocks, rotation=45)
    ax.set_ylabel("share (95% Wilson interval)")
    ax.set_title("silent data corruption and detected errors per block, side by side")
    ax.legend()
    figs["sdc_due"] = _png(fig)

    # 3. convergence of the SDC share as results accumulate
    fig, ax = plt.subplots(figsize=(10, 3.8))
    series = defaultdict(list)
    for harden, outcome in store.db.execute(
        "SELECT s.harden, r.outcome FROM result r JOIN plan p ON p.id = r.plan_id "
        "JOIN setup s ON s.id = p.setup_id WHERE r.outcome != 'tool_error' "
        "ORDER BY r.finished, r.plan_id"
    ):
        series[harden].append(outcome == "sdc")
    for harden, hits in sorted(series.items()):
        hits = np.array(hits, dtype=float)
        n = np.arange(1, len(hits) + 1)
        k = np.cumsum(hits)
        low, high = stats.wilson_bounds(k, n)
        ax.plot(n, k / n, label=f"HARDEN={harden}")
        ax.fill_between(n, low, high, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("injections")
    ax.set_ylabel("SDC share")
    ax.set_title("SDC share as injections accumulate (95% Wilson band)")
    ax.legend()
    figs["convergence"] = _png(fig)

    # 4. per-bit vulnerability: share of SDC + DUE by block and bit position
    fig, axes = plt.subplots(1, len(summaries), figsize=(6.5 * len(summaries), 3.8), squeeze=False)
    for ax, s in zip(axes[0], summaries, strict=True):
        blocks = sorted(s.per_block)
        index = {b: i for i, b in enumerate(blocks)}
        hits = np.zeros((len(blocks), 40))
        total = np.zeros((len(blocks), 40))
        for block, bit, outcome, n in store.db.execute(
            "SELECT p.block, p.bit, r.outcome, COUNT(*) FROM result r JOIN plan p "
            "ON p.id = r.plan_id JOIN setup s ON s.id = p.setup_id WHERE s.harden = ? "
            "AND r.outcome != 'tool_error' GROUP BY 1, 2, 3",
            (s.harden,),
        ):
            if block in index and bit < 40:
                total[index[block], bit] += n
                if outcome in ("sdc", *DUE):
                    hits[index[block], bit] += n
        shown = np.where(total > 0, hits / np.maximum(total, 1), np.nan)
        im = ax.imshow(
            shown,
            aspect="auto",
            cmap="magma_r",
            vmin=0,
            vmax=max(np.nanmax(np.nan_to_num(shown)), 0.01),
        )
        ax.set_yticks(range(len(blocks)), blocks)
        ax.set_xlabel("bit position in the register or word")
        ax.set_title(f"HARDEN={s.harden}: share SDC or DUE per bit position")
        fig.colorbar(im, ax=ax)
    figs["bits"] = _png(fig)

    # 5. expected events per day in orbit
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, s in enumerate(summaries):
        orbit = s.orbit(rate)
        for j, iv in enumerate((orbit.sdc_per_day, orbit.due_per_day)):
            ax.bar(
                i * 3 + j,
                iv.estimate,
                yerr=[[iv.estimate - iv.low], [iv.high - iv.estimate]],
                capsize=4,
                color=COLOURS["sdc" if j == 0 else "detected"],
            )
            ax.text(i * 3 + j, iv.high, f"{iv.estimate:.2e}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(
        [i * 3 + j for i in range(len(summaries)) for j in range(2)],
        [f"{lbl}\nHARDEN={s.harden}" for s in summaries for lbl in ("SDC", "DUE")],
    )
    ax.set_ylabel("events per day")
    ax.set_title(f"expected events per day in orbit (rate {rate} /bit/day)")
    figs["orbit"] = _png(fig)
    return figs


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
            rows.append((f"HARDEN={s.harden}", block, n, [_cell(counts[o], n) for o in COUNTED]))
        rows.append(
            (f"HARDEN={s.harden}", "<b>all</b>", s.n, [_cell(s.outcomes[o], s.n) for o in COUNTED])
        )
    table = "".join(
        f"<tr><td>{b}</td><td>{blk}</td><td>{n}</td>"
        + "".join(f"<td>{c}</td>" for c in cells)
        + "</tr>"
        for b, blk, n, cells in rows
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
th {{ background: #f0f0f0; }} img {{ max-width: 100%; }} code {{ background: #f4f4f4; }}
</style></head><body>
<h1>Fault-injection campaign: {title}</h1>
<p>Workload <code>{html.escape(str(spec.get("workload")))}</code> on
<code>{html.escape(str(spec.get("simulator")))}</code>, fault model
<code>{html.escape(str(spec.get("model")))}</code>, plan seed {spec.get("seed")};
{counts["done"]:,} of {counts["planned"]:,} planned injections have results.
Shares are of injections, each a uniformly drawn (bit, cycle) of the chip; intervals are
95% Wilson intervals. Tool errors are not counted.</p>
<h2>Outcome shares</h2>
<table><tr><th>build</th><th>block</th><th>n</th>{"".join(f"<th>{o}</th>" for o in COUNTED)}</tr>
{table}</table>
<img alt="outcome shares per block" src="data:image/png;base64,{figs["shares"]}">
{answers}<h2>Hardened against unhardened</h2>
<img alt="SDC and DUE per block" src="data:image/png;base64,{figs["sdc_due"]}">
<h2>Convergence</h2>
<img alt="SDC share convergence" src="data:image/png;base64,{figs["convergence"]}">
<h2>Vulnerability per bit position</h2>
<img alt="per-bit vulnerability map" src="data:image/png;base64,{figs["bits"]}">
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
    rows = [dict(zip(FIELDS, row, strict=True)) for row in store.rows()]
    Path(path).write_text(json.dumps({"spec": store.meta("spec"), "results": rows}))
    return len(rows)
