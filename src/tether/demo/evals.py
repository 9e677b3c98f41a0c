"""The demo's shipping tour: a suite of 20 refund tasks for `refund-bot`; v2 passes its gate, v3
fails it with the regression named; a canary of v2 against v1 promotes; a cost-regressed v4
rolls back on its guardrail. Every attempt and task is a real run through the LLM gateway."""

from __future__ import annotations

import json
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tether.core.eval_suite import parse_suite
from tether.demo.governed import agent_key, apply_policy
from tether.demo.scenarios import Demo, Scenario
from tether.demo.server import ThreadedServer, free_port

AGENT = "refund-bot"
POLICY = f"""\
agent: {AGENT}
models: [mock-small, mock-large]
budgets:
  run: {{max_cost_usd: 1.00, max_llm_calls: 5}}
tools:
  - {{match: "*", allow: true}}
"""
REGIONS = ["domestic"] * 12 + ["international"] * 8


def suite_source() -> str:
    lines = ["suite: refunds", f"agent: {AGENT}", "target_cost_usd: 0.05", "repeats: 2", "tasks:"]
    for i, region in enumerate(REGIONS):
        lines += [
            f"  - id: refund-{i:02d}",
            f"    input: {{order: ORD-{1000 + i}, region: {region}}}",
            "    assert:",
            f"      - {{name: names the order, output_contains: ORD-{1000 + i}}}",
            "      - {name: quotes the refund window, output_matches: 'within \\d+ days'}",
            "      - {name: one LLM call, max_llm_calls: 1}",
        ]
    return "\n".join(lines) + "\n"


def _llm(url: str, key: str, run_id: str, model: str, prompt: str) -> None:
    resp = httpx.post(
        url + "/llm/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}", "X-Tether-Run-Id": run_id},
        json={"model": model, "max_tokens": 40, "messages": [{"role": "user", "content": prompt}]},
    )
    resp.raise_for_status()


def answer(version: str, order: dict[str, Any]) -> str:
    # v3's regression: international orders lose the refund window from the reply.
    window = "" if version == "v3" and order["region"] == "international" else " within 14 days"
    return f"Refund for {order['order']} approved; the money arrives{window}."


class Api:
    """The admin REST calls of the tour (the same ones `tether eval run` makes)."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.http.request(method, path, **kw)
        if resp.status_code >= 400:
            raise RuntimeError(f"{method} {path} failed: {resp.text[:300]}")
        return resp.json()


def run_suite(api: Api, url: str, key: str, version: str) -> dict[str, Any]:
    """Every task x repeat as a tagged run; the agent makes one gateway call and answers."""
    source = suite_source()
    suite = parse_suite(source, "evals/refunds.yaml")
    ev = api.call(
        "POST",
        "/api/v1/evals",
        json={"source": source, "version": version, "file": "evals/refunds.yaml"},
    )
    for attempt in range(suite.repeats):
        for task in suite.tasks:
            started = api.call(
                "POST",
                f"/api/v1/evals/{ev['id']}/attempts",
                json={"task_id": task.id, "attempt": attempt},
            )
            assert isinstance(task.input, dict)
            _llm(url, key, started["run_id"], "mock-small", f"refund {json.dumps(task.input)}")
            api.call(
                "POST",
                f"/api/v1/evals/{ev['id']}/attempts/{task.id}/{attempt}/finish",
                json={"ok": True, "output": answer(version, task.input)},
            )
    out: dict[str, Any] = api.call("POST", f"/api/v1/evals/{ev['id']}/finish")
    return out


def _endpoints(url: str, key: str) -> ThreadedServer:
    """The HTTP endpoints the rollout forwards tasks to, one path per version. v1 fails a third
    of its tasks; v4 asks mock-large with a long prompt (about 40x the cost)."""

    async def task(request: Request) -> JSONResponse:
        import anyio

        version = request.path_params["version"]
        body = await request.json()
        run_id = request.headers["x-tether-run-id"]
        n = int(str(body["task_id"]).rsplit("-", 1)[-1])
        model, prompt = (
            ("mock-large", "context " * 3000) if version == "v4" else ("mock-small", "x")
        )
        await anyio.to_thread.run_sync(_llm, url, key, run_id, model, prompt)
        if version == "v1" and n % 3 == 0:
            return JSONResponse({"error": "could not find the order"}, status_code=500)
        return JSONResponse({"answer": answer("v2", {"order": body["task_id"], "region": "x"})})

    app = Starlette(routes=[Route("/agent/{version}", task, methods=["POST"])])
    return ThreadedServer(app, "127.0.0.1", free_port())


def _canary(api: Api, demo: Demo, base: str, cand: str, rule: str, tasks: int) -> dict[str, Any]:
    ro = api.call(
        "POST",
        "/api/v1/rollouts",
        json={
            "agent": AGENT,
            "baseline": base,
            "candidate": cand,
            "percent": 50,
            "rule": rule,
            "rule_file": "demo",
        },
    )
    for i in range(tasks):
        api.call(
            "POST",
            f"/api/v1/agents/{AGENT}/tasks",
            json={"task_id": f"{cand}-task-{i}", "input": {"order": f"ORD-{i}"}},
        )
        if i % 10 == 9:
            ro = api.call("POST", f"/api/v1/rollouts/{ro['id']}/evaluate")
            if ro["status"] != "running":
                break
    out: dict[str, Any] = ro
    return out


def scenario_ship(demo: Demo) -> None:
    """Eval suite, gates, and two canaries."""
    if not demo.admin_key:
        demo.notes.append("shipping scenario skipped: needs an admin key (TETHER_API_KEY)")
        return
    apply_policy(demo, POLICY)
    key = agent_key(demo, AGENT)
    models = httpx.get(
        demo.url + "/llm/v1/models", timeout=10, headers={"Authorization": f"Bearer {key}"}
    )
    if models.status_code != 200 or "mock-large" not in models.text:
        demo.notes.append("shipping scenario skipped: the gateway has no mock-small/mock-large")
        return
    api = Api(demo.url, demo.admin_key)
    ids = {}
    for version in ("v2", "v3"):
        ids[version] = run_suite(api, demo.url, key, version)["id"]
    good = api.call("POST", "/api/v1/gates", json={"eval_id": ids["v2"], "min_success": 0.85})
    bad = api.call(
        "POST",
        "/api/v1/gates",
        json={"eval_id": ids["v3"], "baseline_eval_id": ids["v2"], "min_success": 0.85},
    )
    demo.notes.append(f"gate refunds v2: {good['outcome']} ({good['reasons'][0]})")
    named = bad["regressions"][0] if bad["regressions"] else bad["reasons"][-1]
    demo.notes.append(f"gate refunds v3 against v2: {bad['outcome']}; regression: {named}")

    server = _endpoints(demo.url, key)
    try:
        base_url = f"http://127.0.0.1:{server.server.config.port}/agent"
        for v in ("v1", "v2", "v4"):
            api.call(
                "PUT",
                f"/api/v1/agents/{AGENT}/versions/{v}/endpoint",
                json={"url": f"{base_url}/{v}"},
            )
        promoted = _canary(api, demo, "v1", "v2", "tau: 0.2\nmin_tasks_per_arm: 20\n", 400)
        demo.notes.append(f"canary v2 vs v1: {promoted['status']} - {promoted['reason']}")
        v2_cost = next(a for a in promoted["arms"] if a["version"] == "v2")["cost_per_task_usd"]
        limit = max((v2_cost or 0) * 5, 1e-6)
        rule = f"guardrails: {{max_cost_per_task_usd: {limit:.9f}, min_tasks: 5}}\n"
        rolled = _canary(api, demo, "v2", "v4", rule, 200)
        demo.notes.append(f"canary v4 vs v2: {rolled['status']} - {rolled['reason']}")
    finally:
        server.stop()


EVALS: list[Scenario] = [("refund-bot: eval suite, CI gates, two canary rollouts", scenario_ship)]
