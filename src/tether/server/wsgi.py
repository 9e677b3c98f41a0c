"""`tether.server.wsgi:app`: the import string uvicorn worker processes load (env settings).

Each worker listens at once and builds the app behind it (server/starting.py); the supervisor
has migrated the database before starting them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.server.starting import Starting

if TYPE_CHECKING:
    from starlette.types import ASGIApp


def _build() -> ASGIApp:
    from tether.config import load_settings
    from tether.server.app import create_app

    return create_app(load_settings())


app = Starting(_build)
