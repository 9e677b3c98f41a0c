"""The JSON calls of the CLI's remote backend, on the standard library: importing httpx and
httpcore cost more than the rest of a remote `tether runs list` (bench/startup.py).

What the CLI needs of an HTTP client and nothing more: one request at a time, a bearer key,
query parameters, a JSON body, a 30 s socket timeout, no redirects followed, TLS verified
against the system store and certifi's bundle (`SSL_CERT_FILE` / `SSL_CERT_DIR` as OpenSSL
reads them), and the `HTTP(S)_PROXY` / `NO_PROXY` environment as urllib reads it. Transport
failures are `TransportError`s named like httpx's (`ConnectError`, `ReadTimeout`...), so
messages read as they did when the CLI used httpx.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

_PATH_SAFE = "/:@!$&'()*+,;=-._~%"  # RFC 3986 path characters, and escapes already made


class TransportError(Exception):
    """The request got no HTTP response; `kind` names the failure as httpx did."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class Response:
    """A whole response: `status_code`, `content`, `text`, `json()`."""

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _query_value(value: Any) -> str:
    # as httpx encodes primitives: booleans lower-case, None empty
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


def _query(params: Mapping[str, Any]) -> str:
    pairs = []
    for key, value in params.items():
        for one in value if isinstance(value, list | tuple) else [value]:
            pairs.append((key, _query_value(one)))
    return urlencode(pairs)


def _tls() -> ssl.SSLContext:
    """Verifying TLS (hostname and chain): the system store, plus certifi's bundle (httpx's
    default store, so what verified before still does)."""
    import certifi

    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=certifi.where())
    return ctx


class Streamed:
    """An open response: `status_code`, then `read()` or `iter_lines()`; read errors come out
    as TransportErrors, and only those (the caller's own errors pass through untouched)."""

    def __init__(self, raw: http.client.HTTPResponse) -> None:
        self.raw = raw
        self.status_code = raw.status

    def read(self) -> Response:
        try:
            return Response(self.status_code, self.raw.read())
        except (http.client.HTTPException, OSError) as exc:
            raise _failed(exc) from None

    def iter_lines(self) -> Iterator[str]:
        """The lines of the body as they arrive, without their line ends."""
        while True:
            try:
                line = self.raw.readline()
            except (http.client.HTTPException, OSError) as exc:
                raise _failed(exc) from None
            if not line:
                return
            yield line.decode("utf-8", "replace").rstrip("\r\n")

    def close(self) -> None:
        self.raw.close()


class Client:
    """Requests to one server root (`base_url`, a path prefix allowed) with fixed headers."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"User-Agent": "tether-cli", "Accept": "application/json", **headers}
        self.timeout = timeout
        self._opener: urllib.request.OpenerDirector | None = None

    def _open(self) -> urllib.request.OpenerDirector:
        if self._opener is None:
            # No redirect and no error handlers: a 3xx or a 4xx is returned, not followed or
            # raised. The TLS context is only made for an https server (it reads CA files).
            opener = urllib.request.OpenerDirector()
            handlers: list[urllib.request.BaseHandler] = [
                urllib.request.ProxyHandler(),
                urllib.request.HTTPHandler(),
            ]
            if self.base_url.startswith("https:"):
                handlers.append(urllib.request.HTTPSHandler(context=_tls()))
            for handler in handlers:
                opener.add_handler(handler)
            self._opener = opener
        return self._opener

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[Streamed]:
        """The open response to one request, closed after the block."""
        resp = self._send(method, path, params, json, headers)
        try:
            yield resp
        finally:
            resp.close()

    def request(self, method: str, path: str, **kw: Any) -> Response:
        """One request, its whole response read."""
        with self.stream(method, path, **kw) as resp:
            return resp.read()

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: Any,
        headers: Mapping[str, str] | None,
    ) -> Streamed:
        # a path carries ids as the user typed them: percent-encode what a request line cannot
        # hold (spaces, non-ASCII), as httpx did, so the server answers `no run ...`
        path, _, query = path.partition("?")
        url = self.base_url + quote(path, safe=_PATH_SAFE) + ("?" + query if query else "")
        if params:
            url += ("&" if "?" in url else "?") + _query(params)
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise TransportError("UnsupportedProtocol", f"no HTTP client for {scheme!r} URLs")
        sent = {**self.headers, **(headers or {})}
        data = None
        if body is not None:
            data = _dumps(body)
            sent["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=sent, method=method)
        try:
            raw = self._open().open(req, timeout=self.timeout)
        except urllib.error.URLError as exc:
            reason = exc.reason
            kind = "ConnectTimeout" if isinstance(reason, TimeoutError) else "ConnectError"
            raise TransportError(kind, str(reason)) from None
        except http.client.InvalidURL as exc:
            raise TransportError("InvalidURL", str(exc)) from None
        except (http.client.HTTPException, OSError) as exc:
            raise _failed(exc) from None
        if not isinstance(raw, http.client.HTTPResponse):  # no handler took the URL
            raise TransportError("UnsupportedProtocol", url)
        return Streamed(raw)


def _failed(exc: Exception) -> TransportError:
    """A failure after the connection opened, named as httpx names it."""
    if isinstance(exc, TimeoutError):
        return TransportError("ReadTimeout", str(exc))
    if isinstance(exc, http.client.HTTPException):
        return TransportError("RemoteProtocolError", str(exc) or type(exc).__name__)
    return TransportError("ReadError", str(exc))


def _dumps(data: Any) -> bytes:
    # httpx's JSON body: compact, UTF-8, no NaN
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
