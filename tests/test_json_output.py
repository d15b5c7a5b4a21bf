"""Every ``--json`` prints pure JSON on stdout: progress, logs and errors go to stderr, so
``orbithil X --json | jq`` works."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from orbithil.tools import cli
from orbithil.tools.fpga import synth


def test_synth_json_prints_only_the_json_on_stdout(monkeypatch, capsys, tmp_path):
    def fake_synthesize(harden: int, *, fec: int, inject: int, spram: int) -> synth.SynthResult:
        if harden and inject:
            raise synth.DoesNotFit("needs 5324 logic cells", logic_cells=5324)
        return synth.SynthResult(
            harden=harden, fec=fec, inject=inject, spram=spram, luts=10, ffs=20, carries=3,
            logic_cells=2640, ebr=1, spram_blocks=3, dsp=0, fmax_mhz=30.0,
            bitstream=str(tmp_path / f"h{harden}.bin"),
        )  # fmt: skip

    monkeypatch.setattr(synth, "synthesize", fake_synthesize)
    assert cli.main(["synth", "--harden", "both", "--json"]) == 0
    out, err = capsys.readouterr()
    results = json.loads(out)  # nothing but the JSON
    assert [(r["harden"], r["fec"], r["inject"], r["spram"]) for r in results] == [
        (0, 1, 0, 1),  # the flight build's FEC, INJECT and SRAM unless told otherwise
        (1, 1, 0, 1),
    ]
    first = results[0]
    assert first["logic_cells"] == 2640 and first["lc_share"] == 0.5
    assert first["ebr"] == 1 and first["spram_blocks"] == 3 and first["fmax_mhz"] == 30.0
    assert all(r["fits"] and r["timing_met"] for r in results)
    assert "synthesising HARDEN=0 FEC=1 INJECT=0" in err and "HARDEN=1 FEC=1 INJECT=0" in err

    # a build that does not place is reported, with the cells it wanted, and fails the run
    assert cli.main(["synth", "--harden", "1", "--inject", "1", "--fec", "0", "--json"]) == 1
    out, err = capsys.readouterr()
    (row,) = json.loads(out)
    assert (row["harden"], row["fec"], row["inject"]) == (1, 0, 1)
    assert row["logic_cells"] == 5324 and not row["fits"] and "needs 5324" in err


@pytest.mark.parametrize(
    "args",
    [
        ("passes", "--hours", "2", "--json"),
        ("ports", "--no-probe", "--json"),
        ("campaign", "plan", "--margin", "0.01", "--json"),
        ("selftest", "--json"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_json_commands_print_one_json_document(args):
    done = subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", *args],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)  # raises on anything before or after the document


@pytest.mark.parametrize(
    ("command", "harden", "builds"),
    [("inject", "both", [0, 1]), ("inject", "1", [1]), ("fpga", "both", [0, 1])],
)
def test_targets_json_is_one_list_of_builds(command, harden, builds):
    """One JSON document, a list with an object per build as `synth --json` prints (it
    once printed a line per build). The simulated chip's divisor (4) reuses the netlists
    the simulator tests list."""
    done = subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", command, "targets", "--json",
         "--harden", harden, "--clks-per-bit", "4"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [build["harden"] for build in json.loads(done.stdout)] == builds
