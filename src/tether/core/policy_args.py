"""Argument conditions of a tool rule (`when:`): the YAML model, its compiled form and the
test of a call's arguments against it. A rule with conditions applies only when every
condition holds; the first one that fails is named in the decision's reason.

    - match: "pay.transfer"
      when:
        amount: {max: 500}
        iban: {in_list: payees}
      allow: true

Operators (several on one argument must all hold): `equals`, `in`, `not_in`, `glob`, `regex`
(full match), `min` / `max` (inclusive, numbers or numeric strings), `domain` (of an email or
URL; `example.com` also covers its subdomains), `in_list` / `not_in_list` / `domain_in_list`
(a named list under the policy's `lists:`, inline or `{registry: NAME}` for a list kept in
tether's registry, `tether lists`). A list argument (several recipients) satisfies a
condition only when every element does. A missing argument satisfies no condition.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tether.core.provenance import domain_of, normalize_for_list

Scalar = str | int | float | bool


class ConditionModel(BaseModel):
    """The conditions on one argument, as written in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    not_in: list[Scalar] | None = None
    glob: str | None = None
    regex: str | None = None
    min: Decimal | None = None
    max: Decimal | None = None
    domain: list[str] | None = None
    in_list: str | None = None
    not_in_list: str | None = None
    domain_in_list: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(
                    f"regex {v!r} does not compile ({exc}). Fix: correct the "
                    "pattern (Python `re` syntax, matched in full)"
                ) from None
        return v

    @field_validator("domain", mode="before")
    @classmethod
    def _domains(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _sane(self) -> ConditionModel:
        if not self.model_fields_set:
            raise ValueError(
                "no condition given. Fix: add one of equals, in, not_in, glob, "
                "regex, min, max, domain, in_list, not_in_list, domain_in_list"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}, so the rule can never "
                             "fire. Fix: swap them")  # fmt: skip
        if self.in_ is not None and not self.in_:
            raise ValueError("`in: []` matches nothing, so the rule can never fire. Fix: list "
                             "the values, or remove the condition")  # fmt: skip
        return self

    def list_names(self) -> list[tuple[str, str]]:
        """(operator, list name) for each named-list operator used."""
        out = []
        for op in ("in_list", "not_in_list", "domain_in_list"):
            name = getattr(self, op)
            if name is not None:
                out.append((op, name))
        return out


@dataclass(frozen=True)
class Condition:
    """One compiled test on one argument; `text` is how a reason names it."""

    argument: str
    text: str
    test: Callable[[Any, Mapping[str, frozenset[str]]], bool]

    def holds(self, arguments: Mapping[str, Any], lists: Mapping[str, frozenset[str]]) -> bool:
        if self.argument not in arguments:
            return False
        value = arguments[self.argument]
        if isinstance(value, list | tuple):
            return bool(value) and all(self.test(v, lists) for v in value)
        return self.test(value, lists)

    def failure(self, arguments: Mapping[str, Any]) -> str:
        """Why it failed, for a reason: the argument, its value and the condition."""
        if self.argument not in arguments:
            return f"argument `{self.argument}` is missing (needs {self.text})"
        shown = repr(arguments[self.argument])
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return f"argument `{self.argument}` = {shown} fails {self.text}"


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        d = (
            Decimal(str(value).strip().replace(",", ""))
            if isinstance(value, str)
            else Decimal(str(value))
        )
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _domain_match(value: Any, domains: frozenset[str]) -> bool:
    dom = domain_of(value) if isinstance(value, str) else None
    if dom is None:
        return False
    return any(dom == d or dom.endswith("." + d) for d in domains)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None and not (isinstance(a, str) and isinstance(b, str)):
        return na == nb
    return normalize_for_list(a) == normalize_for_list(b) if isinstance(a, str) else a == b


def compile_conditions(
    argument: str, m: ConditionModel, registry: Mapping[str, str] | None = None
) -> list[Condition]:
    """The compiled tests of one argument's ConditionModel, in a fixed order. `registry` maps
    the policy's list names that live in the registry to the registry's name (for reasons)."""
    out: list[Condition] = []
    a = argument
    refs = registry or {}

    def named(name: str) -> str:
        if name not in refs:
            return f"list {name}"
        return f"registry list {refs[name]}" + (f" ({name})" if refs[name] != name else "")

    def add(text: str, test: Callable[[Any, Mapping[str, frozenset[str]]], bool]) -> None:
        out.append(Condition(a, text, test))

    if m.equals is not None:
        want = m.equals
        add(f"equals {want!r}", lambda v, _l: _same(v, want))
    if m.in_ is not None:
        options = tuple(m.in_)
        add(f"in {list(options)!r}", lambda v, _l: any(_same(v, o) for o in options))
    if m.not_in is not None:
        banned = tuple(m.not_in)
        add(f"not in {list(banned)!r}", lambda v, _l: not any(_same(v, o) for o in banned))
    if m.glob is not None:
        rx = re.compile(fnmatch.translate(m.glob))
        add(f"glob {m.glob!r}", lambda v, _l: isinstance(v, str) and rx.match(v) is not None)
    if m.regex is not None:
        prx = re.compile(m.regex)
        add(f"regex {m.regex!r}", lambda v, _l: isinstance(v, str) and prx.fullmatch(v) is not None)
    if m.min is not None:
        lo = m.min
        add(f">= {lo}", lambda v, _l: (n := _number(v)) is not None and n >= lo)
    if m.max is not None:
        hi = m.max
        add(f"<= {hi}", lambda v, _l: (n := _number(v)) is not None and n <= hi)
    if m.domain is not None:
        doms = frozenset(d.lower().lstrip("*.") for d in m.domain)
        add(f"domain in {sorted(doms)!r}", lambda v, _l: _domain_match(v, doms))
    if m.in_list is not None:
        name = m.in_list
        add(f"in {named(name)}", lambda v, lists: normalize_for_list(v) in lists.get(name, ()))
    if m.not_in_list is not None:
        nname = m.not_in_list
        add(f"not in {named(nname)}",
            lambda v, lists: normalize_for_list(v) not in lists.get(nname, ()))  # fmt: skip
    if m.domain_in_list is not None:
        dname = m.domain_in_list
        add(f"domain in {named(dname)}",
            lambda v, lists: _domain_match(v, lists.get(dname, frozenset())))  # fmt: skip
    return out


def normalize_list(name: str, entries: Iterable[Scalar]) -> frozenset[str]:
    """A named list's entries as conditions compare them (domain lists keep bare domains)."""
    return frozenset(normalize_for_list(e) for e in entries)


def first_failure(
    conditions: tuple[Condition, ...],
    arguments: Mapping[str, Any] | None,
    lists: Mapping[str, frozenset[str]],
) -> Condition | None:
    """The first condition the arguments fail, or None when all hold."""
    args = arguments or {}
    for c in conditions:
        if not c.holds(args, lists):
            return c
    return None
