"""A small HashiCorp Vault stand-in for the tests (no Vault server is installable here): the
parts of Vault's documented HTTP API that tether uses through `hvac`.

- KV v2: `GET /v1/<mount>/data/<path>[?version=N]` answers `{"data": {"data": {...},
  "metadata": {"version", "created_time", "deletion_time", "destroyed", ...}}}`, 404
  `{"errors": []}` for a missing secret or version; `POST|PUT /v1/<mount>/data/<path>` with
  `{"data": {...}}` writes a new version.
- Kubernetes auth: `POST /v1/auth/<mount>/login` with `{"role", "jwt"}` answers
  `{"auth": {"client_token", "lease_duration", "renewable", "policies", ...}}`; an unknown role
  is 400, a JWT the role does not accept 403.
- Token auth: `GET /v1/auth/token/lookup-self` answers `{"data": {"ttl", "renewable", ...}}`;
  `POST /v1/auth/token/renew-self` extends a renewable token by its TTL.
- Tokens travel in `X-Vault-Token`; a missing, unknown, revoked or expired one is 403
  `{"errors": ["permission denied"]}`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class _Secret:
    versions: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (data, created)


class VaultServer:
    """Serves in a thread on 127.0.0.1; `url`, `put()`, `revoke()`, `expire_tokens()`."""

    def __init__(self, *, root_token: str = "root-token", lease_duration: int = 3600) -> None:
        self.lock = threading.Lock()
        self.tokens: dict[str, float | None] = {root_token: None}  # token -> expiry (monotonic)
        self.ttls: dict[str, int] = {}  # renewable tokens -> their TTL in seconds
        self.renewals = 0
        self.roles: dict[tuple[str, str], str] = {}  # (auth mount, role) -> the JWT it accepts
        self.secrets: dict[tuple[str, str], _Secret] = {}
        self.lease_duration = lease_duration
        self.logins = 0
        self.reads = 0
        self.root_token = root_token
        handler = type("Handler", (_Handler,), {"vault": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    # ------------------------------------------------------------ what a test arranges

    def put(self, path: str, data: dict[str, Any], mount: str = "secret") -> int:
        """Writes a new version (as `vault kv put`) and returns its number."""
        with self.lock:
            s = self.secrets.setdefault((mount, path), _Secret())
            s.versions.append((dict(data), datetime.now(UTC).isoformat()))
            return len(s.versions)

    def add_role(self, role: str, jwt: str, mount: str = "kubernetes") -> None:
        self.roles[(mount, role)] = jwt

    def add_token(self, token: str, ttl: int | None = None) -> None:
        """A token that never expires, or a renewable one valid for `ttl` seconds."""
        with self.lock:
            self.tokens[token] = None if ttl is None else time.monotonic() + ttl
            if ttl is not None:
                self.ttls[token] = ttl

    def lookup_self(self, token: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            expiry, ttl = self.tokens[token], self.ttls.get(token)
        left = 0 if expiry is None else max(0, round(expiry - time.monotonic()))
        return 200, {"data": {"id": token, "ttl": left, "renewable": ttl is not None,
                              "policies": ["default", "tether"], "type": "service"}}  # fmt: skip

    def renew_self(self, token: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            ttl = self.ttls.get(token)
            if ttl is None:
                return 400, {"errors": ["lease is not renewable"]}
            self.tokens[token] = time.monotonic() + ttl
            self.renewals += 1
        return 200, {"auth": {"client_token": token, "lease_duration": ttl, "renewable": True,
                              "policies": ["default", "tether"]}}  # fmt: skip

    def revoke(self, token: str) -> None:
        with self.lock:
            self.tokens.pop(token, None)

    def expire_tokens(self) -> None:
        """Every token but the root one stops working (as at the end of its lease)."""
        with self.lock:
            self.tokens = {t: e for t, e in self.tokens.items() if t == self.root_token}

    # ------------------------------------------------------------ the API

    def valid(self, token: str | None) -> bool:
        with self.lock:
            if token is None or token not in self.tokens:
                return False
            expiry = self.tokens[token]
            return expiry is None or time.monotonic() < expiry

    def login(self, mount: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        role, jwt = body.get("role"), body.get("jwt")
        if (mount, role) not in self.roles:
            return 400, {"errors": [f'invalid role name "{role}"']}
        if jwt != self.roles[(mount, role)]:
            return 403, {"errors": ["permission denied"]}
        token = "hvs." + secrets.token_urlsafe(18)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.lease_duration
            self.logins += 1
        return 200, {
            "request_id": secrets.token_hex(8), "lease_id": "", "renewable": False,
            "lease_duration": 0, "data": None, "wrap_info": None, "warnings": None,
            "auth": {"client_token": token, "accessor": secrets.token_urlsafe(12),
                     "policies": ["default", "tether"], "token_policies": ["default", "tether"],
                     "metadata": {"role": role, "service_account_name": "tether",
                                  "service_account_namespace": "tether"},
                     "lease_duration": self.lease_duration, "renewable": True,
                     "entity_id": "", "token_type": "service", "orphan": True},
        }  # fmt: skip

    def read(self, mount: str, path: str, version: int | None) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.reads += 1
            s = self.secrets.get((mount, path))
            if s is None or not s.versions:
                return 404, {"errors": []}
            n = version or len(s.versions)
            if not 1 <= n <= len(s.versions):
                return 404, {"errors": []}
            data, created = s.versions[n - 1]
        return 200, {
            "request_id": secrets.token_hex(8), "lease_id": "", "renewable": False,
            "lease_duration": 0, "wrap_info": None, "warnings": None, "auth": None,
            "data": {"data": data, "metadata": {"created_time": created, "custom_metadata": None,
                                                "deletion_time": "", "destroyed": False,
                                                "version": n}},
        }  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    vault: VaultServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("content-length") or 0)
        doc = json.loads(self.rfile.read(n) or b"{}")
        return doc if isinstance(doc, dict) else {}

    def _route(self) -> tuple[str, str, str, dict[str, list[str]]] | None:
        """(kind, mount, path, query) of /v1/auth/<mount>/login or /v1/<mount>/data/<path>."""
        url = urlsplit(self.path)
        parts = url.path.removeprefix("/v1/")
        if parts in ("auth/token/lookup-self", "auth/token/renew-self"):
            return parts.rsplit("/", 1)[1], "token", "", {}
        if parts.startswith("auth/") and parts.endswith("/login"):
            return "login", parts[len("auth/") : -len("/login")], "", {}
        mount, sep, path = parts.partition("/data/")
        return ("data", mount, path, parse_qs(url.query)) if sep and path else None

    def _token_call(self, kind: str) -> None:
        token = self.headers.get("x-vault-token")
        if token is None or not self.vault.valid(token):
            return self._answer(403, {"errors": ["permission denied"]})
        call = self.vault.lookup_self if kind == "lookup-self" else self.vault.renew_self
        self._answer(*call(token))

    def do_GET(self) -> None:
        route = self._route()
        if route is not None and route[0] == "lookup-self":
            return self._token_call("lookup-self")
        if route is None or route[0] != "data":
            return self._answer(404, {"errors": []})
        if not self.vault.valid(self.headers.get("x-vault-token")):
            return self._answer(403, {"errors": ["permission denied"]})
        _, mount, path, query = route
        version = int(query["version"][0]) if query.get("version") else None
        self._answer(*self.vault.read(mount, path, version or None))

    def do_POST(self) -> None:
        route = self._route()
        if route is None:
            return self._answer(404, {"errors": []})
        kind, mount, path, _ = route
        if kind == "renew-self":
            return self._token_call(kind)
        if kind == "login":
            return self._answer(*self.vault.login(mount, self._body()))
        if not self.vault.valid(self.headers.get("x-vault-token")):
            return self._answer(403, {"errors": ["permission denied"]})
        n = self.vault.put(path, self._body().get("data") or {}, mount=mount)
        self._answer(200, {"data": {"created_time": datetime.now(UTC).isoformat(),
                                    "custom_metadata": None, "deletion_time": "",
                                    "destroyed": False, "version": n}})  # fmt: skip

    do_PUT = do_POST
