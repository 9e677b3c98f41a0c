"""Command group placeholder for `tether approvals`; the governance area fills in `register`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Adds this area's commands to the root app."""
