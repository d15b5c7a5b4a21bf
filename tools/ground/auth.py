"""Console operators: users with roles, password hashing, sessions that expire.

Roles: an operator reads everything and sends any telecommand; a viewer reads; a tenant
(bound to one tenant of the compute-token ledger, flight/ledger.py) sends only the
commands a tenant's key may send, signed by the server with that tenant's key, and sees
its own commands, jobs and account and the payload's public state (tools/ground/api.py).

Passwords are hashed with scrypt (RFC 7914, ``hashlib.scrypt``: in the standard library, so
no extra package holds the keys to the console) at the OWASP-recommended cost (N=2**17,
r=8, p=1: 128 MiB and a few hundred milliseconds per check, which also slows guessing).
The parameters are stored with each hash, so a later release can raise them. Users and
sessions live in the archive file (tools/ground/archive.py), one file to back up.

Sessions are random tokens (256 bits) given to the browser as an HttpOnly, SameSite=Strict
cookie and to scripts as a bearer token; only their SHA-256 is stored, so a copy of the
archive cannot be used to log in. They expire after a fixed time (8 h by default).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from orbithil.errors import ConfigError
from orbithil.flight.ledger import TENANT_NAME
from orbithil.tools.ground.archive import US, Archive, now_us


class Role(StrEnum):
    """What a user may do: a viewer reads; an operator also sends telecommands; a tenant
    submits and quotes its own jobs and reads its own account."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    TENANT = "tenant"


SCRYPT = {"n": 2**17, "r": 8, "p": 1, "dklen": 32}
_MAXMEM = 256 * 1024 * 1024  # N=2**17, r=8 needs 128 MiB; hashlib's default cap is 32 MiB
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
SESSION_HOURS = 8.0


class AuthError(ConfigError):
    """A user or password that cannot be used; the message says why (never the password)."""


def hash_password(
    password: str, *, salt: bytes | None = None, params: dict | None = None
) -> tuple[bytes, bytes, str]:
    """(salt, hash, parameters as text) of a password under scrypt."""
    params = dict(params or SCRYPT)
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, maxmem=_MAXMEM, **params)
    kdf = "scrypt:" + ",".join(f"{k}={params[k]}" for k in ("n", "r", "p", "dklen"))
    return salt, digest, kdf


def _parse_kdf(kdf: str) -> dict:
    name, _, rest = kdf.partition(":")
    if name != "scrypt":
        raise AuthError(f"unknown password hash {name!r}")
    return {k: int(v) for k, v in (item.split("=") for item in rest.split(","))}


def check_password(password: str, salt: bytes, digest: bytes, kdf: str) -> bool:
    _, computed, _ = hash_password(password, salt=salt, params=_parse_kdf(kdf))
    return hmac.compare_digest(computed, digest)


@dataclass(frozen=True)
class Session:
    user: str
    role: Role
    expires_us: int
    tenant: str | None = None  # a tenant user's tenant


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Users:
    """Users and sessions in an archive file."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._dummy: tuple[bytes, bytes, str] | None = None

    def add(self, name: str, role: Role | str, password: str, *, tenant: str | None = None,
            replace: bool = False) -> None:  # fmt: skip
        """Add a user (``tenant``: the tenant a tenant user acts for, and only for them)."""
        if not NAME.match(name):
            raise AuthError(f"user name {name!r}: use 1..64 letters, digits, _ . @ -")
        try:
            role = Role(role)
        except ValueError:
            *most, last = (r.value for r in Role)
            raise AuthError(f"role {role!r}: use {', '.join(most)} or {last}") from None
        if (role is Role.TENANT) != (tenant is not None):
            raise AuthError(
                f"user {name}: a tenant user needs --tenant NAME (the tenant it acts for)"
                if role is Role.TENANT
                else f"user {name}: only a tenant user (--role tenant) has a tenant"
            )
        if tenant is not None and not TENANT_NAME.match(tenant):
            raise AuthError(f"tenant {tenant!r}: use 1..32 letters, digits, '_', '.' or '-'")
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"the password is shorter than {MIN_PASSWORD} characters")
        salt, digest, kdf = hash_password(password)
        db = self.archive.connect()
        try:
            with db:
                verb = "INSERT OR REPLACE" if replace else "INSERT"
                db.execute(
                    f"{verb} INTO users (name, role, salt, hash, kdf, created_us, tenant) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, role.value, salt, digest, kdf, now_us(), tenant),
                )
                if replace:  # a new password or role ends the user's sessions
                    db.execute("DELETE FROM sessions WHERE user = ?", (name,))
        except sqlite3.IntegrityError:
            raise AuthError(
                f"user {name!r} exists; `orbithil ground user add {name} --replace` sets a "
                "new password and role"
            ) from None

    def remove(self, name: str) -> None:
        db = self.archive.connect()
        with db:
            if db.execute("DELETE FROM users WHERE name = ?", (name,)).rowcount == 0:
                raise AuthError(f"no user {name!r}")
            db.execute("DELETE FROM sessions WHERE user = ?", (name,))

    def list(self) -> list[dict]:
        rows = (
            self.archive.connect()
            .execute("SELECT name, role, created_us, tenant FROM users ORDER BY name")
            .fetchall()
        )
        return [{"name": r[0], "role": r[1], "created_us": r[2], "tenant": r[3]} for r in rows]

    def authenticate(self, name: str, password: str) -> Role | None:
        """The user's role if the password is right, else None (same cost either way)."""
        row = (
            self.archive.connect()
            .execute("SELECT role, salt, hash, kdf FROM users WHERE name = ?", (name,))
            .fetchone()
        )
        if row is None:
            # checking a password nobody has still costs one scrypt: how long a login
            # takes does not tell which user names exist
            if self._dummy is None:
                self._dummy = hash_password(secrets.token_hex(8))
            salt, digest, kdf = self._dummy
            check_password(password, salt, digest, kdf)
            return None
        role, salt, digest, kdf = row
        return Role(role) if check_password(password, salt, digest, kdf) else None

    # --- sessions ---
    def open_session(
        self, name: str, role: Role, *, hours: float = SESSION_HOURS
    ) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        now = now_us()
        row = self.archive.connect().execute("SELECT tenant FROM users WHERE name = ?", (name,))
        session = Session(name, role, now + int(hours * 3600 * US), (row.fetchone() or (None,))[0])
        db = self.archive.connect()
        with db:
            db.execute("DELETE FROM sessions WHERE expires_us < ?", (now,))
            db.execute(
                "INSERT INTO sessions (token_hash, user, role, created_us, expires_us) "
                "VALUES (?, ?, ?, ?, ?)",
                (_token_hash(token), name, role.value, now, session.expires_us),
            )
        return token, session

    def session(self, token: str | None) -> Session | None:
        """The live session of a token, or None (unknown, expired or of a removed user)."""
        if not token:
            return None
        row = (
            self.archive.connect()
            .execute(
                "SELECT s.user, s.role, s.expires_us, u.tenant FROM sessions s "
                "JOIN users u ON u.name = s.user WHERE s.token_hash = ?",
                (_token_hash(token),),
            )
            .fetchone()
        )
        if row is None or row[2] <= now_us():
            return None
        return Session(row[0], Role(row[1]), row[2], row[3])

    def close_session(self, token: str) -> None:
        db = self.archive.connect()
        with db:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (_token_hash(token),))
