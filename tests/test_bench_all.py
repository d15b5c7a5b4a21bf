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
