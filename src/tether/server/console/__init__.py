"""The web console: server-rendered pages (Jinja2 + htmx) at `/`."""

from __future__ import annotations

from fastapi import FastAPI

from tether.server.deps import State


def install(app: FastAPI, state: State) -> None:
    """Filled in by the console area."""
