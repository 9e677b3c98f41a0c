"""cli/coercion.py reads every plain option of every command exactly as typer's own pydantic
coercion does: the same value, or the same error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("typer._coercion", reason="typer coerces with pydantic since 0.2x")

from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param
from typer.core import _TyperParameter

from tether.cli.coercion import PlainRuntimeParam, plain
from tether.cli.lazy import load
from tether.cli.main import COMMANDS

SAMPLES = ("5", "0", "007", "500", "501", "-3", "+4", " 4", "4 ", "1_000", "1e3", "2.5", "abc",
           "", "9" * 30, "١٢", "true", "no", "-started_at", 5, 0, 2.5, True, False)  # fmt: skip


def _params(command: Any) -> Iterator[tuple[Any, _TyperParameter]]:
    for param in command.params:
        if isinstance(param, _TyperParameter):
            yield command, param
    for sub in getattr(command, "commands", {}).values():
        yield from _params(sub)


def _outcome(runtime: Any, value: Any, param: _TyperParameter, ctx: Context) -> Any:
    try:
        return ("value", type(got := runtime.coerce(value, param=param, ctx=ctx)), got)
    except BadParameter as exc:
        return ("error", str(exc))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_plain_options_read_as_typer_reads_them(name: str) -> None:
    command = load(name, COMMANDS[name][0])  # load() gives each plain option the fast path
    compared = 0
    for owner, param in _params(command):
        if not isinstance(param._runtime_param, PlainRuntimeParam):
            continue
        ctx = Context(owner)
        desc = param.type_descriptor
        for value in (*SAMPLES, param.default, None):
            fast = PlainRuntimeParam(parameter_info=desc.parameter_info, annotation=desc.annotation)
            real = build_runtime_param(desc)
            assert _outcome(fast, value, param, ctx) == _outcome(real, value, param, ctx), (
                owner.name, param.name, value)  # fmt: skip
            compared += 1
    assert compared > 0


def test_help_is_plain_too() -> None:
    command = load("runs", COMMANDS["runs"][0])
    listing = command.commands["list"]
    option = listing.get_help_option(Context(listing, info_name="list"))
    assert isinstance(option._runtime_param, PlainRuntimeParam)
    plain(listing)  # twice is harmless: a parameter given its path keeps it
    assert option is listing.get_help_option(Context(listing, info_name="list"))
