"""The compute-token ledger: tenants, their tokens in a double-entry book, and the life of
each job's tokens: quoted, reserved, then settled exactly once or released.

Tenants are the payload's customers. Each has a name and its own telecommand key id(s)
(``[[tenants]]`` tables: ``name``, ``key_ids``), so the stack knows from a telecommand's
authenticated key whose job it is, and a tenant's key may send only the commands the
dictionary marks for tenants (submitting, quoting). Every other key is an operator's.

The book. Every transaction is a set of postings to accounts that sums to zero, so the sum
of every balance is always zero and no token is made or lost:

| account | balance |
|---|---|
| ``issued`` | minus every token ever granted |
| ``tenant:<name>`` | what the tenant may spend |
| ``held:<name>`` | held for the tenant's jobs that are still running |
| ``earned:<name>`` | what the tenant's settled jobs paid |

| transaction | postings |
|---|---|
| grant (an operator's ``GRANT_TOKENS``) | issued -N, tenant +N |
| reserve (a job submitted) | tenant -H, held +H |
| settle (the job done) | held -H, earned +C, tenant +(H - C) |
| release (the job refused, failed or lost) | held -H, tenant +H |

A reservation is a *hold*, named by the number of its reserve transaction; it is closed
exactly once, by a settle or a release: closing it again is refused (``LedgerError``), so a
job is never charged twice.

The tariff (``Tariff``): a token buys ``cycles_per_token`` MAC-engine cycles, as the chips
count them (each run's cycle count, the figure the power model turns into joules). A job's
quote is its hold: enough for its worst case, every image run as often as its policy may
run it (``Pool.max_runs``: ``none`` once, ``rerun`` three times, ``dmr`` and ``tmr`` on up to
five chips), each run as long as the longest run seen so far. The job settles at the cycles
its completed images ran, never above its hold; images that failed cost nothing.

The store. With a ``store`` (``[ledger] store``, a SQLite file: flight/ledger_store.py)
every transaction is a row with its postings, committed to disk (WAL, synchronous=FULL)
before it takes effect for the caller; transactions that arrive together share one commit
(group commit), none acknowledged before it. The store is replayed at start (balances are
sums of its postings), so balances survive a restart and a crash. A hold still open at
start belonged to a job that did not survive the stop: it is released then, once. Without
a store the book lives in memory and starts empty.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from orbithil.config import read_toml
from orbithil.errors import ConfigError
from orbithil.flight.dictionary import MAX_TENANTS
from orbithil.flight.ledger_store import LedgerStore

log = logging.getLogger(__name__)

TENANT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
ISSUED = "issued"
RECENT = 1000  # transactions kept in memory for statements (the store keeps all)
STOPPED = "the stack stopped before the job finished"  # why a hold is released at a stop


def tenant_account(name: str) -> str:
    """The account of what tenant ``name`` may spend."""
    return f"tenant:{name}"


def held_account(name: str) -> str:
    """The account of what tenant ``name``'s running jobs hold."""
    return f"held:{name}"


def earned_account(name: str) -> str:
    """The account of what tenant ``name``'s settled jobs paid."""
    return f"earned:{name}"


class LedgerError(Exception):
    """A ledger operation refused (too few tokens, an unknown tenant, a hold already
    closed); the message says why and what to do."""


# --- tenants ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tenant:
    """A customer of the payload: ``index`` numbers its telemetry (``TENANT<index>_*``) and
    the ``tenant`` argument of ``GRANT_TOKENS``; ``key_ids`` are its telecommand keys."""

    index: int
    name: str
    key_ids: tuple[int, ...]


def tenants_from_data(data: object, *, where: str = "tenants") -> tuple[Tenant, ...]:
    """Tenants from ``[[tenants]]`` tables (``name``, ``key_ids`` or ``key_id``), in order;
    ConfigError says which entry is wrong and how."""
    if data in (None, ()):
        return ()
    if not isinstance(data, list) or not all(isinstance(d, Mapping) for d in data):
        raise ConfigError(f"{where}: give [[tenants]] tables, each with name and key_ids")
    if len(data) > MAX_TENANTS:
        raise ConfigError(f"{where}: {len(data)} tenants; at most {MAX_TENANTS}")
    tenants: list[Tenant] = []
    owners: dict[int, str] = {}
    for index, entry in enumerate(data):
        label = f"{where}, tenant {index + 1}"
        unknown = sorted(set(entry) - {"name", "key_ids", "key_id"})
        if unknown:
            raise ConfigError(f"{label}: unknown keys {unknown}; a tenant has name, key_ids")
        name = entry.get("name")
        if not isinstance(name, str) or not TENANT_NAME.match(name):
            raise ConfigError(f"{label}: name {name!r}: use 1..32 letters, digits, '_', '.' or '-'")
        if any(t.name == name for t in tenants):
            raise ConfigError(f"{label}: tenant {name!r} is given twice")
        if ("key_ids" in entry) == ("key_id" in entry):
            raise ConfigError(f"{label} ({name}): give key_ids = [..] (or one key_id)")
        ids = entry["key_ids"] if "key_ids" in entry else [entry["key_id"]]
        if not isinstance(ids, list) or not ids:
            raise ConfigError(f"{label} ({name}): key_ids is a list of key ids, e.g. [2]")
        for key_id in ids:
            if not isinstance(key_id, int) or isinstance(key_id, bool) or not 0 <= key_id <= 255:
                raise ConfigError(f"{label} ({name}): key id {key_id!r} is not in 0..255")
            if key_id in owners:
                raise ConfigError(
                    f"{label} ({name}): key id {key_id} is tenant {owners[key_id]}'s already; "
                    "each key belongs to one tenant"
                )
            owners[key_id] = name
        tenants.append(Tenant(index, name, tuple(ids)))
    return tuple(tenants)


def tenants_from_file(path: str | Path) -> tuple[Tenant, ...]:
    """The ``[[tenants]]`` tables of a TOML file (the flight config itself will do: its
    other keys are not read here)."""
    data = read_toml(path, "tenants file")
    if "tenants" not in data:
        raise ConfigError(f"{path} has no [[tenants]] tables (name, key_ids)")
    return tenants_from_data(data["tenants"], where=str(path))


def check_tenant_keys(tenants: Sequence[Tenant], keys: Iterable[int]) -> None:
    """Every tenant's key ids are among ``keys`` and at least one key is left for the
    operators (else nobody could change modes or grant tokens)."""
    keys = set(keys)
    for tenant in tenants:
        missing = sorted(set(tenant.key_ids) - keys)
        if missing:
            raise ConfigError(
                f"tenant {tenant.name}: key id(s) {missing} are not in the telecommand keys "
                f"(ids {sorted(keys)}); add them to the key file"
            )
    owned = {k for t in tenants for k in t.key_ids}
    if keys and keys <= owned:
        raise ConfigError(
            f"every telecommand key (ids {sorted(keys)}) is a tenant's: keep at least one "
            "for the operators"
        )


# --- the tariff ---------------------------------------------------------------------------
BUILDS = {"unhardened": 0, "hardened": 1}  # [ledger.prices] tables, by the chip's HARDEN


def _positive(value, what: str, *, at_least: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= at_least:
        raise ConfigError(f"{what}={value!r}: give a number >= {at_least:g}")
    return float(value)


@dataclass(frozen=True)
class Tariff:
    """What a token buys, the ``[ledger]`` table's price settings: ``cycles_per_token``
    MAC-engine cycles, or ``1/tokens_per_joule`` joules of the chip's energy (both add up);
    a run costs that times its build's and policy's factor (``prices``: build -> policy ->
    factor, default 1), times ``eclipse_multiplier`` when the power model has the
    spacecraft in eclipse (the battery pays)."""

    cycles_per_token: int = 1000
    tokens_per_joule: float = 0.0
    eclipse_multiplier: float = 1.0
    prices: tuple[tuple[int, str, float], ...] = ()  # (harden, policy, factor)

    def __post_init__(self) -> None:
        value = self.cycles_per_token
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"cycles_per_token={value!r}: give a whole number of cycles >= 1")
        _positive(self.tokens_per_joule, "tokens_per_joule")
        _positive(self.eclipse_multiplier, "eclipse_multiplier", at_least=1.0)

    def tokens(self, cycles: float) -> int:
        """Tokens for ``cycles`` cycles, rounded up (a started token is paid)."""
        return math.ceil(cycles / self.cycles_per_token) if cycles > 0 else 0

    def hold(self, images: int, runs_per_image: int, run_cycles: float) -> int:
        """The quote of a job: ``images`` images, each run at most ``runs_per_image``
        times, each run at most ``run_cycles`` cycles (at factor 1, in sunlight, no energy
        price: ``price`` has the rest)."""
        return self.tokens(images * runs_per_image * run_cycles)

    def factor(self, harden: int, policy: str) -> float:
        """The price factor of a run on a build under a policy (1 unless ``prices`` says)."""
        for build, name, factor in self.prices:
            if build == int(harden) and name == policy:
                return factor
        return 1.0

    def units(self, cycles: float, joules: float) -> float:
        """Tokens (unrounded) for a run's cycles and energy at factor 1 in sunlight."""
        return cycles / self.cycles_per_token + joules * self.tokens_per_joule

    def price(self, runs: Iterable[tuple[int, float, float]], policy: str, *,
              eclipse: bool) -> int:  # fmt: skip
        """Tokens for ``runs`` ((harden, cycles, joules) each) under ``policy``, rounded up
        once (a started token is paid); ``eclipse``: the eclipse multiplier applies."""
        total = sum(self.units(c, j) * self.factor(h, policy) for h, c, j in runs)
        if eclipse:
            total *= self.eclipse_multiplier
        return math.ceil(total - 1e-9) if total > 0 else 0


def prices_from_data(data: object) -> tuple[tuple[int, str, float], ...]:
    """``[ledger.prices]``: ``hardened``/``unhardened`` tables of policy = factor."""
    from orbithil.flight.dictionary import POLICIES

    if not isinstance(data, Mapping):
        raise ConfigError(
            "ledger prices: give [ledger.prices.hardened] and/or [ledger.prices.unhardened] "
            "tables of policy = factor, e.g. dmr = 1.5"
        )
    out = []
    for build, table in data.items():
        if build not in BUILDS:
            raise ConfigError(f"ledger prices: {build!r} is not a build; use "
                              f"{' or '.join(BUILDS)}")  # fmt: skip
        if not isinstance(table, Mapping):
            raise ConfigError(f"ledger prices.{build}: give a table of policy = factor")
        for policy, factor in table.items():
            if policy not in POLICIES:
                raise ConfigError(f"ledger prices.{build}.{policy}: not a policy; use "
                                  f"{', '.join(POLICIES)}")  # fmt: skip
            value = _positive(factor, f"ledger prices.{build}.{policy}")
            out.append((BUILDS[build], policy, value))
    return tuple(out)


LEDGER_SETTINGS = ("store", "cycles_per_token", "tokens_per_joule", "eclipse_multiplier",
                   "prices")  # fmt: skip


@dataclass(frozen=True)
class LedgerConfig:
    """The flight config's ``[ledger]`` table."""

    store: str = ""  # the SQLite file that keeps the book; "" keeps it in memory
    cycles_per_token: int = 1000
    tokens_per_joule: float = 0.0
    eclipse_multiplier: float = 1.0
    prices: tuple[tuple[int, str, float], ...] = ()

    @classmethod
    def from_mapping(cls, data: Mapping) -> LedgerConfig:
        if not isinstance(data, Mapping):
            raise ConfigError("ledger is a table of settings ([ledger]: store, cycles_per_token)")
        if "journal" in data:
            raise ConfigError(
                "ledger journal: the JSONL journal was replaced by a SQLite store; write "
                'store = "ledger.sqlite" instead of journal = ... (a new file: the old '
                "journal is not read)"
            )
        unknown = sorted(set(data) - set(LEDGER_SETTINGS))
        if unknown:
            raise ConfigError(
                f"unknown ledger setting(s) {', '.join(unknown)}; valid: "
                f"{', '.join(sorted(LEDGER_SETTINGS))}"
            )
        if not isinstance(data.get("store", ""), str):
            raise ConfigError('ledger store: give a file path, e.g. store = "ledger.sqlite"')
        values = dict(data)
        if "prices" in values:
            values["prices"] = prices_from_data(values["prices"])
        config = cls(**values)
        config.tariff  # noqa: B018 (checks the prices)
        return config

    @property
    def tariff(self) -> Tariff:
        return Tariff(self.cycles_per_token, self.tokens_per_joule, self.eclipse_multiplier,
                      self.prices)  # fmt: skip


# --- transactions ---------------------------------------------------------------------------
class Kind(StrEnum):
    """What a transaction does (its postings: ``postings``)."""

    GRANT = "grant"
    RESERVE = "reserve"
    SETTLE = "settle"
    RELEASE = "release"


def postings(kind: Kind | str, tenant: str, *, tokens: int = 0, charged: int = 0,
             released: int = 0) -> tuple[tuple[str, int], ...]:  # fmt: skip
    """The postings of a transaction (they sum to zero): ``tokens`` granted, reserved or
    released; a settle moves ``charged`` to earned and ``released`` back to the tenant."""
    kind = Kind(kind)
    own, held = tenant_account(tenant), held_account(tenant)
    if kind is Kind.GRANT:
        return ((ISSUED, -tokens), (own, tokens))
    if kind is Kind.RESERVE:
        return ((own, -tokens), (held, tokens))
    if kind is Kind.SETTLE:
        return ((held, -(charged + released)), (earned_account(tenant), charged), (own, released))
    return ((held, -tokens), (own, tokens))


@dataclass(frozen=True)
class Txn:
    """One transaction of the book. ``hold`` names the hold a reserve opens (its own
    number) or a settle/release closes; ``job`` is the payload's job id (job ids start
    again at 1 when the stack restarts; holds never repeat). ``cycles`` and ``runs``: what
    a settled job was metered at."""

    number: int
    kind: Kind
    tenant: str
    postings: tuple[tuple[str, int], ...]
    time_s: float  # Unix time
    job: int | None = None
    hold: int | None = None
    cycles: int = 0
    runs: int = 0
    why: str = ""
    available: int = 0  # the tenant's available tokens just after it

    def amount(self, account: str) -> int:
        return sum(amount for name, amount in self.postings if name == account)

    @property
    def tokens(self) -> int:
        """Tokens granted, reserved or released; what a settle charged."""
        if self.kind is Kind.SETTLE:
            return self.amount(earned_account(self.tenant))
        if self.kind is Kind.RESERVE:
            return self.amount(held_account(self.tenant))
        return self.amount(tenant_account(self.tenant))

    def as_json(self) -> dict:
        data = {
            "n": self.number,
            "kind": self.kind.value,
            "tenant": self.tenant,
            "postings": [list(p) for p in self.postings],
            "t": round(self.time_s, 6),
        }
        for name in ("job", "hold", "cycles", "runs", "why", "available"):
            value = getattr(self, name)
            if value not in (None, 0, ""):
                data[name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> Txn:
        return cls(
            number=int(data["n"]),
            kind=Kind(data["kind"]),
            tenant=str(data["tenant"]),
            postings=tuple((str(a), int(v)) for a, v in data["postings"]),
            time_s=float(data["t"]),
            job=data.get("job"),
            hold=data.get("hold"),
            cycles=int(data.get("cycles", 0)),
            runs=int(data.get("runs", 0)),
            why=str(data.get("why", "")),
            available=int(data.get("available", 0)),
        )


# Each transaction goes down as one event (flight/dictionary.py); the ground books it again
# from the event's fields (tools/ground/ledger.py), with the same postings.
EVENT_OF_KIND = {Kind.GRANT: "TOKENS_GRANTED", Kind.RESERVE: "TOKENS_RESERVED",
                 Kind.SETTLE: "JOB_SETTLED", Kind.RELEASE: "TOKENS_RELEASED"}  # fmt: skip
KIND_OF_EVENT = {name: kind for kind, name in EVENT_OF_KIND.items()}


def event_of(txn: Txn, book: str) -> tuple[str, dict]:
    """The event reporting ``txn`` of ledger ``book``: its name and fields."""
    fields = {"book": book, "txn": txn.number, "tenant": txn.tenant, "job": txn.job,
              "hold": txn.hold, "available": txn.available}  # fmt: skip
    if txn.kind is Kind.SETTLE:
        released = txn.amount(tenant_account(txn.tenant))
        fields |= {"charged": txn.tokens, "released": released, "cycles": txn.cycles,
                   "runs": txn.runs}  # fmt: skip
    else:
        fields |= {"tokens": txn.tokens, "why": txn.why}
    return EVENT_OF_KIND[txn.kind], fields


def txn_from_event(name: str, fields: Mapping[str, str], time_s: float) -> tuple[str, Txn]:
    """(ledger id, transaction) from a ledger event's fields (``Event.parse``): what the
    ground books. ValueError if the fields are not a ledger event's."""
    kind = KIND_OF_EVENT.get(name)
    if kind is None:
        raise ValueError(f"{name} is not a ledger event")
    tenant = fields["tenant"]
    if kind is Kind.SETTLE:
        posts = postings(kind, tenant, charged=int(fields["charged"]),
                         released=int(fields["released"]))  # fmt: skip
    else:
        posts = postings(kind, tenant, tokens=int(fields["tokens"]))
    job = fields.get("job")
    hold = fields["txn"] if kind is Kind.RESERVE else fields.get("hold")  # a reserve opens its own
    txn = Txn(
        number=int(fields["txn"]),
        kind=kind,
        tenant=tenant,
        postings=posts,
        time_s=time_s,
        job=int(job) if job not in (None, "None") else None,
        hold=int(hold) if hold not in (None, "None") else None,
        cycles=int(fields.get("cycles", 0)),
        runs=int(fields.get("runs", 0)),
        why=fields.get("why", ""),
        available=int(fields["available"]),
    )
    return fields["book"], txn


@dataclass(frozen=True)
class Hold:
    """Tokens reserved for a job until it is settled or released."""

    number: int  # the reserve transaction's number
    tenant: str
    tokens: int
    job: int | None


@dataclass
class TenantTotals:
    """Per tenant: the tokens in each of its accounts, and the compute it was charged for."""

    available: int = 0
    held: int = 0
    spent: int = 0
    cycles: int = 0  # metered cycles of its settled jobs
    runs: int = 0
    jobs: int = 0  # jobs settled


@dataclass
class _Book:
    balances: collections.Counter = field(default_factory=collections.Counter)
    holds: dict[int, Hold] = field(default_factory=dict)
    metered: collections.Counter = field(default_factory=collections.Counter)  # (tenant, what)
    count: int = 0


class Ledger:
    """The book of ``tenants`` (see the module docstring); thread-safe. ``store``: a SQLite
    file to keep it in (replayed now; created if missing)."""

    def __init__(self, tenants: Sequence[Tenant] = (), *, store: str | Path | None = None,
                 clock=time.time) -> None:  # fmt: skip
        self.tenants = {t.name: t for t in tenants}
        self.by_key = {k: t for t in tenants for k in t.key_ids}
        self._clock = clock
        self._lock = threading.Lock()  # the book in memory and the staged rows
        self._commit_lock = threading.Lock()  # one commit at a time
        self._committed = 0  # the last transaction on disk
        self._pending: list[tuple] = []  # rows of transactions not yet written
        self.commits = 0  # commits made (several transactions may share one)
        self._broken = ""  # why the store took no more transactions
        self._book = _Book()
        self.recent: collections.deque[Txn] = collections.deque(maxlen=RECENT)
        self.store_path = Path(store) if store else None
        self._store: LedgerStore | None = None
        self.book_id = secrets.token_hex(4)
        self.restart_releases: list[Txn] = []  # holds released at start (their jobs died)
        if self.store_path is not None:
            self._open_store()

    # --- the store ---
    def _open_store(self) -> None:
        assert self.store_path is not None
        self._store = LedgerStore(self.store_path, book_id=self.book_id)
        self.book_id = self._store.book_id
        try:
            for (
                number,
                kind,
                tenant,
                job,
                hold,
                cycles,
                runs,
                why,
                available,
                us,
                posts,
            ) in self._store.rows():
                txn = Txn(number, Kind(kind), tenant, tuple(posts), us / 1e6, job=job,
                          hold=hold, cycles=cycles, runs=runs, why=why,
                          available=available)  # fmt: skip
                self._check(txn, self._book.count + 1)
                self._apply(txn)
        except (ValueError, LedgerError, sqlite3.DatabaseError) as exc:
            self.close()
            raise ConfigError(
                f"ledger store {self.store_path} is damaged ({exc}); the book cannot be "
                f"trusted: run `orbithil ledger check {self.store_path}` and restore it from a "
                "copy"
            ) from None
        self._committed = self._book.count
        log.info("ledger %s: %d transactions replayed from %s", self.book_id,
                 self._book.count, self.store_path)  # fmt: skip
        for hold in list(self._book.holds.values()):
            txn = self.release(hold.number, STOPPED)
            self.restart_releases.append(txn)

    def close(self) -> None:
        """Write what is staged and close the store."""
        with self._commit_lock:
            if self._store is None:
                return
            if not self._broken:
                with self._lock:
                    batch, self._pending = self._pending, []
                try:
                    self._store.write(batch)
                except sqlite3.Error as exc:
                    log.error("ledger store %s: the last %d transactions could not be "
                              "written (%s)", self.store_path, len(batch), exc)  # fmt: skip
            self._store.close()
            self._store = None

    def _durable(self, number: int) -> None:
        """Return once transaction ``number`` is on disk. The first caller writes every
        transaction staged so far in one SQLite transaction and commits it; those that
        arrive meanwhile are staged for the next commit, and a caller whose transaction
        went with an earlier one returns at once (group commit). The book's lock is not
        held during the write, so others go on staging."""
        if self._store is None:
            return
        with self._commit_lock:
            if self._committed >= number:
                return
            if self._broken:  # the write that held it failed
                raise LedgerError(f"the ledger store {self.store_path} could not be written "
                                  f"({self._broken}): restart the stack")  # fmt: skip
            with self._lock:
                batch, self._pending = self._pending, []
                upto = self._book.count
            try:
                if self._store is None:
                    raise sqlite3.OperationalError("the store is closed")
                self._store.write(batch)
            except sqlite3.Error as exc:
                self._broken = f"a commit failed ({exc})"
                raise LedgerError(
                    f"the ledger store {self.store_path} cannot be written ({exc}); the "
                    "ledger takes no more transactions: restart the stack"
                ) from None
            self._committed = upto
            self.commits += 1

    # --- posting ---
    @staticmethod
    def _check(txn: Txn, expected_number: int) -> None:
        if txn.number != expected_number:
            raise LedgerError(f"transaction {txn.number} where {expected_number} was expected")
        if sum(amount for _, amount in txn.postings) != 0:
            raise LedgerError(f"transaction {txn.number}'s postings do not sum to zero")

    def _apply(self, txn: Txn) -> None:
        book = self._book
        book.count = txn.number
        for account, amount in txn.postings:
            book.balances[account] += amount
        if txn.kind is Kind.RESERVE:
            book.holds[txn.number] = Hold(txn.number, txn.tenant, txn.tokens, txn.job)
        elif txn.kind in (Kind.SETTLE, Kind.RELEASE):
            book.holds.pop(txn.hold, None)
        if txn.kind is Kind.SETTLE:
            book.metered[txn.tenant, "cycles"] += txn.cycles
            book.metered[txn.tenant, "runs"] += txn.runs
            book.metered[txn.tenant, "jobs"] += 1
        self.recent.append(txn)

    def _post(self, kind: Kind, tenant: str, posts, **fields) -> Txn:
        """Under the lock: number, stage for the store and apply a transaction (the caller
        waits for ``_durable`` before it returns it)."""
        own = tenant_account(tenant)
        available = self._book.balances[own] + sum(a for name, a in posts if name == own)
        txn = Txn(self._book.count + 1, kind, tenant, posts, self._clock(), **fields,
                  available=available)  # fmt: skip
        self._check(txn, self._book.count + 1)
        if self._broken:
            raise LedgerError(f"the ledger store {self.store_path} takes no more transactions "
                              f"({self._broken}): restart the stack")  # fmt: skip
        if self._store is not None:
            self._pending.append(((txn.number, txn.kind.value, tenant, txn.job, txn.hold,
                                   txn.cycles, txn.runs, txn.why, available,
                                   round(txn.time_s * 1e6)), posts))  # fmt: skip
        self._apply(txn)
        return txn

    def _tenant(self, name: str) -> Tenant:
        tenant = self.tenants.get(name)
        if tenant is None:
            known = ", ".join(self.tenants) or "none configured"
            raise LedgerError(f"no tenant {name!r} (tenants: {known})")
        return tenant

    def grant(self, tenant: str, tokens: int) -> Txn:
        """Give ``tenant`` ``tokens`` more tokens to spend."""
        self._tenant(tenant)
        if tokens < 1:
            raise LedgerError(f"grant {tokens} tokens: give 1 or more")
        with self._lock:
            txn = self._post(Kind.GRANT, tenant, postings(Kind.GRANT, tenant, tokens=tokens))
        self._durable(txn.number)
        return txn

    def affordable(self, tenant: str, tokens: int) -> None:
        """Whether ``tenant`` could reserve ``tokens`` now; LedgerError says why not."""
        with self._lock:
            self._affordable_locked(tenant, tokens)

    def _affordable_locked(self, tenant: str, tokens: int) -> None:
        self._tenant(tenant)
        if tokens < 0:
            raise LedgerError(f"reserve {tokens} tokens: give 0 or more")
        available = self._book.balances[tenant_account(tenant)]
        if tokens > available:
            raise LedgerError(
                f"tenant {tenant} has {available} tokens available and this job's quote is "
                f"{tokens}: ask an operator for a grant (GRANT_TOKENS), or submit fewer images "
                "or a cheaper policy"
            )

    def reserve(self, tenant: str, tokens: int, *, job: int | None = None) -> Txn:
        """Hold ``tokens`` of ``tenant``'s for a job; refused when it has fewer available.
        The returned transaction's number names the hold."""
        with self._lock:
            self._affordable_locked(tenant, tokens)
            txn = self._post(Kind.RESERVE, tenant, postings(Kind.RESERVE, tenant, tokens=tokens),
                             job=job, hold=self._book.count + 1)  # fmt: skip
        self._durable(txn.number)
        return txn

    def _open_hold(self, hold: int) -> Hold:
        found = self._book.holds.get(hold)
        if found is None:
            raise LedgerError(f"hold {hold} is not open (settled or released already, or "
                              "never made): nothing was charged")  # fmt: skip
        return found

    def settle(self, hold: int, tokens: int, *, cycles: int = 0, runs: int = 0) -> Txn:
        """Close ``hold``: charge ``tokens`` (at most the hold) and give the rest back."""
        with self._lock:
            found = self._open_hold(hold)
            charged = max(0, min(tokens, found.tokens))
            posts = postings(Kind.SETTLE, found.tenant, charged=charged,
                             released=found.tokens - charged)  # fmt: skip
            txn = self._post(Kind.SETTLE, found.tenant, posts, job=found.job, hold=hold,
                             cycles=cycles, runs=runs)  # fmt: skip
        self._durable(txn.number)
        return txn

    def release(self, hold: int, why: str) -> Txn:
        """Close ``hold`` charging nothing: its job was refused, failed or lost."""
        with self._lock:
            found = self._open_hold(hold)
            posts = postings(Kind.RELEASE, found.tenant, tokens=found.tokens)
            txn = self._post(Kind.RELEASE, found.tenant, posts, job=found.job, hold=hold,
                             why=why)  # fmt: skip
        self._durable(txn.number)
        return txn

    # --- reading ---
    def balance(self, account: str) -> int:
        with self._lock:
            return self._book.balances[account]

    def balances(self) -> dict[str, int]:
        with self._lock:
            return {a: v for a, v in sorted(self._book.balances.items()) if v}

    def available(self, tenant: str) -> int:
        return self.balance(tenant_account(tenant))

    def holds(self) -> list[Hold]:
        with self._lock:
            return list(self._book.holds.values())

    @property
    def transactions(self) -> int:
        with self._lock:
            return self._book.count

    def history(self, first: int, last: int) -> list[Txn]:
        """Transactions ``first``..``last`` (those that exist): from memory when they are
        among the last ``RECENT``, else from the store."""
        with self._commit_lock, self._lock:  # (the store's connection: one user at a time)
            last = min(last, self._book.count)
            if first > last:
                return []
            if not self.recent or self.recent[0].number <= first or self._store is None:
                return [t for t in self.recent if first <= t.number <= last]
            return [
                Txn(number, Kind(kind), tenant, tuple(posts), us / 1e6, job=job, hold=hold,
                    cycles=cycles, runs=runs, why=why, available=available)
                for number, kind, tenant, job, hold, cycles, runs, why, available, us, posts
                in self._store.rows(first, last)
            ]  # fmt: skip

    def totals(self, tenant: str) -> TenantTotals:
        with self._lock:
            b, m = self._book.balances, self._book.metered
            return TenantTotals(
                available=b[tenant_account(tenant)],
                held=b[held_account(tenant)],
                spent=b[earned_account(tenant)],
                cycles=m[tenant, "cycles"],
                runs=m[tenant, "runs"],
                jobs=m[tenant, "jobs"],
            )

    def summary(self) -> dict:
        """The book at a glance: transactions, tokens issued (granted ever), held and
        earned over all tenants, and open holds (``totals`` has one tenant's)."""
        with self._lock:
            b = self._book.balances
            return {
                "txns": self._book.count,
                "issued": -b[ISSUED],
                "held": sum(v for a, v in b.items() if a.startswith("held:")),
                "earned": sum(v for a, v in b.items() if a.startswith("earned:")),
                "holds": len(self._book.holds),
            }

    def check(self) -> None:
        """The book's invariants: balances sum to zero, no tenant below zero, the held
        accounts equal the open holds. LedgerError says which is broken."""
        with self._lock:
            b = self._book.balances
            if sum(b.values()) != 0:
                raise LedgerError(f"the balances sum to {sum(b.values())}, not 0")
            for account, value in b.items():
                if value < 0 and account != ISSUED:
                    raise LedgerError(f"account {account} is at {value}")
            open_by_tenant = collections.Counter()
            for hold in self._book.holds.values():
                open_by_tenant[hold.tenant] += hold.tokens
            for account, value in b.items():
                if account.startswith("held:") and value != open_by_tenant[account[5:]]:
                    raise LedgerError(f"{account} is {value}; its open holds sum to "
                                      f"{open_by_tenant[account[5:]]}")  # fmt: skip


__all__ = [
    "ISSUED",
    "MAX_TENANTS",
    "STOPPED",
    "Hold",
    "Kind",
    "Ledger",
    "LedgerConfig",
    "LedgerError",
    "Tariff",
    "Tenant",
    "Txn",
    "check_tenant_keys",
    "event_of",
    "postings",
    "tenants_from_data",
    "tenants_from_file",
    "txn_from_event",
]
