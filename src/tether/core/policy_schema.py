"""The boundary policy YAML: a pydantic model of the document, a parser whose every error
names the line, the field, the problem and the fix (`FILE:LINE: field: problem. Fix: ...`),
and the glob helpers (compile, lint for unreachable rules) the policy engine shares.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from tether.core.errors import BadRequestError
from tether.core.memory import check_embedder
from tether.core.policy_args import ConditionModel, Scalar
from tether.core.tags import suggest_tag, unknown_tags

_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")
_AGENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")


def parse_rate_limit(text: str) -> tuple[int, int]:
    """`"10/hour"` -> (10, 3600). Raises ValueError with the fix in its message."""
    m = _RATE_RE.match(text.lower())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(
            f'rate_limit "{text}" is not N/unit. Fix: write it like "10/hour" '
            "(units: second, minute, hour, day)"
        )
    count = int(m.group(1))
    if count < 1:
        raise ValueError(
            f'rate_limit "{text}" allows no call. Fix: use allow: false to forbid the tool'
        )
    return count, _UNITS[m.group(2)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunBudgetModel(_Model):
    max_cost_usd: Decimal | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_llm_calls: int | None = Field(default=None, ge=0)
    max_tool_calls: int | None = Field(default=None, ge=0)
    max_duration_s: float | None = Field(default=None, gt=0)


class DayBudgetModel(_Model):
    max_cost_usd: Decimal | None = Field(default=None, ge=0)


class BudgetsModel(_Model):
    run: RunBudgetModel = Field(default_factory=RunBudgetModel)
    day: DayBudgetModel = Field(default_factory=DayBudgetModel)
    user_day: DayBudgetModel = Field(default_factory=DayBudgetModel)


SystemName = Annotated[str, Field(pattern=r"^[A-Za-z0-9*][A-Za-z0-9._*-]{0,199}$")]


class SystemsModel(_Model):
    """The systems an agent may read and write (`erp.invoices`; `erp` covers `erp.*`). A tool
    touches the systems `tether.yaml` gives it (`mcp_servers[].systems`), else its server's."""

    read: list[SystemName] = Field(default_factory=list)
    write: list[SystemName] = Field(default_factory=list)


class ToolRuleModel(_Model):
    match: str = Field(min_length=1)
    allow: bool = True
    approval: Literal["required", "none"] = "none"
    rate_limit: str | None = None
    tags: list[str] = Field(default_factory=list)
    reason: str | None = None
    when: dict[str, ConditionModel] | None = None

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is not None:
            parse_rate_limit(v)
        return v


class SurfaceRuleModel(_Model):
    """A rule for MCP resources (glob on "server:uri") or prompts (glob on "server.name")."""

    match: str = Field(min_length=1)
    allow: bool = True
    tags: list[str] = Field(default_factory=list)
    reason: str | None = None


class DataFlowModel(_Model):
    """`after_tag` (run-wide: once any tool so tagged returned) or `argument_from: untrusted`
    (value provenance: an argument carries a value seen only in untrusted content), then
    approval (`require_approval_for_tag`) or refusal (`deny_for_tag`) for tools so tagged."""

    after_tag: str | None = Field(default=None, min_length=1)
    argument_from: Literal["untrusted"] | None = None
    arguments: list[str] | None = None
    require_approval_for_tag: str | None = Field(default=None, min_length=1)
    deny_for_tag: str | None = Field(default=None, min_length=1)


class RegistryListModel(_Model):
    """`lists: {payees: {registry: finance-payees}}`: the entries live in tether's registry
    (`tether lists ...`), so people can change them without a new policy version."""

    registry: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")


def _list_kind(value: Any) -> str:
    return "registry" if isinstance(value, dict | RegistryListModel) else "inline"


# A list's entries inline, or a reference to a registry list; the tag keeps errors about one.
ListValue = Annotated[
    Annotated[list[Scalar], Tag("inline")] | Annotated[RegistryListModel, Tag("registry")],
    Discriminator(_list_kind),
]


class MemoryGrantModel(_Model):
    namespace: str = Field(min_length=1, max_length=200)
    expires_at: datetime | None = None
    tags: list[str] = Field(default_factory=list)

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError(
                "expires_at has no time zone. Fix: write it in UTC, e.g. 2027-01-31T00:00:00Z"
            )
        return v


class MemoryModel(_Model):
    namespace: str | None = Field(default=None, min_length=1, max_length=200)
    read_grants: list[str | MemoryGrantModel] = Field(default_factory=list)
    write_grants: list[str | MemoryGrantModel] = Field(default_factory=list)
    embedder: str | None = None

    @field_validator("embedder")
    @classmethod
    def _embedder(cls, v: str | None) -> str | None:
        return check_embedder(v)

    quota_items: int | None = Field(default=None, gt=0)
    quota_bytes: int | None = Field(default=None, gt=0)


class ApprovalModel(_Model):
    timeout_s: int | None = Field(default=None, gt=0)
    default: Literal["deny", "allow"] = "deny"


class PolicyModel(_Model):
    agent: str
    owner: str | None = None
    description: str | None = None
    models: list[str] | None = None
    budgets: BudgetsModel = Field(default_factory=BudgetsModel)
    systems: SystemsModel = Field(default_factory=SystemsModel)
    tools: list[ToolRuleModel] = Field(default_factory=list)
    resources: list[SurfaceRuleModel] = Field(default_factory=list)
    prompts: list[SurfaceRuleModel] = Field(default_factory=list)
    data_flow: list[DataFlowModel] = Field(default_factory=list)
    on_uncertain: Literal["ask", "deny", "allow"] = "ask"
    memory: MemoryModel = Field(default_factory=MemoryModel)
    approval: ApprovalModel = Field(default_factory=ApprovalModel)
    # named lists for argument conditions (contacts, payees, allowed domains); trusted values.
    # Entries inline, or `{registry: NAME}` for a list kept in tether's registry.
    lists: dict[str, ListValue] = Field(default_factory=dict)
    # tags beyond the built-in ones (core/tags.py) that rules may use, e.g. [pii]
    tags: list[str] = Field(default_factory=list)

    @field_validator("agent")
    @classmethod
    def _agent(cls, v: str) -> str:
        if not _AGENT_RE.match(v):
            raise ValueError(
                f'agent "{v}" has characters tether does not accept. Fix: use letters, digits, '
                '".", "_", "-" (at most 200)'
            )
        return v


# The keys each mapping accepts, by path shape ("*" stands for a list index): for did-you-mean.
_KEYS: dict[tuple[str, ...], type[BaseModel]] = {
    (): PolicyModel,
    ("budgets",): BudgetsModel,
    ("budgets", "run"): RunBudgetModel,
    ("budgets", "day"): DayBudgetModel,
    ("budgets", "user_day"): DayBudgetModel,
    ("systems",): SystemsModel,
    ("tools", "*"): ToolRuleModel,
    ("data_flow", "*"): DataFlowModel,
    ("tools", "*", "when", "*"): ConditionModel,
    ("resources", "*"): SurfaceRuleModel,
    ("prompts", "*"): SurfaceRuleModel,
    ("memory",): MemoryModel,
    ("memory", "read_grants", "*"): MemoryGrantModel,
    ("memory", "write_grants", "*"): MemoryGrantModel,
    ("approval",): ApprovalModel,
    ("lists", "*"): RegistryListModel,
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a policy file, at a line (1-based)."""

    line: int
    field: str
    problem: str
    fix: str

    def format(self, file: str) -> str:
        return f"{file}:{self.line}: {self.field}: {self.problem}. Fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "problem": self.problem, "fix": self.fix}


class PolicyError(BadRequestError):
    """A policy document that does not validate; `problems` lists every error with its line."""

    def __init__(self, problems: list[Problem], file: str = "<policy>") -> None:
        self.problems = tuple(problems)
        self.file = file
        lines = [p.format(file) for p in self.problems]
        super().__init__(
            "\n".join(lines), code="invalid_policy", errors=[p.to_dict() for p in self.problems]
        )


def field_name(loc: tuple[Any, ...]) -> str:
    """('tools', 2, 'rate_limit') -> 'tools[2].rate_limit'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


_MAX_NODES = 100_000
_MAX_DEPTH = 50


class _TooBig(Exception):
    pass


class _Lines:
    """Line numbers of every value and key in the document, by path."""

    def __init__(self) -> None:
        self.value: dict[tuple[Any, ...], int] = {}
        self.key: dict[tuple[Any, ...], int] = {}

    def find(self, loc: tuple[Any, ...], *, key: bool = False) -> int:
        table = self.key if key else self.value
        for n in range(len(loc), -1, -1):
            if loc[:n] in table:
                return table[loc[:n]]
            if n and loc[:n] in self.key:
                return self.key[loc[:n]]
        return 1


def _to_python(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: tuple[Any, ...],
    lines: _Lines,
    problems: list[Problem],
) -> Any:
    lines.value[path] = node.start_mark.line + 1
    if len(lines.value) > _MAX_NODES or len(path) > _MAX_DEPTH:
        # YAML aliases can expand a short text into billions of nodes ("billion laughs").
        raise _TooBig
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            sub = (*path, key)
            if key in out:
                problems.append(
                    Problem(
                        key_node.start_mark.line + 1,
                        field_name(sub),
                        "duplicate key",
                        f"keep one `{key}:` in this mapping",
                    )
                )
            lines.key[sub] = key_node.start_mark.line + 1
            out[key] = _to_python(loader, value_node, sub, lines, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _to_python(loader, item, (*path, i), lines, problems)
            for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def load_document(source: str, file: str = "<policy>") -> tuple[dict[str, Any], _Lines]:
    """Parses YAML into plain data plus line numbers; raises PolicyError on bad YAML."""
    lines = _Lines()
    problems: list[Problem] = []
    try:
        loader = yaml.SafeLoader(source)
    except yaml.reader.ReaderError as exc:
        line = source[: exc.position].count("\n") + 1
        bad = Problem(
            line,
            "(yaml)",
            f"character #x{exc.character:04x} is not allowed",
            "remove the control character (save the file as plain UTF-8 text)",
        )
        raise PolicyError([bad], file) from None
    try:
        node = loader.get_single_node()
        data = _to_python(loader, node, (), lines, problems) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = str(exc.problem or exc.context or "invalid YAML")
        raise PolicyError(
            [
                Problem(
                    line,
                    "(yaml)",
                    problem,
                    "correct the YAML syntax on this line (indentation, quotes, a missing colon)",
                )
            ],
            file,
        ) from None
    except (_TooBig, RecursionError):  # the YAML parser itself recurses per nesting level
        bad = Problem(
            1,
            "(document)",
            "the document is too large or too deeply nested",
            f"keep it under {_MAX_NODES} values and {_MAX_DEPTH} levels; avoid aliases",
        )
        raise PolicyError([bad], file) from None
    except yaml.YAMLError as exc:
        bad = Problem(1, "(yaml)", str(exc), "correct the YAML syntax")
        raise PolicyError([bad], file) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise PolicyError(
            [
                Problem(
                    1,
                    "(document)",
                    "the policy must be a YAML mapping",
                    "start with `agent: NAME` and add the keys shown in the README example",
                )
            ],
            file,
        )
    if problems:
        raise PolicyError(problems, file)
    return data, lines


def _shape(loc: tuple[Any, ...]) -> tuple[str, ...]:
    shape = tuple("*" if isinstance(p, int) else str(p) for p in loc)
    if len(shape) == 4 and shape[:3] == ("tools", "*", "when"):
        return ("tools", "*", "when", "*")  # the argument name is the user's
    if len(shape) == 2 and shape[0] == "lists":
        return ("lists", "*")  # the list name is the user's
    return shape


def _problem(err: Any, lines: _Lines) -> Problem:
    loc = tuple(err["loc"])
    if len(loc) >= 3 and loc[0] == "lists" and loc[2] in ("inline", "registry"):
        loc = loc[:2] + loc[3:]  # the union's tag is no key of the document
    kind = err["type"]
    name = field_name(loc)
    if kind == "extra_forbidden":
        model = _KEYS.get(_shape(loc[:-1]))
        allowed = sorted(f.alias or n for n, f in model.model_fields.items()) if model else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        fix = (
            f"did you mean `{close[0]}`?"
            if close
            else f"remove it; allowed keys here: {', '.join(allowed)}"
        )
        return Problem(lines.find(loc, key=True), name, f"unknown key `{loc[-1]}`", fix)
    line = lines.find(loc)
    if kind == "missing":
        return Problem(line, name, "required key is missing", f"add `{loc[-1]}: ...`")
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if ". Fix: " in msg:
        problem, fix = msg.split(". Fix: ", 1)
        return Problem(line, name, problem, fix)
    fixes = {
        "greater_than_equal": "use 0 or a positive number, or remove the key for no limit",
        "greater_than": "use a positive number, or remove the key for no limit",
        "literal_error": "use one of the values listed",
        "bool_parsing": "use true or false",
        "bool_type": "use true or false",
        "int_parsing": "use a whole number",
        "int_from_float": "use a whole number",
        "decimal_parsing": "use a number such as 2.50",
        "list_type": "use a YAML list such as [a, b]",
        "model_type": "use a mapping such as {key: value}",
        "model_attributes_type": "use a mapping such as {key: value}",
        "string_type": "quote the value",
        "string_too_short": "give a non-empty value",
        "string_pattern_mismatch": "use letters, digits and . _ - (and * for a glob of systems)",
    }
    fix = fixes.get(kind, "see the policy example in the README (Tool governance)")
    return Problem(line, name, msg[0].lower() + msg[1:] if msg else kind, fix)


# Sections the schema parses but nothing enforces yet. A policy carrying one is refused, so that
# it never seems to grant or forbid what it does not. The feature that enforces a section lifts
# its refusal by deleting its entry here (and the test that pins it). (`systems:` and
# `memory:` are enforced now.)
NOT_ENFORCED: dict[str, tuple[str, str]] = {}


def _not_enforced(data: dict[str, Any], lines: _Lines) -> list[Problem]:
    return [
        Problem(lines.find((key,), key=True), key, problem, fix)
        for key, (problem, fix) in NOT_ENFORCED.items()
        if key in data
    ]


def parse_policy_model(source: str, file: str = "<policy>") -> PolicyModel:
    """Validates a policy YAML text; raises PolicyError listing every problem with its line."""
    data, lines = load_document(source, file)
    problems = _not_enforced(data, lines)
    try:
        model = PolicyModel.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(e, lines) for e in exc.errors()]
        raise PolicyError(sorted(problems, key=lambda p: (p.line, p.field)), file) from None
    problems += cross_check(model, lines)
    if problems:
        raise PolicyError(sorted(problems, key=lambda p: (p.line, p.field)), file)
    return model


def cross_check(m: PolicyModel, lines: _Lines) -> list[Problem]:
    """What a field alone cannot say and would silently disable a defence: unknown tags, lists
    that do not exist, data-flow rules without a trigger or an action, rules that never fire."""
    out: list[Problem] = []

    def bad(loc: tuple[Any, ...], problem: str, fix: str) -> None:
        out.append(Problem(lines.find(loc), field_name(loc), problem, fix))

    declared = m.tags
    for i, t in enumerate(m.tools):
        for j, tag in enumerate(t.tags):
            if unknown_tags([tag], declared):
                bad(("tools", i, "tags", j), f"unknown tag `{tag}`", suggest_tag(tag, declared))
        for arg, cond in (t.when or {}).items():
            for op, name in cond.list_names():
                if name not in m.lists:
                    have = ", ".join(sorted(m.lists)) or "none"
                    bad(("tools", i, "when", arg, op), f"no list named `{name}` (lists: {have})",
                        f"add `lists: {{{name}: [...]}}` or correct the name")  # fmt: skip
        if not t.allow and t.approval == "required":
            bad(("tools", i, "approval"), "approval on a rule that denies never fires",
                "remove `approval:` or `allow: false`")  # fmt: skip
    for section in ("resources", "prompts"):
        for i, r in enumerate(getattr(m, section)):
            for j, tag in enumerate(r.tags):
                if unknown_tags([tag], declared):
                    bad((section, i, "tags", j), f"unknown tag `{tag}`", suggest_tag(tag, declared))
    for i, d in enumerate(m.data_flow):
        loc: tuple[Any, ...] = ("data_flow", i)
        for key in ("after_tag", "require_approval_for_tag", "deny_for_tag"):
            tag = getattr(d, key)
            if tag is not None and unknown_tags([tag], declared):
                bad((*loc, key), f"unknown tag `{tag}`, so this rule never fires",
                    suggest_tag(tag, declared))  # fmt: skip
        if (d.after_tag is None) == (d.argument_from is None):
            bad(loc, "give exactly one trigger", "use `after_tag: TAG` (run-wide) or "
                "`argument_from: untrusted` (the call's own arguments)")  # fmt: skip
        if (d.require_approval_for_tag is None) == (d.deny_for_tag is None):
            bad(loc, "give exactly one action", "use `require_approval_for_tag: TAG` or "
                "`deny_for_tag: TAG`")  # fmt: skip
        if d.arguments is not None and d.argument_from is None:
            bad((*loc, "arguments"), "`arguments` only narrows `argument_from`",
                "add `argument_from: untrusted` or remove `arguments`")  # fmt: skip
        if d.arguments == []:
            bad((*loc, "arguments"), "an empty list names no argument, so the rule never fires",
                "list argument names, or remove `arguments` to check every argument")  # fmt: skip
    for tag in m.tags:
        if not unknown_tags([tag]):
            bad(("tags",), f"`{tag}` is built in", f"remove `{tag}` from `tags:`")
    out.extend(_unreachable(m, lines))
    return out


def glob_regex(pattern: str) -> str:
    """A glob on "server.tool" as a regex body (fnmatch rules, case-sensitive, `*` spans dots)."""
    body = fnmatch.translate(pattern)
    # fnmatch.translate gives "(?s:BODY)\Z"; keep the group so it can join an alternation.
    return body[: -len(r"\Z")] if body.endswith(r"\Z") else body


def _covers(earlier: str, later: str) -> bool:
    # Sound only for globs of literals and `*`: then every name `later` matches, `earlier` does.
    if any(c in earlier for c in "?[]") or "[" in later:
        return False
    return re.fullmatch(glob_regex(earlier), later) is not None


def _unreachable(m: PolicyModel, lines: _Lines) -> list[Problem]:
    """Tool rules that can never match: an earlier rule without conditions whose glob covers
    every name a later one matches, so first-match-wins never reaches the later one."""
    out = []
    for i, later in enumerate(m.tools):
        for j, earlier in enumerate(m.tools[:i]):
            if not earlier.when and _covers(earlier.match, later.match):
                problem = f'rule "{later.match}" is never reached: tools[{j}] "{earlier.match}" '
                problem += "matches first"
                fix = f"move tools[{i}] above tools[{j}] (first match wins)"
                out.append(Problem(lines.find(("tools", i)), f"tools[{i}]", problem, fix))
                break
    return out
