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
    def fake_synthesize(harden: int, **_) -> synth.SynthResult:
        return synth.SynthResult(
            harden=harden, luts=10, ffs=20, carries=3, logic_cells=25, ebr=1, spram=0, dsp=0,
            fmax_mhz=30.0, bitstream=str(tmp_path / f"h{harden}.bin"),
        )  # fmt: skip

    monkeypatch.setattr(synth, "synthesize", fake_synthesize)
    assert cli.main(["synth", "--harden", "both", "--json"]) == 0
    out, err = capsys.readouterr()
    results = json.loads(out)  # nothing but the JSON
    assert [r["harden"] for r in results] == [0, 1] and all(r["fits"] for r in results)
    assert "synthesising HARDEN=0" in err and "synthesising HARDEN=1" in err


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
