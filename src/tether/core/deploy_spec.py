"""The deploy spec (`deploy.yaml`) that `tether deploy k8s` renders an agent's manifests from:
image, kind (service, job or cronjob), replicas, resources, autoscaling, where tether is, and
where the agent's tether key comes from. Validated at the edge with line-numbered errors."""

from __future__ import annotations

import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tether.core.errors import ConfigError

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ResourceName = Literal["cpu", "memory", "ephemeral-storage"]


def _requests() -> dict[ResourceName, str]:
    return {"cpu": "100m", "memory": "128Mi"}


def _limits() -> dict[ResourceName, str]:
    return {"cpu": "500m", "memory": "512Mi"}


class Resources(_Strict):
    requests: dict[ResourceName, str] = Field(default_factory=_requests)
    limits: dict[ResourceName, str] = Field(default_factory=_limits)

    @field_validator("requests", "limits")
    @classmethod
    def _quantities(cls, v: dict[ResourceName, str]) -> dict[ResourceName, str]:
        for name, q in v.items():
            if not _QUANTITY.match(str(q)):
                raise ValueError(f"{name}: {q!r} is not a Kubernetes quantity (e.g. 250m, 512Mi)")
        return {k: str(q) for k, q in v.items()}


class Autoscaling(_Strict):
    min_replicas: int = Field(default=1, ge=1)
    max_replicas: int = Field(default=5, ge=1)
    cpu_percent: int = Field(default=70, ge=1, le=100)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be at least min_replicas")
        return self


class Probe(_Strict):
    path: str = "/healthz"
    port: int = Field(default=8080, ge=1, le=65535)


class Tether(_Strict):
    """Where the agent reaches tether's gateways (the NetworkPolicy allows only this egress)."""

    url: str = "http://tether.tether.svc.cluster.local:7337"
    namespace: str = "tether"
    port: int = Field(default=7337, ge=1, le=65535)
    pod_labels: dict[str, str] = Field(default_factory=lambda: {"app.kubernetes.io/name": "tether"})


class VaultKey(_Strict):
    """The Vault Agent injector writes the key to /vault/secrets/tether-key."""

    role: str
    path: str
    field: str = "key"


class Key(_Strict):
    """The agent's tether key: a Kubernetes Secret (key `api-key`) or Vault."""

    secret: str | None = None
    secret_key: str = "api-key"
    vault: VaultKey | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Key:
        if (self.secret is None) == (self.vault is None):
            raise ValueError("give exactly one of key.secret (a Secret name) or key.vault")
        return self


class DeploySpec(_Strict):
    image: str
    kind: Literal["service", "job", "cronjob"] = "service"
    namespace: str = "agents"
    replicas: int = Field(default=1, ge=0)
    schedule: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    autoscaling: Autoscaling | None = None
    probe: Probe = Field(default_factory=Probe)
    tether: Tether = Field(default_factory=Tether)
    key: Key
    overlays: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"staging": {"replicas": 1}, "production": {"replicas": 2}}
    )

    @field_validator("namespace")
    @classmethod
    def _dns(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError(f"{v!r} is not a DNS label (lowercase letters, digits and -)")
        return v

    @field_validator("env")
    @classmethod
    def _no_provider_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if re.search(
                r"(OPENAI|ANTHROPIC|AZURE|GEMINI|GOOGLE|MISTRAL|COHERE).*KEY", name.upper()
            ):
                raise ValueError(f"{name}: provider keys stay in tether, never in an agent's pod")
        return v

    @model_validator(mode="after")
    def _schedule(self) -> DeploySpec:
        if self.kind == "cronjob" and not self.schedule:
            raise ValueError("kind cronjob needs a schedule (cron syntax, e.g. '*/15 * * * *')")
        return self


def parse_spec(text: str, file: str) -> DeploySpec:
    """Parses deploy.yaml; a problem names the file, line and field."""
    try:
        data = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{file}:{mark.line + 1}" if mark else file
        raise ConfigError(f"{where}: {exc.problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}:1: the deploy spec must be a mapping (image:, kind:, key:)")
    try:
        return DeploySpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        line = _line_of(data, loc)
        raise ConfigError(
            f"{file}:{line}: {'.'.join(loc) or 'spec'}: {first['msg']}. Fix it in {file}"
        ) from None


def _line_of(node: Any, path: list[str]) -> int:
    """The 1-based line of the deepest node of `path` found in the YAML tree."""
    line = 1 if node is None else node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            hit = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if hit is None:
                break
            line, node = hit.start_mark.line + 1, hit
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line
