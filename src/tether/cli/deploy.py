"""`tether deploy k8s AGENT`: Kubernetes manifests for an agent from its stored policy (or
`--policy FILE`) and a deploy spec; plain YAML on stdout or in `--out`, or a kustomize base
with overlays (`--kustomize`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tether.cli.output import DB_OPTION, console, fail, print_json
from tether.cli.policy import backend, check_file, errors, read_file
from tether.core.deploy_spec import DeploySpec, Key, parse_spec
from tether.core.k8s import render
from tether.core.k8s_layout import dump, kustomize


def load_spec(path: Path | None, agent: str) -> DeploySpec:
    """The deploy spec from `path`; without one, a service reading its key from a Secret
    named `<agent>-tether-key` and an image that must be set later."""
    if path is None:
        return DeploySpec(image=f"registry.example.com/{agent}:latest",
                          key=Key(secret=f"{agent}-tether-key"))  # fmt: skip
    return parse_spec(read_file(path), str(path))


def policy_document(agent: str, policy_file: Path | None, database_url: str | None) -> Any:
    if policy_file is not None:
        policy, _ = check_file(policy_file)
        if policy.agent != agent:
            fail(f"{policy_file} is the policy of agent {policy.agent}, not {agent}; "
                 f"pass the right file or agent name", 2)  # fmt: skip
        return policy.document
    return backend(database_url).get(agent, None)["document"]


def write_files(out: Path, files: dict[str, str]) -> list[str]:
    written = []
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(str(path))
    return written


def register(app: typer.Typer) -> None:
    deploy = typer.Typer(help="Deployment manifests for agents.", no_args_is_help=True)
    app.add_typer(deploy, name="deploy")

    @deploy.command("k8s")
    def k8s(
        agent: str = typer.Argument(..., help="The agent (its policy names its budgets)."),
        spec: Path = typer.Option(None, "--spec", help="deploy.yaml: image, kind, resources..."),
        out: Path = typer.Option(None, "--out", help="Directory to write into (else stdout)."),
        use_kustomize: bool = typer.Option(False, "--kustomize", help="base/ + overlays/."),
        policy_file: Path = typer.Option(
            None, "--policy", help="Policy file instead of the stored policy."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the objects as JSON."),
        database_url: str | None = DB_OPTION,
    ) -> None:
        """Render a Deployment (or Job / CronJob), ServiceAccount, NetworkPolicy (egress only to
        tether and DNS), Service, PDB and HPA for AGENT. No provider key is in any object."""
        with errors():
            document = policy_document(agent, policy_file, database_url)
            deploy_spec = load_spec(spec, agent)
            objects = render(agent, document, deploy_spec)
            if as_json:
                print_json(objects)
                return
            if use_kustomize:
                try:
                    files = kustomize(agent, objects, deploy_spec)
                except ValueError as exc:
                    fail(f"{spec}: {exc}", 2)
                if out is None:
                    fail("--kustomize writes a directory tree: add --out DIR", 2)
            elif out is None:
                typer.echo(dump(objects), nl=False)
                return
            else:
                files = {f"{objects[0]['metadata']['name']}.yaml": dump(objects)}
            for path in write_files(out, files):
                console.print(f"wrote {path}", highlight=False)
