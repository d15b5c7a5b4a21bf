"""The `orbithil` command, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from orbithil.settings import Settings


def orbithil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_doctor_json_lists_simulators_and_passes_on_a_set_up_machine():
    done = orbithil("doctor", "--json")
    report = json.loads(done.stdout)
    items = {c["item"]: c for c in report["checks"]}
    assert {"python", "icarus", "verilator", "codec (C, cffi)", "serial ports"} <= set(items)
    assert report["ok"] is True and done.returncode == 0
    for check in report["checks"]:
        assert check["ok"] or check["fix"], f"{check['item']} is missing without a fix"


def test_bench_codec_prints_one_json_object_with_the_named_metrics():
    done = orbithil("bench", "codec", "--json", "--quick")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["name"] == "codec"
    metrics = result["metrics"]
    for key in (
        "frame_c_mbps",
        "frame_python_mbps",
        "c_over_python",
        "c_over_cobs_pkg",
        "secded39_c_mbps",
        "secded39_numpy_mbps",
    ):
        assert isinstance(metrics[key], float) and metrics[key] > 0, key
    assert set(result["targets"]) == {"c_over_python", "c_over_cobs_pkg"}


def test_unknown_benchmark_names_the_valid_ones():
    done = orbithil("bench", "nope")
    assert done.returncode == 2
    assert "no benchmark 'nope'; choose from " in done.stdout
    from orbithil.tools.bench import BENCHMARKS

    assert all(name in done.stdout for name in BENCHMARKS)


def test_selftest_passes():
    done = orbithil("selftest")
    assert done.returncode == 0, done.stdout
    assert "FAIL" not in done.stdout


def test_python_codec_can_be_forced():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from orbithil.hal import codec as c; c.frame_encode(1, 1); print(c.backend())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORBITHIL_CODEC": "python"},
        check=True,
    )
    assert done.stdout.strip() == "python"


def test_bad_codec_setting_says_what_is_valid():
    with pytest.raises(
        ValueError, match="ORBITHIL_CODEC='fast' is not valid; use one of auto, c, python"
    ):
        Settings.from_env({"ORBITHIL_CODEC": "fast"})
