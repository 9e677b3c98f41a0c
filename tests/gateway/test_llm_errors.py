from __future__ import annotations

import httpx

from tether.gateway.llm.errors import from_transport, safe_url


def test_provider_url_credentials_never_reach_an_error_message() -> None:
    url = "http://user:pw-SECRET@127.0.0.1:1/v1/chat/completions"
    assert safe_url(url) == "http://127.0.0.1:1/v1/chat/completions"
    for exc in (httpx.ConnectError("refused"), httpx.ConnectTimeout("slow")):
        err = from_transport(exc, "openai", url)
        assert "pw-SECRET" not in err.message and "127.0.0.1:1" in err.message
