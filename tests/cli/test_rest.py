"""The CLI's remote backend on the standard library's HTTP client (cli/rest.py, cli/client.py),
against real HTTP servers of the standard library: what is sent, how errors read, TLS checked."""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import free_port
from tether.cli import rest
from tether.cli.client import Remote
from tether.core.errors import AuthenticationError, NotFoundError, TetherError, UpstreamError

SEEN: list[dict[str, Any]] = []


class _Api(http.server.BaseHTTPRequestHandler):
    """Answers by path: echoes what it got, or replies as a tether server would fail."""

    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        SEEN.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                     "headers": dict(self.headers), "body": body})  # fmt: skip
        if url.path.endswith("/echo"):
            self._reply(200, json.dumps({"ok": True}).encode())
        elif url.path.endswith("/unauthorized"):
            err = {"type": "unauthenticated", "code": "bad_key", "message": "bad API key"}
            self._reply(401, json.dumps({"error": err}).encode())
        elif url.path.endswith("/missing"):
            err = {"type": "not_found", "code": "not_found", "message": "no run run_x"}
            self._reply(404, json.dumps({"error": err}).encode())
        elif url.path.endswith("/broken"):
            self._reply(502, b"<html>bad gateway</html>", "text/html")
        elif url.path.endswith("/gone"):
            self.send_response(204)
            self.end_headers()
        elif url.path.endswith("/moved"):
            self.send_response(302)
            self.send_header("location", "/echo")
            self.send_header("content-length", "0")
            self.end_headers()
        elif url.path.endswith("/slow"):
            time.sleep(1.5)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client left
                self._reply(200, b"{}")
        elif url.path.endswith("/export"):
            self.send_response(200)
            self.send_header("content-type", "application/x-ndjson")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for chunk in (b'{"seq": 1}\n{"se', b'q": 2}\r\n\n', b'{"seq": 3}'):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._reply(500, b"unexpected path")

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    def log_message(self, *args: object) -> None:
        pass


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def api() -> Iterator[str]:
    SEEN.clear()
    yield from _serve()


def test_a_call_sends_the_key_the_query_and_the_json_body(api: str) -> None:
    remote = Remote(api + "/prefix/", "tth_k")
    got = remote.request("POST", "/api/v1/echo", params={"limit": 5, "all": True, "q": "a b&c"},
                         json={"reason": "loop ✓", "n": 1})  # fmt: skip
    assert got == {"ok": True}
    [seen] = SEEN
    assert seen["method"] == "POST" and seen["path"] == "/prefix/api/v1/echo"
    assert seen["query"] == {"limit": ["5"], "all": ["true"], "q": ["a b&c"]}
    assert seen["headers"]["Authorization"] == "Bearer tth_k"
    assert seen["headers"]["Content-Type"] == "application/json"
    assert json.loads(seen["body"]) == {"reason": "loop ✓", "n": 1}


def test_ids_as_typed_reach_the_server_escaped(api: str) -> None:
    with pytest.raises(TetherError, match="HTTP 500: unexpected path"):
        Remote(api, "k").request("GET", "/api/v1/runs/run a/é?x=2", params={"y": "1"})
    assert SEEN[0]["path"] == "/api/v1/runs/run%20a/%C3%A9"
    assert SEEN[0]["query"] == {"x": ["2"], "y": ["1"]}


def test_no_key_sends_no_authorization_and_204_is_none(api: str) -> None:
    assert Remote(api, None).request("DELETE", "/api/v1/lists/gone") is None
    assert "Authorization" not in SEEN[0]["headers"]


def test_errors_are_the_servers_typed_errors(api: str) -> None:
    remote = Remote(api, "k")
    with pytest.raises(AuthenticationError) as denied:
        remote.request("GET", "/api/v1/unauthorized")
    assert denied.value.message == (
        "bad API key (set TETHER_API_KEY to a key with the needed scope)"
    )
    with pytest.raises(NotFoundError, match="no run run_x"):
        remote.request("GET", "/api/v1/missing")
    with pytest.raises(TetherError) as broken:
        remote.request("GET", "/api/v1/broken")
    assert type(broken.value) is TetherError
    assert broken.value.message == "HTTP 502: <html>bad gateway</html>"


def test_redirects_are_not_followed(api: str) -> None:
    resp = rest.Client(api, {}, timeout=5).request("GET", "/moved")
    assert resp.status_code == 302 and [s["path"] for s in SEEN] == ["/moved"]


def test_a_streamed_export_comes_line_by_line(api: str) -> None:
    lines = list(Remote(api, "k").lines("/api/v1/audit/export"))
    assert lines == ['{"seq": 1}', '{"seq": 2}', '{"seq": 3}']
    with pytest.raises(AuthenticationError):
        list(Remote(api, "k").lines("/api/v1/unauthorized"))


def test_an_unreachable_server_says_how_to_fix_it() -> None:
    where = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamError) as down:
        Remote(where, "k").request("GET", "/api/v1/runs")
    assert down.value.message == (
        f"cannot reach tether at {where} (ConnectError); start it with `tether serve`, or "
        "unset TETHER_URL to use the local store"
    )
    with pytest.raises(UpstreamError, match=r"\(UnsupportedProtocol\)"):
        Remote("ftp://127.0.0.1", "k").request("GET", "/api/v1/runs")


def test_a_server_slower_than_the_timeout_is_a_read_timeout(api: str) -> None:
    with pytest.raises(rest.TransportError) as slow:
        rest.Client(api, {}, timeout=0.3).request("GET", "/slow")
    assert slow.value.kind == "ReadTimeout"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


def test_tls_is_verified(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    SEEN.clear()
    for url in _serve(tls):
        # a certificate nobody vouches for is refused before anything is sent
        with pytest.raises(UpstreamError, match=r"\(ConnectError\)"):
            Remote(url, "k").request("GET", "/api/v1/echo")
        assert SEEN == []
        # trusted through OpenSSL's SSL_CERT_FILE, as httpx honoured it: the call goes through
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert Remote(url, "k").request("GET", "/api/v1/echo") == {"ok": True}
