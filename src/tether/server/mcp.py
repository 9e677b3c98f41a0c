"""Installs the MCP gateway, tool registry and approvals routes into the app."""

from __future__ import annotations

from fastapi import FastAPI

from tether.server.deps import State


def install(app: FastAPI, state: State) -> None:
    """Filled in by the MCP / approvals area."""
