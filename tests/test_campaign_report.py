"""The campaign report read by someone new to it: every word it uses is defined, every
per-block share carries its n, a block sampled too little is marked, the per-bit maps
share one colour scale and tell "not sampled" from 0, the convergence bands stay apart,
and each build's shares are extrapolated to absolute fault counts over its fault space
(injectable bits x golden cycles). The store is made by hand (no simulator), so every
count is known."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from orbithil.payload.classify import Observation
from orbithil.sim.faults import FaultModel, Injection
from orbithil.tools.campaign import report, stats
from orbithil.tools.campaign.store import Store

SPEC = {"name": "report test", "workload": "control", "simulator": "verilator",
        "model": "flip", "seed": 7, "orbit_rate": "leo"}  # fmt: skip
# per build: (harden, bits per block, golden cycles, {block: [(outcome, count), ...]})
BUILDS = (
    (0, {"u_mem": 65696, "u_regs": 160, "u_frame_rx": 8426, "u_wdt": 49}, 55040, {
        "u_mem": [("sdc", 10), ("detected", 3), ("hang", 1), ("latent", 150), ("masked", 36)],
        "u_frame_rx": [("sdc", 2), ("masked", 38)],
        "u_regs": [("hang", 1), ("masked", 4)],  # n = 5: under MIN_BLOCK_N
    }),
    (1, {"u_mem": 80129, "u_regs": 480, "u_frame_rx": 9451, "u_wdt": 49}, 56960, {
        "u_mem": [("sdc", 1), ("detected", 2), ("corrected", 20), ("latent", 227)],
        "u_frame_rx": [("masked", 60), ("tool_error", 1)],
        "u_regs": [("corrected", 12)],  # n = 12: under MIN_BLOCK_N
    }),
)  # fmt: skip


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    """A finished campaign store with the outcomes of BUILDS, bit positions cycling."""
    path = tmp_path_factory.mktemp("report") / "c.sqlite"
    setups, outcomes = [], []
    for harden, bits, cycles, blocks in BUILDS:
        injections = []
        for block, counts in blocks.items():
            for outcome, count in counts:
                for _ in range(count):
                    k = len(injections)
                    word = k % 64 if block == "u_mem" else None
                    injections.append(Injection(f"{block}.q", word, (k % 32,), (7 * k) % cycles,
                                                FaultModel.FLIP, block))  # fmt: skip
                    outcomes.append(outcome)
        setup = {"harden": harden, "sim": "verilator", "workload": "control", "seed": 0}
        setups.append((setup, bits, cycles, Observation(), injections))
    with Store(path, create=True) as store:
        store.write_plan(SPEC, setups)
        pending = [plan_id for rows in store.pending().values() for plan_id, _ in rows]
        assert len(pending) == len(outcomes)
        for plan_id, outcome in zip(pending, outcomes, strict=True):
            # latent results as the engine's def/use pruning decides them (never read again)
            info = {"pruning": "unread"} if outcome == "latent" else {}
            store.add_result(plan_id, outcome, Observation(), info)
    return path


@pytest.fixture(scope="module")
def page(store_path, tmp_path_factory) -> str:
    with Store(store_path, readonly=True) as store:
        out = report.write_html(store, tmp_path_factory.mktemp("html") / "r.html")
    return out.read_text()


@pytest.fixture()
def summaries(store_path):
    with Store(store_path, readonly=True) as store:
        return report.summarise(store)


def test_due_is_defined_before_it_is_first_used(page):
    text = re.sub(r"<[^>]+>", " ", page)  # the words a reader sees
    definition = text.index("DUE (detected unrecoverable error): outcomes detected + hang")
    assert definition <= text.index("DUE")
    assert text.index("SDC (silent data corruption)") <= text.index("SDC")
    assert "<th>DUE (detected + hang)</th>" in page  # the table says what the figures say


def test_the_outcome_table_gives_due_as_detected_plus_hang(page):
    row = re.search(r"<tr[^>]*><td>HARDEN=0</td><td>u_mem</td><td>200</td>(.*?)</tr>", page)
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells[-1] == report._cell(3 + 1, 200)  # detected 3 + hang 1 of 200
    assert cells[-1].startswith("2.0% [")


def test_a_block_under_the_minimum_n_is_marked_in_the_table(page):
    assert report.MIN_BLOCK_N == 30
    assert '<tr class="few"><td>HARDEN=0</td><td>u_regs</td><td>5</td>' in page
    assert '<tr class="few"><td>HARDEN=1</td><td>u_regs</td><td>12</td>' in page
    assert "<tr><td>HARDEN=0</td><td>u_frame_rx</td><td>40</td>" in page
    assert f"fewer than {report.MIN_BLOCK_N} injections" in page
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"fewer than {report.MIN_BLOCK_N} injections" in readme  # the README says the same


def test_block_labels_carry_n_and_small_samples_are_greyed(summaries):
    fig = report.sdc_due_figure(summaries)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("HARDEN=")]
    assert [ax.get_title() for ax in panels] == ["HARDEN=0", "HARDEN=1"]
    labels = {t.get_text(): t for t in panels[0].get_yticklabels()}
    assert list(labels) == ["u_frame_rx (n=40)", "u_mem (n=200)", "u_regs (n=5)", "u_wdt (n=0)"]
    assert [t.get_text() for t in panels[1].get_yticklabels()] == [
        "u_frame_rx (n=60)", "u_mem (n=250)", "u_regs (n=12)", "u_wdt (n=0)"]  # fmt: skip
    for name, grey in (("u_mem (n=200)", False), ("u_regs (n=5)", True), ("u_wdt (n=0)", True)):
        assert (labels[name].get_color() == report.FEW_COLOUR) is grey, name
        assert (labels[name].get_fontstyle() == "italic") is grey, name
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["SDC (outcome sdc)", "DUE (detected + hang)",
                      f"n < {report.MIN_BLOCK_N}: too few injections to read"]  # fmt: skip
    # the scale is set by the blocks that can be read: u_regs' 20% [4%, 62%] is cut
    top = panels[0].get_xlim()[1]
    readable = stats.wilson(2, 40).high  # u_frame_rx SDC, the widest readable interval
    assert top == pytest.approx(readable * 1.2)
    assert any(t.get_text().startswith("20% [4%, 62%]") for t in panels[0].texts)


def test_the_per_bit_maps_share_one_colour_scale_and_mark_cells_not_sampled(summaries, store_path):
    with Store(store_path, readonly=True) as store:
        fig = report.bits_figure(store, summaries)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    assert {(im.norm.vmin, im.norm.vmax) for im in images} == {(0, images[0].norm.vmax)}
    assert images[0].norm is images[1].norm  # one scale
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1  # one colour bar
    unhardened = np.ma.masked_invalid(images[0].get_array())
    blocks = ["u_frame_rx", "u_mem", "u_regs", "u_wdt"]
    # u_wdt: no injection at all; u_regs: 5 injections (build indices 240-244, so bits
    # 16-20), the first hung (share 1), the others measured 0; no other bit sampled
    row = unhardened[blocks.index("u_regs")]
    assert unhardened.mask[blocks.index("u_wdt")].all()
    assert row.tolist()[16:21] == [1, 0, 0, 0, 0]
    assert np.flatnonzero(~np.ma.getmaskarray(row)).tolist() == [16, 17, 18, 19, 20]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[0].startswith("not sampled") and "measured 0" in legend[1]


def test_the_convergence_bands_have_their_own_colour_and_edges(store_path):
    with Store(store_path, readonly=True) as store:
        fig = report.convergence_figure(store)
    ax = fig.axes[0]
    bands = ax.collections
    assert len(bands) == 2
    assert bands[0].get_hatch() is None and bands[1].get_hatch()  # hatched, not tinted
    shares = [line for line in ax.lines if line.get_linestyle() == "-"]
    edges = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(shares) == 2 and len(edges) == 4
    assert shares[0].get_color() != shares[1].get_color()
    assert {e.get_color() for e in edges} == {shares[0].get_color(), shares[1].get_color()}


def _from_store(path: Path) -> list[dict]:
    """Per build, straight from the SQLite file: bits, cycles and outcome counts."""
    db = sqlite3.connect(path)
    try:
        out = []
        for sid, harden, cycles, bits in db.execute(
            "SELECT id, harden, golden_cycles, bits FROM setup ORDER BY id"
        ):
            counts = Counter(dict(db.execute(
                "SELECT r.outcome, COUNT(*) FROM result r JOIN plan p ON p.id = r.plan_id "
                "WHERE p.setup_id = ? GROUP BY 1", (sid,)).fetchall()))  # fmt: skip
            n = sum(counts.values()) - counts["tool_error"]
            due = counts["detected"] + counts["hang"]
            space = sum(json.loads(bits).values()) * cycles
            out.append({"harden": harden, "space": space, "n": n, "sdc": counts["sdc"], "due": due})
    finally:
        db.close()
    return out


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    centre = (k / n + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(k / n * (1 - k / n) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def test_absolute_counts_are_share_times_bits_times_cycles(store_path, summaries, page, tmp_path):
    builds = _from_store(store_path)
    assert [b["space"] for b in builds] == [(65696 + 160 + 8426 + 49) * 55040,
                                            (80129 + 480 + 9451 + 49) * 56960]  # fmt: skip
    with Store(store_path, readonly=True) as store:
        report.export_json(store, tmp_path / "r.json")
    exported = json.loads((tmp_path / "r.json").read_text())["absolute"]
    assert exported == report.absolute_json(summaries)
    rows = re.findall(r"<tr><td>HARDEN=(\d)</td>(.*?)</tr>",
                      page[page.index('<table class="absolute">'):])[:2]  # fmt: skip
    for b, got, (harden, row) in zip(builds, exported, rows, strict=True):
        assert got["harden"] == b["harden"] == int(harden)
        assert got["fault_space"] == b["space"] and got["n"] == b["n"]
        cells = re.findall(r"<td>(.*?)</td>", row)
        assert cells[2] == f"{b['space']:,}"
        for name, column in (("sdc", 4), ("due", 6)):
            low, high = _wilson(b[name], b["n"])
            want = [b[name] / b["n"] * b["space"], low * b["space"], high * b["space"]]
            assert [got[f"{name}_faults"], got[f"{name}_faults_low"],
                    got[f"{name}_faults_high"]] == pytest.approx(want, rel=1e-9)  # fmt: skip
            shown = [float(x) for x in re.findall(r"[\d.]+(?:e\d+)?", cells[column])]
            assert shown == pytest.approx(want, rel=5e-3)  # three significant figures
    # the hardened build: the smaller SDC share, yet its fault space is the larger one
    assert exported[1]["sdc_share"] < exported[0]["sdc_share"]
    ratio = builds[1]["space"] / builds[0]["space"]
    assert f"HARDEN=1 has {ratio:.2f} times the fault space of HARDEN=0" in page


def test_extrapolate_scales_the_interval_and_refuses_a_negative_space():
    share = stats.Interval(0.02, 0.01, 0.04)
    assert stats.extrapolate(share, 1000) == stats.Interval(20.0, 10.0, 40.0)
    with pytest.raises(ValueError, match="bits x cycles"):
        stats.extrapolate(share, -1)


def test_a_store_without_golden_cycles_reports_no_extrapolation(summaries):
    s = summaries[0]
    s.golden_cycles = None
    assert s.fault_space is None
    row = report.absolute_json([s])[0]
    assert row["fault_space"] is None and row["sdc_faults"] is None
    assert row["sdc_share"] == pytest.approx(12 / 245)


def test_the_page_says_how_many_results_were_simulated_and_how_many_pruned(page):
    section = page[page.index("How the results were decided") :]
    rows = re.findall(r"<tr><td>HARDEN=(\d)</td>((?:<td>[\d,]+</td>)+)</tr>", section)
    table = {h: [int(v.replace(",", "")) for v in re.findall(r"<td>([\d,]+)</td>", cells)]
             for h, cells in rows[:2]}  # fmt: skip
    # build: results, simulated, overwritten, never read again, same class as a simulated one
    assert table == {"0": [245, 95, 0, 150, 0], "1": [323, 96, 0, 227, 0]}
