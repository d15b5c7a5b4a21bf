"""``orbithil bench all``: one JSON document with every benchmark's figures and the
machine, and the same as a markdown table with each target met or short (run here on the
codec benchmark alone, quick: the whole set takes minutes and is a command, not a test)."""

from __future__ import annotations

import json

from orbithil.tools import bench, cli


def test_one_document_and_a_markdown_table_of_every_figure_and_target(
    tmp_path, capsys, monkeypatch
):
    out = tmp_path / "benchmarks.md"
    every = bench.run_all
    monkeypatch.setattr(
        bench, "run_all", lambda **kw: every(**{**kw, "names": ["codec"]})
    )  # the codec benchmark alone: seconds
    assert cli.main(["bench", "all", "--quick", "--json", "--markdown", str(out)]) == 0
    document = json.loads(capsys.readouterr().out)  # pure JSON on stdout
    assert document["quick"] is True and document["machine"]["cores"] >= 1
    codec = document["benchmarks"]["codec"]
    assert codec["metrics"]["frame_c_mbps"] > 0 and codec["seconds"] > 0
    table = out.read_text()
    assert table.startswith("# Benchmarks") and "## codec" in table
    for key, value in codec["metrics"].items():
        shown = f"{value:,.3f}" if isinstance(value, float) else str(value)
        target = codec["targets"].get(key, "")
        verdict = {True: "met", False: "**short**", None: ""}[codec["targets_met"].get(key)]
        assert f"| {key} | {shown} | {target} | {verdict} |" in table
    short = [k for k, met in codec["targets_met"].items() if not met]
    assert ("Targets short in this run: none." in table) == (not short)
    # the hypervisor's share of the CPUs, over the run and over each benchmark
    assert 0 <= document["cpu_steal_share"] < 1 and 0 <= codec["cpu_steal_share"] < 1
    assert f"during the run: {document['cpu_steal_share']:.1%}" in table
    assert f"s; {codec['cpu_steal_share']:.1%} of the CPU time stolen meanwhile)." in table


def test_a_noisy_figure_is_the_median_of_the_runs_and_its_target_must_hold_in_every_run():
    runs = [
        bench.BenchResult({"ratio": r, "rate": 10 * r}, targets={"ratio": (">=", 0.7)})
        for r in (0.72, 0.69, 0.75)
    ]
    entry = bench.repeated("hal", runs, ("ratio",))
    assert entry["runs"] == 3
    assert entry["metrics"]["ratio"] == 0.72  # the median
    assert entry["spread"]["ratio"] == {"min": 0.69, "max": 0.75, "runs": [0.72, 0.69, 0.75]}
    assert entry["targets_met"]["ratio"] is False  # 0.69 missed it in one run
    assert entry["metrics"]["rate"] == runs[0].metrics["rate"]  # not noisy: the first run's
    met = bench.repeated("hal", runs[::2], ("ratio",))
    assert met["targets_met"]["ratio"] is True and met["metrics"]["ratio"] == 0.735
    table = bench.markdown(
        {"machine": {}, "quick": False, "started": 0, "seconds": 60,
         "benchmarks": {"hal": {**entry, "seconds": 1.0}}}
    )  # fmt: skip
    assert "| ratio | 0.720 (0.690-0.750) | >= 0.7 | **short** |" in table
    assert "3 runs: a figure with a spread is the median" in table


def test_the_noisy_figures_of_each_benchmark_are_run_three_times_in_bench_all():
    for name in ("hal", "campaign", "flight"):
        keys, repeats = bench.noisy(name)
        assert keys and repeats == 3
    assert bench.noisy("codec") == ((), 1)


def test_stolen_cpu_time_is_the_steal_ticks_over_every_tick_of_proc_stat(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr(bench.Steal, "STAT", str(stat))
    #                 user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  1000 0 200 5000 10 0 5 100 30 0\ncpu0 500 0 100 2500 5 0 2 50 15 0\n")
    steal = bench.Steal()
    stat.write_text("cpu  1400 0 300 5200 10 0 5 400 90 0\n")
    assert steal.share() == 0.3  # 300 stolen of 1,000 ticks (guest time is inside user)
    assert bench.Steal().share() == 0.0  # no tick between the two reads
    for broken in ("", "cpu 1 2 3\n", "intr 5 6 7 8 9 10 11 12 13\n", "cpu a b c d e f g h\n"):
        stat.write_text(broken)
        assert bench.Steal._ticks() == (0, 0), broken
    stat.unlink()
    assert bench.Steal().share() == 0.0  # no /proc/stat: nothing measured, no error
