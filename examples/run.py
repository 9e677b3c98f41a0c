"""Runs one example against tether's mock LLM and MCP gateway in one command:

    python examples/run.py invoice-triage [--approve]
    python examples/run.py openai-agents --approve
    python examples/run.py plain-loop --approve
    python examples/run.py crewai-crew --approve     # CrewAI, from .venv-agents
    python examples/run.py autogen --approve         # AutoGen, from .venv-agents

Without `--url` it starts a throwaway tether (the demo's: a new SQLite database in a temporary
folder, the mock LLM with examples/mock_script.yaml, tether's demo MCP server), applies
the example's policy and creates its agent key. Each call tether holds is printed; `--approve`
approves it, otherwise approve or deny it yourself (`tether approvals approve ID` with the
printed TETHER_URL and TETHER_API_KEY, or in the console). `--url URL --admin-key KEY` uses a
running tether instead (it needs the mock script and the demo MCP server: examples/tether.yaml).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import tether
from tether.demo.frameworks import EXAMPLES, load, run_example


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("example", choices=sorted(EXAMPLES))
    parser.add_argument("--approve", action="store_true", help="approve held calls for you")
    parser.add_argument("--url", help="a running tether (default: start a throwaway one)")
    parser.add_argument("--admin-key", help="an admin key of that tether")
    args = parser.parse_args(argv)
    module = load(args.example)
    local = None
    if args.url:
        url, admin_key = args.url.rstrip("/"), args.admin_key
    else:
        from tether.demo.server import free_port, start

        local = start(Path(tempfile.mkdtemp(prefix="tether-example-")), free_port())
        url, admin_key = local.url, local.admin_key
        print(f"tether on {url}  (console and CLI: TETHER_URL={url} TETHER_API_KEY={admin_key})")

    def held(hold: dict[str, Any]) -> None:
        print(f"held for approval: {hold['id']} {hold['tool']} {json.dumps(hold['arguments'])}")
        if not args.approve:
            print(f"  decide it: tether approvals approve {hold['id']}  (or deny)")

    tether.init(url, api_key=admin_key)  # the example's own spans (SDK) go here
    try:
        done = run_example(args.example, module, url, admin_key, approve=args.approve,
                           on_hold=held, timeout_s=None)  # fmt: skip
        print(json.dumps({"run_id": done.run_id, "status": done.status, "output": done.output}))
        print(f"see it: {url}/runs/{done.run_id}")
    finally:
        tether.shutdown()
        if local is not None:
            local.stop()
    return 0 if done.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
