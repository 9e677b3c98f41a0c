"""The eval suite YAML (`evals/*.yaml`): a pydantic model of the document and a parser whose every
error names the line (`FILE:LINE: field: problem. Fix: ...`), as the policy parser does.

    suite: refunds
    agent: support-bot
    target_cost_usd: 0.05
    repeats: 3
    tasks:
      - id: refund-small
        input: "Refund order 1234"
        assert:
          - {name: looked it up, tool_called: crm.lookup, args: {order_id: "1234"}}
          - {name: stayed cheap, max_cost_usd: 0.02}
"""

from __future__ import annotations

import difflib
import re
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tether.core.policy_schema import PolicyError, Problem, _Model, field_name, load_document
from tether.core.policy_schema import _problem as policy_problem

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
_PREDICATE_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# Each assertion is a mapping with a `name` and exactly one of these kinds.
KINDS = (
    "tool_called",
    "tool_not_called",
    "tools_in_order",
    "no_policy_denial",
    "no_pending_approval",
    "no_budget_refusal",
    "no_kill",
    "max_cost_usd",
    "max_llm_calls",
    "max_tokens",
    "max_duration_s",
    "output_equals",
    "output_contains",
    "output_matches",
    "output_schema",
    "output_predicate",
    "judge",
)


class SuiteError(PolicyError):
    """An eval suite that does not validate; `problems` lists every error with its line."""

    def __init__(self, problems: list[Problem], file: str = "<suite>") -> None:
        super().__init__(problems, file)
        self.code = "invalid_suite"


class JudgeModel(_Model):
    rubric: str = Field(min_length=1)
    threshold: float = Field(default=0.5, ge=0, le=1)
    repeats: int | None = Field(default=None, ge=1, le=15)
    model: str | None = None


class JudgeDefaults(_Model):
    model: str = "gpt-4o-mini"
    repeats: int = Field(default=3, ge=1, le=15)


class AssertionModel(_Model):
    name: str = Field(min_length=1, max_length=200)
    tool_called: str | None = None
    tool_not_called: str | None = None
    tools_in_order: list[str] | None = None
    args: dict[str, Any] | None = None
    args_match: dict[str, str] | None = None
    at_most: int | None = Field(default=None, ge=0)
    at_least: int | None = Field(default=None, ge=1)
    no_policy_denial: bool | None = None
    no_pending_approval: bool | None = None
    no_budget_refusal: bool | None = None
    no_kill: bool | None = None
    max_cost_usd: Decimal | None = Field(default=None, ge=0)
    max_llm_calls: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_duration_s: float | None = Field(default=None, gt=0)
    output_equals: Any = None
    output_contains: str | None = None
    output_matches: str | None = None
    output_schema: dict[str, Any] | None = None
    output_predicate: str | None = None
    judge: JudgeModel | None = None

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @field_validator("args_match", "output_matches")
    @classmethod
    def _regex(cls, v: Any) -> Any:
        for pattern in v.values() if isinstance(v, dict) else [v] if v is not None else []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"{pattern!r} is not a regular expression ({exc}). Fix: escape special "
                    "characters such as ( [ . with a backslash"
                ) from None
        return v

    @field_validator("output_predicate")
    @classmethod
    def _predicate(cls, v: str | None) -> str | None:
        if v is not None and not _PREDICATE_RE.match(v):
            raise ValueError(
                f'"{v}" is not module:function. Fix: name an importable function, e.g. '
                '"checks.refunds:is_refund"'
            )
        return v

    @field_validator("output_schema")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            from jsonschema import Draft202012Validator, SchemaError

            try:
                Draft202012Validator.check_schema(v)
            except SchemaError as exc:
                raise ValueError(
                    f"not a valid JSON schema ({exc.message}). Fix: see json-schema.org; "
                    "e.g. {type: object, required: [refund_id]}"
                ) from None
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> AssertionModel:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"an assertion has exactly one kind (found: {found}). Fix: split it into one "
                f"assertion per check; kinds: {', '.join(KINDS)}"
            )
        tool_kind = given[0] in ("tool_called", "tool_not_called")
        extras = [k for k in ("args", "args_match", "at_most", "at_least") if getattr(self, k)]
        if extras and not tool_kind:
            raise ValueError(
                f"{', '.join(extras)} only qualify tool_called / tool_not_called. Fix: move "
                "them onto a tool assertion"
            )
        return self


class FixturesModel(_Model):
    """Handed to the agent with the task: scripted tool outputs and mock LLM scripts."""

    tools: dict[str, Any] = Field(default_factory=dict)
    llm: Any = None


class TaskModel(_Model):
    id: str
    input: str | dict[str, Any] | list[Any]
    fixtures: FixturesModel = Field(default_factory=FixturesModel)
    assertions: list[AssertionModel] = Field(alias="assert", min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(
                f'task id "{v}" has characters tether does not accept. Fix: use letters, '
                'digits, ".", "_", ":", "-" (at most 200)'
            )
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> TaskModel:
        names = [a.name for a in self.assertions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"assertion name(s) {', '.join(dup)} appear twice. Fix: give each assertion "
                "of a task its own name"
            )
        return self


class SuiteModel(_Model):
    suite: str
    agent: str
    description: str | None = None
    target_cost_usd: Decimal | None = Field(default=None, ge=0)
    repeats: int = Field(default=3, ge=1, le=100)
    timeout_s: float = Field(default=300, gt=0)
    judge: JudgeDefaults = Field(default_factory=JudgeDefaults)
    tasks: list[TaskModel] = Field(min_length=1)

    @field_validator("suite", "agent")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(
                f'"{v}" has characters tether does not accept. Fix: use letters, digits, '
                '".", "_", ":", "-" (at most 200)'
            )
        return v

    @model_validator(mode="after")
    def _unique_tasks(self) -> SuiteModel:
        ids = [t.id for t in self.tasks]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(
                f"task id(s) {', '.join(dup)} appear twice. Fix: give each task its own id"
            )
        return self


def parse_suite(source: str, file: str = "<suite>") -> SuiteModel:
    """Validates an eval suite YAML text; raises SuiteError listing every problem with its line."""
    try:
        data, lines = load_document(source, file)
    except PolicyError as exc:
        problems = [
            Problem(p.line, p.field, p.problem, p.fix.replace("the policy", "the suite"))
            for p in exc.problems
        ]
        if problems and problems[0].field == "(document)" and "mapping" in problems[0].problem:
            problems = [
                Problem(
                    1,
                    "(document)",
                    "the suite must be a YAML mapping",
                    "start with `suite: NAME`, `agent: NAME` and a `tasks:` list",
                )
            ]
        raise SuiteError(problems, file) from None
    try:
        return SuiteModel.model_validate(data)
    except ValidationError as exc:
        problems = sorted(
            (_problem(err, lines) for err in exc.errors()), key=lambda p: (p.line, p.field)
        )
        raise SuiteError(problems, file) from None


def _problem(err: Any, lines: Any) -> Problem:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        shape = tuple("*" if isinstance(p, int) else str(p) for p in loc[:-1])
        model = _SHAPES.get(shape)
        allowed = sorted(_keys(model)) if model else []
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        fix = f"did you mean `{close[0]}`?" if close else f"use one of: {', '.join(allowed)}"
        return Problem(lines.find(loc, key=True), field_name(loc), f"unknown key `{loc[-1]}`", fix)
    p = policy_problem(err, lines)
    if p.fix.startswith("see the policy example"):
        return Problem(p.line, p.field, p.problem, "see the eval suite example in the README")
    return p


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


_SHAPES: dict[tuple[str, ...], type[BaseModel]] = {
    (): SuiteModel,
    ("judge",): JudgeDefaults,
    ("tasks", "*"): TaskModel,
    ("tasks", "*", "fixtures"): FixturesModel,
    ("tasks", "*", "assert", "*"): AssertionModel,
    ("tasks", "*", "assert", "*", "judge"): JudgeModel,
}
