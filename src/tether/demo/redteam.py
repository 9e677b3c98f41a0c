"""The demo's red team: the support agent's policy as `tether policy suggest` proposes it from
recorded runs, less one rule (the bound on transfer amounts), in a throwaway deployment of
tether's red-team world; the scripted, fully hijackable agent runs the packs through the MCP
gateway; most attacks are stopped by the policy, a transfer of 5,000 the task itself asks for
gets through, and the report (stored on the demo's tether, on its Red team page) names the rule
that would have stopped it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from tether.demo.scenarios import Demo

AGENT = "support"
MISSING = "pay.transfer"


def without_amount_bound(source: str) -> str:
    """The suggested policy with `pay.transfer` allowed outright instead of bounded by the
    largest amount in recorded runs (the rule a team writing its own policy forgets)."""
    doc = yaml.safe_load(source)
    kept = [r for r in doc.get("tools") or [] if r.get("match") != MISSING]
    doc["tools"] = [*kept, {"match": MISSING, "allow": True}]
    return str(yaml.safe_dump(doc, sort_keys=False))


def run_red_team(base: Path) -> dict[str, Any]:
    from tether.redteam import report
    from tether.redteam.agents import Obedient
    from tether.redteam.deploy import deploy
    from tether.redteam.efficacy import record_and_suggest
    from tether.redteam.runner import Target
    from tether.redteam.session import run_all
    from tether.redteam.world import PACKS, scenarios

    with deploy(base, AGENT) as dep:
        policy = without_amount_bound(record_and_suggest(dep, AGENT, train_per_domain=1))
        dep.apply(policy)
        chosen = scenarios(list(PACKS), per_domain=1, benign_per_domain=1)
        attempts = run_all(Target(dep.url, dep.agent_key, dep.admin_key), Obedient(), chosen)
    return report.build(attempts, agent=AGENT)


def scenario_redteam(demo: Demo) -> None:
    if not demo.admin_key:
        demo.notes.append("red team skipped: it needs an admin key to store the report")
        return
    with tempfile.TemporaryDirectory(prefix="tether-demo-redteam-") as tmp:
        built = run_red_team(Path(tmp))
    headers = {"Authorization": f"Bearer {demo.admin_key}"}
    stored = httpx.post(f"{demo.url}/api/v1/redteam/reports", json=built, headers=headers,
                        timeout=60)  # fmt: skip
    stored.raise_for_status()
    rid = stored.json()["id"]
    stopped = sum(p["outcomes"].get("stopped", 0) for p in built["packs"].values())
    through = built["successes"]
    note = (f"red team {rid}: {built['attempts']} attacks on {AGENT}, {stopped} stopped by its "
            f"policy, {len(through)} got through")  # fmt: skip
    if through:
        first = through[0]
        note += (
            f" ({first['scenario']}: {first['tool']}); suggested rule: {first['suggested_change']}"
        )
    demo.notes.append(note + f" — {demo.url}/redteam/{rid}")


REDTEAM = [("support agent: a red team of five attack packs (one missing rule)",
            scenario_redteam)]  # fmt: skip
