"""Shared CLI output: Rich for people, JSON for scripts, errors as one line without tracebacks,
and the `--database-url` option every store command takes (see cli/client.py for the order)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, cast

import typer

from tether.core.errors import BadRequestError, ConfigError, TetherError

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A Rich Console made on first use: a `--json` command never pays for importing Rich."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._real: Console | None = None

    def _console(self) -> Console:
        if self._real is None:
            from rich.console import Console

            # soft wrap: messages are not broken at the terminal's width (a path or a key id
            # split over two lines cannot be copied); tables still fit the width
            self._real = Console(stderr=self._stderr, soft_wrap=True)
        return self._real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._console(), name)

    # Dunder methods are looked up on the type, not through __getattr__: Rich's Live and
    # Progress enter the console as a context manager (`with console:`).
    def __enter__(self) -> Console:
        return self._console().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._console().__exit__(*exc)


console = cast("Console", _LazyConsole(stderr=False))
err_console = cast("Console", _LazyConsole(stderr=True))

DB_OPTION = typer.Option(
    None,
    "--database-url",
    help="Use the local store at this SQLite or PostgreSQL URL (wins over TETHER_URL).",
)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> NoReturn:
    """Prints `error: message` to stderr and exits with `code` (1 failure, 2 bad usage/config)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def errors() -> Iterator[None]:
    """TetherErrors as one line: bad input and configuration exit 2, anything else 1."""
    try:
        yield
    except (BadRequestError, ConfigError) as exc:
        fail(exc.message, 2)
    except TetherError as exc:
        fail(exc.message, 1)
