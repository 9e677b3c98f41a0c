"""`tether deploy k8s`: from the stored policy and a deploy spec to files; `kubectl kustomize`
builds every overlay and what it builds still validates on Kubernetes 1.30-1.35."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tests.core.test_k8s import validate_all
from tether.cli.main import app
from tether.store.engine import make_engine
from tether.store.migrate import upgrade
from tether.store.policies import apply_policy

POLICY = """\
agent: invoice-triage
owner: finance-platform
budgets:
  run: {max_cost_usd: 2.00, max_duration_s: 300}
"""
SPEC = """\
image: ghcr.io/acme/invoice-triage:1.4.2
kind: service
replicas: 2
autoscaling: {min_replicas: 2, max_replicas: 6}
key: {secret: invoice-triage-tether-key}
overlays:
  staging: {replicas: 1, namespace: agents-staging}
  production: {replicas: 3, image: "ghcr.io/acme/invoice-triage:1.4.3", env: {LOG_LEVEL: warning}}
"""


def _env(tmp_path: Path) -> dict[str, str | None]:
    db_url = f"sqlite:///{tmp_path / 'tether.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    apply_policy(engine, POLICY, "test", datetime.now(UTC))
    engine.dispose()
    return {"TETHER_HOME": str(tmp_path / "home"), "TETHER_DATABASE_URL": db_url,
            "TETHER_URL": None, "TETHER_API_KEY": None}  # fmt: skip


def _kustomize(path: Path) -> list[dict[str, object]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is missing (the ops tests build kustomize overlays with it)"
    built = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert built.returncode == 0, built.stderr
    return [d for d in yaml.safe_load_all(built.stdout) if d]


def test_kustomize_overlays_build_and_validate(tmp_path: Path) -> None:
    (tmp_path / "deploy.yaml").write_text(SPEC)
    out = tmp_path / "k8s"
    r = CliRunner().invoke(app, ["deploy", "k8s", "invoice-triage", "--spec",
                                 str(tmp_path / "deploy.yaml"), "--out", str(out), "--kustomize"],
                           env=_env(tmp_path))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (out / "base" / "kustomization.yaml").exists()
    built = {}
    for overlay in ("staging", "production"):
        objects = _kustomize(out / "overlays" / overlay)
        validate_all(objects)
        built[overlay] = {str(o["kind"]): o for o in objects}
    staging, prod = built["staging"], built["production"]
    assert staging["Deployment"]["metadata"]["namespace"] == "agents-staging"  # type: ignore[index]
    assert staging["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 1  # type: ignore[index]
    assert prod["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3  # type: ignore[index]
    container = prod["Deployment"]["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert container["image"] == "ghcr.io/acme/invoice-triage:1.4.3"
    assert {"name": "LOG_LEVEL", "value": "warning"} in container["env"]
    assert prod["Deployment"]["metadata"]["labels"]["tether.dev/environment"] == "production"  # type: ignore[index]
    assert set(prod) == {"ServiceAccount", "Deployment", "NetworkPolicy", "Service",
                         "PodDisruptionBudget", "HorizontalPodAutoscaler"}  # fmt: skip


def test_plain_yaml_from_the_stored_policy_on_stdout(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("image: acme/report:2\nkind: job\nkey: {secret: k}\n")
    r = CliRunner().invoke(app, ["deploy", "k8s", "invoice-triage", "--spec",
                                 str(tmp_path / "job.yaml")], env=_env(tmp_path))  # fmt: skip
    assert r.exit_code == 0, r.output
    objects = list(yaml.safe_load_all(r.stdout))
    validate_all(objects)
    job = next(o for o in objects if o["kind"] == "Job")
    assert job["spec"]["activeDeadlineSeconds"] == 300 + 120  # the policy's max_duration_s


def test_bad_input_names_the_file_and_line(tmp_path: Path) -> None:
    env = _env(tmp_path)
    (tmp_path / "bad.yaml").write_text("image: x\nreplicas: -1\nkey: {secret: k}\n")
    r = CliRunner().invoke(app, ["deploy", "k8s", "invoice-triage", "--spec",
                                 str(tmp_path / "bad.yaml")], env=env)  # fmt: skip
    said = " ".join(r.output.split())  # Rich wraps long lines
    assert r.exit_code == 2 and f"{tmp_path / 'bad.yaml'}:2: replicas" in said
    r = CliRunner().invoke(app, ["deploy", "k8s", "nobody"], env=env)
    assert r.exit_code == 1 and "nobody" in r.output
    r = CliRunner().invoke(app, ["deploy", "k8s", "invoice-triage", "--kustomize"], env=env)
    assert r.exit_code == 2 and "--out" in r.output
