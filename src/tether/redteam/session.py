"""Running scenarios in order against a deployment and collecting the scored attempts."""

from __future__ import annotations

import os
from collections.abc import Iterable

import anyio

from tether.redteam.runner import Agent, Attempt, Target, run_scenario
from tether.redteam.world import Scenario


def run_all(
    target: Target, agent: Agent, scenarios: Iterable[Scenario], *, repeat: int = 1
) -> list[Attempt]:
    """Each scenario `repeat` times, each time in a fresh run."""
    todo = [s for s in scenarios for _ in range(repeat)]

    async def main() -> list[Attempt]:
        out = []
        for s in todo:
            run_id = f"run_rt_{os.urandom(8).hex()}"
            out.append(await run_scenario(target, agent, s, run_id))
        return out

    return anyio.run(main)
