"""Where every CLI command reads and writes: one backend, chosen in one order for all commands.

Precedence, first match wins:

1. `--database-url URL` on the command line: the local store at URL.
2. `TETHER_URL` (or `url:` in tether.yaml): the tether server there, with `TETHER_API_KEY`
   (or `api_key:`) as the bearer key.
3. Otherwise the local store: `TETHER_DATABASE_URL`, `database_url:` in tether.yaml, else
   `$TETHER_HOME/tether.db` (the one `tether serve` uses by default).

Read commands never create or migrate a database: a missing or unmigrated local store is an
error naming the command to run. Only the writes that can come before the first `tether serve`
(`keys create`, `policy apply`) create and migrate a local store (`create=True`).

The remote path imports the standard library's HTTP client alone (cli/rest.py; not even the
settings model when TETHER_URL decides it); the store is imported when a local backend opens it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tether.cli import rest
from tether.config import load_settings, remote_target
from tether.core.errors import ERROR_TYPES, AuthenticationError, TetherError, UpstreamError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from tether.config import Settings

_BY_TYPE = {cls.type: cls for cls in ERROR_TYPES}


class Remote:
    """A tether server's REST API, called with a bearer key (cli/rest.py, 30 s timeout)."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.where = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = rest.Client(self.where, headers, timeout=30.0)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One call; `path` is under the server root (`/api/v1/...`). Errors as TetherErrors."""
        try:
            resp = self.http.request(method, path, **kw)
        except rest.TransportError as exc:
            raise _unreachable(self.where, exc.kind) from None
        if resp.status_code >= 400:
            raise error_from_response(resp)
        return None if resp.status_code == 204 else resp.json()

    def lines(self, path: str) -> Iterator[str]:
        """The non-empty lines of a streamed response (JSON lines exports)."""
        try:
            with self.http.stream("GET", path) as resp:
                if resp.status_code >= 400:
                    raise error_from_response(resp.read())
                for line in resp.iter_lines():
                    if line:
                        yield line
        except rest.TransportError as exc:
            raise _unreachable(self.where, exc.kind) from None

    def close(self) -> None:
        """Nothing to release: each request has its own connection."""


class Local:
    """The local store named by the settings, opened on first use."""

    def __init__(self, settings: Settings, *, create: bool = False) -> None:
        self.settings = settings
        self.create = create
        self.where = _describe(settings.db_url)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = _open(self.settings, create=self.create)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


Backend = Remote | Local


def backend(database_url: str | None = None, *, create: bool = False) -> Backend:
    """The backend of the precedence above (see the module docstring)."""
    if database_url is None and (target := remote_target()) is not None:
        return Remote(target.url, target.api_key)  # the environment decides: no settings model
    settings = load_settings(database_url=database_url)
    if database_url is None and settings.url:
        return Remote(settings.url, settings.api_key)
    return Local(settings, create=create)


@contextmanager
def opened(database_url: str | None = None, *, create: bool = False) -> Iterator[Backend]:
    """`backend(...)`, closed afterwards."""
    be = backend(database_url, create=create)
    try:
        yield be
    finally:
        be.close()


class Reply(Protocol):
    """What error_from_response reads of a response (rest.Response, httpx.Response)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    def json(self) -> Any: ...


def error_from_response(resp: Reply) -> TetherError:
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


def _unreachable(where: str, kind: str) -> UpstreamError:
    return UpstreamError(
        f"cannot reach tether at {where} ({kind}); start it with "
        "`tether serve`, or unset TETHER_URL to use the local store"
    )


def _open(settings: Settings, *, create: bool) -> Engine:
    from sqlalchemy.engine import make_url

    from tether.store.engine import make_engine
    from tether.store.migrate import current_revision, upgrade

    if create:
        engine = make_engine(settings.db_url, pool_size=2)
        upgrade(engine)
        return engine
    url = make_url(settings.db_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise TetherError(
            f"no tether database at {url.database} yet: run `tether serve` (or `tether db "
            "upgrade`) first, or set TETHER_URL to use a running server"
        )
    engine = make_engine(settings.db_url, pool_size=2)
    if current_revision(engine) is None:
        engine.dispose()
        raise TetherError("the database is not migrated: run `tether db upgrade` first")
    return engine


def _describe(url: str) -> str:
    if url.startswith("sqlite"):
        return url.split("///", 1)[-1]
    return url.split("@")[-1]  # never print a password
