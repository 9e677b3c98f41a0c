"""Whatever an agent passes to a traced tool or run, recording it never raises into the agent."""

from __future__ import annotations

from typing import Any
from unittest.mock import MagicMock

from tether.sdk._values import to_jsonable, to_text


class Hostile:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_mocks_raising_reprs_and_deep_nesting_become_text() -> None:
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    for value in (MagicMock(), Hostile(), {"x": Hostile()}, deep):
        text, mime = to_text(value)
        assert isinstance(text, str) and mime == "application/json"
        assert to_jsonable(value) is not None
    assert to_text(Hostile())[0] == '"<Hostile>"'
    assert to_jsonable({"a": 1}) == {"a": 1}
