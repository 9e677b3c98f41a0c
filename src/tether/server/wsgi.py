"""`tether.server.wsgi:app`: the import string uvicorn worker processes load (env settings)."""

from __future__ import annotations

from tether.config import load_settings
from tether.server.app import create_app

app = create_app(load_settings())
