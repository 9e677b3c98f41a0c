"""Evaluating a task's assertions over what the gateways recorded for one attempt's run: its
spans (tool calls with their policy decisions, refusals), its totals, its held approvals and
its output. Never over what the agent says about itself.

Predicates (`module:function`) and LLM judges need I/O; the caller runs them and passes their
results in, so this stays pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tether.core.eval_suite import AssertionModel
from tether.core.money import nusd_to_usd, usd_to_nusd


@dataclass(frozen=True)
class ToolCall:
    """A tool call the MCP gateway (or the SDK's guard) recorded; `outcome` is the policy's."""

    name: str
    arguments: Mapping[str, Any]
    outcome: str = "allow"  # allow | deny | rate_limited | approval | unknown
    ok: bool = True


@dataclass(frozen=True)
class Observed:
    """One attempt's run as recorded: status, totals, output, tool calls, refusals."""

    status: str
    output: str | None = None
    cost_nusd: int = 0
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    duration_s: float | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    policy_denials: int = 0
    pending_approvals: int = 0
    budget_refusals: int = 0
    killed: bool = False
    kill_reason: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Result:
    name: str
    kind: str
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "passed": self.passed}
        out["reason"] = self.reason
        if self.details:
            out["details"] = self.details
        return out


EXTERNAL_KINDS = frozenset({"output_predicate", "judge"})


def _matches(call: ToolCall, a: AssertionModel) -> bool:
    for key, want in (a.args or {}).items():
        if key not in call.arguments or not _equal(call.arguments[key], want):
            return False
    for key, pattern in (a.args_match or {}).items():
        if key not in call.arguments:
            return False
        value = call.arguments[key]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if re.search(pattern, text) is None:
            return False
    return True


def _equal(got: Any, want: Any) -> bool:
    # A mapping in the suite matches when its keys are a subset with equal values; YAML may
    # read 1234 where the agent sent "1234", so scalars also compare as text.
    if isinstance(want, dict):
        return isinstance(got, dict) and all(
            k in got and _equal(got[k], v) for k, v in want.items()
        )
    if got == want:
        return True
    return (
        not isinstance(want, list | dict)
        and not isinstance(got, list | dict)
        and str(got) == str(want)
    )


def _described(a: AssertionModel) -> str:
    parts = []
    if a.args:
        parts.append(f"args {json.dumps(a.args, sort_keys=True, default=str)}")
    if a.args_match:
        parts.append(f"args matching {json.dumps(a.args_match, sort_keys=True)}")
    return f" with {' and '.join(parts)}" if parts else ""


def _tool(a: AssertionModel, obs: Observed) -> tuple[bool, str]:
    wanted = a.tool_called if a.tool_called is not None else a.tool_not_called
    assert wanted is not None
    same_name = [c for c in obs.tool_calls if c.name == wanted]
    hits = [c for c in same_name if _matches(c, a)]
    what = f"{wanted}{_described(a)}"
    if a.tool_not_called is not None:
        if hits:
            return False, f"{what} was called {len(hits)} time(s)"
        return True, f"{what} was not called"
    low = a.at_least if a.at_least is not None else 1
    if a.at_most is not None and a.at_least is None and a.at_most == 0:
        low = 0
    if len(hits) < low:
        seen = sorted({c.name for c in obs.tool_calls})
        extra = (
            f"; {wanted} was called {len(same_name)} time(s) with other arguments"
            if same_name
            else f"; tools called: {', '.join(seen) or 'none'}"
        )
        return False, f"{what} was called {len(hits)} time(s), expected at least {low}{extra}"
    if a.at_most is not None and len(hits) > a.at_most:
        return False, f"{what} was called {len(hits)} times, at most {a.at_most} allowed"
    return True, f"{what} was called {len(hits)} time(s)"


def _in_order(expected: Sequence[str], obs: Observed) -> tuple[bool, str]:
    names = [c.name for c in obs.tool_calls]
    i = 0
    for name in names:
        if i < len(expected) and name == expected[i]:
            i += 1
    if i == len(expected):
        return True, f"called {' -> '.join(expected)} in order"
    return False, (
        f"expected {' -> '.join(expected)} in order; got {' -> '.join(names) or 'no tool call'}"
        f" (missing from {expected[i]})"
    )


def _usd(nusd: int) -> str:
    return f"${nusd_to_usd(nusd).normalize():f}"


def _output(a: AssertionModel, obs: Observed) -> tuple[bool, str]:
    out = obs.output
    if out is None:
        return False, "the run recorded no output"
    short = out if len(out) <= 120 else out[:117] + "..."
    if a.output_contains is not None:
        ok = a.output_contains in out
        return ok, f"output {'contains' if ok else 'does not contain'} {a.output_contains!r}"
    if a.output_matches is not None:
        ok = re.search(a.output_matches, out) is not None
        return ok, f"output {'matches' if ok else 'does not match'} /{a.output_matches}/: {short!r}"
    if a.output_schema is not None:
        return _schema(a.output_schema, out)
    want = a.output_equals
    if isinstance(want, str):
        ok = out.strip() == want.strip()
    else:
        try:
            ok = json.loads(out) == want
        except ValueError:
            ok = False
    return ok, "output equals the expected value" if ok else f"output {short!r} != {want!r}"


def _schema(schema: dict[str, Any], out: str) -> tuple[bool, str]:
    from jsonschema import Draft202012Validator

    try:
        value = json.loads(out)
    except ValueError:
        return False, "output is not JSON"
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(root)"
        return False, f"output does not fit the schema at {where}: {errors[0].message}"
    return True, "output fits the schema"


def check(a: AssertionModel, obs: Observed) -> Result:
    """One built-in assertion over the observed run (not predicates or judges)."""
    kind = a.kind
    ok: bool
    if kind in ("tool_called", "tool_not_called"):
        ok, why = _tool(a, obs)
    elif kind == "tools_in_order":
        ok, why = _in_order(a.tools_in_order or [], obs)
    elif kind == "no_policy_denial":
        ok = obs.policy_denials == 0
        why = f"{obs.policy_denials} policy denial(s) recorded"
    elif kind == "no_pending_approval":
        ok = obs.pending_approvals == 0
        why = f"{obs.pending_approvals} held call(s) left undecided"
    elif kind == "no_budget_refusal":
        ok = obs.budget_refusals == 0
        why = f"{obs.budget_refusals} budget refusal(s) recorded"
    elif kind == "no_kill":
        ok = not obs.killed
        why = (
            f"run killed: {obs.kill_reason or 'no reason recorded'}" if obs.killed else "not killed"
        )
    elif kind == "max_cost_usd":
        cap = usd_to_nusd(Decimal(a.max_cost_usd or 0))
        ok = obs.cost_nusd <= cap
        why = f"cost {_usd(obs.cost_nusd)} {'<=' if ok else '>'} {_usd(cap)}"
    elif kind == "max_llm_calls":
        ok = obs.llm_calls <= (a.max_llm_calls or 0)
        why = f"{obs.llm_calls} LLM call(s), at most {a.max_llm_calls}"
    elif kind == "max_tokens":
        total = obs.input_tokens + obs.output_tokens
        ok = total <= (a.max_tokens or 0)
        why = f"{total} tokens, at most {a.max_tokens}"
    elif kind == "max_duration_s":
        took = obs.duration_s
        ok = took is not None and took <= (a.max_duration_s or 0)
        why = (
            "the run has not ended"
            if took is None
            else f"took {took:.2f}s, at most {a.max_duration_s}s"
        )
    elif kind.startswith("output_") and kind != "output_predicate":
        ok, why = _output(a, obs)
    else:
        raise ValueError(f"{kind} is evaluated by the runner, not by core.assertions")
    return Result(a.name, kind, ok, why)


def evaluate(
    assertions: Sequence[AssertionModel],
    obs: Observed,
    external: Mapping[str, Result] | None = None,
) -> list[Result]:
    """Every assertion in order; predicates and judges come from `external` by name (a missing
    one fails, saying it was not run)."""
    external = external or {}
    out = []
    for a in assertions:
        if a.kind in EXTERNAL_KINDS:
            out.append(external.get(a.name) or Result(a.name, a.kind, False, "was not evaluated"))
        else:
            out.append(check(a, obs))
    return out
