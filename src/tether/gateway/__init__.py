"""Enforcement points: the LLM gateway and the MCP gateway."""
