"""The seed's LangGraph agent under tether: plan -> human_approval -> execute, paused before
`human_approval` (`interrupt_before`), its LLM calls through tether's gateway, and the hard-cap
run config enforced by tether whatever the graph's code does.

    tether mock-llm --port 9999 &            # or real providers in tether.yaml
    tether serve --config examples/tether.yaml &
    tether keys create --agent q4-analyst --scopes agent,ingest --json   # export its key as
    export TETHER_API_KEY=tk_...                                        # TETHER_API_KEY
    python examples/langgraph_agent.py "Analyze Q4 variance report and flag anomalies"

The agent waits for the approval (`tether approvals list`, then `tether approvals approve ID`);
`--rounds N` makes `execute` loop N times (a runaway when N is large: tether stops it).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from openai import OpenAI

from tether.integrations.langgraph import TetherSaver, invoke


class Task(TypedDict, total=False):
    task: str
    plan: str
    findings: list[str]
    rounds: int


def llm(saver: TetherSaver, config: RunnableConfig) -> OpenAI:
    """An OpenAI client on tether's gateway, its calls attributed to the thread's run."""
    return OpenAI(
        base_url=saver.url + "/llm/v1",
        api_key=saver.api_key or "none",
        default_headers=saver.run_headers(config),
        max_retries=0,
    )


def ask(saver: TetherSaver, config: RunnableConfig, prompt: str, model: str) -> str:
    reply = llm(saver, config).chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    return reply.choices[0].message.content or ""


def build(saver: TetherSaver, *, model: str = "mock-small") -> Any:
    """The graph, compiled with `saver` (the seed used SqliteSaver here)."""

    def plan(state: Task, config: RunnableConfig) -> dict[str, Any]:
        return {"plan": ask(saver, config, f"Plan this task: {state['task']}", model)}

    def human_approval(state: Task) -> dict[str, Any]:
        return {}  # the pause is before this node; a person approves the plan in tether

    def execute(state: Task, config: RunnableConfig) -> dict[str, Any]:
        found = ask(saver, config, f"Carry out: {state['plan']}", model)
        return {"findings": [*state.get("findings", []), found]}

    def more(state: Task) -> str:
        return "execute" if len(state.get("findings", [])) < state.get("rounds", 1) else END

    g = StateGraph(Task)
    g.add_node("plan", plan)
    g.add_node("human_approval", human_approval)
    g.add_node("execute", execute)
    g.add_edge(START, "plan")
    g.add_edge("plan", "human_approval")
    g.add_edge("human_approval", "execute")
    g.add_conditional_edges("execute", more)
    return g.compile(checkpointer=saver, interrupt_before=["human_approval"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task")
    parser.add_argument("--thread", default="task-abc-001")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--model", default="mock-small")
    parser.add_argument("--wait-s", type=float, default=3600.0)
    args = parser.parse_args(argv)
    saver = TetherSaver()
    graph = build(saver, model=args.model)
    config: RunnableConfig = {
        "configurable": {
            "thread_id": args.thread,
            "max_tokens": 50000,
            "max_iterations": 25,
            "cost_limit_usd": 2.00,
        }
    }
    outcome = invoke(graph, {"task": args.task, "rounds": args.rounds}, config, wait_s=args.wait_s)
    print(
        json.dumps(
            {
                "status": outcome.status,
                "run_id": outcome.run_id,
                "pending": outcome.pending,
                "result": outcome.result,
            },
            default=str,
        )
    )
    return 0 if outcome.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
