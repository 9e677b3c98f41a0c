"""Agent manifests: every object is valid against the Kubernetes schemas of 1.30 to 1.35
(kubernetes-validate, strict: no unknown fields), carries no provider key, and is locked down."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from tether.core.deploy_spec import DeploySpec, Key, VaultKey, parse_spec
from tether.core.errors import ConfigError
from tether.core.k8s import object_name, render

K8S_VERSIONS = ("1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0")
POLICY: dict[str, Any] = {
    "agent": "invoice-triage",
    "owner": "finance-platform",
    "budgets": {"run": {"max_cost_usd": 2, "max_duration_s": 600}},
}
PROVIDER_KEY = "sk-proj-provider-secret-123"


def validate_all(objects: list[dict[str, Any]]) -> None:
    for version in K8S_VERSIONS:
        for obj in objects:
            kubernetes_validate.validate(obj, version, strict=True)


def _spec(**kw: Any) -> DeploySpec:
    base: dict[str, Any] = {"image": "ghcr.io/acme/triage:1.0", "key": Key(secret="triage-key")}
    return DeploySpec(**{**base, **kw})


@pytest.mark.parametrize("kind", ["service", "job", "cronjob"])
def test_every_kind_validates_on_every_supported_version(kind: str) -> None:
    spec = _spec(
        kind=kind,
        schedule="*/15 * * * *" if kind == "cronjob" else None,
        autoscaling={"min_replicas": 2, "max_replicas": 5} if kind == "service" else None,
    )
    objects = render("invoice-triage", POLICY, spec)
    validate_all(objects)
    kinds = [o["kind"] for o in objects]
    expected = {"service": ["ServiceAccount", "Deployment", "NetworkPolicy", "Service",
                            "PodDisruptionBudget", "HorizontalPodAutoscaler"],
                "job": ["ServiceAccount", "Job", "NetworkPolicy"],
                "cronjob": ["ServiceAccount", "CronJob", "NetworkPolicy"]}[kind]  # fmt: skip
    assert kinds == expected


def test_a_broken_object_is_caught_by_the_validator() -> None:
    deployment = render("a", POLICY, _spec())[1]
    deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.32.0", strict=True)


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return obj["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_service_is_locked_down_and_probed() -> None:
    objects = {o["kind"]: o for o in render("Invoice Triage!", POLICY, _spec(replicas=3))}
    dep = objects["Deployment"]
    assert dep["metadata"]["name"] == object_name("Invoice Triage!") == "invoice-triage"
    assert dep["spec"]["replicas"] == 3
    pod = _pod_spec(dep)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi"}
    env = {e["name"]: e for e in c["env"]}
    assert env["OPENAI_BASE_URL"]["value"] == "http://tether.tether.svc.cluster.local:7337/llm/v1"
    assert env["TETHER_API_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "triage-key", "key": "api-key"}
    }
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert "HorizontalPodAutoscaler" not in objects  # no autoscaling asked for


def test_network_policy_egress_is_tether_and_dns_only() -> None:
    spec = _spec(tether={"namespace": "platform", "port": 8443,
                         "pod_labels": {"app": "tether-server"}})  # fmt: skip
    netpol = next(o for o in render("a", POLICY, spec) if o["kind"] == "NetworkPolicy")
    assert netpol["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = netpol["spec"]["egress"]
    assert len(egress) == 2
    tether, dns = egress
    assert tether["to"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "platform"}}, "podSelector": {"matchLabels": {
            "app": "tether-server"}}}]  # fmt: skip
    assert tether["ports"] == [{"protocol": "TCP", "port": 8443}]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert {p["port"] for p in dns["ports"]} == {53}
    assert all("ipBlock" not in peer for rule in egress for peer in rule["to"])


def test_job_deadline_comes_from_the_policy_run_budget() -> None:
    job = render("a", POLICY, _spec(kind="job"))[1]
    assert job["spec"]["activeDeadlineSeconds"] == 600 + 120
    assert _pod_spec(job)["restartPolicy"] == "Never"
    unbounded = render("a", {"agent": "a"}, _spec(kind="job"))[1]
    assert "activeDeadlineSeconds" not in unbounded["spec"]


def test_vault_injector_annotations_and_no_secret_ref() -> None:
    spec = _spec(key=Key(vault=VaultKey(role="triage", path="secret/data/agents/triage")))
    objects = render("triage", POLICY, spec)
    validate_all(objects)
    dep = objects[1]
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    assert ann["vault.hashicorp.com/agent-inject"] == "true"
    assert ann["vault.hashicorp.com/role"] == "triage"
    assert ann["vault.hashicorp.com/agent-inject-secret-tether-key"] == "secret/data/agents/triage"
    assert ".Data.data.key" in ann["vault.hashicorp.com/agent-inject-template-tether-key"]
    env = {e["name"]: e for e in _pod_spec(dep)["containers"][0]["env"]}
    assert env["TETHER_API_KEY_FILE"]["value"] == "/vault/secrets/tether-key"
    assert "TETHER_API_KEY" not in env and "secretKeyRef" not in json.dumps(objects)
    assert _pod_spec(dep)["automountServiceAccountToken"] is True  # the Vault Agent logs in


def test_no_provider_key_in_any_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PROVIDER_KEY)  # even when the shell has one
    for kind in ("service", "job"):
        text = json.dumps(render("a", POLICY, _spec(kind=kind, env={"LOG_LEVEL": "debug"})))
        assert PROVIDER_KEY not in text and "sk-" not in text
    with pytest.raises(ValueError, match="provider keys stay in tether"):
        _spec(env={"OPENAI_API_KEY": PROVIDER_KEY})


def test_spec_errors_name_the_file_line_and_field() -> None:
    text = "image: x:1\nkind: service\nresources:\n  limits: {cpu: lots}\nkey: {secret: k}\n"
    with pytest.raises(ConfigError, match=r"^deploy.yaml:4: resources.limits: .*quantity"):
        parse_spec(text, "deploy.yaml")
    with pytest.raises(ConfigError, match=r"^d.yaml:2: kind: "):
        parse_spec("image: x\nkind: daemon\nkey: {secret: k}\n", "d.yaml")
    with pytest.raises(ConfigError, match=r"exactly one of key\.secret"):
        parse_spec("image: x\nkey: {}\n", "d.yaml")
    with pytest.raises(ConfigError, match="cronjob needs a schedule"):
        parse_spec("image: x\nkind: cronjob\nkey: {secret: k}\n", "d.yaml")
    with pytest.raises(ConfigError, match=r"^d.yaml:2: "):
        parse_spec("image: x\n  bad: [\n", "d.yaml")
