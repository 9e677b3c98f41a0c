"""The `tether` command: one Typer sub-app per command group (`tether.cli.main`).

The command line ships with the control plane (`pip install 'tether[server]'`); this module is
the console script's entry and stays free of those packages, so that with the SDK alone
(`pip install tether`) `tether` says what to install instead of printing a traceback.
"""

from __future__ import annotations

import sys

# The top-level packages of the `server` extra the CLI imports (see pyproject.toml).
SERVER_PACKAGES = frozenset(
    {
        "alembic",
        "certifi",
        "fastapi",
        "httpx2",
        "jinja2",
        "mcp",
        "mcp_types",
        "numpy",
        "openai",
        "orjson",
        "psycopg",
        "redis",
        "rich",
        "sqlalchemy",
        "starlette",
        "typer",
        "uvicorn",
    }
)


def missing_server_extra(exc: ModuleNotFoundError) -> bool:
    """True when `exc` is a package of the `server` extra that is not installed."""
    return (exc.name or "").split(".")[0] in SERVER_PACKAGES


def server_extra_message(exc: ModuleNotFoundError) -> str:
    return (
        f"error: the tether command needs the control plane, which is not installed "
        f"(no module {exc.name!r}); install it with: pip install 'tether[server]'"
    )


def main() -> None:
    """The console script: `tether ...`."""
    try:
        from tether.cli.main import main as run
    except ModuleNotFoundError as exc:
        if not missing_server_extra(exc):
            raise
        print(server_extra_message(exc), file=sys.stderr)
        raise SystemExit(2) from None
    run()
