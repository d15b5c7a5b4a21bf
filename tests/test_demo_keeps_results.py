"""The demo never replaces results a user made: a store of other options (or any other
file) in its folder is kept unless --force; and the test suite never writes into the
checkout's build/ (tests/conftest.py checks the whole session)."""

from __future__ import annotations

import hashlib

import pytest

from orbithil.tools import cli, demo
from tests.test_campaign_store import make_store


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_refuses_to_replace_a_store_of_other_options(tmp_path, capsys):
    make_store(tmp_path / "campaign.sqlite", n=6, done=(1, 2))  # e.g. an 8,000-injection run
    before = _digest(tmp_path / "campaign.sqlite")
    assert cli.main(["demo", "--injections", "12", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds a demo of other options (6 injections per build" in err
    assert "asked: 12 injections per build, workload inference, seed 1" in err
    assert "--force to replace it, or --out DIR" in err
    assert _digest(tmp_path / "campaign.sqlite") == before
    assert not (tmp_path / "campaign.toml").exists() and not (tmp_path / "report.html").exists()


def test_demo_refuses_to_replace_a_file_that_is_not_a_store(tmp_path, capsys):
    (tmp_path / "campaign.sqlite").write_text("my notes\n")
    assert cli.main(["demo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not an SQLite file" in err and "pass --force to replace it" in err
    assert (tmp_path / "campaign.sqlite").read_text() == "my notes\n"


def test_force_replaces_and_the_same_options_continue(tmp_path):
    store = tmp_path / "campaign.sqlite"
    make_store(store, n=6, done=(1,))
    (tmp_path / "campaign.sqlite-wal").write_bytes(b"")
    same = demo.demo_spec(6, 1)
    with pytest.raises(demo.DemoError):
        demo._keep_or_replace(store, demo.demo_spec(12, 1), force=False)
    demo._keep_or_replace(store, demo.demo_spec(12, 1), force=True)
    assert not list(tmp_path.iterdir())  # the store and its WAL are gone
    make_store(store, n=6, done=(1,), spec=same)  # a demo of the same options: continued
    before = _digest(store)
    demo._keep_or_replace(store, same, force=False)
    assert _digest(store) == before


def test_a_demo_run_with_other_workers_or_chunks_is_the_same_demo(tmp_path):
    """How a campaign runs (an older orbithil's chunk size, a Dask executor) changes no
    result, so such a store is continued, not refused."""
    from dataclasses import replace

    store = tmp_path / "campaign.sqlite"
    same = demo.demo_spec(6, 1)
    older = replace(same, chunk=100, executor="dask", workers=2, scheduler="tcp://h:8786")
    make_store(store, n=6, done=(1,), spec=older)
    before = _digest(store)
    demo._keep_or_replace(store, same, force=False)
    assert _digest(store) == before
    with pytest.raises(demo.DemoError, match="other options"):  # a result-changing option
        demo._keep_or_replace(store, replace(same, seed=2), force=False)


def test_the_checkout_guard_sees_a_demo_store_replaced(tmp_path):
    from tests.conftest import changed_outputs, checkout_outputs

    demo_dir = tmp_path / "build" / "demo"
    demo_dir.mkdir(parents=True)
    (demo_dir / "campaign.sqlite").write_bytes(b"8,000 injections")
    (tmp_path / "README.md").write_text("x")
    before = checkout_outputs(tmp_path)
    assert changed_outputs(before, checkout_outputs(tmp_path)) == []
    (demo_dir / "campaign.sqlite").write_bytes(b"24 injections")
    (demo_dir / "report.html").write_text("<html>")
    (tmp_path / "campaign.toml").write_text("")
    assert changed_outputs(before, checkout_outputs(tmp_path)) == [
        "added build/demo/report.html", "added campaign.toml",
        "changed build/demo/campaign.sqlite",
    ]  # fmt: skip
