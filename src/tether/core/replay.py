"""Replaying a recorded run: which of its steps were LLM calls (and their messages), and where a
re-execution against another model first diverged from what was recorded. Pure: no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SPACE = re.compile(r"\s+")


def messages_of(step_input: str | None) -> list[dict[str, Any]] | None:
    """The chat messages an LLM step was sent (as the gateway records them), or None."""
    if not step_input:
        return None
    try:
        data = json.loads(step_input)
    except ValueError:
        return None
    msgs = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        return None
    return msgs


def normalise(text: str | None) -> str:
    return _SPACE.sub(" ", (text or "").strip()).lower()


@dataclass(frozen=True)
class Compared:
    n: int
    name: str
    recorded: str | None
    replayed: str | None

    @property
    def same(self) -> bool:
        return normalise(self.recorded) == normalise(self.replayed)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "name": self.name, "recorded": self.recorded,
                "replayed": self.replayed, "same": self.same}  # fmt: skip


def first_divergence(compared: Sequence[Compared]) -> Compared | None:
    return next((c for c in compared if not c.same), None)


def llm_steps(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The steps a model answered (kind llm, with recorded messages), in order."""
    return [s for s in steps if s.get("kind") == "llm" and messages_of(s.get("input"))]
