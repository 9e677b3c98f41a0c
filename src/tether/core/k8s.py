"""Kubernetes manifests for one agent, from its boundary policy and a deploy spec: pure data in,
a list of objects out (the CLI writes them). The pod gets tether's gateway URLs and its own
tether key, never a provider key; the NetworkPolicy lets it reach only tether and DNS."""

from __future__ import annotations

import re
from typing import Any

from tether.core.deploy_spec import DeploySpec

Obj = dict[str, Any]
KEY_FILE = "/vault/secrets/tether-key"
# a run's max_duration_s bounds its Job, with room to start the pod and flush traces
JOB_SLACK_S = 120


def object_name(agent: str) -> str:
    """A DNS-1123 name for the agent's objects (lowercase, digits and -, at most 63)."""
    name = re.sub(r"[^a-z0-9-]+", "-", agent.lower()).strip("-")[:63].strip("-")
    return name or "agent"


def labels(agent: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": object_name(agent),
        "app.kubernetes.io/part-of": "tether-agents",
        "app.kubernetes.io/managed-by": "tether",
    }


def _selector(agent: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": object_name(agent)}


def _meta(agent: str, spec: DeploySpec, policy: dict[str, Any], suffix: str = "") -> Obj:
    ann = {"tether.dev/agent": agent}
    if policy.get("owner"):
        ann["tether.dev/owner"] = str(policy["owner"])
    return {"name": object_name(agent) + suffix, "namespace": spec.namespace,
            "labels": labels(agent), "annotations": ann}  # fmt: skip


def _env(agent: str, spec: DeploySpec) -> list[Obj]:
    url = spec.tether.url.rstrip("/")
    env: list[Obj] = [
        {"name": "TETHER_URL", "value": url},
        {"name": "TETHER_AGENT", "value": agent},
        # the agent's OpenAI / Anthropic clients talk to tether's gateways, not to providers
        {"name": "OPENAI_BASE_URL", "value": f"{url}/llm/v1"},
        {"name": "ANTHROPIC_BASE_URL", "value": f"{url}/llm/anthropic"},
    ]
    if spec.key.secret is not None:
        ref = {"secretKeyRef": {"name": spec.key.secret, "key": spec.key.secret_key}}
        # the clients send it as their bearer key; tether knows it is this agent's
        env += [{"name": n, "valueFrom": ref} for n in
                ("TETHER_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")]  # fmt: skip
    else:
        env.append({"name": "TETHER_API_KEY_FILE", "value": KEY_FILE})
    env += [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    return env


def _vault_annotations(spec: DeploySpec) -> dict[str, str]:
    vault = spec.key.vault
    if vault is None:
        return {}
    template = (
        f'{{{{ with secret "{vault.path}" }}}}{{{{ .Data.data.{vault.field} }}}}{{{{ end }}}}'
    )
    return {
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/role": vault.role,
        "vault.hashicorp.com/agent-pre-populate-only": "true",
        "vault.hashicorp.com/agent-inject-secret-tether-key": vault.path,
        "vault.hashicorp.com/agent-inject-template-tether-key": template,
    }


def _container(agent: str, spec: DeploySpec) -> Obj:
    c: Obj = {
        "name": "agent",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(agent, spec),
        "resources": {
            "requests": dict(spec.resources.requests),
            "limits": dict(spec.resources.limits),
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "privileged": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if spec.command:
        c["command"] = list(spec.command)
    if spec.args:
        c["args"] = list(spec.args)
    if spec.kind == "service":
        probe = {"httpGet": {"path": spec.probe.path, "port": spec.probe.port}}
        c["ports"] = [{"name": "http", "containerPort": spec.probe.port, "protocol": "TCP"}]
        c["readinessProbe"] = {**probe, "periodSeconds": 10, "failureThreshold": 3}
        c["livenessProbe"] = {**probe, "initialDelaySeconds": 10, "periodSeconds": 20,
                              "failureThreshold": 3}  # fmt: skip
    return c


def _pod(agent: str, spec: DeploySpec, restart: str) -> Obj:
    return {
        "metadata": {"labels": labels(agent), "annotations": _vault_annotations(spec)},
        "spec": {
            "serviceAccountName": object_name(agent),
            # the Vault Agent logs in with the pod's service account token; nothing else needs it
            "automountServiceAccountToken": spec.key.vault is not None,
            "restartPolicy": restart,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [_container(agent, spec)],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        },
    }


def _job_spec(agent: str, spec: DeploySpec, policy: dict[str, Any]) -> Obj:
    job: Obj = {"backoffLimit": 1, "ttlSecondsAfterFinished": 3600,
                "template": _pod(agent, spec, "Never")}  # fmt: skip
    run = (policy.get("budgets") or {}).get("run") or {}
    if isinstance(run.get("max_duration_s"), (int, float)):
        job["activeDeadlineSeconds"] = int(run["max_duration_s"]) + JOB_SLACK_S
    return job


def _workload(agent: str, spec: DeploySpec, policy: dict[str, Any]) -> Obj:
    meta = _meta(agent, spec, policy)
    if spec.kind == "service":
        deployment: Obj = {
            "selector": {"matchLabels": _selector(agent)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": _pod(agent, spec, "Always"),
        }  # fmt: skip
        if spec.autoscaling is None:  # else the HPA owns the replica count
            deployment = {"replicas": spec.replicas, **deployment}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                "spec": deployment}  # fmt: skip
    if spec.kind == "job":
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                "spec": _job_spec(agent, spec, policy)}  # fmt: skip
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta, "spec": {
        "schedule": spec.schedule, "concurrencyPolicy": "Forbid",
        "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
        "jobTemplate": {"metadata": {"labels": labels(agent)},
                        "spec": _job_spec(agent, spec, policy)},
    }}  # fmt: skip


def _network_policy(agent: str, spec: DeploySpec, policy: dict[str, Any]) -> Obj:
    t = spec.tether
    egress: list[Obj] = [
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                       t.namespace}},
                 "podSelector": {"matchLabels": dict(t.pod_labels)}}],
         "ports": [{"protocol": "TCP", "port": t.port}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                       "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
    ]  # fmt: skip
    ingress: list[Obj] = []
    if spec.kind == "service":
        ingress.append({"from": [{"podSelector": {}}],
                        "ports": [{"protocol": "TCP", "port": spec.probe.port}]})  # fmt: skip
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(agent, spec, policy),
        "spec": {
            "podSelector": {"matchLabels": _selector(agent)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def render(agent: str, policy: dict[str, Any], spec: DeploySpec) -> list[Obj]:
    """Every object of the agent, in apply order."""
    out: list[Obj] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(agent, spec, policy),
         "automountServiceAccountToken": spec.key.vault is not None},
        _workload(agent, spec, policy),
        _network_policy(agent, spec, policy),
    ]  # fmt: skip
    if spec.kind != "service":
        return out
    meta = _meta(agent, spec, policy)
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": _selector(agent),
                "ports": [{"name": "http", "port": spec.probe.port, "targetPort": "http"}],
            },
        }
    )
    out.append(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta,
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(agent)}},
        }
    )
    if spec.autoscaling is not None:
        a = spec.autoscaling
        out.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": meta,
                "spec": {
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": object_name(agent),
                    },
                    "minReplicas": a.min_replicas,
                    "maxReplicas": a.max_replicas,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": a.cpu_percent,
                                },
                            },
                        }
                    ],
                },
            }
        )
    return out
