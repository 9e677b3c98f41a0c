"""`TetherSaver`: LangGraph's checkpointer backed by tether's store, over tether's REST API with
the agent's key (agents hold a tether key, never database credentials).

Checkpoints are serialised here by LangGraph's own serde and stored as opaque bytes, one blob per
changed channel. Loading refuses every type outside LangGraph's safe set and `allowed_types`
(the graph's own state types are added by LangGraph through `with_allowlist`).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import INTERRUPT

from tether.core.checkpoints import node_of
from tether.integrations._wire import jsonable, raise_for, raise_for_reply, view
from tether.integrations.langgraph._http import AsyncWire, Reply, SyncWire, Target
from tether.integrations.langgraph._loops import PerLoop
from tether.sdk._config import _defaults

# Keys of a run config's `configurable` that become the tether run's caps and attribution.
CAP_KEYS = ("max_tokens", "max_iterations", "cost_limit_usd")
RUN_KEYS = ("task_id", "user", "version")


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes:
    return b"" if text is None else base64.b64decode(text)


def _dumps(body: Any) -> bytes:
    # as httpx encodes `json=`
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class TetherSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer that keeps every checkpoint in tether.

        saver = TetherSaver("http://127.0.0.1:7337", api_key="tk_...")
        graph = builder.compile(checkpointer=saver)
        graph.invoke(inputs, {"configurable": {"thread_id": "task-abc-001",
                                               "max_tokens": 50000, "cost_limit_usd": 2.0}})

    Each thread is one tether run (`run_id(config)` names it; send it to the LLM gateway as
    `X-Tether-Run-Id`). `max_tokens`, `max_iterations` and `cost_limit_usd` in `configurable`
    become that run's caps. `keep_latest=N` prunes each thread to its newest N checkpoints per
    namespace after every put (a resume only needs the latest).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        allowed_types: Iterable[tuple[str, ...]] = (),
        serde: SerializerProtocol | None = None,
        keep_latest: int | None = None,
        approval_timeout_s: float = 86_400.0,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # Strict by default: only LangGraph's safe types and the ones named here (or added by a
        # compiled graph for its state schema) are ever rebuilt from stored bytes.
        super().__init__(
            serde=serde or JsonPlusSerializer(allowed_msgpack_modules=list(allowed_types) or None)
        )
        if keep_latest is not None and keep_latest < 1:
            raise ValueError("keep_latest must be at least 1")
        url, api_key = _defaults(url, api_key)
        self.url = url
        self.api_key = api_key
        self.keep_latest = keep_latest
        self.approval_timeout_s = approval_timeout_s
        headers = {"User-Agent": "tether-langgraph"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._kwargs: dict[str, Any] = {
            "base_url": url + "/api/v1",
            "headers": headers,
            "timeout": timeout_s,
        }
        self._client = httpx.Client(transport=transport, **self._kwargs)
        # put, put_writes and get_tuple (every super-step) go over lean keep-alive connections
        # (_http.py); through httpx when a transport was given or a proxy applies
        self._target = Target(url + "/api/v1", headers)
        # read once, as httpx reads the proxy settings when its client is made
        self._direct = self._target.direct
        self._wire = (
            SyncWire(self._target, timeout_s) if transport is None and self._direct else None
        )
        # the async calls' client and wire, per event loop and closed as that loop ends
        self._aconns = PerLoop(
            lambda: httpx.AsyncClient(transport=async_transport, **self._kwargs),
            None
            if async_transport is not None or not self._direct
            else lambda: AsyncWire(self._target, timeout_s),
        )
        self._runs: dict[str, str] = {}
        # checkpoint id -> set once its put is answered. LangGraph stores checkpoints in the
        # background while the next step runs; an idempotent tool's claim names the checkpoint
        # its task started from and waits for it here, so tether can count its lineage.
        self._inflight: dict[str, threading.Event] = {}

    # ------------------------------------------------------------------ plumbing

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        resp = self._client.request(method, path, **kw)
        raise_for(resp)
        return resp

    def _step_call(self, method: str, path: str, body: Any = None) -> Reply:
        """A per-super-step call: its status and body (errors other than 404 raised)."""
        data = None if body is None else _dumps(body)
        if self._wire is not None:
            status, content = self._wire.request(method, path, data)
        else:
            headers = {"Content-Type": "application/json"} if data is not None else None
            resp = self._client.request(method, path, content=data, headers=headers)
            status, content = resp.status_code, resp.content
        if status != 404:
            raise_for_reply(status, content)
        return status, content

    async def _astep_call(self, method: str, path: str, body: Any = None) -> Reply:
        data = None if body is None else _dumps(body)
        wire = await self._aconns.wire()
        if wire is not None:
            status, content = await wire.request(method, path, data)
        else:
            headers = {"Content-Type": "application/json"} if data is not None else None
            client = await self._aconns.client()
            resp = await client.request(method, path, content=data, headers=headers)
            status, content = resp.status_code, resp.content
        if status != 404:
            raise_for_reply(status, content)
        return status, content

    async def _acall(self, method: str, path: str, **kw: Any) -> httpx.Response:
        client = await self._aconns.client()
        resp = await client.request(method, path, **kw)
        raise_for(resp)
        return resp

    @contextlib.contextmanager
    def _putting(self, checkpoint_id: str) -> Iterator[None]:
        done = self._inflight.setdefault(checkpoint_id, threading.Event())
        try:
            yield
        finally:
            done.set()
            self._inflight.pop(checkpoint_id, None)

    def _stored_by_now(self, site: dict[str, Any] | None, timeout_s: float = 30.0) -> bool:
        """False while the put of the site's checkpoint is still under way (after `timeout_s`
        it goes on regardless: the lineage is then counted without it)."""
        done = self._inflight.get(str((site or {}).get("checkpoint_id")))
        return done is None or done.wait(timeout_s)

    def close(self) -> None:
        self._client.close()
        if self._wire is not None:
            self._wire.close()

    async def aclose(self) -> None:
        """Closes this event loop's connections; another loop's close as that loop ends."""
        await self._aconns.aclose()

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        """Versions that sort as text: a zero-padded counter and a random tie-breaker."""
        if current is None:
            n = 0
        elif isinstance(current, int):
            n = current
        else:
            n = int(str(current).split(".")[0])
        return f"{n + 1:032}.{random.random():016}"

    # ------------------------------------------------------------------ request bodies

    def _run_fields(self, config: RunnableConfig) -> dict[str, Any]:
        conf = config.get("configurable", {})
        run: dict[str, Any] = {k: conf[k] for k in CAP_KEYS + RUN_KEYS if conf.get(k) is not None}
        run_id = conf.get("tether_run_id")
        if run_id:
            run["run_id"] = run_id
        for k in ("task_id", "user", "version"):
            if k in run:
                run[k] = str(run[k])
        return run

    def _put_body(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> dict[str, Any]:
        conf = config["configurable"]
        c: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = c.pop("channel_values", {}) or {}
        blobs = []
        for ch, ver in new_versions.items():
            if ch in values:
                kind, data = self.serde.dumps_typed(values[ch])
                blobs.append(
                    {
                        "channel": ch,
                        "version": str(ver),
                        "type": kind,
                        "data": _b64(data),
                        "view": view(values[ch]),
                    }
                )
            else:
                blobs.append({"channel": ch, "version": str(ver), "type": "empty"})
        kind, data = self.serde.dumps_typed(c)
        md = jsonable(get_serializable_checkpoint_metadata(config, metadata))
        return {
            "thread_id": str(conf["thread_id"]),
            "checkpoint_ns": conf.get("checkpoint_ns", ""),
            "checkpoint_id": checkpoint["id"],
            "parent_checkpoint_id": conf.get("checkpoint_id"),
            "type": kind,
            "data": _b64(data),
            "versions": {ch: str(v) for ch, v in checkpoint["channel_versions"].items()},
            "metadata": md,
            "blobs": blobs,
            "run": self._run_fields(config),
        }

    def _writes_body(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> dict[str, Any]:
        conf = config["configurable"]
        out, interrupts = [], []
        for idx, (channel, value) in enumerate(writes):
            kind, data = self.serde.dumps_typed(value)
            out.append(
                {
                    "idx": idx,
                    "channel": channel,
                    "type": kind,
                    "data": _b64(data),
                    "view": view(value),
                }
            )
            if channel == INTERRUPT:
                interrupts += self._interrupts(value, task_path)
        return {
            "thread_id": str(conf["thread_id"]),
            "checkpoint_ns": conf.get("checkpoint_ns", ""),
            "checkpoint_id": conf["checkpoint_id"],
            "task_id": task_id,
            "task_path": task_path,
            "writes": out,
            "interrupts": interrupts,
            "approval_timeout_s": self.approval_timeout_s,
            "run": self._run_fields(config),
        }

    @staticmethod
    def _interrupts(value: Any, task_path: str) -> list[dict[str, Any]]:
        """LangGraph's Interrupt objects in an __interrupt__ write, as tether approvals."""
        items = value if isinstance(value, list | tuple) else [value]
        node = node_of(task_path)
        return [
            {"id": str(i.id), "value": view(i.value), "node": node}
            for i in items
            if getattr(i, "id", None) is not None and hasattr(i, "value")
        ]

    def _tuple(self, t: dict[str, Any]) -> CheckpointTuple:
        checkpoint = self.serde.loads_typed((t["type"], _unb64(t["data"])))
        checkpoint["channel_values"] = {
            b["channel"]: self.serde.loads_typed((b["type"], _unb64(b["data"])))
            for b in t["blobs"]
            if b["type"] != "empty"
        }
        writes = [
            (w["task_id"], w["channel"], self.serde.loads_typed((w["type"], _unb64(w["data"]))))
            for w in t["writes"]
        ]
        ids = {"thread_id": t["thread_id"], "checkpoint_ns": t["checkpoint_ns"]}
        self._runs[t["thread_id"]] = t["run_id"]
        parent = t.get("parent_id")
        return CheckpointTuple(
            config={"configurable": {**ids, "checkpoint_id": t["checkpoint_id"]}},
            checkpoint=checkpoint,
            metadata=t["metadata"],
            parent_config={"configurable": {**ids, "checkpoint_id": parent}} if parent else None,
            pending_writes=writes,
        )

    @staticmethod
    def _tuple_path(config: RunnableConfig) -> str:
        conf = config["configurable"]
        params = {
            "thread_id": str(conf["thread_id"]),
            "checkpoint_ns": conf.get("checkpoint_ns", ""),
        }
        if conf.get("checkpoint_id"):
            params["checkpoint_id"] = conf["checkpoint_id"]
        return "/checkpoints/tuple?" + urlencode(params)

    @staticmethod
    def _search_body(
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> dict[str, Any]:
        conf = (config or {}).get("configurable", {})
        body: dict[str, Any] = {"filter": jsonable(filter) if filter else None, "limit": limit}
        if conf.get("thread_id") is not None:
            body["thread_id"] = str(conf["thread_id"])
        if "checkpoint_ns" in conf:
            body["checkpoint_ns"] = conf["checkpoint_ns"]
        if before is not None:
            body["before"] = before["configurable"]["checkpoint_id"]
        return body

    def _stored(self, config: RunnableConfig, checkpoint_id: str, run_id: str) -> RunnableConfig:
        conf = config["configurable"]
        self._runs[str(conf["thread_id"])] = run_id
        return {
            "configurable": {
                "thread_id": conf["thread_id"],
                "checkpoint_ns": conf.get("checkpoint_ns", ""),
                "checkpoint_id": checkpoint_id,
            }
        }

    # ------------------------------------------------------------------ the saver, sync

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        status, content = self._step_call("GET", self._tuple_path(config))
        return None if status == 404 else self._tuple(json.loads(content))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        body = self._search_body(config, filter, before, limit)
        for t in self._call("POST", "/checkpoints/search", json=body).json()["items"]:
            yield self._tuple(t)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        body = self._put_body(config, checkpoint, metadata, new_versions)
        with self._putting(checkpoint["id"]):
            out = json.loads(self._step_call("POST", "/checkpoints", body)[1])
        if self.keep_latest is not None and not body["checkpoint_ns"]:
            self.prune([body["thread_id"]], keep=self.keep_latest)
        return self._stored(config, out["checkpoint_id"], out["run_id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._step_call(
            "POST", "/checkpoints/writes", self._writes_body(config, writes, task_id, task_path)
        )

    def delete_thread(self, thread_id: str) -> None:
        self._call("POST", "/threads/delete", json={"thread_ids": [str(thread_id)]})

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._call("POST", "/threads/delete-runs", json={"run_ids": [str(r) for r in run_ids]})

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._call(
            "POST",
            "/threads/copy",
            json={
                "source_thread_id": str(source_thread_id),
                "target_thread_id": str(target_thread_id),
            },
        )

    def prune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep: int = 1
    ) -> None:
        """Keeps the newest `keep` checkpoints per namespace of each thread (with the writes and
        blobs they need), or deletes everything with `strategy="delete"`."""
        if thread_ids:
            self._call(
                "POST",
                "/threads/prune",
                json={
                    "thread_ids": [str(t) for t in thread_ids],
                    "strategy": strategy,
                    "keep": keep,
                },
            )

    # ------------------------------------------------------------------ the saver, async

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        status, content = await self._astep_call("GET", self._tuple_path(config))
        return None if status == 404 else self._tuple(json.loads(content))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        body = self._search_body(config, filter, before, limit)
        resp = await self._acall("POST", "/checkpoints/search", json=body)
        for t in resp.json()["items"]:
            yield self._tuple(t)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        body = self._put_body(config, checkpoint, metadata, new_versions)
        with self._putting(checkpoint["id"]):
            out = json.loads((await self._astep_call("POST", "/checkpoints", body))[1])
        if self.keep_latest is not None and not body["checkpoint_ns"]:
            await self.aprune([body["thread_id"]], keep=self.keep_latest)
        return self._stored(config, out["checkpoint_id"], out["run_id"])

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        body = self._writes_body(config, writes, task_id, task_path)
        await self._astep_call("POST", "/checkpoints/writes", body)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._acall("POST", "/threads/delete", json={"thread_ids": [str(thread_id)]})

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._acall(
            "POST", "/threads/delete-runs", json={"run_ids": [str(r) for r in run_ids]}
        )

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._acall(
            "POST",
            "/threads/copy",
            json={
                "source_thread_id": str(source_thread_id),
                "target_thread_id": str(target_thread_id),
            },
        )

    async def aprune(
        self, thread_ids: Sequence[str], *, strategy: str = "keep_latest", keep: int = 1
    ) -> None:
        if thread_ids:
            await self._acall(
                "POST",
                "/threads/prune",
                json={
                    "thread_ids": [str(t) for t in thread_ids],
                    "strategy": strategy,
                    "keep": keep,
                },
            )

    # ------------------------------------------------------------------ tether's side

    def run_id(self, config: RunnableConfig) -> str:
        """The tether run of the config's thread (created with the config's caps on first use):
        send it to the LLM gateway as `X-Tether-Run-Id` so calls and caps land on that run."""
        conf = config.get("configurable", {})
        thread_id = str(conf["thread_id"])
        known = conf.get("tether_run_id") or self._runs.get(thread_id)
        if known:
            return str(known)
        out = self._call(
            "POST", "/threads/run", json={"thread_id": thread_id, "run": self._run_fields(config)}
        ).json()
        self._runs[thread_id] = out["run_id"]
        return str(out["run_id"])

    async def arun_id(self, config: RunnableConfig) -> str:
        """`run_id` for async code."""
        conf = config.get("configurable", {})
        thread_id = str(conf["thread_id"])
        known = conf.get("tether_run_id") or self._runs.get(thread_id)
        if known:
            return str(known)
        body = {"thread_id": thread_id, "run": self._run_fields(config)}
        out = (await self._acall("POST", "/threads/run", json=body)).json()
        self._runs[thread_id] = out["run_id"]
        return str(out["run_id"])

    @staticmethod
    def _headers(config: RunnableConfig, run_id: str) -> dict[str, str]:
        conf = config.get("configurable", {})
        headers = {"X-Tether-Run-Id": run_id}
        if conf.get("task_id") is not None:
            headers["X-Tether-Task-Id"] = str(conf["task_id"])
        if conf.get("user") is not None:
            headers["X-Tether-User"] = str(conf["user"])
        return headers

    def run_headers(self, config: RunnableConfig) -> dict[str, str]:
        """Headers for an LLM client pointed at tether's gateway (`default_headers=`)."""
        return self._headers(config, self.run_id(config))

    async def arun_headers(self, config: RunnableConfig) -> dict[str, str]:
        """`run_headers` for async code."""
        return self._headers(config, await self.arun_id(config))

    def hold(
        self,
        thread_id: str,
        interrupts: builtins.list[dict[str, Any]],
        checkpoint_id: str | None = None,
    ) -> builtins.list[str]:
        """Holds interrupts as tether approvals (idempotent per interrupt id); their ids."""
        body = {
            "thread_id": thread_id,
            "checkpoint_id": checkpoint_id,
            "interrupts": interrupts,
            "approval_timeout_s": self.approval_timeout_s,
        }
        return list(self._call("POST", "/threads/interrupts", json=body).json()["approval_ids"])

    async def ahold(
        self,
        thread_id: str,
        interrupts: builtins.list[dict[str, Any]],
        checkpoint_id: str | None = None,
    ) -> builtins.list[str]:
        """`hold` for async code."""
        body = {
            "thread_id": thread_id,
            "checkpoint_id": checkpoint_id,
            "interrupts": interrupts,
            "approval_timeout_s": self.approval_timeout_s,
        }
        resp = await self._acall("POST", "/threads/interrupts", json=body)
        return list(resp.json()["approval_ids"])

    def wait_approval(self, approval_id: str, timeout_s: float) -> dict[str, Any]:
        """Long-polls an approval until decided or `timeout_s` passes (then still pending)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = max(0.0, min(60.0, deadline - time.monotonic()))
            out: dict[str, Any] = self._call(
                "GET",
                f"/approvals/{approval_id}/wait",
                params={"timeout_s": left},
                timeout=left + 30,
            ).json()
            if out["status"] != "pending" or time.monotonic() >= deadline:
                return out

    async def await_approval(self, approval_id: str, timeout_s: float) -> dict[str, Any]:
        """`wait_approval` for async code (the event loop goes on while it waits)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = max(0.0, min(60.0, deadline - time.monotonic()))
            resp = await self._acall(
                "GET",
                f"/approvals/{approval_id}/wait",
                params={"timeout_s": left},
                timeout=left + 30,
            )
            out: dict[str, Any] = resp.json()
            if out["status"] != "pending" or time.monotonic() >= deadline:
                return out

    @staticmethod
    def _finish_body(
        config: RunnableConfig, status: str, output: Any, error: str | None
    ) -> dict[str, Any]:
        return {
            "thread_id": str(config["configurable"]["thread_id"]),
            "status": status,
            "output": view(output),
            "error": error,
        }

    def finish(
        self, config: RunnableConfig, status: str, *, output: Any = None, error: str | None = None
    ) -> None:
        """Ends the thread's run (`succeeded` or `failed`) with its output or error."""
        self._call("POST", "/threads/finish", json=self._finish_body(config, status, output, error))

    async def afinish(
        self, config: RunnableConfig, status: str, *, output: Any = None, error: str | None = None
    ) -> None:
        """`finish` for async code."""
        body = self._finish_body(config, status, output, error)
        await self._acall("POST", "/threads/finish", json=body)

    def take_resumes(self, thread_id: str | None = None) -> builtins.list[dict[str, Any]]:
        """The resume requests (`tether runs resume`) of this agent's threads, each taken once."""
        body = {"thread_id": thread_id}
        return list(self._call("POST", "/threads/resumes/take", json=body).json()["items"])

    async def atake_resumes(self, thread_id: str | None = None) -> builtins.list[dict[str, Any]]:
        """`take_resumes` for async code."""
        resp = await self._acall("POST", "/threads/resumes/take", json={"thread_id": thread_id})
        return list(resp.json()["items"])

    def claim_tool_call(
        self, thread_id: str, key: str, tool: str, site: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """`{"status": new|done|started, "result", "key"}`: `key` with the step tether counted
        from `site` (`_tools.call_site`), the one to complete."""
        self._stored_by_now(site)
        body = {"thread_id": thread_id, "key": key, "tool": tool, **(site or {})}
        return dict(self._call("POST", "/threads/tool-calls/claim", json=body).json())

    async def aclaim_tool_call(
        self, thread_id: str, key: str, tool: str, site: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if not self._stored_by_now(site, 0):
            await asyncio.to_thread(self._stored_by_now, site)
        body = {"thread_id": thread_id, "key": key, "tool": tool, **(site or {})}
        return dict((await self._acall("POST", "/threads/tool-calls/claim", json=body)).json())

    def complete_tool_call(self, thread_id: str, key: str, result: Any) -> None:
        body = {"thread_id": thread_id, "key": key, "result": result}
        self._call("POST", "/threads/tool-calls/complete", json=body)

    async def acomplete_tool_call(self, thread_id: str, key: str, result: Any) -> None:
        body = {"thread_id": thread_id, "key": key, "result": result}
        await self._acall("POST", "/threads/tool-calls/complete", json=body)
