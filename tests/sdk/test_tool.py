"""@tether.tool records sync and async calls as TOOL spans (input, output, latency, errors)."""

from __future__ import annotations

import pytest

import tether
from tests.sdk.conftest import FakeTether
from tether.testing import capture


@tether.tool
def lookup_customer(email: str, *, include_orders: bool = False) -> dict[str, object]:
    return {"email": email, "tier": "gold", "orders": [1, 2] if include_orders else []}


@tether.tool(name="crm.update", tags=["write", "crm"])
async def update_customer(customer_id: int, **fields: object) -> str:
    return f"updated {customer_id}: {sorted(fields)}"


@tether.tool
def flaky(n: int) -> int:
    raise ConnectionError(f"crm down for {n}")


class Billing:
    @tether.tool(name="billing.refund")
    def refund(self, invoice: str, amount: float) -> str:
        return f"refunded {amount} on {invoice}"


def test_sync_tool_records_input_output_and_parent() -> None:
    with capture() as cap, tether.run(agent="triage") as run:
        assert lookup_customer("a@b.c", include_orders=True)["tier"] == "gold"
    (call,) = cap.tool_calls
    assert call.name == "lookup_customer"
    assert call.input == {"email": "a@b.c", "include_orders": True}
    assert call.output == {"email": "a@b.c", "tier": "gold", "orders": [1, 2]}
    assert call.status == "ok" and call.error is None
    assert call.run_id == run.id
    assert call.parent_id == cap.run().span_id
    assert call.latency_ms is not None and call.latency_ms >= 0
    assert call.attributes["tool.name"] == "lookup_customer"


async def test_async_tool_with_name_tags_and_var_kwargs() -> None:
    with capture() as cap:
        async with tether.run(agent="triage"):
            out = await update_customer(7, tier="silver", note="vip")
    assert out == "updated 7: ['note', 'tier']"
    (call,) = cap.tool_calls
    assert call.name == "crm.update"
    assert call.input == {"customer_id": 7, "tier": "silver", "note": "vip"}
    assert call.attributes["tether.tool.tags"] == ("write", "crm")
    assert update_customer.__name__ == "update_customer"


def test_tool_error_is_recorded_and_the_agents_exception_reraised() -> None:
    with capture() as cap:
        with pytest.raises(ConnectionError, match="crm down for 3"), tether.run(agent="triage"):
            flaky(3)
        run = cap.run()
    (call,) = cap.tool_calls
    assert call.status == "error"
    assert call.error == "ConnectionError: crm down for 3"
    assert run.status == "failed"


def test_tool_error_caught_by_the_agent_leaves_the_run_successful() -> None:
    with capture() as cap, tether.run(agent="triage"):
        with pytest.raises(ConnectionError):
            flaky(1)
        lookup_customer("x@y.z")
    assert [c.status for c in cap.tool_calls] == ["error", "ok"]
    assert cap.run().status == "succeeded"


def test_method_tool_leaves_self_out_of_the_input() -> None:
    with capture() as cap, tether.run(agent="billing"):
        Billing().refund("INV-9", 12.5)
    assert cap.tool_calls[0].input == {"invoice": "INV-9", "amount": 12.5}
    assert cap.tool_calls[0].output == "refunded 12.5 on INV-9"


def test_unserialisable_arguments_are_recorded_as_repr() -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    @tether.tool
    def use(thing: object) -> object:
        return thing

    with capture() as cap, tether.run(agent="a"):
        use(Opaque())
    assert cap.tool_calls[0].input == {"thing": "<Opaque>"}


def test_tool_spans_reach_tether_over_otlp(sdk: FakeTether) -> None:
    with tether.run(agent="triage") as run:
        lookup_customer("a@b.c")
    tether.flush()
    span = sdk.span("lookup_customer")
    assert span["attributes"]["openinference.span.kind"] == "TOOL"
    assert span["attributes"]["input.value"] == '{"email": "a@b.c", "include_orders": false}'
    assert span["trace_id"] == run.trace_id
    assert span["parent_id"] == sdk.span("triage")["span_id"]


def test_spans_inside_a_run_carry_its_attribution() -> None:
    with capture() as cap, tether.run(agent="triage", task_id="T-5", user="zoe", version="v9"):
        lookup_customer("a@b.c")
        with tether.run(agent="inner", task_id="T-6"):
            lookup_customer("c@d.e")
    outer_call, inner_call = cap.tool_calls
    assert outer_call.attributes["tether.agent"] == "triage"
    assert outer_call.attributes["tether.task_id"] == "T-5"
    assert outer_call.attributes["tether.user"] == "zoe"
    assert outer_call.attributes["tether.agent_version"] == "v9"
    assert inner_call.attributes["tether.agent"] == "inner"
    assert "tether.user" not in inner_call.attributes
    assert {r.agent for r in cap.runs} == {"triage", "inner"}
    inner_run = cap.run("inner")
    assert (inner_run.user, inner_run.version) == (None, None)  # nothing leaks from the outer
