"""A predicate for the eval end-to-end suite (`tests.e2e.eval_checks:names_email`)."""

from __future__ import annotations

import json
from typing import Any


def names_email(output: str | None, task_input: Any) -> tuple[bool, str]:
    data = json.loads(output or "{}")
    ok = data.get("email") == task_input["email"]
    return ok, f"output names {data.get('email')!r}, task has {task_input['email']!r}"
