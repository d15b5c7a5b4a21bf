"""``orbithil soak``: the flight stack as a child process under full telemetry and a
stream of authenticated commands, judged for memory growth, queues, slips and loss. A
short run on the model chip here; the 10-minute run on Verilator is in
docs/reliability.md."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from orbithil.tools.soak import Limits, Sample, judge, rss_slope

CRITERIA = ["rss_flat", "queues_flat", "no_slips", "stack_up_throughout", "every_command_completed"]


def test_rss_slope_is_the_least_squares_growth_after_the_warm_up():
    # 2 MiB a minute after 60 s, whatever the warm-up did before
    samples = [Sample(t, 100_000 + (0 if t < 60 else int((t - 60) / 60 * 2048)))
               for t in range(0, 600, 5)]  # fmt: skip
    samples[0] = Sample(0, 10_000)  # the start-up's growth is left out
    assert rss_slope(samples, 60) == pytest.approx(2.0, abs=0.01)
    flat = [Sample(t, 150_000 + (t % 2)) for t in range(0, 600, 5)]
    assert abs(rss_slope(flat, 60)) < 0.01
    assert rss_slope(flat[:13], 60) is None  # fewer than 3 samples after the warm-up


def _summary(**changes) -> dict:
    summary = {
        "rss": {"slope_mib_per_min": 0.1, "samples_after_warmup": 100},
        "queues": {"jobs_queued_max": 3, "bus_drops": 0, "tm_stored_max": 0, "tm_lost": 0},
        "rate_groups": {"slips": 0, "jitter_p99_us_max": 300.0},
        "commands": {"sent": 10, "completed": 10, "failed": 0, "timed_out": 0},
        "jobs": {"submitted": 3, "done": 3, "items_failed": 0},
        "flags": {"fly_exited_early": False},
    }
    for path, value in changes.items():
        part, key = path.split("__")
        summary[part][key] = value
    return summary | summary.pop("flags")


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({}, []),
        ({"rss__slope_mib_per_min": 1.5}, ["rss_flat"]),
        ({"rss__slope_mib_per_min": None}, ["rss_flat"]),
        ({"queues__jobs_queued_max": 65}, ["queues_flat"]),
        ({"queues__bus_drops": 1}, ["queues_flat"]),
        ({"jobs__done": 2}, ["queues_flat"]),
        ({"rate_groups__slips": 1}, ["no_slips"]),
        ({"rate_groups__jitter_p99_us_max": 1001.0}, ["no_slips"]),
        ({"flags__fly_exited_early": True}, ["stack_up_throughout"]),
        ({"commands__completed": 9, "commands__timed_out": 1}, ["every_command_completed"]),
    ],
)
def test_each_criterion_fails_on_its_own_measure(change, failing):
    verdicts = judge(_summary(**change), Limits())
    assert [c["name"] for c in verdicts] == CRITERIA
    assert [c["name"] for c in verdicts if not c["ok"]] == failing


def _soak(*args: str) -> list[str]:
    return [sys.executable, "-m", "orbithil.tools.cli", "soak", "--chip", "model://?harden=1",
            "--sample-s", "2", "--warmup-s", "5", "--json", *args]  # fmt: skip


def _check_nothing_lost(summary: dict) -> None:
    cmd, jobs = summary["commands"], summary["jobs"]
    assert cmd["sent"] > 3 and cmd["completed"] == cmd["sent"], cmd
    assert cmd["failed"] == 0 and cmd["timed_out"] == 0, cmd
    assert jobs["submitted"] == cmd["by_name"]["SUBMIT_JOB"] > 0
    assert jobs["done"] == jobs["submitted"] and jobs["items_failed"] == 0, jobs
    # a new job only while fewer than 2 (of 2 images) are unfinished
    assert summary["queues"]["jobs_queued_max"] <= 4, summary["queues"]
    assert summary["queues"]["bus_drops"] == 0 and summary["queues"]["tm_lost"] == 0
    assert summary["telemetry_packets"]["hk"] > 0
    assert summary["fly_exit_code"] == 0
    verdicts = {c["name"]: c["ok"] for c in summary["criteria"]}
    assert list(verdicts) == CRITERIA
    assert verdicts["every_command_completed"] and verdicts["queues_flat"]
    assert summary["ok"] == all(verdicts.values())


@pytest.mark.slow
def test_a_short_soak_on_the_model_loses_nothing_and_reports_every_figure(tmp_path):
    done = subprocess.run(_soak("--minutes", "0.35"), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    summary = json.loads(done.stdout)  # pure JSON on stdout, progress on stderr
    assert done.returncode == (0 if summary["ok"] else 1)
    assert not summary["interrupted"] and not summary["fly_exited_early"]
    assert summary["duration_s"] >= 20
    _check_nothing_lost(summary)
    # housekeeping every 10 ms: far more packets than one a second
    assert summary["telemetry_packets"]["hk"] > 5 * summary["duration_s"]
    rss = summary["rss"]
    assert 0 < rss["first_mib"] <= rss["max_mib"] and 0 < rss["last_mib"] <= rss["max_mib"]
    assert rss["samples"] >= 8 and rss["slope_mib_per_min"] is not None
    assert len(summary["samples"]) == rss["samples"]
    assert summary["samples"][-1]["telemetry"]["JOBS_DONE"] == summary["jobs"]["submitted"]
    for key in ("slips", "jitter_p99_us_max"):
        assert summary["rate_groups"][key] >= 0
    assert 0 <= summary["rate_groups"]["cpu_steal_share"] < 1
    if summary["ok"]:
        assert "soak failed" not in done.stderr
    else:
        failed = [c["name"] for c in summary["criteria"] if not c["ok"]]
        assert f"soak failed: {', '.join(failed)}" in done.stderr


def test_ctrl_c_ends_the_soak_early_and_still_prints_the_summary(tmp_path):
    proc = subprocess.Popen(
        _soak("--minutes", "10"), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        progress = []
        while not any(line.startswith("soaking") for line in progress):
            line = proc.stderr.readline()  # the load has started once this is printed
            assert line, "".join(progress)
            progress.append(line)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    summary = json.loads(out)
    assert summary["interrupted"] and summary["duration_s"] < 120, err
    assert "interrupted: finishing the summary" in err
    cmd = summary["commands"]
    assert cmd["completed"] == cmd["sent"] and cmd["sent"] >= 3  # the mode changes at least
    assert summary["jobs"]["done"] == summary["jobs"]["submitted"]
    assert summary["fly_exit_code"] == 0
