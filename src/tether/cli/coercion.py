"""Command-line values read without pydantic. Typer 0.2x coerces each parameter through a
pydantic TypeAdapter, and building the first one imports pydantic: about 100 ms, a third of a
remote `tether runs list` (bench/startup.py). A value that is already what its parameter takes
(no value, a string for a `str`, a bool for a `bool`, an int in range or plain digits for an
`int`, a float in range for a `float`) comes out of that adapter unchanged, so `plain(command)`
lets such values through as they are; anything else (a choice, a path, a list, a range miss, a
sign, a parser) still goes to typer's own coercion, messages included.
"""

from __future__ import annotations

from typing import Any

from typer._coercion import RuntimeParam, build_runtime_param
from typer.core import _TyperParameter

_PLAIN_TYPES = (str, bool, int, float)
_MAX_DIGITS = 18  # far below int()'s and pydantic's limits on digit strings


class PlainRuntimeParam(RuntimeParam):
    """A `str`, `bool`, `int` or `float` parameter's value: unchanged when typer's adapter would
    leave it so, else through the adapter (built then, once)."""

    def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Any) -> Any:
        kind = self.annotation
        if kind in (str, bool) and type(value) is kind:
            return value
        number = value
        if kind is int and type(value) is str and value.isascii() and value.isdigit():
            number = int(value) if len(value) <= _MAX_DIGITS else None
        if kind in (int, float) and type(number) is kind and self._in_range(number):
            return number
        real = build_runtime_param(param.type_descriptor)
        param._runtime_param = real
        return real._coerce_value(value, param=param, ctx=ctx)

    def _in_range(self, number: Any) -> bool:
        low, high = self.parameter_info.min, self.parameter_info.max
        return (low is None or number >= low) and (high is None or number <= high)


def _plain(param: Any) -> bool:
    """A single `str`/`bool`/`int`/`float` value that typer would coerce with its plain adapter.
    Read defensively: typer's internals may move, and then typer's own path is taken."""
    desc = getattr(param, "type_descriptor", None)
    info = getattr(desc, "parameter_info", None)
    return (
        isinstance(param, _TyperParameter)
        and getattr(param, "_runtime_param", False) is None
        and getattr(desc, "annotation", None) in _PLAIN_TYPES
        and getattr(desc, "file_annotation", False) is None
        and getattr(info, "parser", False) is None
        and hasattr(info, "min")
        and hasattr(info, "max")
        and not param.multiple
        and param.nargs == 1
    )


def plain_param(param: Any) -> None:
    """Gives `param` the pydantic-free path when it is plain."""
    if _plain(param):
        desc = param.type_descriptor
        try:
            fast = PlainRuntimeParam(parameter_info=desc.parameter_info, annotation=desc.annotation)
        except TypeError:  # a typer whose RuntimeParam takes other fields: keep its own
            return
        param._runtime_param = fast


def plain(command: Any) -> None:
    """Gives every plain parameter of `command` and its subcommands the pydantic-free path,
    `--help` included (made by each command when it first parses its arguments)."""
    for param in getattr(command, "params", ()):
        plain_param(param)
    made = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = made(ctx)
        plain_param(option)
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        plain(sub)
