"""The campaign store without a simulator: a resume runs exactly what has no result, and
anything that is not a campaign store is refused with a clear error and left untouched."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3

import pytest

from orbithil.payload.classify import Observation
from orbithil.sim.faults import FaultModel, Injection
from orbithil.tools import cli
from orbithil.tools.campaign import spec as spec_mod
from orbithil.tools.campaign.store import Store, StoreError

SETUP = {"harden": 0, "sim": "verilator", "workload": "control", "seed": 0}


def _injections(n: int) -> list[Injection]:
    return [Injection("u_regs.r0", None, (i % 32,), 10 + i, FaultModel.FLIP, "u_regs")
            for i in range(n)]  # fmt: skip


def make_store(path, n: int = 6, done: tuple[int, ...] = (), spec=None) -> None:
    """A planned store of ``n`` injections (one build), with results for plan ids ``done``;
    ``spec`` is the spec it records (default: one of ``n`` injections)."""
    spec = spec or spec_mod.parse({"size": {"injections": n}, "chip": {"harden": [0]}})
    with Store(path, create=True) as store:
        store.write_plan(spec.to_dict(), [(SETUP, {"u_regs": 32}, 100, Observation(),
                                          _injections(n))])  # fmt: skip
        for plan_id in done:
            store.add_result(plan_id, "masked", Observation(), {"cycles": 1})


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pending_is_exactly_the_planned_injections_without_a_result(tmp_path):
    make_store(tmp_path / "c.sqlite", n=6, done=(1, 3, 4))
    with Store(tmp_path / "c.sqlite") as store:
        pending = store.pending()
        assert [pid for pid, _ in pending[1]] == [2, 5, 6]  # what a resume must still run
        assert [inj.cycle for _, inj in pending[1]] == [11, 14, 15]
        assert store.counts() == {"planned": 6, "done": 3, "masked": 3}
        assert store.add_result(3, "sdc", Observation(), {}) is False  # kept as it was
        assert store.counts()["masked"] == 3


def test_status_reads_a_store_it_cannot_write(tmp_path, capsys):
    path = tmp_path / "c.sqlite"
    make_store(path, n=4, done=(1,))
    os.chmod(path, 0o444)
    assert cli.main(["campaign", "status", str(path)]) == 0
    assert "1/4 done" in capsys.readouterr().out


def test_run_refuses_a_read_only_store_with_the_fix(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes read-only files")
    path = tmp_path / "c.sqlite"
    make_store(path, n=4)
    os.chmod(path, 0o444)
    with pytest.raises(StoreError, match=r"is read-only .*\(chmod u\+w"):
        Store(path)


def _foreign_db(path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    db.execute("INSERT INTO contacts VALUES ('ada', '123')")
    db.commit()
    db.close()


def _empty(path) -> None:
    path.write_bytes(b"")


def _text(path) -> None:
    path.write_text("name = 'not a store'\n")


def _truncated(path) -> None:
    full = path.parent / "whole" / "c.sqlite"
    full.parent.mkdir()
    make_store(full, n=300)
    path.write_bytes(full.read_bytes()[:1500])


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_foreign_db, "an SQLite database of another program (tables: contacts)"),
        (_empty, "is an empty file, not a campaign store"),
        (_text, "is not an SQLite file"),
        (_truncated, "cannot be read as a campaign store"),
    ],
    ids=["other-program", "empty", "not-sqlite", "truncated"],
)
@pytest.mark.parametrize("action", ["status", "report", "run"])
def test_what_is_not_a_store_is_refused_and_left_untouched(tmp_path, capsys, make, reason, action):
    path = tmp_path / "x.sqlite"
    make(path)
    before = _digest(path)
    argv = {"status": ["status", str(path)], "report": ["report", str(path)],
            "run": ["run", "--store", str(path)]}[action]  # fmt: skip
    assert cli.main(["campaign", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("orbithil: error: ") and reason in err, err
    assert "Traceback" not in err
    assert _digest(path) == before
    # nothing added beside it (reading a WAL file may leave SQLite's empty -wal and -shm)
    beside = {p.name for p in tmp_path.iterdir() if p.name.startswith("x.")} - {"x.sqlite"}
    assert beside <= {"x.sqlite-wal", "x.sqlite-shm"}
    assert not beside or (tmp_path / "x.sqlite-wal").stat().st_size == 0


def test_a_new_spec_is_not_planned_into_another_programs_database(tmp_path):
    path = tmp_path / "x.sqlite"
    _foreign_db(path)
    spec = spec_mod.parse({"size": {"injections": 3}, "chip": {"harden": [0]}})
    from orbithil.tools.campaign.run import create

    with pytest.raises(StoreError, match="another program"):
        create(path, spec)
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_an_unreachable_dask_scheduler_is_a_clear_error(tmp_path):
    import socket

    from orbithil.errors import ConfigError
    from orbithil.tools.campaign.run import connect_scheduler

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ConfigError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:"
                       r"\d+ within 2 s .* --executor local"):  # fmt: skip
        connect_scheduler(address, timeout_s=2)


def test_results_keep_how_they_were_decided_and_an_older_store_gains_the_columns(tmp_path):
    path = tmp_path / "c.sqlite"
    make_store(path, n=4)
    with sqlite3.connect(path) as db:  # as a store made before def/use pruning was
        db.execute("ALTER TABLE result DROP COLUMN pruning")
        db.execute("ALTER TABLE result DROP COLUMN fault_class")
        db.execute(
            "INSERT INTO result (plan_id, outcome, observation, finished) "
            "VALUES (1, 'masked', '{}', 0)"
        )
    with Store(path, readonly=True) as store:  # read as it is: its results were simulated
        assert store.pruning() == {1: {"simulated": 1}}
    with Store(path) as store:
        store.add_result(2, "latent", Observation(), {"pruning": "unread"})
        one_class = "u_mem.mem[3]:1:flip@50"
        store.add_result(3, "corrected", Observation(),
                         {"pruning": "representative", "fault_class": one_class})  # fmt: skip
        store.add_result(4, "corrected", Observation(),
                         {"pruning": "reused", "fault_class": one_class})  # fmt: skip
        assert store.pruning() == {
            1: {"simulated": 1, "unread": 1, "representative": 1, "reused": 1}
        }
        classes = store.db.execute(
            "SELECT plan_id, fault_class FROM result ORDER BY plan_id"
        ).fetchall()
    one_class = "u_mem.mem[3]:1:flip@50"
    assert classes == [(1, None), (2, None), (3, one_class), (4, one_class)]


# --- what a report and a resume read back (each test kills mutants of store.py that the
# tests above let through: make mutation, docs/reliability.md) ------------------------
def test_a_missing_store_is_made_only_when_asked(tmp_path):
    path = tmp_path / "c.sqlite"
    with pytest.raises(StoreError, match=r"no campaign store at .*c\.sqlite; `orbithil campaign"):
        Store(path)
    assert not path.exists()
    with Store(path, create=True) as store:
        assert store.counts() == {"planned": 0, "done": 0}
        assert not store.planned


def test_a_folder_is_not_a_store(tmp_path):
    with pytest.raises(StoreError, match=r"is a folder; a campaign store is a file"):
        Store(tmp_path, create=True)


def test_an_empty_database_is_a_new_store_to_write_and_no_campaign_to_read(tmp_path):
    path = tmp_path / "c.sqlite"
    sqlite3.connect(path).execute("PRAGMA user_version = 1").connection.close()
    assert path.read_bytes().startswith(b"SQLite format 3\x00")
    with pytest.raises(StoreError, match="holds no campaign yet"):
        Store(path, readonly=True)
    with Store(path) as store:
        assert store.meta("schema_version") == 1


def test_a_store_of_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "c.sqlite"
    make_store(path, n=1)
    with Store(path) as store:
        store.set_meta("schema_version", 2)
    for readonly in (False, True):
        with pytest.raises(StoreError, match="has store schema 2; this orbithil reads 1"):
            Store(path, readonly=readonly)


def test_the_plan_reads_back_with_its_builds_goldens_and_results(tmp_path):
    path = tmp_path / "c.sqlite"
    golden = Observation(outputs=("ab",), end_state="e", counters={"ECC_CORRECTED": 1})
    spec = spec_mod.parse({"size": {"injections": 3}, "chip": {"harden": [0]}})
    setup = {"harden": 1, "sim": "icarus", "workload": "digits", "seed": 7}
    with Store(path, create=True) as store:
        store.write_plan(spec.to_dict(), [(setup, {"u_regs": 32}, 123, golden, _injections(3))])
        assert store.planned
        assert store.meta("spec") == json.loads(json.dumps(spec.to_dict()))
        one = {"id": 1, "harden": 1, "sim": "icarus", "workload": "digits", "seed": 7}
        assert store.setups() == [{**one, "golden_cycles": 123, "bits": {"u_regs": 32}}]
        assert store.goldens() == {1: golden}
        sdc = Observation(outputs=("cd",), naks=1)
        assert store.add_result(3, "sdc", sdc, {"cycles": 9, "wall_s": 0.5, "stopped_early": 1})
        assert store.add_result(1, "masked", Observation(), {})
        assert list(store.results_of("sdc")) == [(1, "u_regs.r0", None, sdc)]
        rows = list(store.rows())  # in the order they finished
        assert [r[:9] for r in rows] == [
            (1, "icarus", "digits", "u_regs", "u_regs.r0", None, 2, 12, "sdc"),
            (1, "icarus", "digits", "u_regs", "u_regs.r0", None, 0, 10, "masked"),
        ]
        assert rows[0][9] <= rows[1][9]
        kept = store.db.execute(
            "SELECT cycles, wall_s, early, pruning, fault_class FROM result WHERE plan_id = 3"
        ).fetchone()
        assert kept == (9, 0.5, 1, None, None)
        assert store.db.execute("SELECT early FROM result WHERE plan_id = 1").fetchone() == (0,)


def test_a_plan_that_fails_halfway_writes_nothing(tmp_path):
    path = tmp_path / "c.sqlite"
    bad = [*_injections(2), None]  # the third is not an injection
    with Store(path, create=True) as store:
        with pytest.raises(AttributeError):
            store.write_plan({"x": 1}, [(SETUP, {"u_regs": 32}, 1, Observation(), bad)])
        assert not store.planned
        assert store.meta("spec") is None
        assert store.setups() == []
        assert store.counts() == {"planned": 0, "done": 0}


@pytest.mark.parametrize(
    ("error", "says"),
    [
        ("attempt to write a readonly database", "cannot be written (attempt to write a"),
        ("database or disk is full", "cannot be written: database or disk is full; free some"),
        ("file is not a database", "may be truncated or damaged"),
    ],
)
def test_an_sqlite_error_says_what_it_means_and_what_to_do(tmp_path, error, says):
    from orbithil.tools.campaign.store import sqlite_problem

    assert says in sqlite_problem(tmp_path / "c.sqlite", sqlite3.OperationalError(error))


def test_a_store_the_user_cannot_write_is_refused_for_a_run_and_read_for_status(
    tmp_path, monkeypatch
):
    # as a user other than root sees a read-only store (root may write any file)
    from orbithil.tools.campaign import store as store_mod

    path = tmp_path / "c.sqlite"
    make_store(path, n=2, done=(1,))
    monkeypatch.setattr(store_mod.os, "access", lambda p, mode: mode != os.W_OK)
    with pytest.raises(StoreError, match=r"is read-only .*\(chmod u\+w"):
        Store(path)
    with Store(path, readonly=True) as store:
        assert store.counts() == {"planned": 2, "done": 1, "masked": 1}


def test_a_store_that_cannot_be_read_says_why(tmp_path, monkeypatch):
    from orbithil.tools.campaign import store as store_mod

    path = tmp_path / "c.sqlite"
    make_store(path, n=1)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store_mod, "open", refuse, raising=False)
    with pytest.raises(StoreError, match=r"c\.sqlite cannot be read: Permission denied"):
        Store(path, readonly=True)


def test_a_store_with_a_table_of_its_own_user_still_opens(tmp_path):
    path = tmp_path / "c.sqlite"
    make_store(path, n=2)
    with sqlite3.connect(path) as db:  # e.g. a user's notes beside the results
        db.execute("CREATE TABLE notes (text TEXT)")
    with Store(path) as store:
        assert [pid for pid, _ in store.pending()[1]] == [1, 2]


def test_a_multi_bit_upset_is_planned_under_its_first_bit(tmp_path):
    path = tmp_path / "c.sqlite"
    mbu = Injection("u_mem.mem", 5, (3, 4, 5), 40, FaultModel.MBU, "u_mem")
    with Store(path, create=True) as store:
        store.write_plan({}, [(SETUP, {"u_mem": 64}, 100, Observation(), [mbu])])
        assert store.pending() == {1: [(1, mbu)]}
        store.add_result(1, "corrected", Observation(), {})
        assert [r[3:9] for r in store.rows()] == [("u_mem", "u_mem.mem", 5, 3, 40, "corrected")]
