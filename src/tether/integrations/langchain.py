"""tether for LangChain and LangGraph: a callback handler that records chains, graph nodes,
tools, retrievers (and LLM calls not made through tether's gateway) as one tether run.

    handler = TetherCallbackHandler(agent="q4-analyst", task_id="task-abc-001")
    llm = ChatOpenAI(base_url=f"{TETHER_URL}/llm/v1", default_headers=handler.headers())
    graph.invoke(inputs, {"callbacks": [handler]})
    handler.finish()

One handler is one run (its `run_id` is the correlation id the gateway's LLM spans share);
give each concurrent run its own handler. Nothing goes to LangSmith or any other vendor.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import LLMResult

from tether.integrations._spans import SpanTree
from tether.sdk import _values as v


def _name(serialized: dict[str, Any] | None, kwargs: dict[str, Any], fallback: str) -> str:
    if kwargs.get("name"):
        return str(kwargs["name"])
    if serialized:
        if serialized.get("name"):
            return str(serialized["name"])
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return str(ids[-1])
    return fallback


class TetherCallbackHandler(BaseCallbackHandler):
    """LangChain callbacks -> spans of one tether run (see the module docstring)."""

    raise_error = False  # a tracing failure must never break the agent

    def __init__(
        self,
        agent: str,
        *,
        task_id: str | None = None,
        user: str | None = None,
        version: str | None = None,
        run_id: str | None = None,
        llm_via_gateway: bool = True,
    ) -> None:
        self.tree = SpanTree(
            agent,
            task_id=task_id,
            user=user,
            version=version,
            run_id=run_id,
            llm_via_gateway=llm_via_gateway,
        )
        self._top: UUID | None = None

    @property
    def run_id(self) -> str:
        return self.tree.run_id

    def headers(self) -> dict[str, str]:
        return self.tree.headers()

    def finish(self, *, output: Any = None, error: BaseException | str | None = None) -> None:
        """Ends the run (also done when the outermost chain ends)."""
        self.tree.finish(output=output, error=error)

    # ------------------------------------------------------------------ chains and graph nodes

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        if parent_run_id is None and self._top is None:
            self._top = run_id
            self.tree.root(input=inputs)
            return
        meta = kwargs.get("metadata") or {}
        attrs = {
            "langgraph.node": meta.get("langgraph_node"),
            "langgraph.step": meta.get("langgraph_step"),
        }
        self.tree.start(
            run_id,
            parent_run_id,
            _name(serialized, kwargs, "chain"),
            "chain",
            input=inputs,
            attributes=attrs,
        )

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if run_id == self._top:
            self._top = None
            self.tree.finish(output=outputs)
            return
        self.tree.end(run_id, output=outputs)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        if run_id == self._top:
            self._top = None
            # a LangGraph interrupt is a pause, not a failure
            if type(error).__name__ == "GraphInterrupt":
                self.tree.finish(output={"paused": repr(error)[:500]})
            else:
                self.tree.finish(error=error)
            return
        self.tree.end(run_id, error=error)

    # ------------------------------------------------------------------ tools and retrievers

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        name = _name(serialized, kwargs, "tool")
        self.tree.start(
            run_id,
            parent_run_id,
            name,
            "tool",
            input=kwargs.get("inputs") or input_str,
            attributes={v.TOOL_NAME: name},
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.tree.end(run_id, output=getattr(output, "content", output))

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.tree.end(run_id, error=error)

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self.tree.start(
            run_id, parent_run_id, _name(serialized, kwargs, "retriever"), "retrieval", input=query
        )

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kwargs: Any) -> None:
        docs = [getattr(d, "page_content", d) for d in documents or []]
        self.tree.end(run_id, output=docs)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.tree.end(run_id, error=error)

    # ------------------------------------------------------------------ LLM calls

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._llm_start(serialized, prompts, run_id, parent_run_id, kwargs)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        self._llm_start(serialized, messages, run_id, parent_run_id, kwargs)

    def _llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompt: Any,
        run_id: UUID,
        parent: UUID | None,
        kwargs: dict[str, Any],
    ) -> None:
        params = kwargs.get("invocation_params") or {}
        model = params.get("model") or params.get("model_name")
        self.tree.start(
            run_id,
            parent,
            _name(serialized, kwargs, "llm"),
            "llm",
            input=prompt,
            attributes={v.REQUEST_MODEL: model, v.OPERATION: "chat"},
        )

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        usage = (response.llm_output or {}).get("token_usage") or {}
        texts = [g.text for gens in response.generations for g in gens]
        self.tree.end(
            run_id,
            output=texts[0] if len(texts) == 1 else texts,
            attributes={
                v.INPUT_TOKENS: usage.get("prompt_tokens"),
                v.OUTPUT_TOKENS: usage.get("completion_tokens"),
            },
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.tree.end(run_id, error=error)
