"""The settings model behind `tether.config` (import from there): one pydantic-settings model,
with tether.yaml as a source. Kept apart so that a remote CLI command, which needs only
TETHER_URL and TETHER_API_KEY, never pays for importing pydantic-settings (see config.py).

Precedence, highest first: command-line flags (passed as `overrides`) > `TETHER_*` environment
variables > `tether.yaml` (from `--config` or `TETHER_CONFIG`) > the defaults below.
Nested keys in the environment use a double underscore: `TETHER_BUDGETS__GLOBAL_DAY_USD=100`.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tether.core.errors import ConfigError
from tether.core.memory import check_embedder
from tether.core.tags import suggest_tag, unknown_tags


class VaultSecretRef(BaseModel):
    """Where in Vault's KV v2 a provider key is: `GET /v1/<mount>/data/<path>`, field `key`."""

    model_config = ConfigDict(extra="forbid")
    path: str
    key: str = "api_key"
    mount: str | None = None  # default: `vault.mount`
    version: Annotated[int, Field(ge=1)] | None = None  # default: the latest (follows rotation)


class VaultConfig(BaseModel):
    """HashiCorp Vault for provider keys: KV v2, token or Kubernetes auth (through `hvac`)."""

    model_config = ConfigDict(extra="forbid")
    url: str  # e.g. https://vault.vault.svc:8200
    auth: Literal["token", "kubernetes"] = "token"
    # token auth: the token in this variable, or in this file (a Vault Agent token sink),
    # re-read when Vault refuses it
    token_env: str = "VAULT_TOKEN"
    token_file: Path | None = None
    # kubernetes auth: the role bound to tether's ServiceAccount and that account's token
    role: str | None = None
    jwt_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    auth_mount: str = "kubernetes"
    mount: str = "secret"
    namespace: str | None = None  # Vault Enterprise namespaces
    ca_cert: Path | None = None
    # every key is re-read this often (a rotated key is used from the next read on)
    refresh_s: Annotated[float, Field(gt=0)] = 300.0
    timeout_s: Annotated[int, Field(ge=1)] = 5

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("use the Vault address, e.g. https://vault:8200")
        return v.rstrip("/")

    def token(self) -> str | None:
        """The token for `auth: token`, from `token_file` or the `token_env` variable."""
        if self.token_file is not None:
            return self.token_file.read_text().strip() or None
        return os.environ.get(self.token_env) or None


class ProviderConfig(BaseModel):
    """An upstream LLM provider; its key comes from an env var, a file (re-read when it changes)
    or Vault KV v2 (re-read every `vault.refresh_s`), never from here."""

    model_config = ConfigDict(extra="forbid")
    name: str
    kind: Literal["openai", "anthropic"] = "openai"
    base_url: str
    api_key_env: str | None = None
    api_key_file: Path | None = None
    api_key_vault: VaultSecretRef | None = None
    models: list[str] = Field(default_factory=list)
    aliases: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    max_retries: int = 1
    fallbacks: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_key_source(self) -> ProviderConfig:
        given = [n for n in ("api_key_env", "api_key_file", "api_key_vault") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"give one of {', '.join(given)}, not several")
        return self

    def api_key(self) -> str | None:
        """The key from `api_key_file` (read now) or `api_key_env`; Vault keys are read by the
        gateway (gateway/llm/provider_keys.py)."""
        if self.api_key_file is not None:
            return self.api_key_file.read_text().strip()
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None


def _known_tag(tag: str) -> str:
    if unknown_tags([tag]):
        raise ValueError(f"unknown tag {tag!r}: {suggest_tag(tag)}")
    return tag


SystemName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")]


class McpServerConfig(BaseModel):
    """An upstream MCP server: a stdio `command` or a Streamable HTTP `url`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    command: list[str] | None = None
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None
    # tool name or glob ("*", "fetch_*") -> tags; a key matching no served tool is an error
    tags: dict[str, list[Annotated[str, AfterValidator(_known_tag)]]] = Field(default_factory=dict)
    # tool name or glob -> the systems it touches (policy `systems:`); default: the server name
    systems: dict[str, list[SystemName]] = Field(default_factory=dict)


class HttpToolConfig(BaseModel):
    """A tool reached by a plain HTTP POST, registered in the tool catalog."""

    model_config = ConfigDict(extra="forbid")
    name: str
    url: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    tags: list[str] = Field(default_factory=list)
    owner: str | None = None
    rate_limit: str | None = None
    # the systems it touches (policy `systems:`); default: the part of `name` before the dot
    systems: list[SystemName] = Field(default_factory=list)


class ModelMargin(BaseModel):
    """Extra worst case for one model, for what its provider bills beyond tether's bound."""

    model_config = ConfigDict(extra="forbid")
    # added to every call's input bound (e.g. a provider's hidden system prompt)
    input_tokens: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    # the whole worst case grows by this share
    percent: Annotated[Decimal, Field(ge=0, le=1000)] = Decimal(0)


class BudgetDefaults(BaseModel):
    """Caps that apply when an agent's policy says nothing."""

    model_config = ConfigDict(extra="forbid")
    global_day_usd: Decimal | None = None
    # every API key's LLM spend per UTC day (a leaked or looping key stops there)
    key_day_usd: Decimal | None = None
    default_max_tokens: Annotated[int, Field(ge=1)] = 4096
    reservation_ttl_s: Annotated[int, Field(ge=1)] = 900
    # per model (the requested or the upstream name; "*" for every other model)
    margins: dict[str, ModelMargin] = Field(default_factory=dict)


class KeyPolicy(BaseModel):
    """Rules for tether's own API keys (`tether keys`)."""

    model_config = ConfigDict(extra="forbid")
    # keys older than this are refused (401 key_expired, code key_too_old) unless they are being
    # rotated out (then their overlap end applies); None: no limit
    max_age_days: Annotated[int, Field(ge=1, le=36500)] | None = None
    # the console flags keys this close to their expiry or age limit as "rotate soon"
    warn_days: Annotated[int, Field(ge=0, le=3650)] = 14


class MemoryNamespaceConfig(BaseModel):
    """Settings of one memory namespace (an agent's own, or a shared one others are granted)."""

    model_config = ConfigDict(extra="forbid")
    # "gateway:MODEL" (through tether's LLM gateway: the agent's budget pays, the call is traced),
    # "local:all-MiniLM-L6-v2" (a model shipped in a package), or "client" (callers send vectors)
    embedder: Annotated[str | None, AfterValidator(check_embedder)] = None
    quota_items: int | None = Field(default=None, gt=0)
    quota_bytes: int | None = Field(default=None, gt=0)


class MemoryConfig(BaseModel):
    """Agent memory: the vector index and the default embedder."""

    model_config = ConfigDict(extra="forbid")
    # auto: pgvector when the PostgreSQL has it, sqlite-vec beside SQLite when installed, else exact
    index: Literal["auto", "exact", "sqlite-vec", "pgvector"] = "auto"
    embedder: Annotated[str | None, AfterValidator(check_embedder)] = None
    namespaces: dict[str, MemoryNamespaceConfig] = Field(default_factory=dict)


class WebhookConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    format: Literal["json", "slack"] = "json"


class OtlpExportConfig(BaseModel):
    """Where (and how) every run's spans are exported over OTLP/HTTP; off without `endpoint`."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str | None = None  # e.g. http://otel-collector:4318/v1/traces
    headers: dict[str, str] = Field(default_factory=dict)
    interval_s: float = Field(default=2.0, gt=0)
    batch: int = Field(default=512, ge=1, le=10_000)
    timeout_s: float = Field(default=10.0, gt=0)
    max_backoff_s: float = Field(default=60.0, gt=0)


class ModelChangeEval(BaseModel):
    """How to re-run an agent's eval suite when its served model changes: the `--agent` of
    `tether eval run` (a command, an http(s) URL or module:function)."""

    model_config = ConfigDict(extra="forbid")
    agent: Annotated[str, Field(min_length=1)]
    repeats: Annotated[int | None, Field(ge=1, le=100)] = None
    timeout_s: Annotated[float, Field(gt=0)] = 1800.0


class WatchSettings(BaseModel):
    """Drift checks and cost anomaly alerts (the background passes and their thresholds)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    # profiles, rollups, model changes and cost anomalies every interval_s; drift less often
    interval_s: Annotated[float, Field(gt=0)] = 60.0
    drift_interval_s: Annotated[float, Field(gt=0)] = 3600.0
    # a repeat of an open alert within this many seconds adds an occurrence, not a message
    cooldown_s: Annotated[int, Field(ge=0)] = 3600
    baseline: str = "7d"
    window: str = "1d"
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01
    band_k: Annotated[float, Field(gt=0)] = 4.0
    min_excess_usd: Annotated[Decimal, Field(ge=0)] = Decimal("0.10")
    alert_below: bool = False
    # agent -> how to reach it: on a model change point the agent's newest suite is run again
    eval_on_model_change: dict[str, ModelChangeEval] = Field(default_factory=dict)

    @field_validator("baseline", "window")
    @classmethod
    def _duration(cls, v: str) -> str:
        if not re.fullmatch(r"[1-9]\d{0,3}[mhdw]", v.strip()):
            raise ValueError("use a duration such as 12h, 1d, 7d or 2w")
        return v.strip()


class Settings(BaseSettings):
    """Everything tether can be told. Every key is optional."""

    model_config = SettingsConfigDict(
        env_prefix="TETHER_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Field(default_factory=lambda: Path.home() / ".tether")
    database_url: str | None = None
    redis_url: str | None = None
    # PostgreSQL only: connections each process keeps for its synchronous work (twice as many
    # more open under load); size replicas x (3 x this + 13) against max_connections
    db_pool_size: Annotated[int, Field(ge=1, le=500)] = 10
    host: str = "127.0.0.1"
    port: int = 7337
    config: Path | None = None
    log_level: str = "info"
    max_request_bytes: int = 16 * 1024 * 1024
    # SQLite only: how often the query planner's statistics are refreshed (ANALYZE, sampled)
    store_stats_interval_s: Annotated[float, Field(gt=0)] = 3600.0
    public_url: str | None = None
    # for the CLI and SDK talking to a remote tether: TETHER_URL, TETHER_API_KEY
    url: str | None = None
    api_key: str | None = None
    secret_key: str | None = None
    providers: list[ProviderConfig] = Field(default_factory=list)
    vault: VaultConfig | None = None  # for providers' `api_key_vault`
    pricing: dict[str, dict[str, Any]] = Field(default_factory=dict)
    policies: Path | None = None
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    http_tools: list[HttpToolConfig] = Field(default_factory=list)
    budgets: BudgetDefaults = Field(default_factory=BudgetDefaults)
    approval_timeout_s: int = 3600
    keys: KeyPolicy = Field(default_factory=KeyPolicy)
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    # ops: /metrics and replicas. `replica_id` names this replica in leases (default: host:pid);
    # `metrics_dir` holds prometheus_client's multiprocess files (`serve --workers N` sets it).
    replica_id: str | None = None
    metrics_dir: Path | None = None
    metrics_cache_s: float = 10.0
    otlp_export: OtlpExportConfig = Field(default_factory=OtlpExportConfig)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    redact_fields: list[str] = Field(
        default_factory=lambda: ["api_key", "authorization", "password", "secret", "token"]
    )

    @model_validator(mode="after")
    def _vault_when_needed(self) -> Settings:
        wanting = [p.name for p in self.providers if p.api_key_vault is not None]
        if wanting and self.vault is None:
            raise ValueError(
                f"provider(s) {', '.join(wanting)} read their key from Vault: add a `vault:` "
                "section (url, auth) to tether.yaml"
            )
        if self.vault is not None and self.vault.auth == "kubernetes" and not self.vault.role:
            raise ValueError("vault.auth kubernetes needs vault.role (the Vault role to log in as)")
        return self

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v.startswith("postgres://") or v.startswith("postgresql://"):
            return "postgresql+psycopg://" + v.split("://", 1)[1]
        if not (v.startswith("sqlite") or v.startswith("postgresql+psycopg")):
            raise ValueError("use sqlite:///PATH or postgresql://USER@HOST/DB")
        return v

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'tether.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (flags) > environment > tether.yaml > defaults
        return (init_settings, env_settings, _YamlSource(settings_cls))


class _YamlSource(PydanticBaseSettingsSource):
    """Reads `tether.yaml` named by the `config` init kwarg or by TETHER_CONFIG."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_path(self.current_state)
        if path is None:
            return {}
        data = load_yaml_file(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings")
        base = path.parent
        if isinstance(data.get("policies"), str):
            data["policies"] = str((base / data["policies"]).resolve())
        return data


def _config_path(state: dict[str, Any]) -> Path | None:
    raw = state.get("config") or os.environ.get("TETHER_CONFIG")
    if raw:
        path = Path(raw)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist; check --config / TETHER_CONFIG")
        return path
    return None


def load_yaml_file(path: Path) -> Any:
    """Parses YAML and names the file and line of a syntax error."""
    import yaml  # only when there is a file to read: the CLI's start-up does not pay for it

    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: {exc.problem}") from None


def load_settings(**overrides: Any) -> Settings:
    """Builds Settings from flags (`overrides`, None values ignored), env, YAML and defaults."""
    flags = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**flags)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = _yaml_line(flags, tuple(first["loc"]))
        raise ConfigError(f"{where}invalid setting {loc}: {first['msg']}") from None


def _yaml_line(flags: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """`FILE:LINE: ` of a setting that came from tether.yaml, or "" when it did not."""
    path = _config_path(flags)
    if path is None:
        return ""
    from tether.core.policy_schema import PolicyError, load_document

    try:
        data, lines = load_document(path.read_text(), str(path))
    except (PolicyError, OSError):
        return ""
    node: Any = data
    for part in loc:  # only when the whole path is in the file (not a flag or env value)
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node)
        ):
            node = node[part]
        else:
            return ""
    return f"{path}:{lines.find(loc)}: "
