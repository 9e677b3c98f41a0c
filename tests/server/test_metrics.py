from __future__ import annotations

from tether.server.metrics import render


def test_label_values_are_escaped_and_agents_summed_over_statuses() -> None:
    rows = [
        {"agent": 'we"ird\\agent', "status": "failed", "runs": 1, "input_tokens": 5,
         "output_tokens": 1, "cost_nusd": 250_000_000},
        {"agent": 'we"ird\\agent', "status": "succeeded", "runs": 2, "input_tokens": 10,
         "output_tokens": 2, "cost_nusd": 250_000_000},
        {"agent": None, "status": "running", "runs": 1, "input_tokens": 0, "output_tokens": 0,
         "cost_nusd": 0},
    ]  # fmt: skip
    lines = render(rows, spans_ingested=7).splitlines()
    assert 'tether_runs_total{agent="we\\"ird\\\\agent",status="failed"} 1' in lines
    assert 'tether_tokens_total{agent="we\\"ird\\\\agent",direction="input"} 15' in lines
    assert 'tether_cost_usd_total{agent="we\\"ird\\\\agent"} 0.5' in lines
    assert 'tether_runs_total{agent="",status="running"} 1' in lines
    assert "tether_spans_ingested_total 7" in lines
    assert all(line.startswith(("#", "tether_")) for line in lines)
