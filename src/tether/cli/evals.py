"""`tether eval run|gate|compare|list|show`: run a suite against an agent version through a running
tether, gate a version for CI (exit 0 pass, 1 fail, 2 bad usage, 3 inconclusive), compare two
evals task by task."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tether.cli.eval_adapters import make_adapter
from tether.cli.eval_runner import Api, EvalRequest, run_eval
from tether.cli.output import console, fail, print_json
from tether.cli.policy import errors
from tether.config import load_settings
from tether.core.eval_suite import parse_suite

app = typer.Typer(
    help="Eval suites, CI gates and comparisons of agent versions.", no_args_is_help=True
)


def _api() -> Api:
    # Evals need the running server (its gateways record what the agent does): TETHER_URL, else
    # the address `tether serve` listens on by default.
    settings = load_settings()
    return Api(settings.url or f"http://{settings.host}:{settings.port}", settings.api_key)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}; give the path of an eval suite YAML", 2)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _usd(x: float | None) -> str:
    return "-" if x is None else f"${x:.4f}"


def _success_line(ev: dict[str, Any]) -> str:
    s = ev["success"]
    if not s["total"]:
        return "no attempts finished"
    return (
        f"success at target cost: {s['successes']}/{s['total']} = {s['rate']:.1%} "
        f"(Wilson 95 %: {s['low']:.1%}-{s['high']:.1%})"
    )


def show_eval(ev: dict[str, Any]) -> None:
    target = f" at target ${ev['target_cost_usd']:.4f}" if ev["target_cost_usd"] is not None else ""
    console.print(
        f"[bold]{ev['id']}[/]  suite {ev['suite']}  {ev['agent']} {ev['version']}  "
        f"{ev['repeats']} attempt(s) per task{target}",
        highlight=False,
    )
    table = Table("task", "pass", "pass@k", "pass^k", "cost/attempt", "failing (attempts)")
    for t in ev["task_list"]:
        failing = ", ".join(f"{k} ({v})" for k, v in t["failing"].items()) or "-"
        table.add_row(
            t["task_id"],
            f"{t['passes']}/{t['n']}",
            _pct(t["pass_at_k"]),
            _pct(t["pass_hat_k"]),
            _usd(t["mean_cost_usd"]),
            failing,
        )
    console.print(table)
    reasons: dict[tuple[str, str], tuple[int, str, str]] = {}
    for a in ev["attempts"]:
        for r in a["results"]:
            if not r["passed"]:
                reasons.setdefault(
                    (a["task_id"], r["name"]), (a["attempt"], r["reason"], a["run_id"])
                )
    for (task, name), (attempt, why, run_id) in list(reasons.items())[:20]:
        console.print(
            f"  [red]x[/] {task} / {name} (attempt {attempt}, {run_id}): {why}", highlight=False
        )
    judge = f"; judges ${ev['judge_cost_usd']:.4f} apart" if ev["judge_cost_usd"] else ""
    console.print(
        f"[bold]{_success_line(ev)}[/]; agent cost ${ev['cost_usd']:.4f}{judge}", highlight=False
    )


def junit(ev: dict[str, Any], path: Path) -> None:
    """One testcase per attempt; a failing assertion is a <failure> naming it and why."""
    attempts = ev["attempts"]
    failed = sum(1 for a in attempts if a["passed"] is False)
    suite = ET.Element(
        "testsuite",
        name=f"{ev['suite']}@{ev['version']}",
        tests=str(len(attempts)),
        failures=str(failed),
        errors="0",
    )
    for a in attempts:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=ev["suite"],
            name=f"{a['task_id']}#{a['attempt']}",
            time=f"{(a['duration_ms'] or 0) / 1000:.3f}",
        )
        bad = [r for r in a["results"] if not r["passed"]]
        if bad:
            fail_el = ET.SubElement(case, "failure", message="; ".join(r["name"] for r in bad))
            fail_el.text = "\n".join(f"{r['name']}: {r['reason']}" for r in bad)
        ET.SubElement(case, "system-out").text = f"run {a['run_id']} cost ${a['cost_usd']:.6f}"
    root = ET.Element("testsuites", name="tether eval")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


@app.command("run")
def run_cmd(
    suite: Path = typer.Argument(..., help="the eval suite YAML"),
    agent: str = typer.Option(..., "--agent", help="a command, an http(s) URL or module:function"),
    version: str = typer.Option(..., "--version", help="the agent version under test"),
    repeat: int | None = typer.Option(
        None, "--repeat", min=1, max=100, help="attempts per task (default: the suite's repeats)"
    ),
    concurrency: int = typer.Option(4, "--concurrency", min=1, max=64),
    resume: str | None = typer.Option(None, "--resume", help="finish an interrupted eval"),
    as_json: bool = typer.Option(False, "--json", help="print the eval as JSON"),
    junit_file: Path | None = typer.Option(None, "--junit", help="write a JUnit XML report"),
    agent_key: str | None = typer.Option(
        None,
        "--agent-key",
        help="the key handed to the agent as TETHER_API_KEY (default: the CLI's own key)",
    ),
) -> None:
    """Run every task of SUITE --repeat times against the agent; each attempt is a tether run."""
    with errors():
        source = "" if resume else _read(suite)
        if not resume:
            parse_suite(source, str(suite))  # line-numbered errors before anything runs
        adapter = make_adapter(agent)
        req = EvalRequest(
            source=source,
            file=str(suite),
            version=version,
            repeats=repeat,
            concurrency=concurrency,
            resume=resume,
        )
        api = _api()
        api.agent_key = agent_key or api.api_key
        if as_json:
            ev = run_eval(api, adapter, req)
        else:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            ) as bar:
                ids: dict[str, Any] = {}

                def started(ev: dict[str, Any], n: int) -> None:
                    ids["bar"] = bar.add_task(f"{ev['id']} {ev['suite']} {version}", total=n)

                def step(att: dict[str, Any]) -> None:
                    bar.advance(ids["bar"])

                ev = run_eval(api, adapter, req, progress=step, on_start=started)
        ev.pop("_source", None)
        if junit_file is not None:
            junit(ev, junit_file)
        if as_json:
            print_json(ev)
        else:
            show_eval(ev)


def _money(text: str | None, flag: str) -> str | None:
    if text is None:
        return None
    try:
        value = Decimal(text.lstrip("$"))
    except InvalidOperation:
        fail(f"{flag} {text!r} is not an amount in USD; write it like 0.50", 2)
    if value < 0:
        fail(f"{flag} must not be negative", 2)
    return str(value)


def show_verdict(v: dict[str, Any]) -> None:
    color = {"pass": "green", "fail": "red", "inconclusive": "yellow"}[v["outcome"]]
    base = f" against {v['baseline_version']}" if v["baseline_version"] else ""
    console.print(
        f"[bold {color}]{v['outcome'].upper()}[/] {v['suite']} {v['version']}{base} "
        f"({v['id']}, eval {v['eval_id']})",
        highlight=False,
    )
    for r in v["reasons"]:
        console.print(f"  - {r}", highlight=False)
    for r in v["regressions"]:
        console.print(f"  [red]regression[/]: {r}", highlight=False)


@app.command("gate")
def gate_cmd(
    suite: Path = typer.Argument(..., help="the eval suite YAML the version was run on"),
    version: str = typer.Option(..., "--version"),
    baseline: str | None = typer.Option(None, "--baseline", help="compare with this version"),
    min_success: float | None = typer.Option(None, "--min-success", min=0, max=1),
    max_cost: str | None = typer.Option(None, "--max-cost-per-task", help="USD, e.g. 0.50"),
    confidence: float = typer.Option(0.95, "--confidence", min=0.5, max=0.999),
    eval_id: str | None = typer.Option(None, "--eval", help="gate this eval, not the latest"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Pass (exit 0), fail (1) or inconclusive (3, with how many more attempts) for CI."""
    with errors():
        name = parse_suite(_read(suite), str(suite)).suite
        if min_success is None and baseline is None:
            fail("give --min-success, --baseline or both; a gate needs a criterion", 2)
        body = {
            "suite": name,
            "version": version,
            "baseline_version": baseline,
            "min_success": min_success,
            "max_cost_per_task_usd": _money(max_cost, "--max-cost-per-task"),
            "confidence": confidence,
            "eval_id": eval_id,
        }
        v = _api().call("POST", "/api/v1/gates", json=body)
    if as_json:
        print_json(v)
    else:
        show_verdict(v)
    raise typer.Exit(v["exit_code"])


@app.command("compare")
def compare_cmd(
    eval_a: str = typer.Argument(..., help="the baseline eval id"),
    eval_b: str = typer.Argument(..., help="the candidate eval id"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-task regressions and improvements, cost and tool-path differences."""
    with errors():
        d = _api().call("GET", "/api/v1/evals/compare", params={"a": eval_a, "b": eval_b})
    if as_json:
        print_json(d)
        return
    a, b = d["a"], d["b"]
    console.print(f"A {a['id']} ({a['version']}): {_success_line(a)}", highlight=False)
    console.print(f"B {b['id']} ({b['version']}): {_success_line(b)}", highlight=False)
    table = Table("task", "change", "A", "B", "cost A", "cost B", "tool path", "newly failing")
    for t in d["tasks"]:
        color = {"regressed": "red", "improved": "green"}.get(t["change"], "")
        path = "-"
        if t["path_changed"]:
            path = f"{' > '.join(t['a_path']) or '(none)'} => {' > '.join(t['b_path']) or '(none)'}"
        table.add_row(
            t["task_id"],
            f"[{color}]{t['change']}[/]" if color else t["change"],
            f"{t['a']['successes']}/{t['a']['total']}",
            f"{t['b']['successes']}/{t['b']['total']}",
            _usd(t["a_cost_usd"]),
            _usd(t["b_cost_usd"]),
            path,
            ", ".join(t["newly_failing"]) or "-",
        )
    console.print(table)
    for c in d["comparisons"]:
        console.print(
            f"  {c['metric']}: B worse in {c['worse']}, better in {c['better']} of "
            f"{c['pairs']} pairs over {c.get('tasks', 0)} tasks (paired sign-flip "
            f"p={c['p_value']:.3g}, Holm {c['p_holm']:.3g})",
            highlight=False,
        )
    console.print(
        f"{len(d['regressions'])} regressed, {len(d['improvements'])} improved; "
        f"cost ${d['a_cost_usd']:.4f} -> ${d['b_cost_usd']:.4f}",
        highlight=False,
    )


@app.command("list")
def list_cmd(
    agent: str | None = typer.Option(None, "--agent"),
    suite: str | None = typer.Option(None, "--suite"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Evals, newest first."""
    with errors():
        page = _api().call(
            "GET",
            "/api/v1/evals",
            params={k: v for k, v in {"agent": agent, "suite": suite}.items() if v},
        )
    if as_json:
        print_json(page)
        return
    table = Table("id", "suite", "agent", "version", "status", "success at target", "cost")
    for e in page["items"]:
        s = e["success"]
        table.add_row(
            e["id"],
            e["suite"],
            e["agent"],
            e["version"],
            e["status"],
            f"{s['successes']}/{s['total']}",
            _usd(e["cost_usd"]),
        )
    console.print(table)


@app.command("show")
def show_cmd(eval_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """One eval: its tasks, failing assertions and verdicts."""
    with errors():
        ev = _api().call("GET", f"/api/v1/evals/{eval_id}")
    if as_json:
        print_json(ev)
        return
    show_eval(ev)
    for v in ev["verdicts"]:
        show_verdict(v)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")
