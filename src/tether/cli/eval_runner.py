"""Running an eval against a running tether: create (or resume) the eval, then for every task and
attempt not yet done, start its run, hand the task to the agent, run its predicates and judges,
and let the server check the assertions over what the gateways recorded. Attempts run
`concurrency` at a time, each worker's finish request starting its next attempt (one round trip
per attempt); nothing is shared between attempts."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from tether.cli.client import error_from_response
from tether.cli.eval_adapters import Adapter, AttemptContext
from tether.cli.eval_judge import judge, predicate
from tether.core.errors import BadRequestError, UpstreamError
from tether.core.eval_suite import SuiteModel, TaskModel, parse_suite

Progress = Callable[[dict[str, Any]], None]


@dataclass
class EvalRequest:
    source: str
    file: str
    version: str
    repeats: int | None = None
    concurrency: int = 4
    resume: str | None = None
    target_cost_usd: Decimal | None = None


class Api:
    """The few API calls the runner makes; errors come back as TetherErrors."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.agent_key = api_key  # what the agent is given as TETHER_API_KEY
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=120.0,
            limits=httpx.Limits(max_connections=64),
        )

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"cannot reach tether at {self.url} ({type(exc).__name__}); start it with "
                "`tether serve` or set TETHER_URL"
            ) from None
        if resp.status_code >= 400:
            raise error_from_response(resp)
        return resp.json()


def _external(
    api: Api, suite: SuiteModel, task: TaskModel, output: str | None, eval_id: str, attempt: int
) -> tuple[list[dict[str, Any]], list[str]]:
    results: list[dict[str, Any]] = []
    judge_runs: list[str] = []
    for a in task.assertions:
        if a.output_predicate is not None:
            results.append(predicate(a, output, task).to_dict())
        elif a.judge is not None:
            verdict, runs = judge(
                api.http, a, suite.judge, task, output, eval_id=eval_id, attempt=attempt
            )
            results.append(verdict.to_dict())
            judge_runs += runs
    for row in results:
        row.pop("kind", None)  # the server knows each assertion's kind from the suite
    return results, judge_runs


Item = tuple[TaskModel, int]


def _start(item: Item) -> dict[str, Any]:
    return {"task_id": item[0].id, "attempt": item[1]}


def _one(
    api: Api, adapter: Adapter, suite: SuiteModel, item: Item, started: dict[str, Any] | None,
    take: Callable[[], Item | None], ev: dict[str, Any],
) -> tuple[dict[str, Any], Item | None]:  # fmt: skip
    """One attempt: its start (unless the finish before it started it), the agent, the external
    checks, and the finish, which starts the next attempt `take()` gives in the same request.
    Returns the finished attempt (with the next one's start under "next") and that next one."""
    task, attempt = item
    t0, cpu0 = time.perf_counter(), time.thread_time()
    if started is None:
        started = api.call("POST", f"/api/v1/evals/{ev['id']}/attempts", json=_start(item))
    ctx = AttemptContext(
        tether_url=api.url,
        api_key=api.agent_key,
        run_id=started["run_id"],
        eval_id=ev["id"],
        suite=suite.suite,
        task_id=task.id,
        attempt=attempt,
        input=task.input,
        fixtures=task.fixtures.model_dump(),
        timeout_s=suite.timeout_s,
    )
    agent_cpu = time.thread_time()
    result = adapter.run(ctx)
    agent_cpu = time.thread_time() - agent_cpu
    external, judge_runs = _external(api, suite, task, result.output, ev["id"], attempt)
    nxt = take()
    body = {
        "ok": result.ok,
        "output": result.output,
        "error": result.error,
        "agent_ms": result.agent_ms,
        "external": external,
        "judge_run_ids": judge_runs,
        "run_id": started["run_id"],
        "next": _start(nxt) if nxt is not None else None,
    }
    done: dict[str, Any] = api.call(
        "POST", f"/api/v1/evals/{ev['id']}/attempts/{task.id}/{attempt}/finish", json=body
    )
    # the attempt as the runner saw it, from its start (its own request, or the finish before
    # it that started it, counted there) to its checked answer, which includes starting the
    # next one: tether's overhead is this less the agent's own time
    done["wall_ms"] = (time.perf_counter() - t0) * 1000
    # the runner's own CPU for it (this thread's, less what the adapter's run took here: a
    # callable agent runs in this thread), for the benchmark's account of tether's cost
    done["runner_cpu_ms"] = (time.thread_time() - cpu0 - agent_cpu) * 1000
    return done, nxt


class _Plan:
    """The attempts still to run, handed out one at a time to the workers; after a failure,
    none."""

    def __init__(self, todo: list[Item]) -> None:
        self.todo = deque(todo)
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def take(self) -> Item | None:
        with self.lock:
            if self.stopped.is_set() or not self.todo:
                return None
            return self.todo.popleft()


def _worker(
    api: Api, adapter: Adapter, suite: SuiteModel, ev: dict[str, Any], todo: _Plan,
    report: Callable[[dict[str, Any]], None],
) -> None:  # fmt: skip
    """Runs attempts one after another, each finish starting the next (one round trip each)."""
    item = todo.take()
    started: dict[str, Any] | None = None
    try:
        while item is not None:
            done, item = _one(api, adapter, suite, item, started, todo.take, ev)
            # None when the next attempt was done meanwhile: its own start then says so
            started = done.pop("next", None)
            report(done)
    except BaseException:
        todo.stopped.set()
        raise


def plan(
    suite: SuiteModel, repeats: int, done: set[tuple[str, int]]
) -> list[tuple[TaskModel, int]]:
    """Every (task, attempt) still to run, attempt-major so an interrupted eval has every task."""
    return [(t, i) for i in range(repeats) for t in suite.tasks if (t.id, i) not in done]


def run_eval(
    api: Api,
    adapter: Adapter,
    req: EvalRequest,
    progress: Progress | None = None,
    on_start: Callable[[dict[str, Any], int], None] | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) an eval; returns the eval's detail as the API gives it."""
    if req.concurrency < 1:
        raise BadRequestError("--concurrency must be at least 1")
    if req.resume:
        ev = api.call("GET", f"/api/v1/evals/{req.resume}")
        source = ev_source = api.call("GET", f"/api/v1/evals/{req.resume}/suite")["source"]
        suite = parse_suite(ev_source, req.file)
        done = {(a["task_id"], a["attempt"]) for a in ev["attempts"] if a["status"] == "done"}
    else:
        suite = parse_suite(req.source, req.file)
        source = req.source
        body: dict[str, Any] = {"source": source, "file": req.file, "version": req.version}
        if req.repeats is not None:
            body["repeats"] = req.repeats
        if req.target_cost_usd is not None:
            body["target_cost_usd"] = str(req.target_cost_usd)
        ev = api.call("POST", "/api/v1/evals", json=body)
        done = set()
    todo = plan(suite, ev["repeats"], done)
    if on_start:
        on_start(ev, len(todo))
    lock = threading.Lock()

    def report(out: dict[str, Any]) -> None:
        if progress:
            with lock:
                progress(out)

    work = _Plan(todo)
    with ThreadPoolExecutor(max_workers=req.concurrency) as pool:
        futures = [
            pool.submit(_worker, api, adapter, suite, ev, work, report)
            for _ in range(min(req.concurrency, len(todo)))
        ]
        try:
            for fut in as_completed(futures):
                fut.result()
        except BaseException:
            work.stopped.set()  # the workers end after their attempt in hand
            raise
    api.call("POST", f"/api/v1/evals/{ev['id']}/finish")
    detail: dict[str, Any] = api.call("GET", f"/api/v1/evals/{ev['id']}")
    detail["_source"] = source
    return detail
