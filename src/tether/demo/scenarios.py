"""The demo's scenarios: three agents (triage, research, coding) doing realistic work through the
SDK — successes, failures, tool errors, several models, users, tasks and versions — and a trace
sent as raw OTLP. `SCENARIOS` is the ordered list `tether demo` runs; more are appended by
`tether.demo.governed` (budget kill, approval)."""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tether
from tether.demo.otlp import send_trace, support_bot_trace

_pace: contextvars.ContextVar[float] = contextvars.ContextVar("tether_demo_pace", default=0.0)


def pause(ms: float) -> None:
    """Sleeps a scripted latency, scaled by the running demo's pace (0: not at all)."""
    pace = _pace.get()
    if pace > 0:
        time.sleep(ms * pace / 1000.0)


@dataclass
class Demo:
    """What scenarios share: where tether is, the keys to use, pacing and what to report."""

    url: str
    admin_key: str | None
    pace: float = 0.0  # 1.0 sleeps the scripted latencies for real; 0 for tests
    serving: bool = False  # the demo runs tether itself (so it may configure it)
    mock_llm_url: str | None = None
    # the demo MCP server's live descriptions file, when the demo runs tether (the rug pull)
    descriptions_file: Path | None = None
    notes: list[str] = field(default_factory=list)
    run_ids: dict[str, str] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(7337))

    def paced(self) -> None:
        """Makes `pause` in this thread (and threads copying its context) use `self.pace`."""
        _pace.set(self.pace)

    def llm(
        self,
        model: str,
        prompt: Any,
        answer: str,
        tokens_in: int,
        tokens_out: int,
        ms: float,
        provider: str = "openai",
    ) -> str:
        with tether.llm_span(model=model, input=prompt, provider=provider) as call:
            pause(ms)
            call.set_output(
                answer, input_tokens=tokens_in, output_tokens=tokens_out, response_model=model
            )
        return answer


Scenario = tuple[str, Callable[[Demo], None]]

# ------------------------------------------------------------------ tools the agents use


class DemoToolError(RuntimeError):
    """A failure inside one of the demo's pretend tools."""


@tether.tool(name="crm.lookup_customer", tags=["read"])
def lookup_customer(email: str) -> dict[str, Any]:
    pause(120)
    if email.endswith("@unknown.example"):
        raise DemoToolError(f"no customer with email {email}")
    return {"email": email, "customer": email.split("@")[1].split(".")[0], "plan": "pro"}


@tether.tool(name="helpdesk.route_ticket", tags=["write"])
def route_ticket(ticket: str, queue: str) -> str:
    pause(60)
    return f"{ticket} -> {queue}"


@tether.tool(name="web.search", tags=["read", "untrusted"])
def web_search(query: str) -> list[str]:
    pause(300)
    slug = query.lower().replace(" ", "-")[:30]
    return [f"https://docs.example.com/{slug}", f"https://blog.example.org/{slug}-explained"]


@tether.tool(name="web.fetch", tags=["read", "untrusted"])
def fetch_page(url: str) -> str:
    pause(200)
    if "blog" in url:
        raise DemoToolError(f"GET {url}: 404 Not Found")
    return f"<article>{url}: a few paragraphs about the topic.</article>"


@tether.tool(name="repo.read_file", tags=["read"])
def read_file(path: str) -> str:
    pause(30)
    return f"# {path}\ndef handler(event):\n    return process(event)\n"


@tether.tool(name="repo.run_tests", tags=["write"])
def run_tests(target: str, attempt: int) -> dict[str, Any]:
    pause(900)
    passed = attempt >= 2 or target != "billing"
    return {"target": target, "passed": passed, "failures": 0 if passed else 3}


# ------------------------------------------------------------------ agents

TICKETS = [
    ("T-1001", "alice", "alice@acme.example", "I was charged twice this month", "billing"),
    ("T-1002", "bob", "bob@globex.example", "How do I add a teammate?", "how-to"),
    ("T-1003", "carol", "carol@initech.example", "The export button does nothing", "bugs"),
    ("T-1004", "alice", "dave@unknown.example", "Cancel my plan", "billing"),
    ("T-1005", "erin", "erin@hooli.example", "API returns 500 on /v2/orders", "bugs"),
    ("T-1006", "bob", "frank@acme.example", "Invoice address is wrong", "billing"),
]


def triage_ticket(
    demo: Demo, version: str, task: str, user: str, email: str, text: str, queue: str
) -> str:
    model = "gpt-4o-mini" if version == "v2" else "gpt-4o"
    with tether.run(
        agent="triage",
        task_id=task,
        user=user,
        version=version,
        input={"ticket": task, "from": email, "text": text},
    ) as run:
        customer = lookup_customer(email)  # raises for unknown customers: the run fails
        label = demo.llm(
            model,
            [
                {"role": "system", "content": "Classify the ticket."},
                {"role": "user", "content": text},
            ],
            queue,
            tokens_in=380 + len(text),
            tokens_out=12,
            ms=650,
        )
        routed = route_ticket(task, label)
        run.set_output(f"{routed} (customer {customer['customer']}, plan {customer['plan']})")
        if user == "alice":
            run.feedback(thumbs=1, comment="routed correctly")
        elif user == "erin":
            run.feedback(thumbs=-1, comment="should have been urgent")
        return run.id


def scenario_triage(demo: Demo) -> None:
    for i, ticket in enumerate(TICKETS):
        version = "v1" if i < 2 else "v2"
        try:
            demo.run_ids[ticket[0]] = triage_ticket(demo, version, *ticket)
        except DemoToolError as exc:
            demo.notes.append(f"triage {ticket[0]} failed as scripted: {exc}")


QUESTIONS = [
    ("R-201", "alice", "Compare vector databases for 10M embeddings"),
    ("R-202", "carol", "What changed in the EU AI Act this year"),
    ("R-203", "bob", "Summarise OpenTelemetry GenAI semantic conventions"),
]


def research(demo: Demo, version: str, task: str, user: str, question: str) -> None:
    model, provider = (
        ("claude-sonnet-4-5", "anthropic") if version == "v2" else ("gpt-4o", "openai")
    )
    with tether.run(
        agent="research", task_id=task, user=user, version=version, input=question
    ) as run:
        plan = demo.llm(model, question, f"search: {question}", 520, 40, 900, provider)
        pages = []
        for url in web_search(plan.removeprefix("search: ")):
            try:
                pages.append(fetch_page(url))
            except DemoToolError:
                continue  # a dead link: the agent carries on with what it has
        summary = demo.llm(
            model,
            pages,
            f"Report on '{question}': 3 findings, 2 sources.",
            tokens_in=2400 + 800 * len(pages),
            tokens_out=610,
            ms=2400,
            provider=provider,
        )
        run.set_output(summary)
        run.score("relevance", round(0.6 + 0.1 * len(pages) + demo.rng.random() * 0.2, 2))


def scenario_research(demo: Demo) -> None:
    for i, (task, user, question) in enumerate(QUESTIONS):
        research(demo, "v1" if i == 0 else "v2", task, user, question)


CHANGES = [
    ("C-301", "erin", "billing", "v1"),
    ("C-302", "erin", "billing", "v2"),
    ("C-303", "carol", "exports", "v2"),
]


class TestsFailedError(RuntimeError):
    """The coding agent gave up with the tests still red."""


def coding(demo: Demo, task: str, user: str, target: str, version: str) -> None:
    attempts = 1 if version == "v1" else 3  # v1 gives up after one try: its runs fail
    with tether.run(
        agent="coding",
        task_id=task,
        user=user,
        version=version,
        input=f"fix the failing tests in {target}",
    ) as run:
        source = read_file(f"src/{target}/handler.py")
        for attempt in range(1, attempts + 1):
            demo.llm(
                "gpt-4.1", source, f"patch #{attempt} for {target}", 3200 + 900 * attempt, 450, 1800
            )
            result = run_tests(target, attempt if version == "v2" else 1)
            if result["passed"]:
                run.set_output(f"{target}: tests green after {attempt} patch(es)")
                return
        raise TestsFailedError(f"{target}: {result['failures']} tests still failing")


def scenario_coding(demo: Demo) -> None:
    for task, user, target, version in CHANGES:
        try:
            coding(demo, task, user, target, version)
        except TestsFailedError as exc:
            demo.notes.append(f"coding {task} ({version}) failed as scripted: {exc}")


def scenario_otlp(demo: Demo) -> None:
    """A trace from an OpenInference-instrumented app, sent as plain OTLP (no tether SDK)."""
    trace = support_bot_trace("When does my plan renew? Send me the invoice.", "dana", "S-77")
    send_trace(demo.url, demo.admin_key, trace, service="support-bot")
    demo.run_ids["support-bot"] = trace.run_id


SCENARIOS: list[Scenario] = [
    ("triage agent: 6 tickets, v1 and v2, one unknown customer", scenario_triage),
    ("research agent: 3 questions, a dead link, scores", scenario_research),
    ("coding agent: 3 changes, v1 gives up", scenario_coding),
    ("support-bot: an OpenInference trace over raw OTLP", scenario_otlp),
]
