from __future__ import annotations

from decimal import Decimal

import httpx
from sqlalchemy import Engine

from tests.gateway.llm_env import LLMEnv, new_run_id
from tether.config import load_settings
from tether.core.money import usd_to_nusd
from tether.core.pricing import load_price_table
from tether.gateway.llm.guard import BudgetGuard
from tether.gateway.llm.provider import Usage
from tether.store.ledger import SqlLedger


def test_a_call_is_priced_as_the_model_its_hold_was_made_for(sqlite_db: Engine) -> None:
    dated = {"input_cost_per_token": 5e-6, "output_cost_per_token": 1.5e-5}
    prices = load_price_table({"gpt-4o-2024-05-13": dated})
    guard = BudgetGuard(load_settings(), sqlite_db, SqlLedger(sqlite_db), prices)
    usage = Usage(input_tokens=1000, output_tokens=100, reported=True,
                  model_served="gpt-4o-2024-05-13")  # fmt: skip
    asked = prices.cost("gpt-4o", 1000, 100)
    assert asked is not None
    assert guard.cost_nusd("gpt-4o", "gpt-4o-2024-05-13", usage) == usd_to_nusd(asked)
    # an unpriced admitted name falls back to the served one
    served = Decimal("5e-6") * 1000 + Decimal("1.5e-5") * 100
    assert guard.cost_nusd("my-alias", "gpt-4o-2024-05-13", usage) == usd_to_nusd(served)
    # nonsense counts from an upstream never make a negative charge
    assert guard.cost_nusd("gpt-4o", "gpt-4o", Usage(input_tokens=-5, output_tokens=-1)) == 0


def test_secret_named_fields_in_a_prompt_are_not_stored(llm_env: LLMEnv) -> None:
    run_id = new_run_id()
    r = httpx.post(llm_env.llm_url + "/chat/completions",
                   headers={"authorization": f"Bearer {llm_env.keys['sdk-agent']}",
                            "x-tether-run-id": run_id},
                   json={"model": "mock-small", "max_tokens": 5,
                         "messages": [{"role": "user", "content": "hi",
                                       "metadata": {"api_key": "sk-LEAK123"}}]})  # fmt: skip
    assert r.status_code == 200, r.text
    (span,) = llm_env.wait_spans(run_id, 1)
    assert "sk-LEAK123" not in (span.input or "") and "hi" in (span.input or "")
