"""The ceiling for bench/gateway.py: a bare ASGI app under the same uvicorn that answers every
request with a fixed chat completion, doing no work at all. No Python HTTP server on this
machine answers faster, so the gateway's throughput is read against it.

    .venv/bin/python -m uvicorn echo_app:app --app-dir bench --port PORT
"""

from __future__ import annotations

import json
from typing import Any

BODY = json.dumps({
    "id": "chatcmpl-echo", "object": "chat.completion", "created": 0, "model": "mock-small",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21},
}).encode()  # fmt: skip
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole request body
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
