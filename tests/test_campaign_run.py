"""Campaigns end to end on the simulated chip: the store survives SIGKILL and resumes with
nothing lost or doubled, a second process reads status while one runs, the Dask executor
gives the local executor's results, and the report and exports are written."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from orbithil.tools.campaign import report
from orbithil.tools.campaign import spec as spec_mod
from orbithil.tools.campaign.run import create, execute
from orbithil.tools.campaign.store import Store, StoreError

pytestmark = pytest.mark.sim
ROOT = Path(__file__).resolve().parent.parent


def _spec_text(
    n: int, *, chunk: int = 10, harden="[0, 1]", workload="control", model="flip"
) -> str:
    return (
        f'name = "test"\nseed = 4\n[workload]\nname = "{workload}"\n'
        f'[chip]\nharden = {harden}\nsimulator = "verilator"\n[fault]\nmodel = "{model}"\n'
        f"[size]\ninjections = {n}\n[run]\nworkers = 2\nchunk = {chunk}\n"
    )


def _results(path: Path) -> dict[tuple[int, int], str]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT p.setup_id, p.idx, r.outcome FROM result r JOIN plan p ON p.id = r.plan_id"
        ).fetchall()
    except sqlite3.OperationalError as exc:  # a store being made: no tables yet
        assert "no such table" in str(exc), exc
        rows = []
    finally:
        db.close()
    return {(s, i): o for s, i, o in rows}


def test_sigkill_at_random_moments_then_resume_loses_and_doubles_nothing(tmp_path):
    spec_path = tmp_path / "c.toml"
    per_build = 24
    total = 2 * per_build
    spec_path.write_text(_spec_text(per_build, chunk=8))
    store_path = tmp_path / "c.sqlite"
    cmd = [sys.executable, "-m", "orbithil.tools.cli", "campaign", "run"]
    env = dict(os.environ)
    # Each run is killed the moment the store holds its kill point's count (seeded points
    # spread over the 48 injections): killed mid-run however fast the machine is, since
    # the count is watched, not a clock. A run that finishes first ends the loop.
    rng = np.random.default_rng(20261124)
    points = sorted(int(k) for k in rng.choice(np.arange(1, total - 8), size=3, replace=False))
    kills, seen = 0, []
    for point in points:
        args = [*cmd, str(spec_path), "--store", str(store_path)] if not kills else [
            *cmd, "--store", str(store_path)]  # fmt: skip
        proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if store_path.exists() and len(_results(store_path)) >= point:
                break
            time.sleep(0.01)
        if proc.poll() is not None:
            break  # it finished before its kill point
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        seen.append(len(_results(store_path)))
        # a second process reads status while nothing (or something) runs
        status = subprocess.run([*cmd[:-1], "status", str(store_path)], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert f"{seen[-1]}/{total} done" in status.stdout, status.stdout + status.stderr
    assert kills >= 1 and seen[-1] < total, (points, seen)
    done = subprocess.run([*cmd, "--store", str(store_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    db = sqlite3.connect(store_path)
    planned = db.execute("SELECT COUNT(*) FROM plan").fetchone()[0]
    results = db.execute("SELECT COUNT(*), COUNT(DISTINCT plan_id) FROM result").fetchone()
    missing = db.execute(
        "SELECT COUNT(*) FROM plan p LEFT JOIN result r ON r.plan_id = p.id WHERE r.plan_id IS NULL"
    ).fetchone()[0]
    assert planned == total and results == (total, total) and missing == 0
    # resumed results are the results an uninterrupted run gives (the engine is
    # deterministic): compare with a clean run of the same spec
    clean = tmp_path / "clean.sqlite"
    spec = spec_mod.load(spec_path)
    with create(clean, spec) as store:
        execute(store, spec)
    assert _results(store_path) == _results(clean)


def test_dask_local_cluster_gives_the_local_results(tmp_path):
    pytest.importorskip("distributed")
    spec_path = tmp_path / "c.toml"
    spec_path.write_text(_spec_text(12, chunk=4, harden="[0]", workload="inference"))
    spec = spec_mod.load(spec_path)
    with create(tmp_path / "local.sqlite", spec) as store:
        execute(store, spec)
    with create(tmp_path / "dask.sqlite", spec) as store:
        stats = execute(store, spec, executor="dask", workers=2)
        assert stats.done == 12
    assert _results(tmp_path / "dask.sqlite") == _results(tmp_path / "local.sqlite")
    assert len(_results(tmp_path / "local.sqlite")) == 12
    with Store(tmp_path / "dask.sqlite", readonly=True) as store:  # how each was decided
        [kinds] = store.pruning().values()
    assert sum(kinds.values()) == 12 and kinds.keys() <= {
        "simulated", "representative", "reused", "overwritten", "unread"
    }, kinds  # fmt: skip


def test_report_html_and_exports(tmp_path):
    spec_path = tmp_path / "c.toml"
    spec_path.write_text(_spec_text(10, harden="[0, 1]", workload="inference"))
    spec = spec_mod.load(spec_path)
    with create(tmp_path / "c.sqlite", spec) as store:
        execute(store, spec)
        summaries = report.summarise(store)
        assert [s.harden for s in summaries] == [0, 1]
        assert all(s.n + s.tool_errors == 10 for s in summaries)
        html = report.write_html(store, tmp_path / "r.html").read_text()
        assert html.count("data:image/png;base64,") == 5
        assert "HARDEN=0" in html and "HARDEN=1" in html and "per day" in html
        assert report.export_csv(store, tmp_path / "r.csv") == 20
        assert len((tmp_path / "r.csv").read_text().splitlines()) == 21
        assert report.export_json(store, tmp_path / "r.json") == 20
        assert json.loads((tmp_path / "r.json").read_text())["spec"]["name"] == "test"


def test_store_refuses_a_different_spec_and_a_missing_file(tmp_path):
    spec = spec_mod.parse({"size": {"injections": 3}, "chip": {"harden": [0]}})
    with create(tmp_path / "c.sqlite", spec):
        pass
    with create(tmp_path / "c.sqlite", spec) as again:  # the same spec: resumes, no new plan
        assert again.counts()["planned"] == 3
    other = spec_mod.parse({"size": {"injections": 4}, "chip": {"harden": [0]}})
    with pytest.raises(StoreError, match="another spec"):
        create(tmp_path / "c.sqlite", other)
    with pytest.raises(StoreError, match="no campaign store"):
        Store(tmp_path / "missing.sqlite")


def test_the_demo_runs_and_ends_with_the_table_and_report(tmp_path):
    out_dir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "orbithil.tools.cli", "demo", "--injections", "12",
         "--out", str(out_dir)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "outcome shares with 95% Wilson intervals" in out
    assert "answers changed per upset, by reliability policy" in out  # none/rerun/dmr/tmr
    assert "HARDEN=0" in out and "HARDEN=1" in out
    report_line = [line for line in out.splitlines() if line.startswith("report:")]
    assert report_line, out[-2000:]
    path = Path(report_line[0].split(":", 1)[1].strip())
    assert path.exists() and path.read_text().count("data:image/png;base64,") == 5
    assert path.parent == out_dir  # the demo wrote where it was told, not into a checkout


def _campaign_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("campaign") and t.is_alive()]


def _spy_on_engine_results(monkeypatch) -> list:
    """Every result an engine process handed over, whether or not it was stored."""
    from orbithil.sim import inject

    delivered, run_plan = [], inject.run_plan

    def spy(setup, items, **kwargs):
        on_result = kwargs.pop("on_result")

        def record(result):
            delivered.append(result.index)
            on_result(result)

        return run_plan(setup, items, on_result=record, **kwargs)

    monkeypatch.setattr(inject, "run_plan", spy)
    return delivered


def test_ctrl_c_stops_the_workers_and_keeps_every_finished_result(tmp_path, monkeypatch):
    spec = spec_mod.parse({"workload": {"name": "control"}, "chip": {"harden": [0, 1]},
                           "size": {"injections": 60},
                           "run": {"workers": 2, "chunk": 30}})  # fmt: skip
    delivered = _spy_on_engine_results(monkeypatch)
    seen = []

    def ctrl_c_after_three(outcome: str) -> None:
        seen.append(outcome)
        if len(seen) == 3:
            raise KeyboardInterrupt  # as SIGINT arrives in the main thread

    with create(tmp_path / "c.sqlite", spec) as store:
        with pytest.raises(KeyboardInterrupt):
            execute(store, spec, on_result=ctrl_c_after_three)
        assert not _campaign_threads()  # the workers ended before execute returned
        stored = store.counts()["done"]
        assert stored == len(set(delivered))  # every finished result was kept
        # and each of the 2 workers stopped within the chunk it was on, its first (faults
        # decided by their def/use class take microseconds, so a chunk may end first)
        assert 3 <= stored <= 2 * 30
        execute(store, spec)  # resumes: only what is missing
        assert store.counts()["done"] == 120
    assert len(delivered) == 120  # nothing ran twice


def test_a_full_disk_stops_the_campaign_with_a_clear_error_and_keeps_the_results(tmp_path):
    spec = spec_mod.parse({"workload": {"name": "control"}, "chip": {"harden": [0]},
                           "size": {"injections": 40},
                           "run": {"workers": 2, "chunk": 20}})  # fmt: skip
    path = tmp_path / "c.sqlite"
    with create(path, spec) as store:
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLITE_FULL soon
        with pytest.raises(StoreError, match=r"database or disk is full; free some space .* kept"):
            execute(store, spec)
        assert not _campaign_threads()
        kept = store.counts()["done"]
        assert kept < 40
    with Store(path) as store:  # space again: the resume finishes the rest
        execute(store, spec)
        assert store.counts()["done"] == 40


def test_sigint_on_campaign_run_exits_130_saying_what_was_kept(tmp_path):
    spec_path = tmp_path / "c.toml"
    # stuck-at faults are always simulated (flips in memories are mostly decided at once by
    # their def/use class, and 400 of them can end before the signal arrives)
    spec_path.write_text(_spec_text(400, chunk=100, model="stuck"))
    store_path = tmp_path / "c.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orbithil.tools.cli", "campaign", "run", str(spec_path),
         "--store", str(store_path)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # as from a terminal: a shell's background job (a CI runner's, `cmd &`) starts its
        # children with SIGINT ignored, and Python then never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if store_path.exists() and len(_results(store_path)) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    kept = len(_results(store_path))
    assert 2 <= kept < 800, kept
    assert f"interrupted: {kept}/800 injections done, every finished one kept" in err
    assert f"orbithil campaign run --store {store_path}` resumes" in err
    assert "Traceback" not in err
