"""tether's settings, the only reader of the environment: `load_settings()` builds the one
pydantic-settings model (tether/_settings.py); `remote_target()` answers a remote CLI command
from the environment alone when that decides it, without importing pydantic-settings.

Precedence, highest first: command-line flags (passed as `overrides`) > `TETHER_*` environment
variables > `tether.yaml` (from `--config` or `TETHER_CONFIG`) > the defaults.
Nested keys in the environment use a double underscore: `TETHER_BUDGETS__GLOBAL_DAY_USD=100`.

The model's names (`Settings`, `ProviderConfig`, ...) are importable from here; they load on
first use (PEP 562).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # `X as X`: re-exported names, for the type checker
    from tether._settings import BudgetDefaults as BudgetDefaults
    from tether._settings import HttpToolConfig as HttpToolConfig
    from tether._settings import KeyPolicy as KeyPolicy
    from tether._settings import McpServerConfig as McpServerConfig
    from tether._settings import MemoryConfig as MemoryConfig
    from tether._settings import MemoryNamespaceConfig as MemoryNamespaceConfig
    from tether._settings import ModelChangeEval as ModelChangeEval
    from tether._settings import ModelMargin as ModelMargin
    from tether._settings import OtlpExportConfig as OtlpExportConfig
    from tether._settings import ProviderConfig as ProviderConfig
    from tether._settings import Settings as Settings
    from tether._settings import VaultConfig as VaultConfig
    from tether._settings import VaultSecretRef as VaultSecretRef
    from tether._settings import WatchSettings as WatchSettings
    from tether._settings import WebhookConfig as WebhookConfig
    from tether._settings import load_yaml_file as load_yaml_file


class RemoteTarget(NamedTuple):
    """A tether server to talk to: `url` (TETHER_URL) and the bearer key (TETHER_API_KEY)."""

    url: str
    api_key: str | None


def load_settings(**overrides: Any) -> Settings:
    """Builds Settings from flags (`overrides`, None values ignored), env, YAML and defaults."""
    from tether._settings import load_settings as load

    return load(**overrides)


def remote_target() -> RemoteTarget | None:
    """The server `load_settings()` would name by `url` / `api_key`, read from the environment
    alone; None when the environment does not decide it (no TETHER_URL, or a tether.yaml that
    may hold `api_key:`): then ask `load_settings()`. Environment names match in any case, as
    pydantic-settings reads them."""
    env = {k.upper(): v for k, v in os.environ.items() if k[:7].upper() == "TETHER_"}
    url = env.get("TETHER_URL")
    if not url:
        return None
    key = env.get("TETHER_API_KEY")
    if key is None and env.get("TETHER_CONFIG"):
        return None
    return RemoteTarget(url, key)


def __getattr__(name: str) -> Any:
    # the model's public names (each also imported above for the type checker)
    if not name.startswith("_"):
        model = importlib.import_module("tether._settings")
        if hasattr(model, name):
            return getattr(model, name)
    raise AttributeError(f"module 'tether.config' has no attribute {name!r}")
