"""The mock LLM as tether's upstream provider, for tests and benchmarks that run `tether serve`
against it: one place that spells the provider entry of tether.yaml."""

from __future__ import annotations

from typing import Any

from tether.demo.server import ThreadedServer


def mock_provider(
    mock: ThreadedServer, models: tuple[str, ...] = ("mock-small",)
) -> dict[str, Any]:
    """The `providers:` entry that sends `models` to the mock LLM served by `mock`."""
    return {
        "name": "mock",
        "kind": "openai",
        "models": list(models),
        "base_url": f"http://127.0.0.1:{mock.server.config.port}/v1",
    }
