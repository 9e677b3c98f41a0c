"""schemathesis over the whole OpenAPI, every operation, on SQLite, with an admin key: no 5xx, and
every response in its documented status codes, content type and schema. Bounded: a fixed
number of generated cases per operation (positive and negative), so the run fits `make test`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tether.config import load_settings
from tether.server.app import create_app
from tether.store.engine import make_engine
from tether.store.keys import create_key
from tether.store.migrate import upgrade

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip
CASES_PER_MODE = 15


def _seed(app: Any, admin: dict[str, str]) -> None:
    """A policy, a run with spans and feedback: lists and details answer with real items.
    (No lifespan here: its background loops belong to one event loop, schemathesis runs others.)"""
    client = TestClient(app)
    r = client.post("/api/v1/policies", content="agent: a\nbudgets: {run: {max_cost_usd: 1}}\n",
                    headers={**admin, "content-type": "application/yaml"})  # fmt: skip
    assert r.status_code == 201, r.text
    span = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "invoke_agent a",
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000001000000000",
            "attributes": [{"key": "tether.agent", "value": {"stringValue": "a"}}]}  # fmt: skip
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    r = client.post("/v1/traces", json=body, headers=admin)
    assert r.status_code == 200, r.text
    r = client.post(f"/api/v1/runs/run_{'ab' * 16}/feedback", headers=admin,
                    json={"kind": "thumbs", "value": 1})  # fmt: skip
    assert r.status_code in (200, 201), r.text


def test_every_operation_answers_within_its_documented_responses(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tether.db'}"
    engine = make_engine(url)
    upgrade(engine)
    admin = {"Authorization": "Bearer " + create_key(engine, scopes="admin")[1]}
    app = create_app(load_settings(home=tmp_path / "home", database_url=url), engine=engine)
    _seed(app, admin)
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    failures: list[str] = []
    counted: dict[str, Any] = {"operations": 0, "cases": 0, "unsatisfiable": 0}
    started = time.monotonic()
    timing: list[tuple[float, str]] = []
    for result in schema.get_all_operations():
        op = result.ok()
        counted["operations"] += 1
        # a free-text path parameter has no invalid value: negative cases need a query or body
        negatable = len(op.query) > 0 or len(op.body) > 0
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negatable else [])
        for mode in modes:

            @settings(max_examples=CASES_PER_MODE, deadline=None, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                counted["cases"] += 1
                case.call_and_validate(headers=admin, checks=CHECKS)

            t0 = time.monotonic()
            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (no parameters): positive only
                counted["unsatisfiable"] += 1
            except (Exception, BaseExceptionGroup) as exc:  # report every operation's failures
                failures.append(f"{op.label} ({mode.value}): {str(exc)[:1500]}")
            timing.append((time.monotonic() - t0, f"{op.label} {mode.value}"))
    engine.dispose()
    print(f"schemathesis: {counted['operations']} operations, {counted['cases']} cases, "
          f"{len(failures)} failing, {time.monotonic() - started:.0f} s")  # fmt: skip
    print("slowest:", ", ".join(f"{label} {t:.1f}s" for t, label in sorted(timing)[-5:]))
    assert not failures, "\n\n".join(failures)


def test_operations_have_explicit_ids_and_document_their_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tether.db'}"
    engine = make_engine(url)
    upgrade(engine)
    app = create_app(load_settings(home=tmp_path / "home", database_url=url), engine=engine)
    doc = TestClient(app).get("/api/v1/openapi.json").json()
    ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            ids.append(op["operationId"])
            assert "_api_v1_" not in op["operationId"], (method, path)  # not FastAPI's default
            codes = set(op["responses"])
            assert "422" not in codes and {"400", "401", "403"} <= codes, (method, path)
            for code, response in op["responses"].items():
                if int(code) >= 400:
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/ErrorOut", (method, path, code)
    assert len(ids) == len(set(ids))
    engine.dispose()
