"""The campaign store: one SQLite file in WAL mode.

The whole plan is written (one transaction) before anything runs; each result is
committed by itself the moment it arrives, so a killed campaign loses at most the
injections in flight, and ``pending()`` is exactly what a resume must still run. A
result's key is its plan row, so nothing can be stored twice. WAL lets another process
read status while a campaign writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from orbithil.errors import OrbithilError
from orbithil.payload.classify import Observation, observation_from_dict, observation_to_dict
from orbithil.sim.faults import Injection, injection_from_dict, injection_to_dict

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS setup (
    id INTEGER PRIMARY KEY, harden INTEGER NOT NULL, sim TEXT NOT NULL,
    workload TEXT NOT NULL, workload_seed INTEGER NOT NULL,
    golden_cycles INTEGER, golden TEXT, bits TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS plan (
    id INTEGER PRIMARY KEY, setup_id INTEGER NOT NULL REFERENCES setup(id),
    idx INTEGER NOT NULL, block TEXT NOT NULL, target TEXT NOT NULL, word INTEGER,
    bit INTEGER NOT NULL, cycle INTEGER NOT NULL, injection TEXT NOT NULL,
    UNIQUE (setup_id, idx)
);
CREATE TABLE IF NOT EXISTS result (
    plan_id INTEGER PRIMARY KEY REFERENCES plan(id), outcome TEXT NOT NULL,
    observation TEXT NOT NULL, cycles INTEGER, wall_s REAL, early INTEGER,
    finished REAL NOT NULL, pruning TEXT, fault_class TEXT
);
CREATE INDEX IF NOT EXISTS result_finished ON result(finished);
"""


class StoreError(OrbithilError, RuntimeError):
    pass


SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
OWN_TABLES = {"meta", "setup", "plan", "result"}


class Store:
    """A campaign store. ``create``: make it if missing (a new file, an empty file or an
    SQLite database without tables). ``readonly``: only read (status and reports), which
    also works on a store the user cannot write. Anything but a campaign store (another
    program's database, a truncated or non-SQLite file) is refused with a ``StoreError``
    and left exactly as it was."""

    def __init__(self, path: Path | str, *, create: bool = False, readonly: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(
                f"no campaign store at {self.path}; `orbithil campaign run SPEC --store "
                f"{self.path}` makes one"
            )
        fresh = _check_file(self.path, create=create)
        if not readonly and not fresh and not os.access(self.path, os.W_OK):
            raise StoreError(
                f"{self.path} is read-only and a campaign writes its results into it; make it "
                f"writable (chmod u+w {self.path}) or give another store path"
            )
        try:
            if readonly:
                self.db = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                    isolation_level=None,
                )  # fmt: skip
            else:
                self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._open(readonly=readonly)
        except BaseException as exc:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self.db.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(sqlite_problem(self.path, exc)) from None
            raise

    def _open(self, *, readonly: bool) -> None:
        tables = {
            name
            for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if tables and not tables >= OWN_TABLES:
            raise StoreError(
                f"{self.path} is an SQLite database of another program (tables: "
                f"{', '.join(sorted(tables))}), not a campaign store; it was left as it was. "
                "Give the path of a store `orbithil campaign run` made, or a new path"
            )
        if readonly:
            if not tables:
                raise StoreError(
                    f"{self.path} holds no campaign yet (an empty database); "
                    f"`orbithil campaign run SPEC --store {self.path}` starts one"
                )
        else:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints
            self.db.executescript(SCHEMA)
            self._add_pruning_columns()
        version = self.meta("schema_version")
        if version is None and not readonly:
            self.set_meta("schema_version", SCHEMA_VERSION)
        elif version is None or int(version) != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has store schema {version}; this orbithil reads {SCHEMA_VERSION}"
            )

    def _add_pruning_columns(self) -> None:
        """A store made before results said how they were decided (sim.prune) gets the
        two columns, empty for its old results (they were all simulated)."""
        have = self._result_columns()
        for column in ("pruning", "fault_class"):
            if column not in have:
                self.db.execute(f"ALTER TABLE result ADD COLUMN {column} TEXT")

    def _result_columns(self) -> set[str]:
        return {row[1] for row in self.db.execute("PRAGMA table_info(result)")}

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- meta ---------------------------------------------------------------------------
    def meta(self, key: str):
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value))
        )

    # --- the plan -------------------------------------------------------------------------
    @property
    def planned(self) -> bool:
        return self.meta("planned") is not None

    def write_plan(
        self, spec: dict, setups: list[tuple[dict, dict, int, Observation, list[Injection]]]
    ) -> None:
        """Everything to run, in one transaction: (setup, bits per block, golden cycles,
        golden observation, injections) per build."""
        with self._transaction():
            self.set_meta("spec", spec)
            for setup, bits, cycles, golden, injections in setups:
                cur = self.db.execute(
                    "INSERT INTO setup (harden, sim, workload, workload_seed, golden_cycles, "
                    "golden, bits) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        setup["harden"],
                        setup["sim"],
                        setup["workload"],
                        setup["seed"],
                        cycles,
                        json.dumps(observation_to_dict(golden)),
                        json.dumps(bits),
                    ),
                )
                setup_id = cur.lastrowid
                self.db.executemany(
                    "INSERT INTO plan (setup_id, idx, block, target, word, bit, cycle, "
                    "injection) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            setup_id,
                            i,
                            inj.block,
                            inj.target,
                            inj.word,
                            inj.bits[0],
                            inj.cycle,
                            json.dumps(injection_to_dict(inj)),
                        )
                        for i, inj in enumerate(injections)
                    ],
                )
            self.set_meta("planned", time.time())

    def setups(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT id, harden, sim, workload, workload_seed, golden_cycles, bits FROM setup "
            "ORDER BY id"
        ).fetchall()
        return [
            {
                "id": r[0],
                "harden": r[1],
                "sim": r[2],
                "workload": r[3],
                "seed": r[4],
                "golden_cycles": r[5],
                "bits": json.loads(r[6]),
            }
            for r in rows
        ]

    def pending(self) -> dict[int, list[tuple[int, Injection]]]:
        """Planned injections without a result: setup id -> [(plan id, injection)]."""
        out: dict[int, list[tuple[int, Injection]]] = {}
        for plan_id, setup_id, data in self.db.execute(
            "SELECT p.id, p.setup_id, p.injection FROM plan p LEFT JOIN result r "
            "ON r.plan_id = p.id WHERE r.plan_id IS NULL ORDER BY p.id"
        ):
            out.setdefault(setup_id, []).append((plan_id, injection_from_dict(json.loads(data))))
        return out

    # --- results ----------------------------------------------------------------------------
    def add_result(self, plan_id: int, outcome: str, observation: Observation, info: dict) -> bool:
        """Commit one result; False if that injection already had one (kept as it was)."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO result (plan_id, outcome, observation, cycles, wall_s, "
            "early, finished, pruning, fault_class) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                plan_id,
                outcome,
                json.dumps(observation_to_dict(observation)),
                info.get("cycles"),
                info.get("wall_s"),
                int(bool(info.get("stopped_early"))),
                time.time(),
                info.get("pruning"),
                info.get("fault_class") or None,
            ),
        )
        return cur.rowcount == 1

    def pruning(self) -> dict[int, dict[str, int]]:
        """Per setup id: how many results each way of deciding gave (``sim.prune.Kind``:
        simulated, representative, reused, overwritten, unread; ``simulated`` for results
        stored before the store said, and for the board path)."""
        out: dict[int, dict[str, int]] = {}
        column = (
            "COALESCE(r.pruning, 'simulated')"
            if "pruning" in self._result_columns()
            else "'simulated'"
        )
        for sid, kind, n in self.db.execute(
            f"SELECT p.setup_id, {column}, COUNT(*) FROM result r JOIN plan p "
            "ON p.id = r.plan_id GROUP BY 1, 2 ORDER BY 1, 2"
        ):
            out.setdefault(sid, {})[kind] = n
        return out

    def counts(self) -> dict[str, int]:
        """Planned, done and per-outcome counts (cheap; safe while a campaign runs)."""
        planned = self.db.execute("SELECT COUNT(*) FROM plan").fetchone()[0]
        out = {"planned": planned, "done": 0}
        for outcome, n in self.db.execute("SELECT outcome, COUNT(*) FROM result GROUP BY 1"):
            out[outcome] = n
            out["done"] += n
        return out

    def goldens(self) -> dict[int, Observation]:
        """Each setup's golden observation, by setup id."""
        return {
            sid: observation_from_dict(json.loads(golden))
            for sid, golden in self.db.execute(
                "SELECT id, golden FROM setup WHERE golden IS NOT NULL"
            )
        }

    def results_of(self, outcome: str) -> Iterator[tuple[int, str, int | None, Observation]]:
        """(setup id, target, word, observation) of every result with ``outcome``."""
        for sid, target, word, observation in self.db.execute(
            "SELECT p.setup_id, p.target, p.word, r.observation FROM result r JOIN plan p "
            "ON p.id = r.plan_id WHERE r.outcome = ? ORDER BY r.plan_id",
            (outcome,),
        ):
            yield sid, target, word, observation_from_dict(json.loads(observation))

    def rows(self) -> Iterator[tuple]:
        """(harden, sim, workload, block, target, word, bit, cycle, outcome, finished) per
        result, in the order they finished."""
        yield from self.db.execute(
            "SELECT s.harden, s.sim, s.workload, p.block, p.target, p.word, p.bit, p.cycle, "
            "r.outcome, r.finished FROM result r JOIN plan p ON p.id = r.plan_id "
            "JOIN setup s ON s.id = p.setup_id ORDER BY r.finished, r.plan_id"
        )

    @contextlib.contextmanager
    def _transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


def _check_file(path: Path, *, create: bool) -> bool:
    """Refuse what cannot be a store before SQLite touches it; True for a new store (a
    missing or empty file, when ``create``)."""
    if not path.exists():
        return True
    if path.is_dir():
        raise StoreError(f"{path} is a folder; a campaign store is a file, e.g. {path}/c.sqlite")
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"{path} cannot be read: {exc.strerror}") from None
    if not head:
        if create:
            return True
        raise StoreError(
            f"{path} is an empty file, not a campaign store; `orbithil campaign run SPEC "
            f"--store {path}` makes one"
        )
    if head != SQLITE_MAGIC:
        raise StoreError(
            f"{path} is not an SQLite file, so not a campaign store; it was left as it was. "
            "Give the path of a store `orbithil campaign run` made, or a new path"
        )
    return False


def sqlite_problem(path: Path, exc: sqlite3.Error) -> str:
    """What an SQLite error on the store at ``path`` means to a user, and what to do."""
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return (
            f"{path} cannot be written ({text}); make it and its folder writable, or give "
            "another store path"
        )
    if "full" in text:
        return f"{path} cannot be written: {text}; free some space and run again to resume"
    return (
        f"{path} cannot be read as a campaign store ({text}): it may be truncated or "
        "damaged; give another store path (a damaged store cannot be resumed)"
    )
