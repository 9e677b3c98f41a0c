"""Pure rules: domain types, pricing, budgets, policy, audit. No I/O, no clock, no randomness."""
