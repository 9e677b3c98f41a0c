"""The mock LLM's script: replies (text or tool calls, usage, latency, faults) and how a request
picks one. Pure and deterministic: the same requests in the same order get the same replies."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

Fault = Literal["status", "timeout", "malformed", "disconnect"]
FAULTS: tuple[str, ...] = ("status", "timeout", "malformed", "disconnect")
MODELS: tuple[str, ...] = ("mock-small", "mock-large")


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Unset fields fall back to the script's defaults or to the echo reply."""

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    match: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    chunk_delay_ms: float | None = None
    fault: Fault | None = None
    status: int = 500
    fault_after_chunks: int = 0
    hang_s: float = 3600.0
    model: str | None = None


@dataclass(frozen=True)
class Script:
    replies: tuple[Reply, ...] = ()
    latency_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    usage: bool = True
    embedding_dim: int = 8


@dataclass(frozen=True)
class Answer:
    """What the mock sends for one request, after the script and the request are combined."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    input_tokens: int
    output_tokens: int
    words: tuple[str, ...]
    finish: Literal["stop", "length", "tool_calls"]
    latency_ms: float
    chunk_delay_ms: float
    fault: Fault | None
    status: int
    fault_after_chunks: int
    hang_s: float
    model: str | None


def _reply(raw: Any, where: str) -> Reply:
    if isinstance(raw, str):
        return Reply(text=raw)
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: a reply is a string or a mapping, got {type(raw).__name__}")
    known = set(Reply.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if raw.get("fault") is not None and raw["fault"] not in FAULTS:
        raise ValueError(f"{where}: fault must be one of {', '.join(FAULTS)}")
    calls = []
    for i, call in enumerate(raw.get("tool_calls") or []):
        if not isinstance(call, dict) or "name" not in call:
            raise ValueError(f"{where}.tool_calls[{i}]: needs a name (and arguments)")
        calls.append(ToolCall(str(call["name"]), dict(call.get("arguments") or {})))
    fields = {k: v for k, v in raw.items() if k != "tool_calls"}
    return Reply(tool_calls=tuple(calls), **fields)


def parse_script(data: Any) -> Script:
    """A script is a list of replies, or a mapping with `replies` and defaults."""
    if data is None:
        return Script()
    if isinstance(data, list):
        data = {"replies": data}
    if not isinstance(data, dict):
        raise ValueError("a mock script is a list of replies or a mapping with `replies`")
    unknown = set(data) - {"replies", "latency_ms", "chunk_delay_ms", "usage", "embedding_dim"}
    if unknown:
        raise ValueError(f"unknown script field(s) {', '.join(sorted(unknown))}")
    replies = tuple(_reply(r, f"replies[{i}]") for i, r in enumerate(data.get("replies") or []))
    return Script(
        replies=replies,
        latency_ms=float(data.get("latency_ms", 0.0)),
        chunk_delay_ms=float(data.get("chunk_delay_ms", 0.0)),
        usage=bool(data.get("usage", True)),
        embedding_dim=int(data.get("embedding_dim", 8)),
    )


def load_script(path: Path) -> Script:
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return parse_script(data)


def count_words(text: str) -> int:
    return len(text.split())


def message_text(content: Any) -> str:
    """The text of an OpenAI or Anthropic message `content` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                for key in ("text", "content"):
                    if isinstance(part.get(key), str):
                        parts.append(part[key])
                    elif isinstance(part.get(key), list):
                        parts.append(message_text(part[key]))
        return " ".join(parts)
    return ""


def prompt_text(messages: Iterable[Any], system: Any = None) -> str:
    texts = [message_text(system)] if system else []
    for m in messages:
        if isinstance(m, dict):
            texts.append(message_text(m.get("content")))
    return " ".join(t for t in texts if t)


def last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return message_text(m.get("content"))
    return ""


def filler(n: int) -> str:
    """`n` deterministic words, for replies that give a token count but no text."""
    return " ".join(f"w{i}" for i in range(n))


def embedding(text: str, dim: int) -> list[float]:
    """Feature hashing of the words: deterministic, no model, and texts that share words point
    the same way (so memory search over the mock finds the related fact, not a random one)."""
    out = [0.0] * dim
    words = re.findall(r"[a-z0-9]+", text.lower()) or [text]
    for word in words:
        digest = hashlib.sha256(word.encode()).digest()
        for j in range(4):  # each word touches four coordinates, with a sign each
            slot = int.from_bytes(digest[4 * j : 4 * j + 3], "big") % dim
            out[slot] += 1.0 if digest[4 * j + 3] & 1 else -1.0
    if not any(out):
        out[0] = 1.0
    return [round(v, 6) for v in out]


class Director:
    """Chooses the reply for each request: a reply whose `match` occurs in the prompt first,
    otherwise the unmatched replies in turn, otherwise the echo reply."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self._plain = [r for r in script.replies if r.match is None]
        self._matched = [r for r in script.replies if r.match is not None]
        self._turn = 0
        self._lock = threading.Lock()

    def choose(self, prompt: str) -> Reply | None:
        for reply in self._matched:
            if reply.match and reply.match in prompt:
                return reply
        if not self._plain:
            return None
        with self._lock:
            reply = self._plain[self._turn % len(self._plain)]
            self._turn += 1
        return reply

    def answer(self, prompt: str, last_user: str, max_tokens: int | None) -> Answer:
        reply = self.choose(prompt) or Reply()
        if reply.text is not None:
            text = reply.text
        elif reply.output_tokens is not None and not reply.tool_calls:
            text = filler(reply.output_tokens)
        elif reply.tool_calls:
            text = ""
        else:
            text = "mock reply: " + " ".join(last_user.split()[:12])
        words = tuple(text.split())
        out = (
            reply.output_tokens
            if reply.output_tokens is not None
            else _output_words(words, reply.tool_calls)
        )
        finish: Literal["stop", "length", "tool_calls"] = (
            "tool_calls" if reply.tool_calls else "stop"
        )
        if max_tokens is not None and out > max_tokens:
            # An upstream never produces more than max_tokens; the budget maths relies on it.
            words = words[:max_tokens]
            text = " ".join(words)
            out = max_tokens
            finish = "length"
        return Answer(
            text=text,
            tool_calls=reply.tool_calls,
            input_tokens=reply.input_tokens if reply.input_tokens is not None
            else max(1, count_words(prompt)),
            output_tokens=out,
            words=words,
            finish=finish,
            latency_ms=reply.latency_ms if reply.latency_ms is not None else self.script.latency_ms,
            chunk_delay_ms=reply.chunk_delay_ms
            if reply.chunk_delay_ms is not None else self.script.chunk_delay_ms,
            fault=reply.fault,
            status=reply.status,
            fault_after_chunks=reply.fault_after_chunks,
            hang_s=reply.hang_s,
            model=reply.model,
        )  # fmt: skip


def _output_words(words: tuple[str, ...], calls: tuple[ToolCall, ...]) -> int:
    n = len(words)
    for call in calls:
        n += 1 + count_words(json.dumps(call.arguments).replace('"', " "))
    return max(1, n)


__all__ = ["Answer", "Director", "Reply", "Script", "ToolCall", "load_script", "parse_script"]
