"""The MCP tools `memory.search`, `memory.write` and `memory.forget`: tether's memory served
through its own MCP gateway, so the agent's policy, rate limits and approvals apply to memory
like to any tool, and every access is a tool span of the run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import mcp_types as types

from tether.core.errors import BadRequestError, NotFoundError, TetherError
from tether.gateway.mcp.spans import CallContext
from tether.server.memory import Caller, MemoryService

_SEARCH = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "what to look for, in words"},
        "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
        "namespaces": {"type": "array", "items": {"type": "string"},
                       "description": "namespaces granted to you; default: all of them"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["query"],
}  # fmt: skip
_WRITE = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "description": "the fact to remember, in words"},
        "key": {"type": "string", "description": "a stable name: a new text under it replaces"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "namespace": {"type": "string", "description": "default: your own"},
    },
    "required": ["text"],
}
_FORGET = {
    "type": "object",
    "properties": {"id": {"type": "string", "description": "the memory id (mem_...)"}},
    "required": ["id"],
}


class MemoryTools:
    """The `memory` built-in server for the MCP gateway."""

    name = "memory"
    tags: Mapping[str, tuple[str, ...]] = {
        "search": ("read",),
        "write": ("write",),
        "forget": ("write", "irreversible"),
    }

    def __init__(self, service: MemoryService) -> None:
        self.service = service

    def tools(self) -> list[types.Tool]:
        return [
            types.Tool(name="search", input_schema=_SEARCH,
                       description="Search your long-term memory (and namespaces granted to you) "
                       "for facts related to a query. Returns the closest memories with ids.",
                       annotations=types.ToolAnnotations(read_only_hint=True)),
            types.Tool(name="write", input_schema=_WRITE,
                       description="Remember a fact for later runs. Use a key for facts that "
                       "change (a new text under the same key supersedes the old one).",
                       annotations=types.ToolAnnotations(read_only_hint=False,
                                                         destructive_hint=False)),
            types.Tool(name="forget", input_schema=_FORGET,
                       description="Erase a memory by id (and its earlier versions).",
                       annotations=types.ToolAnnotations(destructive_hint=True)),
        ]  # fmt: skip

    async def call(
        self, call: CallContext, headers: Mapping[str, str], tool: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        caller = Caller(
            agent=call.agent, actor=call.actor, operator=False,
            authorization=headers.get("authorization"), run_id=call.run_id,
            user=call.attribution.user,
        )  # fmt: skip
        try:
            data = await self._dispatch(caller, tool, arguments)
        except TetherError as exc:
            text = f"tether memory refused {tool}: {exc.message}"
            return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True,
                                        structured_content={"error": exc.to_dict()})  # fmt: skip
        body = json.dumps(data, ensure_ascii=False, default=str)
        return types.CallToolResult(content=[types.TextContent(text=body)],
                                    structured_content=data)  # fmt: skip

    async def _dispatch(self, caller: Caller, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        if tool == "search":
            hits = await self.service.search(
                caller, query=_str(args, "query"), k=int(args.get("k") or 5),
                namespaces=args.get("namespaces"), tags=args.get("tags") or (),
            )  # fmt: skip
            return {"memories": [{"id": h.memory.id, "text": h.memory.text, "score": h.score,
                                  "namespace": h.memory.namespace, "key": h.memory.key}
                                 for h in hits]}  # fmt: skip
        if tool == "write":
            w = await self.service.write(caller, text=_str(args, "text"), key=args.get("key"),
                                         tags=args.get("tags") or (),
                                         namespace=args.get("namespace"))  # fmt: skip
            return {"status": w.status, "id": w.memory.id, "superseded": w.superseded}
        if tool == "forget":
            return {"forgotten": await self.service.forget(caller, memory_id=_str(args, "id"))}
        raise NotFoundError(f"memory has no tool {tool!r}: search, write or forget")


def _str(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"{name}: a non-empty string")
    return value
