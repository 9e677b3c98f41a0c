"""The SDK's calls to tether's REST API: fire-and-forget jobs (feedback, scores) on one background
thread with a bounded queue, and direct sync/async requests for guarded tools (`/api/v1/decide`)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger("tether.sdk")

_MAX_JOBS = 1000
_DOWN_S = 5.0


class Http:
    """One tether's REST API, as seen by the SDK. `transport` lets tests (and
    `tether.testing.capture`) answer requests in-process."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout_s: float = 10.0,
        transport: httpx.MockTransport | httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"User-Agent": "tether-sdk"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout_s = timeout_s
        self._transport = transport
        self._client = httpx.Client(
            base_url=self.url, headers=self.headers, timeout=timeout_s, transport=transport
        )
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue(maxsize=_MAX_JOBS)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped_jobs = 0
        self.failed_jobs = 0
        self.values_warned = False  # a failed tool-result report was logged once

    # ------------------------------------------------------------------ direct requests

    def request(
        self, method: str, path: str, *, timeout_s: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        return self._client.request(
            method, path, timeout=timeout_s if timeout_s is not None else self.timeout_s, **kwargs
        )

    async def arequest(
        self, method: str, path: str, *, timeout_s: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        transport = self._transport if isinstance(self._transport, httpx.MockTransport) else None
        async with httpx.AsyncClient(
            base_url=self.url, headers=self.headers, transport=transport
        ) as client:
            return await client.request(
                method,
                path,
                timeout=timeout_s if timeout_s is not None else self.timeout_s,
                **kwargs,
            )

    # ------------------------------------------------------------------ background jobs

    def submit(self, job: Callable[[], None]) -> None:
        """Runs `job` on the background thread; never blocks, never raises (drops when full)."""
        self._ensure_thread()
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.dropped_jobs += 1
            if self.dropped_jobs == 1:
                log.warning("tether: %d REST calls queued already; dropping more", _MAX_JOBS)

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Waits until every submitted job has run; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._jobs.all_tasks_done:
            while self._jobs.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._jobs.all_tasks_done.wait(left)
        return True

    def close(self) -> None:
        self._client.close()

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="tether-sdk-rest", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        down_until = 0.0
        while True:
            job = self._jobs.get()
            try:
                if time.monotonic() < down_until:  # tether was unreachable a moment ago
                    self.dropped_jobs += 1
                    continue
                _once_more_if_stale(job)
            except httpx.TransportError as exc:
                self.failed_jobs += 1
                if down_until == 0.0 or time.monotonic() - down_until > _DOWN_S:
                    log.warning(
                        "tether: REST call to %s failed (%s); dropping feedback and scores for %ss",
                        self.url,
                        exc,
                        _DOWN_S,
                    )
                down_until = time.monotonic() + _DOWN_S
            except Exception:  # the SDK's guard: a failed REST call is logged and counted
                self.failed_jobs += 1
                log.warning("tether: background REST call failed", exc_info=True)
            finally:
                self._jobs.task_done()


# what a kept-alive connection gives when the server closed it first (its idle timeout, or
# uvicorn after an unhandled error); the pool drops that connection, so a retry opens a new one
_STALE = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def _once_more_if_stale(job: Callable[[], None]) -> None:
    """Runs `job`; if its connection turned out closed, once more before tether counts as down
    (which drops every job for `_DOWN_S`: one stale connection must not lose feedback)."""
    try:
        job()
    except _STALE as exc:
        log.debug("tether: REST connection closed under a call (%s); retrying it once", exc)
        job()
