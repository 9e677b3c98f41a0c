"""`tether demo`: a self-contained tour. Starts tether on a fresh SQLite database (or uses a
running one), sends realistic agent traffic through the SDK, raw OTLP and the LLM gateway, holds
one run for approval, stops one by its budget, then prints what tether recorded."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

import tether
from tether.demo.evals import EVALS
from tether.demo.frameworks import EXAMPLES_SCENARIOS
from tether.demo.governed import GOVERNED
from tether.demo.mcp_governed import MCP_GOVERNED
from tether.demo.redteam import REDTEAM
from tether.demo.scenarios import SCENARIOS, Demo, Scenario
from tether.demo.summary import print_summary
from tether.demo.watch import WATCH

ALL_SCENARIOS: list[Scenario] = [
    *SCENARIOS,
    *GOVERNED,
    *WATCH,
    *REDTEAM,
    *MCP_GOVERNED,
    *EVALS,
    *EXAMPLES_SCENARIOS,
]


def seed(
    url: str,
    api_key: str | None,
    *,
    console: Console,
    pace: float = 0.0,
    serving: bool = False,
    scenarios: list[Scenario] | None = None,
    descriptions_file: Path | None = None,
) -> Demo:
    """Runs every scenario against the tether at `url`; returns what they noted."""
    tether.init(url, api_key=api_key, service_name="tether-demo", schedule_delay_ms=200)
    demo = Demo(url=url, admin_key=api_key, pace=pace, serving=serving,
                descriptions_file=descriptions_file)  # fmt: skip
    demo.paced()
    for title, scenario in scenarios if scenarios is not None else ALL_SCENARIOS:
        console.print(f"[cyan]→[/] {title}", highlight=False)
        scenario(demo)
    if not tether.flush(15):
        demo.notes.append("some spans were still being sent when the demo summarised")
    stats = tether.sdk_stats()
    if stats["dropped"]:
        demo.notes.append(f"the SDK dropped {stats['dropped']} spans: is tether reachable?")
    return demo


def run_demo(
    console: Console,
    *,
    home: Path | None = None,
    port: int | None = None,
    keep_serving: bool = True,
    pace: float = 0.25,
) -> None:
    """`tether demo`: serve on a wiped demo database, seed it, summarise, serve until Ctrl-C."""
    from tether.demo.server import start

    local = start(home, port)
    try:
        console.print(
            f"[bold]tether[/] demo on {local.url}  (database: {local.settings.db_url})",
            highlight=False,
        )
        demo = seed(
            local.url,
            local.admin_key,
            console=console,
            pace=pace,
            serving=True,
            descriptions_file=local.descriptions_file,
        )
        print_summary(console, local.url, local.admin_key, demo.notes)
        console.print(f"\n[bold green]console:[/] {local.url}/", highlight=False)
        console.print(
            f"log in with the demo admin key: [bold]{local.admin_key}[/]",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            "from another terminal, the CLI reads the same runs:\n"
            f"  export TETHER_URL={local.url} TETHER_API_KEY={local.admin_key}\n"
            "  tether runs list && tether approvals list",
            highlight=False,
            soft_wrap=True,
        )
        if keep_serving:
            console.print("serving until Ctrl-C", style="dim")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        console.print("\nstopping", style="dim")
    finally:
        tether.shutdown()
        local.stop()


def seed_only(console: Console, url: str, api_key: str | None) -> Demo:
    """`tether demo --seed-only`: sends the demo traffic to an already running tether."""
    demo = seed(url, api_key, console=console)
    print_summary(console, url, api_key, demo.notes)
    return demo
