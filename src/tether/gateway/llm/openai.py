"""OpenAI-compatible providers (OpenAI, vLLM, Ollama, LiteLLM, the mock): URLs, headers, usage
from replies and from stream chunks (counted from the chunks when the upstream sends none)."""

from __future__ import annotations

from typing import Any

from tether.config import ProviderConfig
from tether.gateway.llm.provider import Kind, Usage
from tether.gateway.llm.provider_keys import KeySource


class OpenAIProvider:
    kind: Kind = "openai"

    def __init__(self, config: ProviderConfig, keys: KeySource) -> None:
        self.config = config
        self.keys = keys
        self._base = config.base_url.rstrip("/")
        self._headers = {"content-type": "application/json", "user-agent": "tether-gateway"}

    def url(self, endpoint: str) -> str:
        # base_url ends in /v1 as in the OpenAI SDK; endpoint is "chat/completions", "embeddings"
        return f"{self._base}/{endpoint}"

    def headers(self) -> dict[str, str]:
        key = self.keys.current()  # the key current now; a rotation never touches this call
        return {**self._headers, "authorization": f"Bearer {key}"} if key else self._headers

    def usage(self, reply: dict[str, Any]) -> Usage:
        u = reply.get("usage")
        out = Usage(model_served=_str(reply.get("model")))
        choices = reply.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            out.finish_reason = _str(choices[0].get("finish_reason"))
        if isinstance(u, dict):
            _read_usage(u, out)
        return out

    def output_text(self, reply: dict[str, Any]) -> str:
        choices = reply.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return ""
        msg = choices[0].get("message") or {}
        parts = [msg.get("content") or ""]
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") or {}
            parts.append(f"{fn.get('name')}({fn.get('arguments')})")
        return "\n".join(p for p in parts if p)

    def meter(self, hide_usage: bool) -> OpenAIMeter:
        return OpenAIMeter(hide_usage)


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _read_usage(u: dict[str, Any], out: Usage) -> None:
    prompt = u.get("prompt_tokens")
    completion = u.get("completion_tokens", 0)  # embeddings report prompt tokens only
    if isinstance(prompt, int) and isinstance(completion, int):
        out.input_tokens = prompt
        out.output_tokens = completion
        out.reported = True
        details = u.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            out.cached_tokens = details["cached_tokens"]


class OpenAIMeter:
    """Counts a chat completion stream. One content or tool-argument delta is one token, which is
    how OpenAI-compatible servers stream; the upstream's own usage replaces the count if sent."""

    def __init__(self, hide_usage: bool) -> None:
        self.usage = Usage()
        self.text: list[str] = []
        self.chunks = 0
        # tether asked for usage on the client's behalf, so the usage-only chunk is not relayed
        self.hide_usage = hide_usage
        self._counted = 0

    def feed(self, event: dict[str, Any]) -> bool:
        if self.usage.model_served is None:
            self.usage.model_served = _str(event.get("model"))
        u = event.get("usage")
        if isinstance(u, dict):
            _read_usage(u, self.usage)
        choices = event.get("choices")
        if isinstance(choices, list) and choices:
            self.chunks += 1
            for choice in choices:  # n > 1 streams interleave their choices
                if isinstance(choice, dict):
                    self._choice(choice)
            if not self.usage.reported:
                self.usage.output_tokens = self._counted
            return True
        return not (self.hide_usage and isinstance(u, dict))

    def _choice(self, choice: dict[str, Any]) -> None:
        if choice.get("finish_reason"):
            self.usage.finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        if delta.get("content"):
            if not choice.get("index"):
                self.text.append(delta["content"])
            self._counted += 1
        elif delta.get("refusal"):
            self._counted += 1
        for call in delta.get("tool_calls") or []:
            fn = call.get("function") or {}
            if fn.get("name"):
                self.text.append(f"\n{fn['name']}(")
            if fn.get("arguments"):
                self.text.append(fn["arguments"])
                self._counted += 1
