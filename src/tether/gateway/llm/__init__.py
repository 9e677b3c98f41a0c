"""The LLM gateway: OpenAI- and Anthropic-compatible proxy routes, providers, spans, budgets
and the kill switch, plus the scripted mock upstream used by tests, demo and benchmarks."""
