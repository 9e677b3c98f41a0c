"""The SDK's background REST jobs (feedback, scores, tool results): a connection the server
closed under a call is retried once; tether unreachable drops jobs for a while, counted."""

from __future__ import annotations

import httpx

from tether.sdk._http import Http


def _http(handler: httpx.MockTransport) -> Http:
    return Http("http://tether.test", "key", timeout_s=2.0, transport=handler)


def test_a_connection_closed_under_a_job_is_retried_once_and_nothing_is_lost() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if len(seen) == 1:  # the kept-alive connection the server had closed
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        return httpx.Response(201, json={})

    http = _http(httpx.MockTransport(answer))
    http.submit(lambda: http.request("POST", "/api/v1/runs/r/feedback", json={}).raise_for_status())
    http.submit(lambda: http.request("POST", "/api/v1/runs/r/scores", json={}).raise_for_status())
    assert http.drain(5)
    assert seen == ["/api/v1/runs/r/feedback"] * 2 + ["/api/v1/runs/r/scores"]
    assert (http.failed_jobs, http.dropped_jobs) == (0, 0)


def test_tether_unreachable_fails_the_job_and_drops_the_next_ones_counted() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        raise httpx.ConnectError("connection refused")

    http = _http(httpx.MockTransport(answer))
    for path in ("/a", "/b", "/c"):
        http.submit(lambda path=path: http.request("POST", path).raise_for_status())  # type: ignore[misc]
    assert http.drain(5)
    assert seen == ["/a"]  # not retried: refused is not a stale connection
    assert (http.failed_jobs, http.dropped_jobs) == (1, 2)
