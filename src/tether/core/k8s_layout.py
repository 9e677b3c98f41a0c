"""Lays rendered manifests out as files: one multi-document YAML, or a kustomize base with one
overlay per environment of the deploy spec (replicas, image, namespace, extra env)."""

from __future__ import annotations

from typing import Any

import yaml

from tether.core.deploy_spec import DeploySpec
from tether.core.k8s import Obj, object_name

KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"
_OVERLAY_KEYS = {"replicas", "image", "namespace", "env"}


def dump(objects: list[Obj]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False)


def _file_of(obj: Obj) -> str:
    return f"{obj['kind'].lower()}.yaml"


def _split_image(image: str) -> tuple[str, str | None]:
    """`repo/name:tag` -> (repo/name, tag); a digest or no tag gives (image, None)."""
    if "@" in image:
        return image.split("@", 1)[0], None
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, None
    return name, tag


def check_overlays(spec: DeploySpec) -> None:
    for env, values in spec.overlays.items():
        unknown = set(values) - _OVERLAY_KEYS
        if unknown:
            raise ValueError(f"overlay {env}: unknown keys {sorted(unknown)}; "
                             f"use {sorted(_OVERLAY_KEYS)}")  # fmt: skip


def kustomize(agent: str, objects: list[Obj], spec: DeploySpec) -> dict[str, str]:
    """{relative path: file text}: base/ and overlays/<env>/ for each overlay."""
    check_overlays(spec)
    files = {f"base/{_file_of(o)}": dump([o]) for o in objects}
    files["base/kustomization.yaml"] = yaml.safe_dump(
        {"apiVersion": KUSTOMIZE_API, "kind": "Kustomization",
         "resources": [_file_of(o) for o in objects]}, sort_keys=False,
    )  # fmt: skip
    base_image, _ = _split_image(spec.image)
    workload = next(o for o in objects if o["kind"] in ("Deployment", "Job", "CronJob"))
    for env, values in sorted(spec.overlays.items()):
        k: dict[str, Any] = {"apiVersion": KUSTOMIZE_API, "kind": "Kustomization",
                             "resources": ["../../base"],
                             "labels": [{"pairs": {"tether.dev/environment": env},
                                         "includeSelectors": False}]}  # fmt: skip
        if "namespace" in values:
            k["namespace"] = str(values["namespace"])
        if "image" in values:
            name, tag = _split_image(str(values["image"]))
            image: dict[str, str] = {"name": base_image, "newName": name}
            if tag:
                image["newTag"] = tag
            k["images"] = [image]
        patches: list[dict[str, Any]] = []
        hpa = any(o["kind"] == "HorizontalPodAutoscaler" for o in objects)
        if "replicas" in values and workload["kind"] == "Deployment":
            count = int(values["replicas"])
            if hpa:  # the HPA owns the count: the overlay sets its floor
                ops = [{"op": "replace", "path": "/spec/minReplicas", "value": count}]
                patches.append({"target": {"kind": "HorizontalPodAutoscaler",
                                           "name": object_name(agent)},
                                "patch": yaml.safe_dump(ops)})  # fmt: skip
            else:
                k["replicas"] = [{"name": object_name(agent), "count": count}]
        if values.get("env"):
            patches.append(
                {
                    "target": {"kind": workload["kind"], "name": object_name(agent)},
                    "patch": yaml.safe_dump(_env_patch(workload, values["env"])),
                }
            )
        if patches:
            k["patches"] = patches
        files[f"overlays/{env}/kustomization.yaml"] = yaml.safe_dump(k, sort_keys=False)
    return files


def _env_patch(workload: Obj, env: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON-patch ops appending the overlay's env vars to the agent container."""
    path = {"Deployment": "/spec/template", "Job": "/spec/template",
            "CronJob": "/spec/jobTemplate/spec/template"}[workload["kind"]]  # fmt: skip
    return [
        {
            "op": "add",
            "path": f"{path}/spec/containers/0/env/-",
            "value": {"name": str(k), "value": str(v)},
        }
        for k, v in sorted(env.items())
    ]
