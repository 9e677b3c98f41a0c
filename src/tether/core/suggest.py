"""A proposed boundary policy for an agent, from what tether knows: the registry's tools (tags,
MCP annotations, input schemas) and the agent's recorded runs (which tools it called, which
counterparties its task inputs named). Pure; the result is YAML text for a person to review.

The proposal: tools the agent used are allowed (irreversible ones it never used need
approval, other unused tools are denied); reading the open world marks the run untrusted;
counterparty arguments of egress and irreversible tools (recipients, IBANs, URLs, channels,
file ids...) are held when their value came only from untrusted content; the counterparties
its tasks named become trusted lists; nothing unnamed is allowed (`on_uncertain: deny`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tether.core.provenance import atoms_of

# Argument names (and JSON-schema formats) that say "who or where": the values an injection
# wants to choose. Matched on whole words of the property name.
COUNTERPARTY_WORDS = frozenset({
    "to", "cc", "bcc", "recipient", "recipients", "email", "emails", "address", "iban",
    "account", "payee", "beneficiary", "url", "uri", "link", "webhook", "channel", "user",
    "users", "attendee", "attendees", "guest", "invitee", "invitees", "phone", "host",
    "domain", "path", "file", "file_id", "repo", "command", "cmd", "target", "share_with",
})  # fmt: skip
COUNTERPARTY_FORMATS = frozenset({"email", "uri", "url", "idn-email", "hostname"})


@dataclass(frozen=True)
class ToolInfo:
    name: str
    tags: frozenset[str]
    input_schema: Mapping[str, Any] | None = None


@dataclass
class Usage:
    """What the agent's recorded runs show."""

    runs: int = 0
    tools: dict[str, int] = field(default_factory=dict)
    task_inputs: list[str] = field(default_factory=list)
    # tool -> numeric argument -> the largest value the agent passed
    max_numbers: dict[str, dict[str, float]] = field(default_factory=dict)
    # the most tool calls one run made
    max_tool_calls: int = 0


def counterparty_arguments(schema: Mapping[str, Any] | None) -> list[str]:
    """The properties of an input schema that name a counterparty or a target."""
    props = (schema or {}).get("properties") or {}
    out = []
    for name, spec in props.items():
        words = set(re.split(r"[^a-z0-9]+", str(name).lower())) | {str(name).lower()}
        fmt = spec.get("format") if isinstance(spec, Mapping) else None
        item_fmt = (spec.get("items") or {}).get("format") if isinstance(spec, Mapping) else None
        if words & COUNTERPARTY_WORDS or {fmt, item_fmt} & COUNTERPARTY_FORMATS:
            out.append(str(name))
    return sorted(out)


def _lists(inputs: Iterable[str]) -> dict[str, list[str]]:
    emails: set[str] = set()
    ibans: set[str] = set()
    for text in inputs:
        for atom in atoms_of(text):
            if atom.kind == "email":
                emails.add(atom.value)
            elif atom.kind == "iban":
                ibans.add(atom.value)
    out = {}
    if emails:
        out["contacts"] = sorted(emails)
    if ibans:
        out["payees"] = sorted(ibans)
    return out


def _round_up(value: float) -> float | int:
    """A bound a person reads easily, never below the value seen."""
    if value <= 0:
        return 0
    magnitude = 10 ** max(0, len(str(int(value))) - 2)
    bound = -(-value // magnitude) * magnitude
    return int(bound) if bound == int(bound) else float(bound)


def suggest(agent: str, tools: Iterable[ToolInfo], usage: Usage) -> str:
    """The proposed policy as commented YAML (validated by `Policy.parse` in the tests)."""
    rules: list[dict[str, Any]] = []
    sensitive_args: set[str] = set()
    notes: list[str] = []
    for tool in sorted(tools, key=lambda t: t.name):
        used = usage.tools.get(tool.name, 0)
        outward = {"egress", "irreversible"} & tool.tags
        if outward:
            sensitive_args.update(counterparty_arguments(tool.input_schema))
        bounds = usage.max_numbers.get(tool.name, {}) if outward else {}
        if used and bounds:
            # amounts beyond anything the agent's recorded runs moved wait for a person
            when = {arg: {"max": _round_up(v)} for arg, v in sorted(bounds.items())}
            rules.append({"match": tool.name, "when": when, "allow": True})
            rules.append({"match": tool.name, "approval": "required",
                          "reason": "above the largest value in recorded runs"})  # fmt: skip
        elif used:
            rules.append({"match": tool.name, "allow": True})
        elif "irreversible" in tool.tags:
            rules.append({"match": tool.name, "approval": "required"})
            notes.append(f"{tool.name}: irreversible and never used by {agent}: held")
        else:
            rules.append(
                {
                    "match": tool.name,
                    "allow": False,
                    "reason": f"not used by {agent} in {usage.runs} recorded runs",
                }
            )
    doc: dict[str, Any] = {"agent": agent}
    if usage.max_tool_calls:
        # a loop is cut at three times the busiest recorded run (at least 10 calls)
        doc["budgets"] = {"run": {"max_tool_calls": max(10, 3 * usage.max_tool_calls)}}
    doc["tools"] = rules
    lists = _lists(usage.task_inputs)
    if lists:
        doc["lists"] = lists
    flow: list[dict[str, Any]] = []
    if sensitive_args:
        args = sorted(sensitive_args)
        flow.append({"argument_from": "untrusted", "arguments": args,
                     "require_approval_for_tag": "egress"})  # fmt: skip
        flow.append({"argument_from": "untrusted", "arguments": list(args),
                     "require_approval_for_tag": "irreversible"})  # fmt: skip
    if flow:
        doc["data_flow"] = flow
    doc["on_uncertain"] = "deny"
    head = [
        f"# Proposed by `tether policy suggest {agent}` from {len(rules)} registry tools and "
        f"{usage.runs} recorded runs.",
        "# Review before applying: allowed = used by the agent; counterparty arguments of egress",
        "# and irreversible tools are held when their value came only from untrusted content.",
    ]
    head += [f"# {n}" for n in notes]
    return "\n".join(head) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=100)
