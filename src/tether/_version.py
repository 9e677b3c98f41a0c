"""tether's version, read from the installed distribution's metadata (pyproject.toml is the one
place it is written), on first use: importing importlib.metadata costs a CLI start-up dear."""

from __future__ import annotations

from functools import cache


@cache
def _read() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tether")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _read()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
