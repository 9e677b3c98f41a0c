"""Where a provider's key comes from, kept current without a restart: an environment variable
(read once), a file re-read when it changes (a Kubernetes Secret volume, a Vault Agent sidecar's
rendered file), or Vault KV v2 (read at start, then every `vault.refresh_s` by the gateway's
refresh loop).

A call takes the key current when it starts and keeps it, so a rotation never touches a call in
flight. A file caught empty or half-written keeps the last good key; a provider that answers 401
gets the key re-read at once and the call retried with it (the upstream revoked the old key
before the new one reached us).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tether.config import ProviderConfig, VaultSecretRef
from tether.core.errors import ConfigError
from tether.gateway.llm.vault import VaultClient

log = logging.getLogger(__name__)
# a key file is stat()ed at most this often (a rotated Secret reaches the pod's volume within
# the kubelet's sync period, about a minute, anyway)
FILE_CHECK_S = 1.0


class KeySource(Protocol):
    def current(self) -> str | None:
        """The key to use now (no I/O beyond a stat); ConfigError when there is none."""
        ...

    def refresh(self) -> bool:
        """Reads the key again now (blocking); True when it changed."""
        ...


class NoKey:
    """A provider that takes no key (a local vLLM, Ollama)."""

    def current(self) -> str | None:
        return None

    def refresh(self) -> bool:
        return False


class EnvKey:
    """`api_key_env`: read once (a process's environment does not change under it)."""

    def __init__(self, config: ProviderConfig) -> None:
        self._name = config.name
        self._var = config.api_key_env
        self._value = config.api_key()

    def current(self) -> str | None:
        if self._value is None:
            raise ConfigError(
                f"provider {self._name}: the environment variable {self._var} is not set"
            )
        return self._value

    def refresh(self) -> bool:
        return False


class FileKey:
    """`api_key_file`: re-read when the file changes (inode, size or mtime, as a Secret
    volume's atomic symlink swap or an agent's rewrite shows), checked at most once a second."""

    def __init__(
        self,
        name: str,
        path: Path,
        *,
        check_s: float = FILE_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self.path = path
        self._check_s = check_s
        self._clock = clock
        self._value: str | None = None
        self._seen: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._error: str | None = None
        self.refresh()

    def current(self) -> str | None:
        if self._clock() - self._checked >= self._check_s:
            self.refresh()
        if self._value is None:
            raise ConfigError(self._error or f"provider {self._name}: no key in {self.path}")
        return self._value

    def refresh(self) -> bool:
        self._checked = self._clock()
        try:
            st = os.stat(self.path)  # follows the symlinks of a Secret volume
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
            if seen == self._seen:
                return False
            text = self.path.read_text().strip()
        except OSError as exc:
            self._error = f"provider {self._name}: cannot read api_key_file {self.path}: {exc}"
            if self._value is not None:
                log.warning("%s; using the key read before", self._error)
            return False
        if not text:  # caught mid-write: keep the last good key, look again next time
            self._error = f"provider {self._name}: api_key_file {self.path} is empty"
            return False
        self._seen = seen
        changed = text != self._value
        if changed and self._value is not None:
            log.info("provider %s: key re-read from %s (changed)", self._name, self.path)
        self._value, self._error = text, None
        return changed


class VaultKey:
    """`api_key_vault`: read from Vault KV v2 at start; `refresh()` (the gateway's loop, every
    `vault.refresh_s`, or a 401) reads it again. A failed read keeps the last good key."""

    def __init__(self, name: str, ref: VaultSecretRef, vault: VaultClient) -> None:
        self._name = name
        self.ref = ref
        self._vault = vault
        self._value: str | None = None
        self._error: str | None = None
        self.read_at: float | None = None
        self.refresh()

    def current(self) -> str | None:
        if self._value is None:
            raise ConfigError(
                f"provider {self._name}: its key is not read from Vault yet ({self._error}); "
                "tether retries every few seconds"
            )
        return self._value

    def refresh(self) -> bool:
        try:
            value = self._vault.read(self.ref)
        except ConfigError as exc:
            self._error = exc.message
            log.warning("provider %s: %s", self._name, exc.message)
            return False
        changed = value != self._value
        if changed and self._value is not None:
            log.info("provider %s: key re-read from Vault (changed)", self._name)
        self._value, self._error, self.read_at = value, None, time.monotonic()
        return changed

    @property
    def ok(self) -> bool:
        return self._value is not None


def key_source(config: ProviderConfig, vault: VaultClient | None) -> KeySource:
    """The source of `config`'s key (settings validation ensures a Vault client when needed)."""
    if config.api_key_vault is not None:
        if vault is None:
            raise ConfigError(f"provider {config.name}: api_key_vault needs a `vault:` section")
        return VaultKey(config.name, config.api_key_vault, vault)
    if config.api_key_file is not None:
        return FileKey(config.name, config.api_key_file)
    if config.api_key_env:
        return EnvKey(config)
    return NoKey()
