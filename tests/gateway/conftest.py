"""Fixtures of the LLM gateway tests: one `tether serve` over the mock LLM for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway.llm_env import LLMEnv, start_env, stop_env


@pytest.fixture(scope="session")
def llm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMEnv]:
    """tether on SQLite; providers: the mock LLM (OpenAI and Anthropic), a flaky and a dead one."""
    tmp = tmp_path_factory.mktemp("llm-gateway")
    env = start_env(tmp, f"sqlite:///{tmp / 'tether.db'}")
    yield env
    stop_env(env)
