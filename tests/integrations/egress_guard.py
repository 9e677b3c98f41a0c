"""Runs a script (argv[1:]) in this interpreter with an audit hook that records every name
looked up and every address connected to that is not this machine's loopback, and prints them
as one `TETHER_EGRESS <json>` line on stderr at exit: how the framework tests show that nothing
went to a vendor's endpoint (the frameworks' telemetry, trace upload, version checks)."""

from __future__ import annotations

import atexit
import ipaddress
import json
import runpy
import sys
from typing import Any

LOCAL_NAMES = {"localhost", "localhost.localdomain", ""}
seen: list[str] = []


def _local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str) or host.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def hook(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.getaddrinfo" and not _local(args[0]):
        seen.append(f"lookup {args[0]}")
    elif event == "socket.connect" and isinstance(args[1], tuple) and not _local(args[1][0]):
        seen.append(f"connect {args[1][0]}:{args[1][1]}")


def report() -> None:
    print("TETHER_EGRESS " + json.dumps(sorted(set(seen))), file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.addaudithook(hook)
    atexit.register(report)
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
