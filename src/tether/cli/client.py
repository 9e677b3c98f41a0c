"""How CLI read commands reach data: the REST API when TETHER_URL is set (with
TETHER_API_KEY), else the local store directly through the same query functions the API uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import httpx
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from tether.config import Settings
from tether.core.errors import ERROR_TYPES, AuthenticationError, TetherError, UpstreamError
from tether.server import serialize
from tether.store import runs as run_store
from tether.store.engine import make_engine
from tether.store.migrate import current_revision

DEFAULT_URL = "http://127.0.0.1:7337"
_BY_TYPE = {cls.type: cls for cls in ERROR_TYPES}


class Client(Protocol):
    """What the CLI reads; both implementations return the API's JSON resources."""

    where: str

    def list_runs(
        self, filters: run_store.RunFilters, sort: str, limit: int, cursor: str | None
    ) -> dict[str, Any]: ...

    def get_run(self, run_id: str) -> dict[str, Any]: ...


class LocalClient:
    """Reads the database in `settings.db_url`, as `tether serve` would."""

    def __init__(self, engine: Engine, where: str) -> None:
        self.engine = engine
        self.where = where

    def list_runs(
        self, filters: run_store.RunFilters, sort: str, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        rows, next_cursor = run_store.list_runs(self.engine, filters, sort, limit, cursor)
        return serialize.page([serialize.run_resource(r) for r in rows], next_cursor)

    def get_run(self, run_id: str) -> dict[str, Any]:
        row = run_store.get_run(self.engine, run_id)
        return serialize.run_detail(row, run_store.span_tree(self.engine, run_id))


class RemoteClient:
    """Calls a tether server's REST API with a bearer key."""

    def __init__(self, url: str, api_key: str | None, transport: httpx.BaseTransport | None = None):
        self.where = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.where, headers=headers, timeout=30.0,
                                 transport=transport)  # fmt: skip

    def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"cannot reach tether at {self.where} ({exc.__class__.__name__}); start it with "
                "`tether serve` or point TETHER_URL at a running server"
            ) from None
        if resp.status_code >= 400:
            raise error_from_response(resp)
        data: dict[str, Any] = resp.json()
        return data

    def list_runs(
        self, filters: run_store.RunFilters, sort: str, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"sort": sort, "limit": limit}
        for name, value in vars(filters).items():
            if value is not None:
                params[name] = value.isoformat() if hasattr(value, "isoformat") else str(value)
        if cursor:
            params["cursor"] = cursor
        return self.request("GET", "/api/v1/runs", params=params)

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/runs/{run_id}")


def error_from_response(resp: httpx.Response) -> TetherError:
    """The server's `{"error": {type, message}}` as the matching TetherError subclass."""
    try:
        err = resp.json()["error"]
        cls = _BY_TYPE.get(err.get("type"), TetherError)
        message = str(err.get("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        cls, message = TetherError, f"HTTP {resp.status_code}: {resp.text[:200]}"
    if cls is AuthenticationError:
        message += " (set TETHER_API_KEY to a key with the needed scope)"
    return cls(message)


def local_engine(settings: Settings) -> Engine:
    """An engine on the local store; a missing or unmigrated database is a clear error."""
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise TetherError(
            f"no tether database at {url.database} yet: run `tether serve` (or `tether db "
            "upgrade`) first, or set TETHER_URL to read from a running server"
        )
    engine = make_engine(settings.db_url, pool_size=2)
    if current_revision(engine) is None:
        engine.dispose()
        raise TetherError("the database is not migrated: run `tether db upgrade` first")
    return engine


def make_client(settings: Settings) -> Client:
    if settings.url:
        return RemoteClient(settings.url, settings.api_key)
    return LocalClient(local_engine(settings), settings.db_url)


def server_client(settings: Settings) -> RemoteClient:
    """For commands that need the running server (a kill reaches its in-flight streams)."""
    return RemoteClient(settings.url or DEFAULT_URL, settings.api_key)
