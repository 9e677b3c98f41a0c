"""Reading provider keys from HashiCorp Vault's KV v2 through `hvac`, logged in with a token
(an environment variable or a Vault Agent token file; a renewable one is renewed at half its
TTL) or with Kubernetes auth (the pod's ServiceAccount token), logging in again when the token
nears its lease end or is refused.

Blocking (hvac is synchronous): the gateway calls it from a worker thread.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tether.config import VaultConfig, VaultSecretRef
from tether.core.errors import ConfigError

# log in again when this share of a Kubernetes login's lease has passed
RELOGIN_AT = 0.8
# renew a renewable token (auth: token) when this share of its TTL has passed
RENEW_AT = 0.5


class VaultClient:
    """One authenticated hvac client shared by every provider key of this process."""

    def __init__(self, config: VaultConfig) -> None:
        import hvac

        self.config = config
        verify: bool | str = str(config.ca_cert) if config.ca_cert else True
        self._client = hvac.Client(
            url=config.url, namespace=config.namespace, verify=verify, timeout=config.timeout_s
        )
        self._lock = threading.Lock()
        self._logged_in = False
        self._relogin_at: float | None = None
        self._renew_at: float | None = None

    def _login(self) -> None:
        from hvac.exceptions import VaultError

        cfg = self.config
        if cfg.auth == "token":
            try:
                token = cfg.token()
            except OSError as exc:
                raise ConfigError(
                    f"vault: cannot read token_file {cfg.token_file}: {exc}"
                ) from None
            if not token:
                raise ConfigError(
                    f"vault: no token (set {cfg.token_env} or vault.token_file), or use "
                    "vault.auth: kubernetes"
                )
            self._client.token = token
            self._relogin_at = None
            try:  # Vault's default policy lets a token look itself up; without it, no renewal
                self._renew_at = self._token_renewal(self._client.auth.token.lookup_self())
            except VaultError:
                self._renew_at = None
        else:
            try:
                jwt = cfg.jwt_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"vault: cannot read the ServiceAccount token {cfg.jwt_file}: {exc}"
                ) from None
            try:
                reply = self._client.auth.kubernetes.login(
                    role=cfg.role, jwt=jwt, mount_point=cfg.auth_mount
                )
            except VaultError as exc:
                raise ConfigError(
                    f"vault: Kubernetes login as role {cfg.role!r} at auth/{cfg.auth_mount} "
                    f"failed: {_why(exc)}; check the role's bound ServiceAccount and namespace"
                ) from None
            lease = int((reply.get("auth") or {}).get("lease_duration") or 0)
            self._relogin_at = time.monotonic() + lease * RELOGIN_AT if lease > 0 else None
        self._logged_in = True

    @staticmethod
    def _token_renewal(reply: Any) -> float | None:
        """When to renew a token, from its lookup or renewal (None: it does not expire)."""
        data = (reply or {}).get("data") or (reply or {}).get("auth") or {}
        ttl = int(data.get("ttl") or data.get("lease_duration") or 0)
        if ttl <= 0 or not data.get("renewable"):
            return None
        return time.monotonic() + ttl * RENEW_AT

    def _renew(self) -> None:
        from hvac.exceptions import VaultError

        try:
            self._renew_at = self._token_renewal(self._client.auth.token.renew_self())
        except VaultError:
            self._renew_at = None  # past its max TTL, or revoked: a 403 re-reads the token

    def _must_login(self) -> bool:
        if not self._logged_in:
            return True
        return self._relogin_at is not None and time.monotonic() >= self._relogin_at

    def read(self, ref: VaultSecretRef) -> str:
        """The field `ref.key` of the secret at `ref.path` (latest version unless pinned)."""
        import requests
        from hvac.exceptions import Forbidden, InvalidPath, VaultError

        mount = ref.mount or self.config.mount
        where = f"{mount}/data/{ref.path}"
        with self._lock:
            try:
                if self._must_login():
                    self._login()
                elif self._renew_at is not None and time.monotonic() >= self._renew_at:
                    self._renew()
                try:
                    reply = self._read(ref, mount)
                except Forbidden:
                    self._login()  # a rotated or expired token: the new one, once
                    reply = self._read(ref, mount)
            except InvalidPath:
                raise ConfigError(
                    f"vault: no secret at {where}; write it with "
                    f"`vault kv put -mount={mount} {ref.path} {ref.key}=...`"
                ) from None
            except Forbidden:
                raise ConfigError(
                    f"vault: permission denied reading {where}; the token's policy needs "
                    f'`path "{where}" {{ capabilities = ["read"] }}`'
                ) from None
            except (VaultError, requests.RequestException) as exc:
                raise ConfigError(f"vault: reading {where} failed: {_why(exc)}") from None
        data = ((reply or {}).get("data") or {}).get("data") or {}
        value = data.get(ref.key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"vault: the secret at {where} has no field {ref.key!r}")
        return value.strip()

    def _read(self, ref: VaultSecretRef, mount: str) -> Any:
        return self._client.secrets.kv.v2.read_secret_version(
            path=ref.path, version=ref.version, mount_point=mount, raise_on_deleted_version=True
        )


def _why(exc: BaseException) -> str:
    # hvac's messages carry Vault's `errors` list, never the token or the secret
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
