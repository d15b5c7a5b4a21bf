"""A Python client of the ground server's API (tools/ground/api.py).

    with GroundClient("http://127.0.0.1:8080") as c:
        c.login("ada", password)
        record = c.command("SET_MODE", mode="NOMINAL", wait_s=5)   # state: COMPLETED
        c.latest()["MODE"]["value"]
        c.history("UPTIME_S", since="10m")
        c.command("QUOTE_JOB", count=10, policy="tmr")["result"]["hold"]   # tokens
        c.ledger(tenant="acme")["accounts"]["acme"]["available"]
        for message in c.stream(timeout=5):      # telemetry, events, verification stages
            ...

Every call has a timeout; an HTTP error raises ``ApiError`` with the status and the
server's message.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx


class ApiError(Exception):
    """The server refused a request: ``status`` (401, 403, 404, 422, ...) and its reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class GroundClient:
    def __init__(self, url: str, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GroundClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs):
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(
                response.status_code, detail if isinstance(detail, str) else json.dumps(detail)
            )
        if response.headers.get("content-type", "").startswith("text/csv"):
            return response.text
        return response.json() if response.content else None

    # --- sessions ---
    def login(self, user: str, password: str) -> dict:
        """Open a session; later calls use its token."""
        answer = self._request("POST", "/api/login", json={"username": user, "password": password})
        self.token = answer["token"]
        return answer

    def logout(self) -> None:
        self._request("POST", "/api/logout")
        self.token = None

    def me(self) -> dict:
        return self._request("GET", "/api/me")

    # --- reading ---
    def dictionary(self) -> dict:
        return self._request("GET", "/api/dictionary")

    def status(self) -> dict:
        return self._request("GET", "/api/status")

    def latest(self) -> dict:
        """Channel name -> {"value", "rx_us", "onboard_us"}."""
        return self._request("GET", "/api/telemetry")

    def history(
        self, channel: str, *, since: str = "1h", until: str = "now", max_points: int = 0
    ) -> dict:
        return self._request(
            "GET",
            f"/api/telemetry/{channel}/history",
            params={"since": since, "until": until, "max_points": max_points},
        )

    def events(self, *, since: str = "1d", limit: int = 200) -> list[dict]:
        return self._request("GET", "/api/events", params={"since": since, "limit": limit})

    def passes(self, *, hours: float = 24.0, start: str | float | None = None) -> dict:
        """Each station's passes and the contact windows over ``hours`` from ``start``
        (an age such as ``2h``: that long ago, an ISO time or epoch seconds; default now)."""
        params = {"hours": hours, **({"start": start} if start is not None else {})}
        return self._request("GET", "/api/passes", params=params)

    # --- tenants and the ledger ---
    def tenants(self) -> list[dict]:
        """The stack's tenants with their accounts (a tenant user: its own)."""
        return self._request("GET", "/api/tenants")

    def ledger(self, *, tenant: str | None = None, book: str | None = None,
               limit: int = 100) -> dict:  # fmt: skip
        """The ledger's last ``limit`` transactions (of one tenant), accounts and books."""
        params = {"limit": limit, **({"tenant": tenant} if tenant else {}),
                  **({"book": book} if book else {})}  # fmt: skip
        return self._request("GET", "/api/ledger", params=params)

    def statement(self, *, tenant: str | None = None, since: str | None = None,
                  until: str | None = None, csv: bool = False) -> dict | str:  # fmt: skip
        """A tenant's statement over a period (``since``/``until``: ages, ISO times or
        epoch seconds); ``csv``: the CSV text."""
        given = {"tenant": tenant, "from": since, "to": until}
        params = {"format": "csv" if csv else "json"}
        params |= {k: v for k, v in given.items() if v is not None}
        return self._request("GET", "/api/statement", params=params)

    # --- commanding ---
    def send(self, name: str, **args) -> dict:
        """Send a telecommand (checked and signed by the server); its record with ``seq``."""
        return self._request("POST", "/api/commands", json={"name": name, "args": args})

    def command(self, name: str, *, wait_s: float = 10.0, **args) -> dict:
        """Send and wait up to ``wait_s`` for COMPLETED or FAILED: the record's ``state``
        says which (or how far it got)."""
        return self._request(
            "POST",
            "/api/commands",
            json={"name": name, "args": args, "wait_s": wait_s},
            timeout=self.timeout + wait_s,
        )

    def command_state(self, seq: int) -> dict:
        return self._request("GET", f"/api/commands/{seq}")

    def commands(self, *, limit: int = 50) -> list[dict]:
        return self._request("GET", "/api/commands", params={"limit": limit})

    # --- live ---
    def stream(self, *, timeout: float = 10.0) -> Iterator[dict]:
        """Messages of the WebSocket stream (the first is ``hello``) until ``timeout``
        seconds pass with none; the caller may stop iterating at any time."""
        from websockets.sync.client import connect

        ws_url = "ws" + self.url[4:] + "/api/stream"
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        with connect(ws_url, additional_headers=headers, open_timeout=self.timeout) as ws:
            while True:
                try:
                    text = ws.recv(timeout=timeout)
                except TimeoutError:
                    return
                yield json.loads(text)

    def wait_for(self, predicate, *, timeout: float = 10.0) -> dict:
        """The first stream message meeting ``predicate``; TimeoutError with the last
        message seen if none does within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        last = None
        for message in self.stream(timeout=max(0.05, deadline - time.monotonic())):
            if predicate(message):
                return message
            last = message
            if time.monotonic() > deadline:
                break
        raise TimeoutError(f"no matching message within {timeout} s; last seen: {last}")
