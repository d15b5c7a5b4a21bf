"""The ground server's HTTP + WebSocket API and the browser console it serves.

FastAPI on Starlette, served by uvicorn: a maintained ASGI stack (all three are actively
released) with WebSockets in the same process and port as HTTP, request bodies validated by
pydantic, and the OpenAPI document generated from the routes (``/api/openapi.json``), so the
API's description cannot drift from the code. Swagger UI is not served: FastAPI's pages load
it from a CDN, and nothing here loads anything from outside.

Authentication: ``POST /api/login`` checks the password (scrypt, tools/ground/auth.py) and
opens a session that expires: an HttpOnly SameSite=Strict cookie for the browser, and the same
token as ``Authorization: Bearer`` for scripts. No session: 401. A viewer sending a
telecommand: 403. Telecommands are signed here with the server's key; keys never leave the
server.

A tenant user sends the commands a tenant may (submitting and quoting jobs), signed with
its tenant's key, and sees only its own: its commands, the events naming its tenant, its
``TENANT<n>_*`` channels and the payload's public ones, its account and statement. The rest
(status, other channels' history) is refused (403).

| method, path | who | what |
|---|---|---|
| POST /api/login, POST /api/logout, GET /api/me | anyone / user | sessions |
| GET /api/dictionary | user | commands, channels (with limits, units, enum names), events |
| GET /api/status | user | link, mode, FDIR, archive and server counters |
| GET /api/telemetry | user | the latest value of every channel |
| GET /api/telemetry/{channel}/history | user | archived samples in a time range |
| GET /api/events | user | archived events |
| GET /api/commands, GET /api/commands/{seq} | user | telecommands sent, verification stages |
| POST /api/commands | operator, tenant | check, sign and send a telecommand; its sequence number |
| GET /api/passes | user | station passes and contact windows over the next hours (TLE) |
| GET /api/tenants | user | tenants, their accounts in the ledger, their telemetry |
| GET /api/ledger | user | the ledger the stack reported: transactions, accounts, what is missing |
| GET /api/statement | user | a tenant's statement over a period, JSON or CSV (a tenant: its own) |
| WS /api/stream | user | telemetry, events, commands and verification stages as they arrive |
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations, some of
# them local to create_app, at definition time.
import asyncio
import contextlib
import importlib.resources
import io
import json
import logging
import math
import socket
import threading
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, WebSocket
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect

from orbithil import __version__
from orbithil.errors import ConfigError
from orbithil.flight.dictionary import CHANNEL_BY_NAME
from orbithil.tools.ground import ledger as ground_ledger
from orbithil.tools.ground.archive import US, ArchiveError, iso, now_us, parse_time
from orbithil.tools.ground.auth import Role, Session
from orbithil.tools.ground.server import GroundServer, dictionary_document

log = logging.getLogger(__name__)

COOKIE = "orbithil_session"
STATIC = importlib.resources.files("orbithil.tools.ground") / "static"
SECURITY_HEADERS = {
    # the console's own files only: no inline script, no other origin, no framing
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class LoginRequest(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=1024)


class LoginResponse(BaseModel):
    token: str = Field(description="bearer token (also set as an HttpOnly cookie)")
    user: str
    role: Role
    expires_us: int = Field(description="when the session ends, us since the epoch")
    tenant: str | None = Field(None, description="a tenant user's tenant")


class Me(BaseModel):
    user: str
    role: Role
    expires_us: int
    tenant: str | None = Field(None, description="a tenant user's tenant")


class CommandRequest(BaseModel):
    name: str = Field(description="command name from the dictionary (any case)")
    args: dict[str, int | str] = Field(default_factory=dict, description="argument values")
    wait_s: float = Field(
        0.0, ge=0, le=60, description="wait up to this long for COMPLETED or FAILED"
    )


class StageRecord(BaseModel):
    stage: str = Field(description="ACCEPTED, STARTED, COMPLETED or FAILED")
    reason: str
    rx_us: int


class CommandState(BaseModel):
    seq: int = Field(description="the telecommand's authentication sequence number")
    name: str
    args: dict[str, Any]
    user: str
    sent_us: int
    state: str = Field(description="SENT, ACCEPTED, STARTED, COMPLETED or FAILED")
    stages: list[StageRecord]
    key_id: int | None = Field(None, description="the key that signed it")
    result: dict[str, str] | None = Field(
        None,
        description="its completion's fields by the dictionary's result format (SUBMIT_JOB: "
        "job; QUOTE_JOB: hold, expected, ...)",
    )


class History(BaseModel):
    channel: str
    units: str
    rx_us: list[int]
    onboard_us: list[int]
    values: list[float | None]
    decimated: int = Field(description="every n-th sample (1: all)")


def _token(request_headers, cookies) -> str | None:
    header = request_headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return cookies.get(COOKIE)


def _same_origin(headers) -> bool:
    """A browser's request from another site (its Origin names another host) is refused;
    requests without Origin (scripts) are not browser cross-site requests."""
    origin = headers.get("origin")
    if not origin:
        return True
    return origin.split("://", 1)[-1].rstrip("/") == headers.get("host", "")


def create_app(server: GroundServer, *, secure_cookie: bool = False) -> FastAPI:
    """The ASGI application serving ``server``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        server.hub.bind(asyncio.get_running_loop())
        yield

    app = FastAPI(
        title="orbithil ground",
        version=__version__,
        description=__doc__.split("\n\n")[0],
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if request.url.path.startswith("/api/"):
            response.headers["cache-control"] = "no-store"
        return response

    def session(request: Request) -> Session:
        found = server.users.session(_token(request.headers, request.cookies))
        if found is None:
            raise HTTPException(
                401,
                "not logged in, or the session expired: POST /api/login",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if request.method != "GET" and not _same_origin(request.headers):
            raise HTTPException(403, "cross-origin request refused")
        return found

    def commander(found: Annotated[Session, Depends(session)]) -> Session:
        if found.role is Role.VIEWER:
            raise HTTPException(
                403, f"{found.user} is a {found.role.value}: only operators send telecommands"
            )
        return found

    def not_tenant(found: Annotated[Session, Depends(session)]) -> Session:
        if found.role is Role.TENANT:
            raise HTTPException(
                403,
                f"{found.user} is a tenant user: tenants see their own commands, jobs and "
                "account (/api/commands, /api/events, /api/tenants, /api/ledger)",
            )
        return found

    User = Annotated[Session, Depends(session)]
    Commander = Annotated[Session, Depends(commander)]
    Reader = Annotated[Session, Depends(not_tenant)]

    def tenant_of(found: Session) -> str | None:
        """The tenant a session sees for (None: everything)."""
        if found.role is not Role.TENANT:
            return None
        return found.tenant or "?"

    # --- sessions ---
    @app.post("/api/login", response_model=LoginResponse, tags=["session"])
    def login(body: LoginRequest, request: Request, response: Response):
        """Check a user's password and open a session (cookie and bearer token)."""
        if not _same_origin(request.headers):
            raise HTTPException(403, "cross-origin request refused")
        role = server.users.authenticate(body.username, body.password)
        if role is None:
            raise HTTPException(401, "wrong user name or password")
        token, opened = server.users.open_session(
            body.username, role, hours=server.config.session_hours
        )
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(server.config.session_hours * 3600),
            httponly=True,
            samesite="strict",
            secure=secure_cookie,
            path="/",
        )
        log.info("login: %s (%s)", body.username, role.value)
        return LoginResponse(token=token, user=opened.user, role=role,
                             expires_us=opened.expires_us, tenant=opened.tenant)  # fmt: skip

    @app.post("/api/logout", status_code=204, tags=["session"])
    def logout(found: User, request: Request, response: Response):
        """End this session."""
        server.users.close_session(_token(request.headers, request.cookies) or "")
        response.delete_cookie(COOKIE, path="/")

    @app.get("/api/me", response_model=Me, tags=["session"])
    def me(found: User):
        """Who this session belongs to."""
        return Me(user=found.user, role=found.role, expires_us=found.expires_us,
                  tenant=found.tenant)  # fmt: skip

    # --- reading ---
    @app.get("/api/dictionary", tags=["telemetry"])
    def dictionary(found: User) -> dict:
        """The command, telemetry and event dictionary (flight/dictionary.py)."""
        return dictionary_document()

    @app.get("/api/status", tags=["telemetry"])
    def status(found: Reader) -> dict:
        """Link, mode, FDIR and counters of the server."""
        return server.status_json()

    @app.get("/api/telemetry", tags=["telemetry"])
    def latest(found: User) -> dict:
        """The latest value of every channel received, with its times (a tenant: the
        channels it sees)."""
        return server.latest_json(tenant=tenant_of(found))

    @app.get("/api/telemetry/{channel}/history", response_model=History, tags=["telemetry"])
    def history(
        found: User,
        channel: str,
        since: Annotated[str, Query(description="age (10m, 2h), ISO time or epoch s")] = "1h",
        until: Annotated[str, Query(description="as since; default now")] = "now",
        max_points: Annotated[int, Query(ge=0, description="0: all")] = 5000,
    ):
        """Archived samples of one channel received between ``since`` and ``until``."""
        known = CHANNEL_BY_NAME.get(channel.upper())
        if known is None:
            raise HTTPException(404, f"no telemetry channel {channel!r}")
        tenant = tenant_of(found)
        if tenant is not None and not server.tenant_sees(known.name, tenant):
            raise HTTPException(403, f"{known.name} is not one of tenant {tenant}'s channels")
        try:
            series = server.archive.query(known.name, parse_time(since), parse_time(until))
        except ArchiveError as exc:
            raise HTTPException(422, str(exc)) from None
        step = 1
        if max_points and len(series) > max_points:
            step = -(-len(series) // max_points)
        picked = series.values[::step]
        values = picked.tolist()
        if not np.isfinite(picked).all():  # JSON has no NaN or infinity
            values = [v if math.isfinite(v) else None for v in values]
        return History(
            channel=known.name,
            units=known.units,
            rx_us=series.rx_us[::step].tolist(),
            onboard_us=series.onboard_us[::step].tolist(),
            values=values,
            decimated=step,
        )

    @app.get("/api/events", tags=["telemetry"])
    def events(
        found: User,
        since: Annotated[str, Query(description="age (10m, 2h), ISO time or epoch s")] = "1d",
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> list[dict]:
        """Archived events received since ``since`` (the newest ``limit``), oldest first (a
        tenant: of those, the ones naming its tenant)."""
        try:
            start = parse_time(since)
        except ArchiveError as exc:
            raise HTTPException(422, str(exc)) from None
        rows = server.archive.events(start, limit=limit)
        tenant = tenant_of(found)
        if tenant is not None:
            rows = [r for r in rows if server.visible({"type": "event", **r}, user=found.user,
                                                      tenant=tenant)]  # fmt: skip
        for row in rows:
            row["time"] = iso(row["rx_us"])
        return rows

    @app.get("/api/passes", tags=["passes"])
    async def passes(
        found: User,
        hours: Annotated[float, Query(gt=0, le=24 * 7, description="hours ahead")] = 24.0,
        start: Annotated[
            str | None, Query(description="where the plan starts: age, ISO time or epoch s")
        ] = None,
    ) -> dict:
        """Each station's passes and the merged contact windows over ``hours`` from
        ``start`` (default now), from the spacecraft's TLE (times in seconds since the TLE
        epoch and UTC; ``tle_age_days`` and ``stale`` say how far now is from the TLE's
        epoch)."""
        try:
            begin = parse_time(start) / US if start else None
        except ArchiveError as exc:
            raise HTTPException(422, str(exc)) from None
        try:
            return await asyncio.to_thread(server.passes_json, hours, start=begin)
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from None

    # --- commanding ---
    @app.get("/api/commands", response_model=list[CommandState], tags=["commands"])
    def commands(found: User, limit: Annotated[int, Query(ge=1, le=1000)] = 50):
        """Telecommands this server sent (newest last), with their verification stages (a
        tenant user: its own)."""
        own = found.user if found.role is Role.TENANT else None
        return server.command_records(limit, user=own)

    @app.get("/api/commands/{seq}", response_model=CommandState, tags=["commands"])
    def command_state(found: User, seq: int):
        """One telecommand's verification stages, by its sequence number."""
        record = server.command_record(seq)
        if found.role is Role.TENANT:  # only its own, and only while the server recalls it
            if record is None or record["user"] != found.user:
                raise HTTPException(404, f"no telecommand {seq} sent by {found.user}")
            return record
        if record is not None:
            return record
        stages = server.archive.verifications(seq)
        sent = [c for c in server.archive.commands(limit=1000) if c["seq"] == seq]
        if not stages and not sent:
            raise HTTPException(404, f"no telecommand {seq} sent by this server")
        state = next(
            (s["stage"] for s in reversed(stages) if s["stage"] in ("COMPLETED", "FAILED")), "SENT"
        )
        first = (
            sent[-1]
            if sent
            else {
                "name": stages[0]["command"],
                "args": "{}",
                "user": "?",
                "sent_us": stages[0]["rx_us"],
            }
        )
        return {
            "seq": seq,
            "name": first["name"],
            "args": json.loads(first["args"]),
            "user": first["user"],
            "sent_us": first["sent_us"],
            "state": state,
            "stages": stages,
            "key_id": first.get("key_id"),
        }

    @app.post("/api/commands", response_model=CommandState, status_code=202, tags=["commands"])
    async def send(found: Commander, body: CommandRequest):
        """Check a telecommand against the dictionary, sign it with the server's key (a
        tenant user's: with its tenant's key) and send it. 422: the dictionary refuses it
        (the message says why); 403: a tenant may not send it. With ``wait_s``, answers once
        it completed or failed (or the wait ran out: state says how far it got)."""
        try:
            record = await asyncio.to_thread(
                server.send_command, found.user, body.name, body.args, tenant=tenant_of(found)
            )
        except PermissionError as exc:
            raise HTTPException(403, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except OSError as exc:
            raise HTTPException(503, f"the telecommand could not be sent: {exc}") from None
        log.info("%s sent %s %s (seq %d)", found.user, record.name, record.args, record.seq)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + body.wait_s
        while record.state not in ("COMPLETED", "FAILED") and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return record.as_json()

    # --- tenants and the ledger ---
    @app.get("/api/tenants", tags=["ledger"])
    def tenants(found: User) -> list[dict]:
        """The stack's tenants (a tenant user: its own): whether the server can sign for
        it, its account in the ledger the stack reported last, its TENANT<n>_* telemetry."""
        return server.tenants_json(tenant_of(found))

    @app.get("/api/ledger", tags=["ledger"])
    def ledger(
        found: User,
        tenant: Annotated[str | None, Query(description="one tenant's transactions")] = None,
        book: Annotated[str | None, Query(description="a ledger id; default the latest")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> dict:
        """The ledger as booked from the stack's events: the last ``limit`` transactions
        with their postings, the accounts, and each ledger heard of with the transactions
        missing from it (a tenant user: its own account and transactions)."""
        own = tenant_of(found)
        if own is not None:
            if tenant not in (None, own):
                raise HTTPException(403, f"{found.user} sees tenant {own}'s account only")
            tenant = own
        return server.ledger_json(tenant=tenant, book=book, limit=limit)

    @app.get("/api/statement", tags=["ledger"])
    def statement(
        found: User,
        tenant: Annotated[
            str | None, Query(description="the tenant (a tenant user: its own)")
        ] = None,
        since: Annotated[
            str | None, Query(alias="from", description="age, ISO time or epoch s")
        ] = None,
        until: Annotated[str | None, Query(alias="to", description="as from; default now")] = None,
        book: Annotated[str | None, Query(description="a ledger id; default the latest")] = None,
        format: Annotated[str, Query(pattern="^(json|csv)$")] = "json",
    ):
        """A tenant's statement over a period (received time, ``from`` included, ``to``
        excluded): the balances at its start, each transaction, the balances at its end;
        ``format=csv`` as ``orbithil ledger statement --csv`` writes it."""
        own = tenant_of(found)
        if own is not None:
            if tenant not in (None, own):
                raise HTTPException(403, f"{found.user} sees tenant {own}'s statement only")
            tenant = own
        if tenant is None:
            raise HTTPException(422, "give tenant=NAME (the tenant whose statement it is)")
        try:
            low = parse_time(since) if since else None
            high = parse_time(until) if until else None
        except ArchiveError as exc:
            raise HTTPException(422, str(exc)) from None
        found_statement = server.statement_json(tenant, book=book, since_us=low, until_us=high)
        if found_statement is None:
            what = f"ledger {book}" if book else "ledger transaction"
            raise HTTPException(404, f"no {what} in the archive yet")
        if format == "csv":
            out = io.StringIO()
            ground_ledger.statement_csv(found_statement, out)
            return Response(out.getvalue(), media_type="text/csv")
        return found_statement

    # --- live ---
    @app.websocket("/api/stream")
    async def stream(websocket: WebSocket):
        """Telemetry, events, commands and verification stages as JSON messages, as they
        arrive. The first message is ``{"type": "hello", ...}`` with the latest values."""
        token = _token(websocket.headers, websocket.cookies)
        found = await asyncio.to_thread(server.users.session, token)
        if found is None or not _same_origin(websocket.headers):
            code = 401 if found is None else 403
            try:
                await websocket.send_denial_response(Response(status_code=code))
            except RuntimeError:  # a server without the denial-response extension
                await websocket.close(code=1008)
            return
        await websocket.accept()
        queue = server.hub.subscribe()
        receiver: asyncio.Future | None = None
        tenant = tenant_of(found)
        try:
            telemetry = server.latest_json(tenant=tenant)
            await websocket.send_json(
                {
                    "type": "hello",
                    "user": found.user,
                    "role": found.role.value,
                    "tenant": tenant,
                    "telemetry": telemetry,
                }
            )
            receiver = asyncio.ensure_future(websocket.receive())
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait(
                    {getter, receiver}, return_when=asyncio.FIRST_COMPLETED
                )
                if receiver in done:
                    getter.cancel()
                    message = receiver.result()
                    if message["type"] == "websocket.disconnect":
                        break
                    receiver = asyncio.ensure_future(websocket.receive())
                    continue
                message = getter.result()
                if tenant is not None:
                    message = server.visible(message, user=found.user, tenant=tenant)
                if message is not None:
                    await websocket.send_text(json.dumps(message))
                if found.expires_us < now_us():
                    await websocket.close(code=1008, reason="session expired")
                    break
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            server.hub.unsubscribe(queue)
            if receiver is not None and not receiver.done():
                receiver.cancel()

    # --- the console ---
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app


def bind_http(host: str, port: int) -> socket.socket:
    """The HTTP server's listening socket (bound before serving, so port 0 tells its port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(server: GroundServer, *, log_level: str = "warning"):
    """A uvicorn server for ``server``'s API (WebSockets by the ``websockets`` package's
    sans-I/O protocol)."""
    import uvicorn

    config = uvicorn.Config(
        create_app(server),
        log_level=log_level,
        ws="websockets-sansio",
        lifespan="on",
        access_log=False,
    )
    return uvicorn.Server(config)


class HttpThread:
    """The API served from a thread (tests, the benchmark); ``orbithil ground serve`` runs
    it in the main thread instead, where uvicorn handles SIGINT/SIGTERM."""

    def __init__(self, server: GroundServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind_http(host, port)
        self.uvicorn = uvicorn_server(server)
        self._thread = threading.Thread(
            target=self.uvicorn.run,
            kwargs={"sockets": [self.sock]},
            name="ground-http",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout: float = 10.0) -> "HttpThread":
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self.uvicorn.started and waited < timeout:
            deadline.wait(0.02)
            waited += 0.02
        if not self.uvicorn.started:
            raise RuntimeError(f"the HTTP server did not start within {timeout} s")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.uvicorn.should_exit = True
        self._thread.join(timeout)
        self.sock.close()
